import Foundation
import NNAPI
import NNCheckpoint
import NNData
import NNEngine
import NNNumerics

/// What the coverage-guided fuzzer (`Fuzz/`, libFuzzer) feeds the file readers, and what it
/// expects of them. Shared with the regression tests, which replay every input the fuzzer
/// ever crashed on (`Fuzz/regressions/<target>/`).
///
/// The expectation is the one users rely on: a reader either accepts an input and returns
/// consistent results, or refuses it with its own error type (`DataError`, `CheckpointError`)
/// naming the file. A trap, an unbounded allocation or another error type is a finding.
public enum FuzzTarget: String, CaseIterable, Sendable {
    case idx, gzip, csv, checkpoint

    /// CSV inputs use 16 pixels per record, so small inputs reach every branch.
    static let csvFeatures = 16

    /// nil when the reader behaved; otherwise what went wrong.
    public func check(_ input: [UInt8]) -> String? {
        do {
            switch self {
            case .idx:
                let dims = input.count > 3 && input[3] == 3 ? 3 : 1
                let a = try IDXReader.parse(input, file: "fuzz.idx", expectedDims: dims)
                if a.dims.count != dims || a.dims.reduce(1, *) != a.bytes.count {
                    return "idx: accepted with dims \(a.dims) but \(a.bytes.count) body bytes"
                }
            case .gzip:
                _ = try Gzip.decompress(input, file: "fuzz.gz")
            case .csv:
                let d = try CSVReader.parse(input, file: "fuzz.csv", featureCount: Self.csvFeatures)
                if d.features.count != d.count * Self.csvFeatures || d.labels.contains(where: { $0 < 0 || $0 >= 10 }) {
                    return "csv: accepted \(d.count) records with \(d.features.count) values"
                }
            case .checkpoint:
                if let problem = checkCheckpoint(input) { return problem }
                // Most mutations fail the content hash; re-sign them to reach the parsing behind it.
                if let file = try? SafeTensors.decode(input, file: "fuzz.safetensors") {
                    var meta = file.metadata
                    meta["nnd.sha256"] = Checkpoint.contentHash(tensors: file.tensors, metadata: meta)
                    return checkCheckpoint(SafeTensors.encode(.init(tensors: file.tensors, metadata: meta)))
                }
            }
        } catch is DataError {
        } catch {
            return "\(rawValue): refused with an unexpected error type \(type(of: error)): \(error)"
        }
        return nil
    }

    private func checkCheckpoint(_ bytes: [UInt8]) -> String? {
        do {
            let c = try Checkpoint.decode(bytes, path: "fuzz.safetensors")
            let count = NetworkLayout(sizes: c.layers).parameterCount
            if c.parameters.count != count || c.optimizerState.contains(where: { $0.count != count }) {
                return "checkpoint: accepted layers \(c.layers) with \(c.parameters.count) parameters"
            }
        } catch is CheckpointError {
        } catch {
            return "checkpoint: refused with an unexpected error type \(type(of: error)): \(error)"
        }
        return nil
    }

    /// Valid inputs to start from: real MNIST files (cut small) and a checkpoint of a small network.
    public func seeds(mnistDirectory dir: String) throws -> [[UInt8]] {
        func file(_ name: String) throws -> [UInt8] {
            guard let d = FileManager.default.contents(atPath: "\(dir)/\(name)") else {
                throw DataError(file: "\(dir)/\(name)", "no such file")
            }
            return [UInt8](d)
        }
        switch self {
        case .gzip:
            return [try file("t10k-labels-idx1-ubyte.gz")]
        case .idx:
            let labels = try Gzip.decompress(file("t10k-labels-idx1-ubyte.gz"), file: "labels")
            let images = try Gzip.decompress(file("t10k-images-idx3-ubyte.gz"), file: "images")
            var fewLabels = Array(labels[0..<8])
            fewLabels[4...7] = [0, 0, 0, 20]
            fewLabels += labels[8..<28]
            var fewImages = Array(images[0..<16])
            fewImages[4...7] = [0, 0, 0, 2]
            fewImages += images[16..<(16 + 2 * 784)]
            return [fewLabels, fewImages]
        case .csv:
            let rows = (0..<4).map { r in
                ([String(r % 10)] + (0..<Self.csvFeatures).map { String(($0 * 37 + r * 11) % 256) }).joined(
                    separator: ",")
            }
            return [
                Array(
                    ("label," + (0..<Self.csvFeatures).map { "p\($0)" }.joined(separator: ",") + "\n"
                        + rows.joined(separator: "\n") + "\n").utf8)
            ]
        case .checkpoint:
            let layers = [4, 3, 2]
            let layout = NetworkLayout(sizes: layers)
            let params = (0..<layout.parameterCount).map { Float($0) * 0.01 - 0.05 }
            let state = ResumeState(
                epoch: 1, stepInEpoch: 2, epochRNGState: [1, 2, 3, 4], learningRate: 0.1,
                history: [
                    EpochRecord(
                        epoch: 1, cost: 0.5, learningRate: 0.1, trainAccuracy: 90, testAccuracy: 89, seconds: 1,
                        annealed: false)
                ],
                workers: 2, dataHash: "abc")
            return [Checkpoint(layers: layers, parameters: params, optimizerState: [params], state: state).encode()]
        }
    }
}
