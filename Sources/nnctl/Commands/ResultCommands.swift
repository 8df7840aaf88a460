import ArgumentParser
import Foundation
import NNAPI

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
        abstract: "Write a run's latest weights to a file.",
        discussion: """
            safetensors holds the checkpoint as nnd stores it (tensors theta1.. and bias1..); npz \
            is numpy's format in the layout the seed's loadWeights reads.
            """)

    @OptionGroup var target: RunArgument

    @Option(help: "File format.")
    var format: ExportFormat = .safetensors

    @Option(name: .shortAndLong, help: ArgumentHelp("Output file.", valueName: "file"))
    var output: String

    @OptionGroup var connection: Connection

    func run() throws {
        let bytes = try connection.download(runPath(target.run, "/export?format=\(format.rawValue)"), to: output)
        print("wrote \(output) (\(bytes) bytes, \(format.rawValue))")
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
        print("wrote \(output) (\(bytes) bytes)")
    }
}
