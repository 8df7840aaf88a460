import Foundation
import Yams

/// The daemon's settings, resolved: built-in defaults, then the YAML file (`--config`, e.g.
/// /etc/nnd/nnd.yaml), then `NND_*` environment variables, then command-line flags. Every
/// setting is declared once, in `DaemonSetting.all`: its YAML key, environment variable and
/// flag are derived from its name, and its parser gives the validation message.
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
    public var requestTimeoutSeconds: Int
    public var controlNice: Int
    /// Memory the daemon's runs may hold together; nil = what the machine (or the cgroup) can
    /// give when the daemon starts. `memoryBudgetFraction` instead takes a share of that.
    public var memoryBudget: Int?
    public var memoryBudgetFraction: Double?
    /// Daemon deaths in a row, while a run trains without writing a checkpoint, after which the
    /// run is no longer resumed.
    public var quarantineAfterCrashes: Int
    /// Retention: finished runs older than this many days are removed (0 = no age limit) …
    public var keepFinishedRunsDays: Int
    /// … and of the rest only the newest this many are kept (0 = no count limit).
    public var keepFinishedRuns: Int
    /// Model versions kept per model besides the current one and the one rollback returns to.
    public var keepModelVersions: Int
    /// Records one prediction request may carry.
    public var maxPredictRows: Int

    /// Defaults: under systemd, the directories its `RuntimeDirectory=` and `StateDirectory=`
    /// made (`$RUNTIME_DIRECTORY/nnd.sock`, `$STATE_DIRECTORY`); for an unprivileged user,
    /// `$XDG_RUNTIME_DIR/nnd/nnd.sock` (or `/tmp/nnd-$UID/nnd.sock`) and `$XDG_STATE_HOME/nnd`
    /// (or `~/.local/state/nnd`).
    public static func userDefaults(environment env: [String: String] = ProcessInfo.processInfo.environment)
        -> DaemonConfig
    {
        func nonEmpty(_ key: String) -> String? { env[key].flatMap { $0.isEmpty ? nil : $0 } }
        // systemd separates several directories with colons; the first is the unit's own.
        func systemd(_ key: String) -> String? {
            nonEmpty(key).flatMap { $0.split(separator: ":").first.map(String.init) }
        }
        let runtime =
            systemd("RUNTIME_DIRECTORY") ?? nonEmpty("XDG_RUNTIME_DIR").map { "\($0)/nnd" } ?? "/tmp/nnd-\(getuid())"
        let home = nonEmpty("HOME") ?? NSHomeDirectory()
        let state =
            systemd("STATE_DIRECTORY") ?? nonEmpty("XDG_STATE_HOME").map { "\($0)/nnd" } ?? "\(home)/.local/state/nnd"
        return DaemonConfig(
            socketPath: "\(runtime)/nnd.sock", socketMode: 0o660, socketGroup: nil, stateDirectory: state,
            workers: ProcessInfo.processInfo.activeProcessorCount, maxConcurrentRuns: 1, maxRequestBytes: 1 << 20,
            logLevel: "info", dataDirectory: nil, metricsListen: nil, requestTimeoutSeconds: 30, controlNice: 10,
            memoryBudget: nil, memoryBudgetFraction: nil, quarantineAfterCrashes: 2, keepFinishedRunsDays: 30,
            keepFinishedRuns: 0, keepModelVersions: 10, maxPredictRows: 10000)
    }

    /// A bad setting, naming where it came from (file, variable or flag), the setting and the value.
    public struct ConfigError: Error, CustomStringConvertible, Sendable {
        public var source: String
        public var field: String
        public var message: String
        public init(source: String, field: String, message: String) {
            self.source = source
            self.field = field
            self.message = message
        }
        /// `source: field: message`, or `source: message` for the file as a whole (no field).
        public var description: String { field.isEmpty ? "\(source): \(message)" : "\(source): \(field): \(message)" }
    }

    /// Applies a YAML settings file; unknown keys are refused (a misspelt setting must not be
    /// silently ignored).
    public mutating func apply(yaml text: String, source: String) throws {
        let loaded: Any?
        do { loaded = try Yams.load(yaml: text) } catch {
            throw ConfigError(source: source, field: "", message: "not valid YAML: \(error)")
        }
        guard let map = (loaded ?? [String: Any]()) as? [String: Any] else {
            throw ConfigError(source: source, field: "", message: "must be a mapping of settings")
        }
        for (key, value) in map.sorted(by: { $0.key < $1.key }) {
            guard let setting = DaemonSetting.named(key) else {
                throw ConfigError(
                    source: source, field: key,
                    message: "unknown setting (known: \(DaemonSetting.all.map(\.key).joined(separator: ", ")))")
            }
            if value is NSNull { continue }
            try setting.apply(String(describing: value), to: &self, source: source)
        }
    }

    /// Applies every `NND_*` variable of a setting that is set and not empty.
    public mutating func apply(environment: [String: String]) throws {
        for setting in DaemonSetting.all {
            if let value = environment[setting.environmentVariable], !value.isEmpty {
                try setting.apply(value, to: &self, source: "environment \(setting.environmentVariable)")
            }
        }
    }

    /// Applies `--key value` / `--key=value` pairs (`nnd serve`'s setting flags).
    public mutating func apply(flags arguments: [String]) throws {
        var rest = arguments[...]
        while let first = rest.popFirst() {
            let parts = first.split(separator: "=", maxSplits: 1).map(String.init)
            guard let setting = DaemonSetting.all.first(where: { $0.flag == parts[0] }) else {
                throw ConfigError(
                    source: "command line", field: first,
                    message: "unknown option (settings: \(DaemonSetting.all.map(\.flag).joined(separator: ", ")))")
            }
            let value: String
            if parts.count == 2 {
                value = parts[1]
            } else if let next = rest.popFirst() {
                value = next
            } else {
                throw ConfigError(source: setting.flag, field: setting.key, message: "needs a value")
            }
            try setting.apply(value, to: &self, source: setting.flag)
        }
    }

    public var metricsAddress: (host: String, port: Int)? {
        guard let listen = metricsListen, let colon = listen.lastIndex(of: ":"),
            let port = Int(listen[listen.index(after: colon)...])
        else { return nil }
        return (String(listen[..<colon]).trimmingCharacters(in: CharacterSet(charactersIn: "[]")), port)
    }
}

