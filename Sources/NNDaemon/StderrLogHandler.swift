import Foundation
import Logging

/// One line per event on stderr: `LEVEL message key=value …` (journald adds time and unit).
/// The `run` key, when present, comes first so `journalctl | grep run=ID` finds a run's lines.
/// When stderr is the journal (`JOURNAL_STREAM` names it), each line starts with its syslog
/// priority (`<3>` for error, …), so `journalctl -p err` and alerting on priority work; a
/// message or value with a newline is escaped (`\n`) so one event stays one journal entry.
public struct StderrLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level
    let label: String
    let journal: Bool

    public init(label: String, level: Logger.Level, journal: Bool = Self.stderrIsJournal()) {
        self.label = label
        self.logLevel = level
        self.journal = journal
    }

    /// `JOURNAL_STREAM` is `device:inode` of the journal's stream; it counts only while stderr
    /// is that stream (a redirected stderr inherits the variable but not the stream).
    public static func stderrIsJournal(environment: [String: String] = ProcessInfo.processInfo.environment) -> Bool {
        guard let stream = environment["JOURNAL_STREAM"] else { return false }
        let parts = stream.split(separator: ":").compactMap { UInt64($0) }
        var info = stat()
        guard parts.count == 2, fstat(STDERR_FILENO, &info) == 0 else { return false }
        return UInt64(info.st_dev) == parts[0] && UInt64(info.st_ino) == parts[1]
    }

    /// syslog(3) priorities, as sd-daemon(3) prefixes read them.
    static func priority(_ level: Logger.Level) -> Int {
        switch level {
        case .trace, .debug: 7
        case .info: 6
        case .notice: 5
        case .warning: 4
        case .error: 3
        case .critical: 2
        }
    }

    static func escaped(_ text: String) -> String {
        text.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\n", with: "\\n")
            .replacingOccurrences(of: "\r", with: "\\r")
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var all = self.metadata
        if let explicit = event.metadata { all.merge(explicit) { $1 } }
        if let error = event.error { all["error"] = "\(error)" }
        var text = journal ? "<\(Self.priority(event.level))>" : ""
        text += "\(event.level.rawValue.uppercased()) "
        if let run = all.removeValue(forKey: "run") { text += "run=\(run) " }
        text += Self.escaped("\(event.message)")
        for k in all.keys.sorted() {
            let v = Self.escaped("\(all[k]!)")
            text += " \(k)=" + (v.contains(" ") || v.isEmpty ? "\"\(v.replacingOccurrences(of: "\"", with: "'"))\"" : v)
        }
        FileHandle.standardError.write(Data((text + "\n").utf8))
    }
}
