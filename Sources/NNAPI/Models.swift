#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

/// One stored version of a model (`<state>/models/<model>/<version>/info.json`).
public struct ModelVersion: Codable, Sendable, Equatable {
    public var version: String
    /// The run that trained it.
    public var run: String
    /// Accuracies in percent, measured when the run completed.
    public var testAccuracy: Double
    public var trainAccuracy: Double
    public var createdAt: Date
    /// The network, so the model can be evaluated without its run: layers and hidden activation.
    public var layers: [Int]
    public var activation: Activation
    /// What it was trained on: training records and the data fingerprint (absent in versions
    /// stored before they were recorded).
    public var trainRecords: Int?
    public var dataFingerprint: String?

    public init(
        version: String, run: String, testAccuracy: Double, trainAccuracy: Double, createdAt: Date, layers: [Int],
        activation: Activation, trainRecords: Int? = nil, dataFingerprint: String? = nil
    ) {
        self.trainRecords = trainRecords
        self.dataFingerprint = dataFingerprint
        self.version = version
        self.run = run
        self.testAccuracy = testAccuracy
        self.trainAccuracy = trainAccuracy
        self.createdAt = createdAt
        self.layers = layers
        self.activation = activation
    }
}

/// A model: its versions, oldest first, and which one is current.
public struct ModelInfo: Codable, Sendable {
    public var name: String
    public var current: String?
    public var versions: [ModelVersion]

    public init(name: String, current: String?, versions: [ModelVersion]) {
        self.name = name
        self.current = current
        self.versions = versions
    }
}

/// `GET /v1/models`.
public struct ModelList: Codable, Sendable {
    public var models: [ModelInfo]
    public init(models: [ModelInfo]) { self.models = models }
}

/// `POST /v1/models/{model}/promote`.
public struct PromoteRequest: Codable, Sendable {
    public var version: String
    public init(version: String) { self.version = version }
}

/// The answer to promote and rollback: the model's current version after the change.
public struct ModelPointer: Codable, Sendable {
    public var model: String
    public var current: String
    public init(model: String, current: String) {
        self.model = model
        self.current = current
    }
}

/// The promotion gate's decision for a completed retraining run.
public struct PromotionOutcome: Codable, Sendable {
    public var model: String
    public var version: String
    public var promoted: Bool
    public var newTestAccuracy: Double
    public var currentVersion: String?
    public var currentTestAccuracy: Double?
    public var margin: Double
    /// The decision in a sentence, as logged and printed by `nnctl retrain`.
    public var message: String

    public init(
        model: String, version: String, promoted: Bool, newTestAccuracy: Double, currentVersion: String?,
        currentTestAccuracy: Double?, margin: Double, message: String
    ) {
        self.model = model
        self.version = version
        self.promoted = promoted
        self.newTestAccuracy = newTestAccuracy
        self.currentVersion = currentVersion
        self.currentTestAccuracy = currentTestAccuracy
        self.margin = margin
        self.message = message
    }
}

/// `POST /v1/models/{model}/predict[?version=V]`: records to classify, each the model's input
/// width of values already scaled as in training (MNIST: pixel / 255). Float32, as the model
/// computes: a client that sends Float's shortest text gets exactly the values it had.
public struct PredictRequest: Codable, Sendable {
    public var inputs: [[Float]]
    public init(inputs: [[Float]]) { self.inputs = inputs }

    /// Read as Double and narrowed, so that a value Float cannot hold becomes ±inf — refused by
    /// the daemon naming its row and column — rather than a parse error that names nothing.
    public init(from decoder: Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        inputs = try container.decode([[Double]].self, forKey: .inputs).map { $0.map(Float.init) }
    }
}

/// The answer to a prediction: per record the most probable class and every class's probability.
public struct Prediction: Codable, Sendable {
    public var model: String
    public var version: String
    public var labels: [Int]
    public var probabilities: [[Double]]

    public init(model: String, version: String, labels: [Int], probabilities: [[Double]]) {
        self.model = model
        self.version = version
        self.labels = labels
        self.probabilities = probabilities
    }
}