/// One daemon setting: its name (the YAML key; `NND_` + upper case is its environment
/// variable, `--` + dashes its flag), what it means, the value the systemd service uses, and
/// how a value is checked and stored.
public struct DaemonSetting: Sendable {
    public let key: String
    /// One line: `nnd serve --help` and the first comment line in etc/nnd/nnd.yaml.
    public let summary: String
    /// Further comment lines for etc/nnd/nnd.yaml.
    public let details: [String]
    /// What `etc/nnd/nnd.yaml` sets it to (the systemd service's value).
    public let serviceValue: String
    /// The default when nothing sets it, in words.
    public let defaultValue: String
    /// The service gets the value from its unit (`RuntimeDirectory=`, `StateDirectory=`) or the
    /// machine: etc/nnd/nnd.yaml shows it commented out, so one place decides.
    public var serviceUsesDefault = false
    let store: @Sendable (String, inout DaemonConfig) throws(Problem) -> Void

    /// Why a value was refused; the setting and its source are added by `apply`.
    struct Problem: Error { var message: String }

    public var environmentVariable: String { "NND_" + key.uppercased() }
    public var flag: String { "--" + key.replacingOccurrences(of: "_", with: "-") }

    public static func named(_ key: String) -> DaemonSetting? { all.first { $0.key == key } }

    /// Checks `value` and stores it; a refusal names the source, the setting and the value.
    public func apply(_ value: String, to config: inout DaemonConfig, source: String) throws {
        do { try store(value, &config) } catch {
            throw DaemonConfig.ConfigError(source: source, field: key, message: "'\(value)' \(error.message)")
        }
    }

