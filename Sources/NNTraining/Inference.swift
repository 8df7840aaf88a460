import Foundation
import NNAPI
import NNCheckpoint
import NNData
import NNEngine
import NNNumerics

/// A trained network ready to predict: a checkpoint's parameters in a forward-only engine.
/// Used by eval, the HTML report and the promotion gate, so the daemon's HTTP layer only
/// decodes requests and encodes answers.
public struct Inference: Sendable {
    public let checkpoint: Checkpoint
    public let activation: Activation
    let engine: DataParallelEngine

    public enum Failure: Error, CustomStringConvertible, Sendable {
        /// The model's input width is not the data's feature count.
        case shapeMismatch(modelInputs: Int, dataFeatures: Int)
        public var description: String {
            switch self {
            case .shapeMismatch(let inputs, let features):
                "the model takes \(inputs) inputs, the data has \(features)"
            }
        }
    }

    /// Evaluation runs in chunks of this many records.
    static let chunk = 1024

    /// Inference needs no optimiser state, so the engine is a plain SGD engine of the same shape.
    public init(checkpoint: Checkpoint, activation: Activation, inputs: Int, workers: Int) throws(Failure) {
        guard checkpoint.layers.first == inputs else {
            throw .shapeMismatch(modelInputs: checkpoint.layers.first ?? 0, dataFeatures: inputs)
        }
        self.checkpoint = checkpoint
        self.activation = activation
        engine = DataParallelEngine(
            layout: NetworkLayout(sizes: checkpoint.layers), activation: activation,
            optimizer: OptimizerConfig(kind: .sgd), lambda: 0, workers: workers, maxBatch: Self.chunk)
        engine.parameters.load(checkpoint.parameters)
    }

    /// Accuracy (percent) and mean cost per record on `data`.
    public func evaluate(_ data: Dataset, which: EvaluationData, run: String) -> Evaluation {
        let result = engine.evaluate(data)
        return Evaluation(
            run: run, data: which, records: result.records, accuracy: result.accuracy * 100,
            cost: result.costSum / Double(max(result.records, 1)), epoch: checkpoint.state.epoch)
    }

    /// Class probabilities of `count` records laid out row by row in `inputs` (each the
    /// model's input width). Not reentrant: one caller at a time per `Inference`.
    public func probabilities(inputs: [Float], count: Int) -> [[Float]] {
        let width = checkpoint.layers.first ?? 0
        let features = FloatBuffer(count: count * width)
        features.load(inputs)
        let data = Dataset(
            features: features, labels: [Int32](repeating: 0, count: count), featureCount: width,
            classCount: checkpoint.layers.last ?? 0, sources: [])
        return engine.probabilities(data, range: 0..<count)
    }

    /// Per record of `data`: the predicted class and the probability given to the true class.
    public func predictions(_ data: Dataset) -> (labels: [Int32], trueClassProbability: [Float]) {
        let probabilities = engine.probabilities(data, range: 0..<data.count)
        let labels = probabilities.map { row in Int32(row.indices.max { row[$0] < row[$1] } ?? 0) }
        let trueClass = probabilities.enumerated().map { $0.element[Int(data.labels[$0.offset])] }
        return (labels, trueClass)
    }

    /// The HTML report of a run from its latest checkpoint, with the test set's predictions.
    public func report(run: RunRecord, test: Dataset) -> String {
        let (labels, trueClass) = predictions(test)
        let machine = TrainingReport.Machine(
            cores: ProcessInfo.processInfo.activeProcessorCount, numaNodes: NUMATopology.detect().nodes.count,
            blasKernel: BLAS.kernelName, workers: run.workers)
        return TrainingReport(
            runID: run.id, spec: run.spec, state: run.state.rawValue, history: run.history, machine: machine,
            test: test,
            predictions: labels, trueClassProbability: trueClass, checkpointEpoch: checkpoint.state.epoch,
            trainRecords: run.trainRecords ?? checkpoint.state.trainRecords,
            dataFingerprint: run.dataFingerprint ?? checkpoint.state.dataFingerprint
        ).html()
    }
}
