import ArgumentParser
import Glibc
import NNAPI

#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

struct Predict: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Classify records with a model's current version (or --model-version).",
        discussion: """
            Reads IDX image files (plain or .gz, e.g. t10k-images-idx3-ubyte.gz), CSV files (the \
            model's input width of values per line, optionally the label first; a header line is \
            skipped) or 8-bit grayscale PNG files of the model's input size. Pixels and CSV values \
            are divided by --feature-scale, as in training. Prints one line per record, \
            `LABEL PROBABILITY`; with --labels (an IDX label file) or labelled CSV rows, also the \
            accuracy.

              nnctl predict mnist t10k-images-idx3-ubyte.gz --labels t10k-labels-idx1-ubyte.gz
            """)

    @Argument(help: "Model name (see nnctl models).")
    var model: String

    @Argument(help: ArgumentHelp("IDX, CSV or PNG files.", valueName: "file"))
    var files: [String]

    @OptionGroup var modelVersion: ModelVersionOption

    var version: String? { modelVersion.version }

    @Option(help: ArgumentHelp("IDX label file: print the accuracy against it.", valueName: "file"))
    var labels: String?

    @Option(help: "Divide pixels and CSV values by this (255: the seed's layout; 1: already scaled).")
    var featureScale: Float = 255

    @Option(help: "Classify only the first N records.")
    var limit: Int?

    @OptionGroup var connection: Connection

    /// Records per request, sent as packed float32 (`application/octet-stream`): 256 MNIST
    /// records are 784 KiB, under the daemon's default 1 MiB body limit.
    static let recordsPerRequest = 256

    func validate() throws {
        guard !files.isEmpty else { throw ValidationError("name at least one file to classify") }
        guard featureScale > 0, featureScale.isFinite else { throw ValidationError("--feature-scale must be positive") }
        if let limit, limit < 1 { throw ValidationError("--limit must be at least 1") }
    }

    func run() throws {
        let models = try connection.call("GET", "/v1/models", as: ModelList.self, quiet: true)
        guard let info = models.models.first(where: { $0.name == model }) else {
            throw Refused(message: "no model named \(model) (nnctl models lists them)")
        }
        guard let chosen = info.versions.first(where: { $0.version == (version ?? info.current) }) else {
            throw Refused(message: "model \(model) has no version \(version ?? "current")")
        }
        let reader = RecordFiles(width: chosen.layers.first ?? 0, scale: featureScale)
        var (inputs, truth): ([[Float]], [Int]?)
        do {
            (inputs, truth) = try reader.read(files)
            if let labels { truth = try RecordFiles.idxLabels(labels) }
        } catch let problem as RecordFiles.Problem {
            throw Refused(message: problem.description)
        }
        // Checked before --limit: a label file of another set (60,000 training labels for the
        // 10,000 test images) would otherwise pair the wrong labels and print a made-up accuracy.
        if let known = truth, known.count != inputs.count {
            throw Refused(message: "\(labels ?? files[0]): \(known.count) labels for \(inputs.count) records")
        }
        if let limit { inputs = Array(inputs.prefix(limit)) }
        var query = "/v1/models/\(model)/predict"
        if let version { query += "?version=\(version)" }
        var all = Prediction(model: model, version: chosen.version, labels: [], probabilities: [])
        var start = 0
        while start < inputs.count {
            let batch = inputs[start..<min(start + Self.recordsPerRequest, inputs.count)]
            // Little-endian float32, record after record: JSON would cost the daemon ~1 ms a record.
            var packed: [UInt8] = []
            packed.reserveCapacity(batch.count * reader.width * 4)
            for record in batch {
                for value in record { withUnsafeBytes(of: value.bitPattern.littleEndian) { packed += $0 } }
            }
            let answer = try connection.call(
                "POST", query, raw: packed, contentType: "application/octet-stream", as: Prediction.self, quiet: true)
            all.version = answer.version
            all.labels += answer.labels
            all.probabilities += answer.probabilities
            start += batch.count
        }
        if connection.json {
            print(String(decoding: try APIJSON.encoder.encode(all), as: UTF8.self))
            return
        }
        for (label, probabilities) in zip(all.labels, all.probabilities) {
            print("\(label) \(Output.printf("%.4f", probabilities[label]))")
        }
        if let truth {
            let correct = zip(all.labels, truth).filter { $0 == $1 }.count
            print(
                "accuracy \(Output.printf("%.2f", Double(correct) / Double(max(all.labels.count, 1)) * 100))% "
                    + "(\(correct)/\(all.labels.count) records, model \(model) version \(all.version))")
        }
    }
}

/// `--model-version V` of `predict` and `export`.
struct ModelVersionOption: ParsableArguments {
    @Option(
        name: .customLong("model-version"),
        help: ArgumentHelp("A model version instead of the current one.", valueName: "version"))
    var modelVersion: String?

    /// The same under its earlier name, still accepted from scripts; not in the help, where a bare
    /// `--version` is nnctl's own.
    @Option(name: .customLong("version"), help: .hidden)
    var legacyVersion: String?

    var version: String? { modelVersion ?? legacyVersion }
}
