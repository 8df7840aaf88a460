import Hummingbird
import NNAPI
import NNCheckpoint

/// `/v1/models`: the model registry (versions, current, promote, rollback).
struct ModelsController {
    let registry: ModelRegistry
    let predictor: ModelPredictor

    func addRoutes(to routes: APIRoutes) {
        routes.get("/v1/models", use: list)
        routes.get("/v1/models/:name/export", query: ["format", "version"], use: export)
        routes.post("/v1/models/:name/predict", query: ["version"], use: predict)
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
        let version = try Self.versionParameter(request)
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

    /// A model version's weights (the current one, or `?version=`) as ONNX or safetensors.
    @Sendable func export(_ request: Request, context: APIRequestContext) async throws -> Response {
        let model = try context.name("name")
        let format = try ExportFile.format(of: request)
        let version = try registry.resolve(model: model, version: try Self.versionParameter(request))
        let checkpoint: Checkpoint
        do { checkpoint = try registry.load(model, version.version) } catch let error as ModelRegistry.RegistryError {
            throw error.api
        }
        var properties = [("model", model), ("version", version.version), ("run", version.run)]
        if let fingerprint = version.dataFingerprint { properties.append(("data_fingerprint", fingerprint)) }
        let bytes: [UInt8]
        switch format {
        case .safetensors: bytes = checkpoint.encode()
        case .onnx:
            bytes = try ExportFile.onnx(
                checkpoint, activation: version.activation, name: model, properties: properties)
        case .npz:
            // The seed's npz carries the run's lambda, which a model version does not keep.
            throw APIError(
                422, "invalid_value",
                "format npz is a run's export (it holds the run's lambda): nnctl export \(version.run) --format npz",
                field: "format")
        }
        return ExportFile.response(bytes, filename: "\(model)-\(version.version).\(format.rawValue)")
    }

    @Sendable func rollback(_ request: Request, context: APIRequestContext) async throws -> ModelPointer {
        let model = try context.name("name")
        do { return ModelPointer(model: model, current: try registry.rollback(model: model)) } catch let error
            as ModelRegistry.RegistryError
        { throw error.api }
    }
}

extension ModelsController {
    /// `?version=`, when given: a version name (nothing that could leave the model's directory).
    static func versionParameter(_ request: Request) throws(APIError) -> String? {
        guard let version = request.uri.queryParameters.get("version").map({ String($0) }) else { return nil }
        guard RunManager.isValidID(version) else {
            throw APIError(422, "invalid_value", "version must be one of the model's version names", field: "version")
        }
        return version
    }
}

extension ModelRegistry {
    /// The requested version of `model`, or its current one; 404s name what is missing.
    func resolve(model: String, version requested: String?) throws(APIError) -> ModelVersion {
        do { try requireModel(model) } catch { throw error.api }
        if let requested {
            guard let found = version(model, requested) else {
                throw APIError.notFound("model \(model) has no version \(requested.prefix(100))")
            }
            return found
        }
        guard let current = current(model) else {
            throw APIError.notFound("model \(model) has no current version (nnctl promote)")
        }
        return current
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