    public static let all: [DaemonSetting] = [
        DaemonSetting(
            key: "socket", summary: "Control socket (HTTP/1.1 + JSON).",
            details: ["The service's is /run/nnd/nnd.sock: its unit's RuntimeDirectory=nnd sets $RUNTIME_DIRECTORY."],
            serviceValue: "/run/nnd/nnd.sock",
            defaultValue:
                "$RUNTIME_DIRECTORY/nnd.sock under systemd, else $XDG_RUNTIME_DIR/nnd/nnd.sock, else /tmp/nnd-$UID/nnd.sock",
            serviceUsesDefault: true
        ) { value, config throws(Problem) in
            guard value.hasPrefix("/"), value.utf8.count < 100 else {
                throw Problem(message: "must be an absolute path shorter than 100 bytes")
            }
            config.socketPath = value
        },
        DaemonSetting(
            key: "socket_mode", summary: "Socket file mode (octal): owner and group may connect, nobody else.",
            details: [], serviceValue: "\"0660\"", defaultValue: "0660"
        ) { value, config throws(Problem) in
            guard let mode = Int(value, radix: 8), mode >= 0, mode <= 0o777 else {
                throw Problem(message: "must be an octal mode such as 0660")
            }
            config.socketMode = mode
        },
        DaemonSetting(
            key: "socket_group", summary: "Group given the socket: its members may drive nnd with nnctl.",
            details: [], serviceValue: "nnd", defaultValue: "the daemon's own group; empty means that too"
        ) { value, config throws(Problem) in
            config.socketGroup = value.isEmpty ? nil : value
        },
        DaemonSetting(
            key: "state_dir", summary: "Runs, checkpoints and models live here.",
            details: ["The service's is /var/lib/nnd: its unit's StateDirectory=nnd sets $STATE_DIRECTORY."],
            serviceValue: "/var/lib/nnd",
            defaultValue: "$STATE_DIRECTORY under systemd, else $XDG_STATE_HOME/nnd, else ~/.local/state/nnd",
            serviceUsesDefault: true
        ) { value, config throws(Problem) in
            guard value.hasPrefix("/") else { throw Problem(message: "must be an absolute path") }
            config.stateDirectory = value
        },
        DaemonSetting(
            key: "workers", summary: "Worker threads per run (data-parallel shards).",
            details: ["The service uses every online CPU; set a number to leave some to other work."],
            serviceValue: "2", defaultValue: "online CPUs", serviceUsesDefault: true
        ) { value, config throws(Problem) in
            config.workers = try integer(value, 1, 1024)
        },
        DaemonSetting(
            key: "max_concurrent_runs", summary: "Runs that train at once; the rest wait in the queue.",
            details: [], serviceValue: "1", defaultValue: "1"
        ) { value, config throws(Problem) in
            config.maxConcurrentRuns = try integer(value, 1, 64)
        },
        DaemonSetting(
            key: "max_request_bytes", summary: "Largest request body accepted, in bytes (specs are small).",
            details: [], serviceValue: "1048576", defaultValue: "1048576"
        ) { value, config throws(Problem) in
            config.maxRequestBytes = try integer(value, 1024, 64 << 20)
        },
        DaemonSetting(
            key: "request_timeout_seconds", summary: "Seconds a client has to send a complete request.",
            details: ["An idle or trickling connection is closed; a body still arriving after this gets 408."],
            serviceValue: "30", defaultValue: "30"
        ) { value, config throws(Problem) in
            config.requestTimeoutSeconds = try integer(value, 1, 3600)
        },
        DaemonSetting(
            key: "control_nice", summary: "Nice value (0-19) of the control plane's threads.",
            details: [
                "Socket I/O, HTTP and request handling take the moments training leaves idle instead of",
                "preempting a worker. 0: same priority as training.",
            ],
            serviceValue: "10", defaultValue: "10"
        ) { value, config throws(Problem) in
            config.controlNice = try integer(value, 0, 19)
        },
        DaemonSetting(
            key: "log_level", summary: "trace | debug | info | notice | warning | error | critical.",
            details: [], serviceValue: "info", defaultValue: "info"
        ) { value, config throws(Problem) in
            let levels = ["trace", "debug", "info", "notice", "warning", "error", "critical"]
            guard levels.contains(value) else {
                throw Problem(message: "is not a log level (\(levels.joined(separator: ", ")))")
            }
            config.logLevel = value
        },
        DaemonSetting(
            key: "data_dir", summary: "MNIST directory for run specs whose data.dir is null.",
            details: [], serviceValue: "/var/lib/nnd/datasets/mnist",
            defaultValue: "~/.local/share/nnd/datasets/mnist, else ../shared/datasets/mnist"
        ) { value, config throws(Problem) in
            config.dataDirectory = value.isEmpty ? nil : value
        },
        DaemonSetting(
            key: "metrics_listen", summary: "Also serve GET /metrics on this TCP address, e.g. 127.0.0.1:9464.",
            details: [
                "Off by default: /metrics is always on the control socket. Under systemd this needs the",
                "drop-in that lets the service use IP sockets (see docs/api.md).",
            ],
            serviceValue: "null", defaultValue: "off"
        ) { value, config throws(Problem) in
            if value.isEmpty {
                config.metricsListen = nil
                return
            }
            guard let colon = value.lastIndex(of: ":"), let port = Int(value[value.index(after: colon)...]),
                port > 0, port < 65536, !value[..<colon].isEmpty
            else { throw Problem(message: "must be host:port, e.g. 127.0.0.1:9464") }
            config.metricsListen = value
        },
        DaemonSetting(
            key: "memory_budget",
            summary: "Memory the daemon's runs may hold together: bytes (8GiB, 512MiB) or a share (75%).",
            details: [
                "A run whose estimated peak (parameters, gradients, optimiser state, batch buffers, data set)",
                "does not fit is refused when created (422 insufficient_memory) and waits while running runs",
                "hold the rest. auto: the smaller of the cgroup's memory.max (MemoryMax= in the unit) and",
                "MemAvailable when the daemon starts.",
            ],
            serviceValue: "auto", defaultValue: "auto"
        ) { value, config throws(Problem) in
            let text = value.trimmingCharacters(in: .whitespaces)
            if text == "auto" || text.isEmpty {
                config.memoryBudget = nil
                config.memoryBudgetFraction = nil
            } else if text.hasSuffix("%"), let percent = Double(text.dropLast()), percent > 0, percent <= 100 {
                config.memoryBudget = nil
                config.memoryBudgetFraction = percent / 100
            } else if let bytes = byteCount(text), bytes >= 1 << 20 {
                config.memoryBudget = bytes
                config.memoryBudgetFraction = nil
            } else {
                throw Problem(
                    message: "must be auto, a size such as 8GiB or 512MiB (at least 1MiB), or a share such as 75%")
            }
        },
        DaemonSetting(
            key: "quarantine_after_crashes",
            summary: "Daemon deaths in a row, while a run trains without a new checkpoint, before it is not resumed.",
            details: [
                "A run that kills the daemon (out of memory, a crash) would otherwise be resumed first on every",
                "restart and kill it again. Such a run is marked failed with the reason; nnctl resume retries it.",
            ],
            serviceValue: "2", defaultValue: "2"
        ) { value, config throws(Problem) in
            config.quarantineAfterCrashes = try integer(value, 1, 100)
        },
        DaemonSetting(
            key: "keep_finished_runs_days",
            summary: "Finished runs (completed, stopped, failed) older than this many days are removed; 0 keeps them.",
            details: ["Applied at start and hourly, logged; removing a run removes its checkpoints and metrics."],
            serviceValue: "30", defaultValue: "30"
        ) { value, config throws(Problem) in
            config.keepFinishedRunsDays = try integer(value, 0, 36500)
        },
        DaemonSetting(
            key: "keep_finished_runs",
            summary: "Of the finished runs, only the newest this many are kept; 0 keeps all.",
            details: [], serviceValue: "0", defaultValue: "0"
        ) { value, config throws(Problem) in
            config.keepFinishedRuns = try integer(value, 0, 1_000_000)
        },
        DaemonSetting(
            key: "keep_model_versions",
            summary: "Versions kept per model, newest first; 0 keeps all.",
            details: ["The current version and the one rollback would return to are never removed."],
            serviceValue: "10", defaultValue: "10"
        ) { value, config throws(Problem) in
            config.keepModelVersions = try integer(value, 0, 100_000)
        },
        DaemonSetting(
            key: "max_predict_rows",
            summary: "Records one prediction request (POST /v1/models/NAME/predict) may carry.",
            details: ["A request's body is also bounded by max_request_bytes."], serviceValue: "10000",
            defaultValue: "10000"
        ) { value, config throws(Problem) in
            config.maxPredictRows = try integer(value, 1, 1_000_000)
        },
    ]

