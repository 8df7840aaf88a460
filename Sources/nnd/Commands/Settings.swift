import ArgumentParser
import NNDaemon

struct Settings: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List the daemon's settings, or print the commented settings file.",
        discussion: "`nnd settings --yaml > /etc/nnd/nnd.yaml` writes a file with every setting explained.")

    @Flag(help: "Print the commented YAML settings file (etc/nnd/nnd.yaml).")
    var yaml = false

    func run() {
        print(yaml ? DaemonSetting.exampleFile : DaemonSetting.helpText, terminator: yaml ? "" : "\n")
    }
}
