import ArgumentParser
import Glibc
import NNAPI

#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

struct Eval: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Evaluate a run's latest checkpoint.")

    @OptionGroup var target: RunArgument

    @Option(help: "Which data set to evaluate on.")
    var data: EvaluationData = .test

    @OptionGroup var connection: Connection

    func run() throws {
        let evaluation = try connection.call(
            "POST", runPath(target.run, "/eval"), body: EvaluationRequest(data: data), as: Evaluation.self)
        if !connection.json { Output.evaluation(evaluation) }
    }
}

struct Export: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a run's latest weights, or a model version's, to a file.",
        discussion: """
            onnx is a standard ONNX graph (opset 13) that any ONNX runtime runs: input float32 \
            [N, inputs] scaled as in training, output probabilities [N, classes]. safetensors \
            holds the checkpoint as nnd stores it (tensors theta_1.. and bias_1..); npz (runs \
            only) is numpy's format in the layout the seed's loadWeights reads.

              nnctl export nightly --format onnx -o nightly.onnx
              nnctl export --model mnist --format onnx -o mnist.onnx
              nnctl export --model mnist --model-version v3 --format onnx -o mnist-v3.onnx
            """)

    @Argument(help: ArgumentHelp("The run's id, or its name (the newest run of that name).", valueName: "run"))
    var runName: String?

    @Option(help: "Export a model's current version instead of a run's weights.")
    var model: String?

    @OptionGroup var modelVersion: ModelVersionOption

    var version: String? { modelVersion.version }

    @Option(help: "File format.")
    var format: ExportFormat = .safetensors

    @Option(name: .shortAndLong, help: ArgumentHelp("Output file.", valueName: "file"))
    var output: String

    @OptionGroup var connection: Connection

    func validate() throws {
        guard (runName == nil) != (model == nil) else { throw ValidationError("name a run or --model, not both") }
        if version != nil, model == nil { throw ValidationError("--model-version needs --model") }
    }

    func run() throws {
        var path: String
        if let model {
            path = "/v1/models/\(model)/export?format=\(format.rawValue)"
            if let version { path += "&version=\(version)" }
        } else {
            path = runPath(runName ?? "", "/export?format=\(format.rawValue)")
        }
        let bytes = try connection.download(path, to: output)
        Output.written(output, bytes: bytes, format: format.rawValue, json: connection.json)
    }
}

struct Report: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a self-contained HTML training report.",
        discussion: "Cost and accuracy curves, confusion matrix, test digits, the network, timings and machine.")

    @OptionGroup var target: RunArgument

    @Option(name: .shortAndLong, help: ArgumentHelp("Output file, e.g. report.html.", valueName: "file"))
    var output: String

    @OptionGroup var connection: Connection

    func run() throws {
        let bytes = try connection.download(runPath(target.run, "/report"), to: output)
        Output.written(output, bytes: bytes, json: connection.json)
    }
}
