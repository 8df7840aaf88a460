import Glibc

/// The local files nnctl reads (run specs, records to classify) and writes (exports, reports),
/// with the system's reason when it cannot: `No such file or directory`, `Permission denied`,
/// `Is a directory`, `No space left on device`.
enum LocalFile {
    struct Unreadable: Error, CustomStringConvertible {
        var path: String
        var reason: String
        var description: String { "\(path): \(reason)" }
    }

    static func bytes(_ path: String) throws(Unreadable) -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw Unreadable(path: path, reason: reason(errno)) }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw Unreadable(path: path, reason: reason(errno))
            }
            if n == 0 { return bytes }
            bytes.append(contentsOf: chunk[0..<n])
        }
    }

    /// Writes `bytes` to the file `path`; a full disk may only show when the file is closed. A
    /// file this call created is removed again when the write fails, so no truncated model is
    /// left behind; an existing path (a file, /dev/null) is written in place, never replaced.
    static func write(_ bytes: [UInt8], to path: String) throws(Refused) {
        let existed = access(path, F_OK) == 0
        guard let file = fopen(path, "wb") else { throw Refused(message: "cannot write \(path): \(reason(errno))") }
        let written = bytes.withUnsafeBytes { fwrite($0.baseAddress, 1, $0.count, file) }
        let writeError = written == bytes.count ? 0 : errno
        let closeError = fclose(file) == 0 ? 0 : errno
        let code = writeError != 0 ? writeError : closeError
        guard code == 0 else {
            if !existed { unlink(path) }
            throw Refused(message: "cannot write \(path): \(reason(code))")
        }
    }

    private static func reason(_ code: Int32) -> String { String(cString: strerror(code)) }
}
