import Foundation
import Yams

/// The daemon's settings: defaults, then the YAML file (`--config`, e.g. etc/nnd/nnd.yaml),
/// then `NND_*` environment variables, then command-line flags.
public struct DaemonConfig: Sendable, Equatable {
    public var socketPath: String
    public var socketMode: Int
    public var socketGroup: String?
    public var stateDirectory: String
    public var workers: Int
    public var maxConcurrentRuns: Int
    public var maxRequestBytes: Int
    public var logLevel: String
    public var dataDirectory: String?
    /// `host:port` for a TCP listener serving only /metrics; nil = off (the default).
    public var metricsListen: String?
    /// A connection that sends no complete request for this long is closed, and a request
    /// body that takes longer gets 408: a client sending a byte a second cannot hold a
    /// connection (and its memory) for ever.
    public var requestTimeoutSeconds: Int = 30
    /// Nice value of the control plane's threads (event loops, request handlers); training
    /// keeps the process's own. 0 = same priority as training. See `ThreadPriority`.
    public var controlNice: Int = 10

    /// Defaults for an unprivileged user: `$XDG_RUNTIME_DIR/nnd/nnd.sock` (or
    /// `/tmp/nnd-$UID/nnd.sock`) and `$XDG_STATE_HOME/nnd` (or `~/.local/state/nnd`).
    public static func userDefaults(environment env: [String: String] = ProcessInfo.processInfo.environment) -> DaemonConfig {
        let runtime = env["XDG_RUNTIME_DIR"].flatMap { $0.isEmpty ? nil : "\($0)/nnd" } ?? "/tmp/nnd-\(getuid())"
        let state = env["XDG_STATE_HOME"].flatMap { $0.isEmpty ? nil : "\($0)/nnd" } ?? "\(env["HOME"].flatMap { $0.isEmpty ? nil : $0 } ?? NSHomeDirectory())/.local/state/nnd"
        return DaemonConfig(socketPath: "\(runtime)/nnd.sock", socketMode: 0o660, socketGroup: nil, stateDirectory: state,
                            workers: ProcessInfo.processInfo.activeProcessorCount, maxConcurrentRuns: 1,
                            maxRequestBytes: 1 << 20, logLevel: "info", dataDirectory: nil, metricsListen: nil)
    }

    public struct ConfigError: Error, CustomStringConvertible, Sendable {
        public var source: String, field: String, message: String
        public init(source: String, field: String, message: String) { self.source = source; self.field = field; self.message = message }
        public var description: String { "\(source): \(field): \(message)" }
    }

    static let keys: Set<String> = ["socket", "socket_mode", "socket_group", "state_dir", "workers", "max_concurrent_runs",
                                    "max_request_bytes", "log_level", "data_dir", "metrics_listen", "request_timeout_seconds",
                                    "control_nice"]

    public mutating func apply(yaml text: String, source: String) throws {
        let loaded: Any?
        do { loaded = try Yams.load(yaml: text) } catch { throw ConfigError(source: source, field: "-", message: "not valid YAML: \(error)") }
        guard let map = (loaded ?? [String: Any]()) as? [String: Any] else { throw ConfigError(source: source, field: "-", message: "must be a mapping") }
        for (k, v) in map {
            guard Self.keys.contains(k) else { throw ConfigError(source: source, field: k, message: "unknown setting (known: \(Self.keys.sorted().joined(separator: ", ")))") }
            if v is NSNull { continue }
            try set(k, String(describing: v), source: source)
        }
    }

    public mutating func apply(environment env: [String: String]) throws {
        let map = ["NND_SOCKET": "socket", "NND_SOCKET_MODE": "socket_mode", "NND_SOCKET_GROUP": "socket_group", "NND_STATE_DIR": "state_dir",
                   "NND_WORKERS": "workers", "NND_MAX_CONCURRENT_RUNS": "max_concurrent_runs", "NND_MAX_REQUEST_BYTES": "max_request_bytes",
                   "NND_LOG_LEVEL": "log_level", "NND_DATA_DIR": "data_dir", "NND_METRICS_LISTEN": "metrics_listen",
                   "NND_REQUEST_TIMEOUT_SECONDS": "request_timeout_seconds",
                   "NND_CONTROL_NICE": "control_nice"]
        for (envKey, key) in map { if let v = env[envKey], !v.isEmpty { try set(key, v, source: "environment \(envKey)") } }
    }

    public var metricsAddress: (host: String, port: Int)? {
        guard let m = metricsListen, let colon = m.lastIndex(of: ":"), let port = Int(m[m.index(after: colon)...]) else { return nil }
        return (String(m[..<colon]).trimmingCharacters(in: CharacterSet(charactersIn: "[]")), port)
    }

    public mutating func set(_ key: String, _ value: String, source: String) throws {
        func int(_ lo: Int, _ hi: Int) throws -> Int {
            guard let i = Int(value), i >= lo, i <= hi else { throw ConfigError(source: source, field: key, message: "'\(value)' must be an integer from \(lo) to \(hi)") }
            return i
        }
        switch key {
        case "socket":
            guard value.hasPrefix("/"), value.utf8.count < 100 else { throw ConfigError(source: source, field: key, message: "'\(value)' must be an absolute path shorter than 100 bytes") }
            socketPath = value
        case "socket_mode":
            guard let m = Int(value, radix: 8), m >= 0, m <= 0o777 else { throw ConfigError(source: source, field: key, message: "'\(value)' must be an octal mode such as 0660") }
            socketMode = m
        case "socket_group": socketGroup = value.isEmpty ? nil : value
        case "state_dir":
            guard value.hasPrefix("/") else { throw ConfigError(source: source, field: key, message: "'\(value)' must be an absolute path") }
            stateDirectory = value
        case "workers": workers = try int(1, 1024)
        case "max_concurrent_runs": maxConcurrentRuns = try int(1, 64)
        case "max_request_bytes": maxRequestBytes = try int(1024, 64 << 20)
        case "request_timeout_seconds": requestTimeoutSeconds = try int(1, 3600)
        case "control_nice": controlNice = try int(0, 19)
        case "log_level":
            guard ["trace", "debug", "info", "notice", "warning", "error", "critical"].contains(value) else {
                throw ConfigError(source: source, field: key, message: "'\(value)' is not a log level (trace, debug, info, notice, warning, error, critical)")
            }
            logLevel = value
        case "data_dir": dataDirectory = value
        case "metrics_listen":
            if value.isEmpty { metricsListen = nil; break }
            guard let colon = value.lastIndex(of: ":"), let port = Int(value[value.index(after: colon)...]), port > 0, port < 65536,
                  !value[..<colon].isEmpty else {
                throw ConfigError(source: source, field: key, message: "'\(value)' must be host:port, e.g. 127.0.0.1:9464")
            }
            metricsListen = value
        default: throw ConfigError(source: source, field: key, message: "unknown setting")
        }
    }
}
