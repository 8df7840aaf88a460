import Hummingbird
import NNAPI
import NNCheckpoint

/// `/v1/models`: the model registry (versions, current, promote, rollback).
struct ModelsController {
    let registry: ModelRegistry
    let predictor: ModelPredictor

    func addRoutes(to routes: APIRoutes) {
        routes.get("/v1/models", use: list)
        routes.post("/v1/models/:name/predict", use: predict)
        routes.post("/v1/models/:name/promote", use: promote)
        routes.post("/v1/models/:name/rollback", use: rollback)
    }

    @Sendable func list(_ request: Request, context: APIRequestContext) async throws -> ModelList {
        ModelList(models: registry.list())
    }

    @Sendable func promote(_ request: Request, context: APIRequestContext) async throws -> ModelPointer {
        let model = try context.name("name")
        let version = try await request.decode(as: PromoteRequest.self, context: context).version
        guard RunManager.isValidID(version) else {
            throw APIError(422, "invalid_value", "version must be one of the model's version names", field: "version")
        }
        do { try registry.promote(model: model, version: version) } catch let error as ModelRegistry.RegistryError {
            throw error.api
        }
        return ModelPointer(model: model, current: version)
    }

    /// Classifies records with the model's current version (or `?version=`).
    @Sendable func predict(_ request: Request, context: APIRequestContext) async throws -> Prediction {
        let model = try context.name("name")
        let version: String? = request.uri.queryParameters.get("version").map { String($0) }
        if let version, !RunManager.isValidID(version) {
            throw APIError(422, "invalid_value", "version must be one of the model's version names", field: "version")
        }
        let inputs: ModelPredictor.Inputs
        switch try APIContentType.require(.json, .float32, of: request) {
        case .float32:
            // Bulk scoring: the records as little-endian float32, one after another, no JSON.
            let body = try await request.body.collect(upTo: .max)
            guard body.readableBytes % 4 == 0 else {
                throw APIError(
                    422, "invalid_value",
                    "the body is \(body.readableBytes) bytes, not a whole number of float32 values", field: "inputs")
            }
            var values = [Float](repeating: 0, count: body.readableBytes / 4)
            values.withUnsafeMutableBytes { target in
                body.readableBytesView.withUnsafeBytes { target.copyMemory(from: $0) }
            }
            inputs = .packed(values.map { Float(bitPattern: UInt32(littleEndian: $0.bitPattern)) })
        default:
            inputs = .rows(try await request.decode(as: PredictRequest.self, context: context).inputs)
        }
        let predictor = self.predictor
        return try await offload { try predictor.predict(model: model, version: version, inputs: inputs) }
    }

    @Sendable func rollback(_ request: Request, context: APIRequestContext) async throws -> ModelPointer {
        let model = try context.name("name")
        do { return ModelPointer(model: model, current: try registry.rollback(model: model)) } catch let error
            as ModelRegistry.RegistryError
        { throw error.api }
    }
}

extension ModelRegistry.RegistryError {
    var api: APIError {
        switch self {
        case .notFound(let message): APIError(404, "not_found", message)
        case .conflict(let message): APIError(409, "illegal_transition", message)
        case .io(let message): APIError(507, "storage", message)
        }
    }
}
