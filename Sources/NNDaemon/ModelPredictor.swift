import Foundation
import NNAPI
import NNCheckpoint
import NNTraining
import Synchronization

/// Serves predictions from stored model versions. Each version is loaded once and kept; the
/// current version of a model is looked up on every request, so a promotion (or rollback)
/// takes effect with the next prediction, and the previous version's engine is dropped
/// then. An engine serves one prediction at a time (its buffers are its own).
final class ModelPredictor: Sendable {
    let registry: ModelRegistry
    let maxRows: Int

    private final class Loaded: Sendable {
        let version: String
        let inference: Inference
        let busy = Mutex(())
        init(version: String, inference: Inference) {
            self.version = version
            self.inference = inference
        }
    }
    /// Model name → its most recently used version.
    private let loaded = Mutex<[String: Loaded]>([:])

    init(registry: ModelRegistry, maxRows: Int) {
        self.registry = registry
        self.maxRows = maxRows
    }

    /// A request's records: JSON rows, or one packed float32 array (`application/octet-stream`).
    enum Inputs: Sendable {
        case rows([[Float]])
        case packed([Float])
    }

    /// Checks the request against the model before any work: every record the model's width,
    /// every value finite, at most `maxRows` records.
    func predict(model: String, version requested: String?, inputs: Inputs) throws(APIError) -> Prediction {
        let version = try registry.resolve(model: model, version: requested)
        let width = version.layers.first ?? 0
        // Counted before any value is looked at: a request over the limit costs nothing more.
        let count =
            switch inputs {
            case .rows(let rows): rows.count
            case .packed(let values): width > 0 ? (values.count + width - 1) / width : 0
            }
        guard count > 0 else {
            throw APIError(422, "invalid_value", "inputs is empty: give at least one record", field: "inputs")
        }
        guard count <= maxRows else {
            throw APIError(
                422, "too_many_rows",
                "inputs has \(count) records; at most \(maxRows) per request (max_predict_rows)", field: "inputs")
        }
        let flat: [Float]
        switch inputs {
        case .rows(let rows):
            flat = try Self.flatten(rows, width: width, model: model, version: version.version)
        case .packed(let values):
            guard values.count % width == 0 else {
                throw APIError(
                    422, "invalid_value",
                    "the body holds \(values.count) float32 values, not a whole number of records of \(width) "
                        + "(model \(model) version \(version.version))", field: "inputs")
            }
            if let bad = values.firstIndex(where: { !$0.isFinite }) {
                throw APIError(
                    422, "invalid_value",
                    "record \(bad / width), value \(bad % width) is \(values[bad]), not a finite number",
                    field: "inputs[\(bad / width)][\(bad % width)]")
            }
            flat = values
        }
        let engine = try load(model: model, version: version)
        let probabilities = engine.busy.withLock { _ in
            engine.inference.probabilities(inputs: flat, count: count)
        }
        return Prediction(
            model: model, version: version.version,
            labels: probabilities.map { row in row.indices.max { row[$0] < row[$1] } ?? 0 },
            probabilities: probabilities.map { $0.map(Double.init) })
    }

    /// JSON rows as one array, each row checked for its width and finite values.
    static func flatten(_ inputs: [[Float]], width: Int, model: String, version: String) throws(APIError) -> [Float] {
        var flat: [Float] = []
        flat.reserveCapacity(inputs.count * width)
        for (row, values) in inputs.enumerated() {
            guard values.count == width else {
                throw APIError(
                    422, "invalid_value",
                    "inputs[\(row)] has \(values.count) values; model \(model) version \(version) takes \(width)",
                    field: "inputs[\(row)]")
            }
            for (column, value) in values.enumerated() {
                guard value.isFinite else {
                    throw APIError(
                        422, "invalid_value", "inputs[\(row)][\(column)] is \(value), not a finite number",
                        field: "inputs[\(row)][\(column)]")
                }
                flat.append(value)
            }
        }
        return flat
    }

    private func load(model: String, version: ModelVersion) throws(APIError) -> Loaded {
        if let hit = loaded.withLock({ $0[model] }), hit.version == version.version { return hit }
        let checkpoint: Checkpoint
        do { checkpoint = try registry.load(model, version.version) } catch let error as ModelRegistry.RegistryError {
            throw error.api
        } catch {
            throw APIError(500, "internal", "cannot load model \(model) version \(version.version): \(error)")
        }
        let inference: Inference
        do {
            inference = try Inference(
                checkpoint: checkpoint, activation: version.activation, inputs: checkpoint.layers.first ?? 0, workers: 1
            )
        } catch {
            throw APIError(500, "internal", "model \(model) version \(version.version): \(error.description)")
        }
        let fresh = Loaded(version: version.version, inference: inference)
        loaded.withLock { $0[model] = fresh }
        return fresh
    }
}