    /// `8GiB`, `512MiB`, `2G`, `1048576`: bytes, or nil.
    static func byteCount(_ text: String) -> Int? {
        let units: [(String, Int)] = [
            ("KiB", 1 << 10), ("MiB", 1 << 20), ("GiB", 1 << 30), ("TiB", 1 << 40), ("K", 1 << 10), ("M", 1 << 20),
            ("G", 1 << 30), ("T", 1 << 40), ("B", 1),
        ]
        for (suffix, scale) in units where text.hasSuffix(suffix) {
            guard let number = Double(text.dropLast(suffix.count).trimmingCharacters(in: .whitespaces)),
                number >= 0, number * Double(scale) < 9e18
            else { return nil }
            return Int(number * Double(scale))
        }
        return Int(text)
    }

    static func integer(_ value: String, _ low: Int, _ high: Int) throws(Problem) -> Int {
        guard let number = Int(value), number >= low, number <= high else {
            throw Problem(message: "must be an integer from \(low) to \(high)")
        }
        return number
    }

    /// The commented settings file (etc/nnd/nnd.yaml is this text; a test keeps them equal).
    public static var exampleFile: String {
        var lines = [
            "# nnd daemon settings. Precedence: built-in defaults < this file < NND_* environment < flags.",
            "# Every setting is shown with the value the systemd service uses; a commented-out one is",
            "# the service's by default (from its unit or the machine). Generated by",
            "# `nnd settings --yaml` from Sources/NNDaemon/DaemonSettings.swift: change it there.",
        ]
        for setting in all {
            lines.append("")
            lines.append("# \(setting.summary)")
            lines += setting.details.map { "# \($0)" }
            lines.append("# Default: \(setting.defaultValue). \(setting.environmentVariable), \(setting.flag).")
            lines.append("\(setting.serviceUsesDefault ? "# " : "")\(setting.key): \(setting.serviceValue)")
        }
        return lines.joined(separator: "\n") + "\n"
    }

    /// The settings as a list, for `nnd serve --help` and `nnd settings`: flag and variable,
    /// then what it means. In the settings file each is `name: value` (the flag's name with
    /// underscores).
    public static var helpText: String {
        all.map { setting in
            "\(setting.flag), \(setting.environmentVariable)\n  \(setting.summary) Default: \(setting.defaultValue)."
        }.joined(separator: "\n")
    }
}
