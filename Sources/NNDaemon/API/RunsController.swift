import Foundation
import Hummingbird
import NIOCore
import NNAPI
import NNCheckpoint
import NNData
import NNTraining

/// `/v1/runs`: create, list, show, pause/resume/stop, follow, evaluate, export and report.
struct RunsController {
    let manager: RunManager

    func addRoutes(to routes: APIRoutes) {
        routes.get("/v1/runs", use: list)
        routes.post("/v1/runs", query: ["name"], use: create)
        routes.get("/v1/runs/:id", use: show)
        routes.delete("/v1/runs/:id", use: remove)
        routes.post("/v1/runs/:id/pause", use: pause)
        routes.post("/v1/runs/:id/resume", use: resume)
        routes.post("/v1/runs/:id/stop", use: stop)
        routes.get("/v1/runs/:id/events", use: events)
        routes.post("/v1/runs/:id/eval", use: evaluate)
        routes.get("/v1/runs/:id/export", query: ["format"], use: export)
        routes.get("/v1/runs/:id/report", use: report)
    }

    @Sendable func list(_ request: Request, context: APIRequestContext) async throws -> RunList {
        RunList(runs: await manager.list().map(RunSummary.init))
    }

    /// A `CreateRunRequest` as JSON, or the spec itself as `application/yaml` (then `?name=`
    /// renames the run).
    @Sendable func create(_ request: Request, context: APIRequestContext) async throws -> EditedResponse<RunRecord> {
        let text: String
        var overrides: [String] = []
        switch try APIContentType.require(.json, .yaml, of: request) {
        case .yaml:
            let body = try await request.body.collect(upTo: .max)
            text = String(decoding: body.readableBytesView, as: UTF8.self)
            if let name = request.uri.queryParameters.get("name") { overrides.append("name=\(name)") }
        case .json, .float32:  // `require` admits only JSON and YAML here
            let create = try await request.decode(as: CreateRunRequest.self, context: context)
            overrides = create.overrides ?? []
            if let name = create.name { overrides.append("name=\(name)") }
            switch (create.spec, create.specYAML) {
            case (let spec?, nil): text = spec.json
            case (nil, let yaml?): text = yaml
            case (nil, nil):
                throw APIError(
                    422, "invalid_request", "the request needs 'spec' (a JSON object) or 'spec_yaml' (YAML text)",
                    field: "spec")
            default:
                throw APIError(422, "invalid_request", "give either 'spec' or 'spec_yaml', not both", field: "spec")
            }
            if let spec = create.spec, !spec.json.hasPrefix("{") {
                throw APIError(422, "invalid_value", "spec must be a JSON object", field: "spec")
            }
        }
        let spec: RunSpec
        do {
            spec = try RunSpec.parse(text, overrides: overrides, source: requestSpecSource)
        } catch let error as SpecError {
            throw APIError(422, "invalid_spec", error.description, field: error.field.isEmpty ? nil : error.field)
        }
        // Estimated from the spec and the data files' headers: nothing is allocated for a run
        // that will not fit.
        let estimate = MemoryEstimate.of(
            spec: spec, fallbackDataDir: manager.config.dataDirectory, workers: manager.config.workers)
        return EditedResponse(status: .created, response: try await manager.create(spec: spec, memory: estimate))
    }

    /// The most frequent request (status polls): served from the manager's encoded cache.
    @Sendable func show(_ request: Request, context: APIRequestContext) async throws -> Response {
        .json(try await manager.getEncoded(try context.runKey()))
    }

    @Sendable func pause(_ request: Request, context: APIRequestContext) async throws -> RunRecord {
        try await manager.pause(try context.runKey())
    }

    @Sendable func resume(_ request: Request, context: APIRequestContext) async throws -> RunRecord {
        try await manager.resume(try context.runKey())
    }

    @Sendable func stop(_ request: Request, context: APIRequestContext) async throws -> RunRecord {
        try await manager.stop(try context.runKey())
    }

    /// Removes a finished run with its checkpoints and metric series; 409 while it may still run.
    @Sendable func remove(_ request: Request, context: APIRequestContext) async throws -> RunRecord {
        try await manager.remove(try context.runKey())
    }

