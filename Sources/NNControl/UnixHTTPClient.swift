import Glibc

#if canImport(FoundationEssentials)
    // Foundation's essentials only (no ICU, no networking): nnctl, which links this, stays small.
    import FoundationEssentials
#else
    import Foundation
#endif

/// A small blocking HTTP/1.1 client over a Unix domain socket — all `nnctl` needs. Hand-written
/// on purpose: AsyncHTTPClient (or URLSession's FoundationNetworking) would link SwiftNIO's event
/// loops, TLS and libcurl into a CLI that makes one local request and exits; this keeps nnctl
/// small and its start-up in milliseconds, which matters for `watch -n1 nnctl status` and shell
/// completion. One request per connection (`Connection: close`).
public struct UnixHTTPClient: Sendable {
    public let socketPath: String
    public var timeoutSeconds: Int

    public init(socketPath: String, timeoutSeconds: Int = 120) {
        self.socketPath = socketPath
        self.timeoutSeconds = timeoutSeconds
    }

    public struct Response: Sendable {
        public var status: Int
        public var headers: [String: String]
        public var body: [UInt8]
        public var text: String { String(decoding: body, as: UTF8.self) }
    }

    public enum ClientError: Error, CustomStringConvertible {
        case unreachable(String, String)
        case protocolError(String)
        /// An event stream that carried nothing, not even its heartbeat, for this many seconds.
        case silent(Int)
        public var description: String {
            switch self {
            case .unreachable(let p, let why): "cannot reach nnd at \(p): \(why)"
            case .protocolError(let why): "bad response from nnd: \(why)"
            case .silent(let seconds):
                "nnd sent nothing on the event stream for \(seconds) s, not even a heartbeat: the daemon is stopped or hung"
            }
        }
    }

    /// Default socket, the same rule as `nnd serve`: `$XDG_RUNTIME_DIR/nnd/nnd.sock`, else `/tmp/nnd-$UID/nnd.sock`.
    public static func defaultSocketPath(environment env: [String: String] = ProcessInfo.processInfo.environment)
        -> String
    {
        if let s = env["NND_SOCKET"], !s.isEmpty { return s }
        if let r = env["XDG_RUNTIME_DIR"], !r.isEmpty { return "\(r)/nnd/nnd.sock" }
        return "/tmp/nnd-\(getuid())/nnd.sock"
    }

