import Foundation

/// A run's checkpoint directory. Files are `step-<updates>.safetensors`, newest = most updates;
/// `best.safetensors` holds the best epoch's: by the validation metric when the run has
/// validation records, else by test accuracy (reported, never used to choose weights then).
///
/// Writes are atomic: temporary file, fsync, rename, fsync of the directory — a crash at any
/// instant leaves the previous checkpoint intact and never a half-written file under a
/// checkpoint name.
public struct CheckpointStore: Sendable {
    public let directory: String
    public let keep: Int
    /// Test hook (`NND_TEST_CHECKPOINT_WRITE_DELAY_MS`): pause halfway through writing the
    /// temporary file so a test can kill the process inside a checkpoint write.
    public let writeDelayMilliseconds: Int

    public init(directory: String, keep: Int) {
        self.directory = directory
        self.keep = max(1, keep)
        self.writeDelayMilliseconds =
            Int(ProcessInfo.processInfo.environment["NND_TEST_CHECKPOINT_WRITE_DELAY_MS"] ?? "") ?? 0
    }

    public struct Written: Sendable {
        public var path: String
        public var bytes: Int
        public var seconds: Double
    }

    /// Writes a checkpoint, updates `best` if `isBest`, prunes old ones.
    @discardableResult
    public func write(_ checkpoint: Checkpoint, isBest: Bool) throws -> Written {
        guard checkpoint.allFinite else {
            throw CheckpointError.nonFinite("refusing to write a checkpoint with NaN or infinite parameters")
        }
        let t0 = Date()
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let bytes = checkpoint.encode()
        let name = String(format: "step-%012d.safetensors", checkpoint.state.updateCount)
        let path = "\(directory)/\(name)"
        try Self.atomicWrite(bytes, to: path, delayMilliseconds: writeDelayMilliseconds)
        if isBest { try Self.atomicWrite(bytes, to: "\(directory)/best.safetensors", delayMilliseconds: 0) }
        prune()
        return Written(path: path, bytes: bytes.count, seconds: Date().timeIntervalSince(t0))
    }

    /// `best.safetensors` when it is there and verifies.
    public func loadBest() -> Checkpoint? {
        let path = "\(directory)/best.safetensors"
        guard let data = FileManager.default.contents(atPath: path) else { return nil }
        return try? Checkpoint.decode([UInt8](data), path: path)
    }

    /// Checkpoint files, newest first.
    public func list() -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return names.filter { $0.hasPrefix("step-") && $0.hasSuffix(".safetensors") }.sorted(by: >).map {
            "\(directory)/\($0)"
        }
    }

    func prune() {
        for old in list().dropFirst(keep) { unlink(old) }
        // Leftover temporaries from a crash mid-write.
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        for n in names where n.hasPrefix(".tmp-") { unlink("\(directory)/\(n)") }
    }

    /// The newest checkpoint that reads and verifies; `skipped` lists the bad ones, with why.
    public func loadLatestValid() -> (checkpoint: Checkpoint?, path: String?, skipped: [String]) {
        var skipped: [String] = []
        for path in list() {
            do {
                guard let data = FileManager.default.contents(atPath: path) else {
                    throw CheckpointError.io(path, "cannot read")
                }
                let c = try Checkpoint.decode([UInt8](data), path: path)
                return (c, path, skipped)
            } catch {
                skipped.append("\(error)")
            }
        }
        return (nil, nil, skipped)
    }

    public func load(_ path: String) throws -> Checkpoint {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw CheckpointError.io(path, "cannot read")
        }
        return try Checkpoint.decode([UInt8](data), path: path)
    }

    /// temp file in the same directory → write → fsync → rename → fsync(dir).
    public static func atomicWrite(_ bytes: [UInt8], to path: String, delayMilliseconds: Int = 0) throws {
        let dir = (path as NSString).deletingLastPathComponent
        let tmp = "\(dir)/.tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))-\((path as NSString).lastPathComponent)"
        let fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o640)
        guard fd >= 0 else { throw error(errno, path) }
        var ok = false
        defer {
            if !ok {
                close(fd)
                unlink(tmp)
            }
        }
        try bytes.withUnsafeBytes { buf in
            var off = 0
            let half = buf.count / 2
            while off < buf.count {
                let end = (delayMilliseconds > 0 && off < half) ? half : buf.count
                let n = Foundation.write(fd, buf.baseAddress! + off, end - off)
                if n < 0 {
                    if errno == EINTR { continue }
                    throw error(errno, path)
                }
                off += n
                if delayMilliseconds > 0 && off == half { usleep(UInt32(delayMilliseconds) * 1000) }
            }
        }
        guard fsync(fd) == 0 else { throw error(errno, path) }
        close(fd)
        ok = true
        guard rename(tmp, path) == 0 else {
            let e = errno
            unlink(tmp)
            throw error(e, path)
        }
        let dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dfd >= 0 {
            fsync(dfd)
            close(dfd)
        }
    }

    static func error(_ code: Int32, _ path: String) -> CheckpointError {
        code == ENOSPC || code == EDQUOT ? .noSpace(path) : .io(path, String(cString: strerror(code)))
    }
}
