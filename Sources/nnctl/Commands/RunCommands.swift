import ArgumentParser
import Glibc
import NNAPI

#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

struct Start: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create a run from a spec file; it starts when a slot is free.",
        discussion: """
            The spec is YAML (see etc/nnd/runs/). --set changes one field without editing the file:
              nnctl start etc/nnd/runs/mnist-seed.yaml --set training.epochs=5 --wait
            """)

    @Argument(help: ArgumentHelp("Run spec (YAML).", valueName: "spec.yaml"))
    var spec: String

    @Option(help: "Run name (default: the spec's name).")
    var name: String?

    @Option(
        name: .customLong("set"), help: ArgumentHelp("Override a spec field (repeatable).", valueName: "field=value"))
    var overrides: [String] = []

    @Flag(help: "Follow the run until it ends; exit 0 only if it completed.")
    var wait = false

    @OptionGroup var follow: FollowOptions
    @OptionGroup var connection: Connection

    func run() throws {
        let request = CreateRunRequest(specYAML: try readSpec(spec), name: name, overrides: overrides)
        let run = try createRun(request, file: spec, connection: connection)
        if !connection.json { print("started \(run.id) (\(run.state.rawValue))") }
        if wait { try RunFollower(connection: connection, options: follow).follow(run.id) }
    }
}

/// `POST /v1/runs`; a refused spec's message says where the problem is, as `nnd train`'s does:
/// `training.epochs: -2 must be between 1 and 100000 (in nightly.yaml)`, or `(from --set …)`.
func createRun(_ request: CreateRunRequest, file: String, connection: Connection) throws -> RunRecord {
    do {
        return try connection.call("POST", "/v1/runs", body: request, as: RunRecord.self)
    } catch let refused as Refused {
        guard var error = refused.apiError, error.code == "invalid_spec" else { throw refused }
        error.message = specProblemMessage(
            error.message, field: error.field, source: requestSpecSource, file: file,
            overrides: request.overrides ?? [])
        throw Refused(error)
    }
}

/// The spec file's text, or a usage error naming the file and why.
func readSpec(_ path: String) throws -> String {
    let bytes: [UInt8]
    do { bytes = try LocalFile.bytes(path) } catch {
        throw UsageProblem(message: "\(path): cannot read the run spec: \(error.reason)")
    }
    guard let text = String(validating: bytes, as: UTF8.self) else {
        throw UsageProblem(message: "\(path): the run spec is not UTF-8 text")
    }
    return text
}

struct Status: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show one run in detail, or the daemon and all runs.")

    @Argument(help: ArgumentHelp("The run's id or name (default: the daemon and every run).", valueName: "run"))
    var target: String?

    @OptionGroup var connection: Connection

    func run() throws {
        if let target {
            let record = try connection.call("GET", runPath(target), as: RunRecord.self)
            if !connection.json { Output.run(record) }
            return
        }
        let health = try connection.call("GET", "/v1/health", as: Health.self)
        guard !connection.json else { return }
        Output.health(health)
        Output.runs(try connection.call("GET", "/v1/runs", as: RunList.self).runs)
    }
}

struct List: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List runs, oldest first.")

    @OptionGroup var connection: Connection

    func run() throws {
        let list = try connection.call("GET", "/v1/runs", as: RunList.self)
        if !connection.json { Output.runs(list.runs) }
    }
}

struct Watch: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Follow a run's progress until it ends; exit 0 if it completed, 4 if it failed or stopped.",
        discussion: """
            If the daemon restarts meanwhile, watch reconnects (for up to --reconnect-timeout \
            seconds) and carries on with the resumed run.
            """)

    @OptionGroup var target: RunArgument
    @OptionGroup var follow: FollowOptions
    @OptionGroup var connection: Connection

    func run() throws { try RunFollower(connection: connection, options: follow).follow(target.run) }
}

/// `pause` and `stop` return once the run has settled (paused, stopped, or ended on its own
/// meanwhile); `resume` only queues it.
struct RunTransition {
    let action: String

    func perform(_ run: String, wait: Bool, connection: Connection) throws {
        var record = try connection.call("POST", runPath(run, "/\(action)"), as: RunRecord.self)
        let deadline = Date().addingTimeInterval(120)
        while wait && !record.state.isSettled {
            guard Date() < deadline else {
                throw Refused(message: "run \(record.id) is still \(record.state.rawValue) after 120 s")
            }
            usleep(100_000)
            record = try connection.call("GET", runPath(record.id), as: RunRecord.self, quiet: true)
        }
        if !connection.json { print("\(record.id): \(action) → \(record.state.rawValue)") }
    }
}

/// What `pause` and `stop` take: the run, `--no-wait`, the connection.
struct WaitingTransitionArguments: ParsableArguments {
    @OptionGroup var target: RunArgument

    @Flag(help: "Return as soon as the daemon accepted the request.")
    var noWait = false

    @OptionGroup var connection: Connection

    func perform(_ action: String) throws {
        try RunTransition(action: action).perform(target.run, wait: !noWait, connection: connection)
    }
}

struct Pause: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Pause a run at its next step; returns once it is paused (it checkpoints first).")

    @OptionGroup var arguments: WaitingTransitionArguments

    func run() throws { try arguments.perform("pause") }
}

struct Resume: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Resume a paused, stopped or failed run from its last checkpoint.")

    @OptionGroup var target: RunArgument
    @OptionGroup var connection: Connection

    func run() throws { try RunTransition(action: "resume").perform(target.run, wait: false, connection: connection) }
}

struct Stop: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Stop a run at its next step; returns once it is stopped (it checkpoints; `resume` continues it).")

    @OptionGroup var arguments: WaitingTransitionArguments

    func run() throws { try arguments.perform("stop") }
}

struct Remove: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rm",
        abstract: "Remove finished runs with their checkpoints and metrics.",
        discussion: """
            Only completed, stopped and failed runs can be removed (stop a run first). Model \
            versions a run promoted stay in the model registry. The daemon also removes finished \
            runs by itself: see keep_finished_runs_days in nnd.yaml.
            """)

    @Argument(help: ArgumentHelp("The runs' ids or names.", valueName: "run"))
    var runs: [String]

    @OptionGroup var connection: Connection

    func validate() throws {
        guard !runs.isEmpty else { throw ValidationError("name at least one run to remove") }
    }

    func run() throws {
        var refused: [String] = []
        for run in runs {
            do {
                let removed = try connection.call("DELETE", runPath(run), as: RunRecord.self)
                if !connection.json { print("removed \(removed.id) (\(removed.state.rawValue))") }
            } catch let error as Refused {
                refused.append("\(run): \(error.message)")
            }
        }
        if !refused.isEmpty { throw Refused(message: refused.joined(separator: "\nnnctl: ")) }
    }
}