    /// A connected stream socket to the daemon (receive timeout `timeoutSeconds`); the caller
    /// closes it. Public for tests that speak raw bytes (slow clients, malformed requests).
    public func connectSocket() throws -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw ClientError.unreachable(socketPath, String(cString: strerror(errno))) }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(socketPath.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else {
            close(fd)
            throw ClientError.unreachable(socketPath, "path too long")
        }
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in for (i, b) in bytes.enumerated() { raw[i] = b } }
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        if rc != 0 {
            let e = errno
            close(fd)
            throw ClientError.unreachable(socketPath, String(cString: strerror(e)))
        }
        var tv = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        return fd
    }

    func send(_ fd: Int32, method: String, path: String, body: [UInt8]?, contentType: String) throws {
        var head = "\(method) \(path) HTTP/1.1\r\nHost: nnd\r\nUser-Agent: nnctl\r\nConnection: close\r\n"
        if let body { head += "Content-Type: \(contentType)\r\nContent-Length: \(body.count)\r\n" }
        head += "\r\n"
        let all = Array(head.utf8) + (body ?? [])
        var off = 0
        while off < all.count {
            // The daemon may answer before it has read the whole request (413 for a body over its
            // limit) and then stop reading: a blocking write would wait for its request timeout
            // (30 s). So wait until the socket can take more or has an answer, and on an answer
            // stop sending and read it, as curl does.
            var ready = pollfd(fd: fd, events: Int16(POLLIN | POLLOUT), revents: 0)
            let polled = poll(&ready, 1, Int32(clamping: timeoutSeconds * 1000))
            if polled < 0 && errno == EINTR { continue }
            guard polled > 0 else {
                throw ClientError.protocolError(
                    polled == 0 ? "timed out sending the request" : "poll failed: \(String(cString: strerror(errno)))")
            }
            if ready.revents & Int16(POLLIN | POLLHUP | POLLERR) != 0 { return }
            // MSG_NOSIGNAL: a daemon that closes early must not kill us with SIGPIPE; its answer
            // is read all the same. MSG_DONTWAIT: send what fits now, then poll again.
            let n = all.withUnsafeBytes {
                Glibc.send(fd, $0.baseAddress! + off, all.count - off, Int32(MSG_NOSIGNAL | MSG_DONTWAIT))
            }
            if n < 0 {
                if errno == EAGAIN || errno == EINTR { continue }
                if errno == EPIPE || errno == ECONNRESET { return }
                throw ClientError.protocolError("write failed: \(String(cString: strerror(errno)))")
            }
            off += n
        }
    }

    /// Reads a response head, then hands body bytes to `onBody` as they arrive (de-chunked); a
    /// read that waits longer than the socket's receive timeout throws `timeout`.
    func receive(
        _ fd: Int32, bodyExpected: Bool = true, timeout: ClientError = .protocolError("timed out"),
        onBody: ([UInt8]) throws -> Void
    ) throws -> (Int, [String: String]) {
        var buffer = [UInt8]()
        var chunk = [UInt8](repeating: 0, count: 65536)
        func fill() throws -> Bool {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress!, $0.count) }
            if n < 0 {
                if errno == EAGAIN { throw timeout }
                throw ClientError.protocolError(String(cString: strerror(errno)))
            }
            if n == 0 { return false }
            buffer.append(contentsOf: chunk[0..<n])
            return true
        }
        var headerEnd: Int?
        while headerEnd == nil {
            if let r = find(buffer, [13, 10, 13, 10]) {
                headerEnd = r
                break
            }
            guard try fill() else { throw ClientError.protocolError("connection closed before the response headers") }
        }
        let headText = String(decoding: buffer[0..<headerEnd!], as: UTF8.self)
        buffer.removeFirst(headerEnd! + 4)
        let lines = headText.split(separator: "\r\n", omittingEmptySubsequences: false).map(String.init)
        let parts = lines[0].split(separator: " ")
        guard parts.count >= 2, let status = Int(parts[1]) else {
            throw ClientError.protocolError("status line '\(lines[0])'")
        }
        var headers: [String: String] = [:]
        for l in lines.dropFirst() {
            if let c = l.firstIndex(of: ":") {
                headers[l[..<c].lowercased()] = l[l.index(after: c)...].trimmedWhitespace
            }
        }
        if !bodyExpected {
            // HEAD: the headers describe a body that is not sent.
        } else if headers["transfer-encoding"]?.lowercased() == "chunked" {
            while true {
                var lineEnd = find(buffer, [13, 10])
                while lineEnd == nil {
                    guard try fill() else { throw ClientError.protocolError("truncated chunked body") }
                    lineEnd = find(buffer, [13, 10])
                }
                let sizeText = String(decoding: buffer[0..<lineEnd!], as: UTF8.self).split(separator: ";")[0]
                guard let size = Int(sizeText.trimmedWhitespace, radix: 16) else {
                    throw ClientError.protocolError("bad chunk size")
                }
                buffer.removeFirst(lineEnd! + 2)
                if size == 0 { break }
                while buffer.count < size + 2 {
                    guard try fill() else { throw ClientError.protocolError("truncated chunk") }
                }
                try onBody(Array(buffer[0..<size]))
                buffer.removeFirst(size + 2)
            }
        } else if let len = headers["content-length"].flatMap(Int.init) {
            while buffer.count < len {
                guard try fill() else { throw ClientError.protocolError("body shorter than Content-Length") }
            }
            try onBody(Array(buffer[0..<len]))
        } else {
            while try fill() {}
            try onBody(buffer)
        }
        return (status, headers)
    }

    func find(_ hay: [UInt8], _ needle: [UInt8]) -> Int? {
        guard hay.count >= needle.count else { return nil }
        for i in 0...(hay.count - needle.count)
        where hay[i] == needle[0] && Array(hay[i..<(i + needle.count)]) == needle { return i }
        return nil
    }

    public func request(_ method: String, _ path: String, json body: [UInt8]? = nil) throws -> Response {
        try request(method, path, body: body, contentType: "application/json")
    }

    /// A request whose body has another type (e.g. `application/yaml`).
    public func request(_ method: String, _ path: String, body: [UInt8]?, contentType: String) throws -> Response {
        let fd = try connectSocket()
        defer { close(fd) }
        try send(fd, method: method, path: path, body: body, contentType: contentType)
        var data = [UInt8]()
        let (status, headers) = try receive(fd, bodyExpected: method != "HEAD") { data += $0 }
        return Response(status: status, headers: headers, body: data)
    }

    /// Streams an NDJSON response line by line; returns the status (the body of an error response
    /// is passed as one line). A run's stream may carry no event for hours (a queued run), but the
    /// daemon writes a heartbeat into it every few seconds; `silenceLimit` seconds without a byte
    /// (a stopped or hung daemon, whose socket still accepts) throw `silent`.
    public func stream(_ path: String, silenceLimit: Int, onLine: (String) throws -> Void) throws -> Int {
        let fd = try connectSocket()
        defer { close(fd) }
        var tv = timeval(tv_sec: silenceLimit, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        try send(fd, method: "GET", path: path, body: nil, contentType: "application/json")
        var pending = [UInt8]()
        let (status, _) = try receive(fd, timeout: .silent(silenceLimit)) { bytes in
            pending += bytes
            while let nl = pending.firstIndex(of: 10) {
                let line = String(decoding: pending[0..<nl], as: UTF8.self)
                pending.removeFirst(nl + 1)
                if !line.isEmpty { try onLine(line) }
            }
        }
        if !pending.isEmpty { try onLine(String(decoding: pending, as: UTF8.self)) }
        return status
    }
}

extension StringProtocol {
    /// Without leading and trailing spaces, tabs and line ends (FoundationEssentials has no
    /// `trimmingCharacters(in:)`).
    public var trimmedWhitespace: String {
        let isSpace: (Character) -> Bool = { $0 == " " || $0 == "\t" || $0 == "\n" || $0 == "\r" }
        guard let first = firstIndex(where: { !isSpace($0) }), let last = lastIndex(where: { !isSpace($0) }) else {
            return ""
        }
        return String(self[first...last])
    }
}
