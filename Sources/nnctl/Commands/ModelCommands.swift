import ArgumentParser
import Glibc
import NNAPI
import NNControl

#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

struct Retrain: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract:
            "Train a spec, then promote the model unless it is worse than the current one by more than the margin.",
        discussion: """
            The run is evaluated on the held-out test set next to the current model; either way \
            the new version is stored (see nnctl models). Exit 0 when the run completed (promoted \
            or not; the decision is printed), 4 when it failed or was stopped. A daemon restart \
            meanwhile is survived: nnctl reconnects and waits for the resumed run.
            """)

    @Argument(help: ArgumentHelp("Run spec (YAML); its promotion section names the model.", valueName: "spec.yaml"))
    var spec: String

    @Option(help: "Model name (default: the spec's promotion.model, else the spec's name).")
    var model: String?

    @Option(help: "Allowed drop in test accuracy, in percentage points (default: the spec's, else 0.1).")
    var margin: Double?

    @Flag(help: "Start from the current model's weights.")
    var warmStart = false

    @Option(
        name: .customLong("set"), help: ArgumentHelp("Override a spec field (repeatable).", valueName: "field=value"))
    var overrides: [String] = []

    @OptionGroup var follow: FollowOptions
    @OptionGroup var connection: Connection

    func run() throws {
        let text = try readSpec(spec)
        var overrides = self.overrides
        let hasPromotion = text.split(separator: "\n").contains { $0.hasPrefix("promotion:") }
        if let model {
            overrides.append("promotion.model=\(model)")
        } else if !hasPromotion {
            overrides.append("promotion.model=\(topLevelValue(of: "name", in: text) ?? "model")")
        }
        if let margin { overrides.append("promotion.margin=\(margin)") }
        if warmStart { overrides.append("promotion.warm_start=true") }
        let run = try createRun(
            CreateRunRequest(specYAML: text, overrides: overrides), file: spec, connection: connection)
        if !connection.json { print("retraining: run \(run.id)") }
        let done = try RunFollower(connection: connection, options: follow).follow(run.id)
        if let promotion = done.promotion, !connection.json { print(promotion.message) }
    }

    /// Just enough reading of the spec to default the model name; the daemon validates the spec.
    func topLevelValue(of key: String, in text: String) -> String? {
        for line in text.split(separator: "\n") where line.hasPrefix("\(key):") {
            let value = (line.dropFirst(key.count + 1).split(separator: "#").first ?? "")
                .trimmedWhitespace
            return value.isEmpty ? nil : value
        }
        return nil
    }
}

struct Models: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List models with their versions, accuracies and dates; * marks the current version.")

    @OptionGroup var connection: Connection

    func run() throws {
        let list = try connection.call("GET", "/v1/models", as: ModelList.self)
        if !connection.json { Output.models(list.models) }
    }
}

struct Promote: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Make a model version current.")

    @Argument(help: "Model name.")
    var model: String

    @Argument(help: "Version (see nnctl models).")
    var version: String

    @OptionGroup var connection: Connection

    func run() throws {
        let pointer = try connection.call(
            "POST", "/v1/models/\(model)/promote", body: PromoteRequest(version: version), as: ModelPointer.self)
        if !connection.json { print("\(pointer.model): current is now \(pointer.current)") }
    }
}

struct Rollback: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Make the previously current version of a model current again.")

    @Argument(help: "Model name.")
    var model: String

    @OptionGroup var connection: Connection

    func run() throws {
        let pointer = try connection.call("POST", "/v1/models/\(model)/rollback", as: ModelPointer.self)
        if !connection.json { print("\(pointer.model): rolled back, current is now \(pointer.current)") }
    }
}
