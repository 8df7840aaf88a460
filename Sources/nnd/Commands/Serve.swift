import ArgumentParser
import Foundation
import NNDaemon
import NNData

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the daemon: the control API on a Unix socket, runs in a state directory.",
        discussion: """
            Settings come from built-in defaults, then the --config file, then NND_* environment \
            variables, then these flags (the last one wins); a bad value stops the daemon with \
            its source, the setting and the value. `nnd settings` lists them; etc/nnd/nnd.yaml \
            is a commented file with all of them.

            \(DaemonSetting.helpText)
            """)

    @Option(help: ArgumentHelp("YAML settings file, e.g. /etc/nnd/nnd.yaml (also NND_CONFIG).", valueName: "file"))
    var config: String?

    /// The setting flags, checked against `DaemonSetting.all` (ArgumentParser declares options
    /// statically; the settings table is the one place they are declared).
    @Argument(
        parsing: .allUnrecognized,
        help: ArgumentHelp("Any setting as --name value (listed below).", valueName: "setting-flags"))
    var settingFlags: [String] = []

    func run() async throws {
        var settings = DaemonConfig.userDefaults()
        do {
            let environment = ProcessInfo.processInfo.environment
            if let path = config ?? environment["NND_CONFIG"] {
                let text: String
                do { text = try TextFile.read(path, what: "the settings file") } catch {
                    throw DaemonConfig.ConfigError(source: path, field: "", message: error.problem)
                }
                try settings.apply(yaml: text, source: path)
            }
            try settings.apply(environment: environment)
            try settings.apply(flags: settingFlags)
        } catch {
            stderrLine("nnd: \(error)")
            throw ExitCode(2)
        }
        do { try await Daemon.run(config: settings) } catch let error as Daemon.UnsafeSocketDirectory {
            stderrLine("nnd: \(error)")
            throw ExitCode(2)
        } catch {
            stderrLine("nnd: \(error)")
            throw ExitCode(1)
        }
    }
}
