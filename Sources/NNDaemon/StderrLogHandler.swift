import Foundation
import Logging

/// One line per event on stderr: `LEVEL message key=value …` (journald adds time and unit).
/// The `run` key, when present, comes first so `journalctl | grep run=ID` finds a run's lines.
public struct StderrLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level
    let label: String

    public init(label: String, level: Logger.Level) {
        self.label = label
        self.logLevel = level
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(
        level: Logger.Level, message: Logger.Message, metadata explicit: Logger.Metadata?, source: String, file: String,
        function: String, line: UInt
    ) {
        var all = self.metadata
        if let explicit { all.merge(explicit) { $1 } }
        var text = "\(level.rawValue.uppercased()) "
        if let run = all.removeValue(forKey: "run") { text += "run=\(run) " }
        text += "\(message)"
        for k in all.keys.sorted() {
            let v = "\(all[k]!)"
            text += " \(k)=" + (v.contains(" ") || v.isEmpty ? "\"\(v.replacingOccurrences(of: "\"", with: "'"))\"" : v)
        }
        FileHandle.standardError.write(Data((text + "\n").utf8))
    }
}