    /// NDJSON: the run's state first, then progress and state lines until it settles; a
    /// heartbeat every `StreamLine.heartbeatSeconds` keeps idle-timeouts (ours and proxies') from cutting a queued run's stream.
    @Sendable func events(_ request: Request, context: APIRequestContext) async throws -> Response {
        let record = try await manager.get(try context.runKey())
        let (_, stream) = manager.hub.subscribe(run: record.id)
        let first = StreamLine(
            type: .state, run: record.id, event: record.progress, state: record.state, reason: record.reason)
        let heartbeat = StreamLine(type: .heartbeat, run: record.id)
        var headers = HTTPFields()
        headers[.contentType] = "application/x-ndjson"
        return Response(
            status: .ok, headers: headers,
            body: ResponseBody { writer in
                try await writer.write(Self.line(first))
                if record.state.isSettled {
                    try await writer.finish(nil)
                    return
                }
                try await withThrowingTaskGroup(of: Void.self) { group in
                    let lines = AsyncStream<ByteBuffer> { continuation in
                        group.addTask {
                            for await line in stream { continuation.yield(Self.line(line)) }
                            continuation.finish()
                        }
                        group.addTask {
                            while !Task.isCancelled {
                                try await Task.sleep(for: .seconds(StreamLine.heartbeatSeconds))
                                continuation.yield(Self.line(heartbeat))
                            }
                        }
                    }
                    for await buffer in lines { try await writer.write(buffer) }
                    group.cancelAll()
                }
                try await writer.finish(nil)
            })
    }

    static func line(_ value: StreamLine) -> ByteBuffer {
        ByteBuffer(bytes: (try? APIJSON.line(value)) ?? Data("{}\n".utf8))
    }

    /// Evaluates the latest checkpoint on the test (default) or training set.
    @Sendable func evaluate(_ request: Request, context: APIRequestContext) async throws -> Evaluation {
        // An empty body means the test set (`nnctl eval` without --data, `curl -X POST`).
        let empty = try await request.body.collect(upTo: .max).readableBytes == 0
        let which =
            empty
            ? EvaluationData.test
            : (try await request.decode(as: EvaluationRequest.self, context: context).data ?? .test)
        let (record, checkpoint) = try await manager.latestCheckpoint(try context.runKey())
        let datasets = manager.datasets
        let dataDir = manager.config.dataDirectory
        // The run's own training files: a shard that landed after the run is not what it trained on.
        let ownShards = record.dataFiles.map { Set($0.keys) }
        return try await offload { () throws -> Evaluation in
            let loaded = try datasets.load(
                spec: record.spec, dataDir: dataDir, onlyShards: which == .train ? ownShards : nil)
            let data = which == .train ? loaded.train : loaded.test
            let model = try Inference.forData(checkpoint, spec: record.spec, data: data, workers: record.workers)
            return model.evaluate(data, which: which, run: record.id)
        }
    }

    /// The latest weights as safetensors (the checkpoint itself), the seed's npz layout or ONNX.
    @Sendable func export(_ request: Request, context: APIRequestContext) async throws -> Response {
        let format = try ExportFile.format(of: request)
        let (record, checkpoint) = try await manager.latestCheckpoint(try context.runKey())
        var properties = [("run", record.id), ("run_name", record.name)]
        if let fingerprint = record.dataFingerprint { properties.append(("data_fingerprint", fingerprint)) }
        let bytes: [UInt8] =
            switch format {
            case .npz: NPZ.encode(NPZ.seedLayout(checkpoint, lambda: record.spec.training.lambda))
            case .safetensors: checkpoint.encode()
            case .onnx:
                try ExportFile.onnx(
                    checkpoint, activation: record.spec.model.activation, name: record.name, properties: properties)
            }
        return ExportFile.response(bytes, filename: "\(record.id).\(format.rawValue)")
    }

    /// A self-contained HTML report of the latest checkpoint.
    @Sendable func report(_ request: Request, context: APIRequestContext) async throws -> Response {
        let (record, checkpoint) = try await manager.latestCheckpoint(try context.runKey())
        let datasets = manager.datasets
        let dataDir = manager.config.dataDirectory
        let html = try await offload { () throws -> String in
            let test = try datasets.load(spec: record.spec, dataDir: dataDir).test
            let model = try Inference.forData(checkpoint, spec: record.spec, data: test, workers: record.workers)
            return model.report(run: record, test: test)
        }
        return .bytes(Array(html.utf8), contentType: "text/html; charset=utf-8")
    }
}

extension Inference {
    /// The model of `checkpoint` for `data`; a width mismatch is the client's problem (422).
    static func forData(_ checkpoint: Checkpoint, spec: RunSpec, data: Dataset, workers: Int) throws(APIError)
        -> Inference
    {
        do {
            return try Inference(
                checkpoint: checkpoint, activation: spec.model.activation, inputs: data.featureCount, workers: workers)
        } catch {
            throw APIError(422, "shape_mismatch", error.description)
        }
    }
}
