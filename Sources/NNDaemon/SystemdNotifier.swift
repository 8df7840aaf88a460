import Foundation

/// systemd's notify protocol: datagrams such as `READY=1`, `STATUS=…`, `WATCHDOG=1`,
/// `STOPPING=1` to the socket named by `$NOTIFY_SOCKET` (a path, or `@name` for the
/// abstract namespace). Written directly so nnd needs no libsystemd.
public final class SystemdNotifier: Sendable {
    public let socketPath: String
    /// Watchdog interval from `$WATCHDOG_USEC`, if systemd asked for keep-alives.
    public let watchdogInterval: Duration?

    public init?(environment env: [String: String] = ProcessInfo.processInfo.environment) {
        guard let path = env["NOTIFY_SOCKET"], !path.isEmpty else { return nil }
        socketPath = path
        if let usec = env["WATCHDOG_USEC"].flatMap(UInt64.init), usec > 0,
            env["WATCHDOG_PID"].flatMap(Int32.init).map({ $0 == getpid() }) ?? true
        {
            watchdogInterval = .microseconds(Int64(usec / 2))
        } else {
            watchdogInterval = nil
        }
    }

    @discardableResult
    public func send(_ message: String) -> Bool {
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        var pathBytes = Array(socketPath.utf8)
        if pathBytes.first == UInt8(ascii: "@") { pathBytes[0] = 0 }
        guard pathBytes.count < MemoryLayout.size(ofValue: addr.sun_path) else { return false }
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in for (i, b) in pathBytes.enumerated() { raw[i] = b } }
        let len = socklen_t(MemoryLayout<sa_family_t>.size + pathBytes.count + (pathBytes.first == 0 ? 0 : 1))
        let bytes = Array(message.utf8)
        // Never block: a notify socket nobody reads must not stall the daemon.
        let n = withUnsafePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                bytes.withUnsafeBytes { sendto(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT), sa, len) }
            }
        }
        return n == bytes.count
    }

    public func ready(status: String) { send("READY=1\nSTATUS=\(status)") }
    public func status(_ s: String) { send("STATUS=\(s)") }
    public func stopping() { send("STOPPING=1") }
    public func watchdog() { send("WATCHDOG=1") }
}
