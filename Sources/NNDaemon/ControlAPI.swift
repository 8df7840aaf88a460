import Foundation
import Hummingbird
import Logging
import NIOCore
import NNCheckpoint
import NNEngine
import NNNumerics
import NNTraining

/// The control API: HTTP/1.1 + JSON under `/v1`, served on the daemon's Unix socket.
/// Every error is `{"error": {"code", "message", "field"?}}` with a fitting status.
public struct ControlAPI: Sendable {
    let manager: RunManager
    let maxRequestBytes: Int
    let requestTimeout: Duration
    let version: String

    public init(manager: RunManager, maxRequestBytes: Int, requestTimeout: Duration = .seconds(30), version: String) {
        self.manager = manager; self.maxRequestBytes = maxRequestBytes; self.requestTimeout = requestTimeout; self.version = version
    }

    public func router() -> Router<BasicRequestContext> {
        let router = Router()
        router.add(middleware: ErrorMiddleware())
        let manager = self.manager, limit = BodyLimit(bytes: maxRequestBytes, timeout: requestTimeout), version = self.version
        router.get("/metrics") { _, _ in try await metricsResponse(manager) }
        router.get("/v1/health") { _, _ in
            let counts = await manager.counts()
            struct Health: Encodable { var status = "ok"; var version: String; var uptimeSeconds: Double; var runs: [String: Int] }
            return try json(Health(version: version, uptimeSeconds: Date().timeIntervalSince(manager.startedAt),
                                   runs: Dictionary(uniqueKeysWithValues: counts.map { ($0.key.rawValue, $0.value) })))
        }
        router.get("/v1/runs") { _, _ in
            struct List: Encodable { var runs: [RunSummary] }
            return try json(List(runs: await manager.list().map(RunSummary.init)))
        }
        router.post("/v1/runs") { request, _ in
            let body = try await collect(request, limit: limit)
            let req = try decodeCreate(body)
            var overrides = req.overrides ?? []
            if let name = req.name { overrides.append("name=\(name)") }
            let text: String
            switch (req.spec, req.specYAML) {
            case (let s?, nil): text = s.json
            case (nil, let y?): text = y
            case (nil, nil): throw APIError(422, "invalid_request", "the request needs 'spec' (a JSON object) or 'spec_yaml' (YAML text)", field: "spec")
            default: throw APIError(422, "invalid_request", "give either 'spec' or 'spec_yaml', not both", field: "spec")
            }
            let spec: RunSpec
            do { spec = try RunSpec.parse(text, overrides: overrides, source: "spec") } catch let e as SpecError {
                throw APIError(422, "invalid_spec", e.description, field: e.field.isEmpty ? nil : e.field)
            }
            return try json(try await manager.create(spec: spec), status: .created)
        }
        router.get("/v1/runs/:id") { _, context in jsonResponse(try await manager.getEncoded(try runID(context))) }
        router.post("/v1/runs/:id/pause") { _, context in try json(try await manager.pause(try runID(context))) }
        router.post("/v1/runs/:id/resume") { _, context in try json(try await manager.resume(try runID(context))) }
        router.post("/v1/runs/:id/stop") { _, context in try json(try await manager.stop(try runID(context))) }
        router.get("/v1/runs/:id/events") { _, context in
            let record = try await manager.get(try runID(context))
            let (_, stream) = manager.hub.subscribe(run: record.id)
            let first = StreamLine(type: "state", run: record.id, event: record.progress, state: record.state, reason: record.reason)
            let done = record.state != .running && record.state != .queued
            var headers = HTTPFields()
            headers[.contentType] = "application/x-ndjson"
            return Response(status: .ok, headers: headers, body: ResponseBody { writer in
                try await writer.write(line(first))
                if done { try await writer.finish(nil); return }
                // A heartbeat every 10 s keeps idle-timeouts (ours and proxies') from cutting a queued run's stream.
                try await withThrowingTaskGroup(of: Void.self) { group in
                    let lines = AsyncStream<ByteBuffer> { c in
                        group.addTask {
                            for await l in stream { c.yield(line(l)) }
                            c.finish()
                        }
                        group.addTask {
                            while !Task.isCancelled {
                                try await Task.sleep(for: .seconds(10))
                                c.yield(ByteBuffer(string: "{\"type\":\"heartbeat\",\"run\":\"\(record.id)\"}\n"))
                            }
                        }
                    }
                    for await b in lines { try await writer.write(b) }
                    group.cancelAll()
                }
                try await writer.finish(nil)
            })
        }
        router.post("/v1/runs/:id/eval") { request, context in
            let body = try await collect(request, limit: limit)
            var which = "test"
            if body.readableBytes > 0 {
                guard let obj = try? JSONSerialization.jsonObject(with: Data(buffer: body)) as? [String: Any] else {
                    throw APIError(400, "malformed_json", "the body must be a JSON object such as {\"data\": \"test\"}")
                }
                for k in obj.keys where k != "data" { throw APIError(422, "unknown_field", "unknown field '\(k.prefix(60))' (allowed: data)", field: k) }
                guard let d = obj["data"] as? String, d == "test" || d == "train" else {
                    throw APIError(422, "invalid_value", "data must be \"test\" or \"train\"", field: "data")
                }
                which = d
            }
            let dataset = which
            let (record, checkpoint) = try await manager.latestCheckpoint(try runID(context))
            let cache = manager.datasets, dataDir = manager.config.dataDirectory
            let result = try await offload { () throws -> Evaluation in
                let loaded = try cache.load(spec: record.spec, dataDir: dataDir)
                let data = dataset == "train" ? loaded.train : loaded.test
                return try Evaluation.run(checkpoint: checkpoint, activation: record.spec.model.activation, data: data, workers: record.workers, which: dataset, run: record.id)
            }
            return try json(result)
        }
        router.get("/v1/runs/:id/export") { request, context in
            let format = request.uri.queryParameters.get("format") ?? "safetensors"
            guard format == "safetensors" || format == "npz" else {
                throw APIError(422, "invalid_value", "format must be safetensors or npz, got '\(format.prefix(40))'", field: "format")
            }
            let (record, checkpoint) = try await manager.latestCheckpoint(try runID(context))
            let bytes = format == "npz" ? NPZ.encode(NPZ.seedLayout(checkpoint, lambda: record.spec.training.lambda)) : checkpoint.encode()
            var headers = HTTPFields()
            headers[.contentType] = "application/octet-stream"
            headers[.contentDisposition] = "attachment; filename=\"\(record.id).\(format)\""
            return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: bytes)))
        }
        router.get("/v1/runs/:id/report") { _, context in
            let (record, checkpoint) = try await manager.latestCheckpoint(try runID(context))
            let cache = manager.datasets, dataDir = manager.config.dataDirectory
            let html = try await offload { () throws -> String in
                let test = try cache.load(spec: record.spec, dataDir: dataDir).test
                let engine = try inferenceEngine(checkpoint, activation: record.spec.model.activation, data: test, workers: record.workers)
                let probs = engine.probabilities(test, range: 0..<test.count)
                let predictions = probs.map { p in Int32(p.indices.max { p[$0] < p[$1] } ?? 0) }
                let trueProb = probs.enumerated().map { $0.element[Int(test.labels[$0.offset])] }
                let machine = TrainingReport.Machine(cores: ProcessInfo.processInfo.activeProcessorCount, numaNodes: NUMATopology.detect().nodes.count,
                                                     blasKernel: BLAS.kernelName, workers: record.workers)
                return TrainingReport(runID: record.id, spec: record.spec, state: record.state.rawValue, history: record.history, machine: machine,
                                      test: test, predictions: predictions, trueClassProbability: trueProb, checkpointEpoch: checkpoint.state.epoch).html()
            }
            var headers = HTTPFields()
            headers[.contentType] = "text/html; charset=utf-8"
            return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: html)))
        }
        router.get("/v1/models") { _, _ in
            struct Models: Encodable { var models: [ModelRegistry.Model] }
            return try json(Models(models: manager.models.list()))
        }
        router.post("/v1/models/:name/promote") { request, context in
            let name = try pathName(context, "name")
            let body = try await collect(request, limit: limit)
            guard let obj = try? JSONSerialization.jsonObject(with: Data(buffer: body)) as? [String: Any] else {
                throw APIError(400, "malformed_json", "the body must be a JSON object such as {\"version\": \"…\"}")
            }
            for k in obj.keys where k != "version" { throw APIError(422, "unknown_field", "unknown field '\(k.prefix(60))' (allowed: version)", field: k) }
            guard let version = obj["version"] as? String, RunManager.isValidID(version) else {
                throw APIError(422, "invalid_value", "version must be one of the model's version names", field: "version")
            }
            do { try manager.models.promote(model: name, version: version) } catch let e as ModelRegistry.RegistryError { throw e.api }
            return try json(["model": name, "current": version])
        }
        router.post("/v1/models/:name/rollback") { _, context in
            let name = try pathName(context, "name")
            do { return try json(["model": name, "current": try manager.models.rollback(model: name)]) } catch let e as ModelRegistry.RegistryError { throw e.api }
        }
        return router
    }
}

extension ModelRegistry.RegistryError {
    var api: APIError {
        switch self {
        case .notFound(let m): APIError(404, "not_found", m)
        case .conflict(let m): APIError(409, "illegal_transition", m)
        case .io(let m): APIError(507, "storage", m)
        }
    }
}

func pathName(_ context: BasicRequestContext, _ key: String) throws -> String {
    guard let v = context.parameters.get(key), RunManager.isValidID(v) else { throw APIError(400, "invalid_name", "invalid \(key) in the path") }
    return v
}

/// Short form of a run for lists.
struct RunSummary: Encodable {
    var id: String, name: String, state: RunState, epoch: Int?, epochs: Int, cost: Double?, testAccuracy: Double?, reason: String?, createdAt: Date
    init(_ r: RunRecord) {
        id = r.id; name = r.name; state = r.state; epoch = r.progress?.epoch; epochs = r.spec.training.epochs
        cost = r.history.last?.cost; testAccuracy = r.testAccuracy ?? r.history.last?.testAccuracy; reason = r.reason; createdAt = r.createdAt
    }
}

public struct Evaluation: Codable, Sendable {
    public var run: String, data: String, records: Int, accuracy: Double, cost: Double, epoch: Int
    static func run(checkpoint: Checkpoint, activation: Activation, data: NNData.Dataset, workers: Int, which: String, run: String) throws -> Evaluation {
        let r = try inferenceEngine(checkpoint, activation: activation, data: data, workers: workers).evaluate(data)
        return Evaluation(run: run, data: which, records: r.records, accuracy: r.accuracy * 100, cost: r.costSum / Double(max(r.records, 1)),
                          epoch: checkpoint.state.epoch)
    }
}

import NNData

/// A forward-only engine holding a checkpoint's parameters (eval, report, promotion gate).
/// Inference needs no optimiser state, so it is a plain SGD engine of the same shape.
func inferenceEngine(_ checkpoint: Checkpoint, activation: Activation, data: NNData.Dataset, workers: Int) throws -> DataParallelEngine {
    guard checkpoint.layers.first == data.featureCount else {
        throw APIError(422, "shape_mismatch", "the model takes \(checkpoint.layers.first!) inputs, the data has \(data.featureCount)")
    }
    let engine = DataParallelEngine(layout: NetworkLayout(sizes: checkpoint.layers), activation: activation,
                                    optimizer: OptimizerConfig(kind: .sgd), lambda: 0, workers: workers, maxBatch: 1024)
    engine.parameters.load(checkpoint.parameters)
    return engine
}

// MARK: - helpers

/// Prometheus text exposition format 0.0.4.
func metricsResponse(_ manager: RunManager) async throws -> Response {
    let text = await manager.metricsText()
    var headers = HTTPFields()
    headers[.contentType] = "text/plain; version=0.0.4; charset=utf-8"
    return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: text)))
}

/// The optional TCP listener (`metrics_listen`) serves /metrics and nothing else.
public func metricsOnlyRouter(manager: RunManager) -> Router<BasicRequestContext> {
    let router = Router()
    router.add(middleware: ErrorMiddleware())
    router.get("/metrics") { _, _ in try await metricsResponse(manager) }
    return router
}

func runID(_ context: BasicRequestContext) throws -> String {
    guard let id = context.parameters.get("id"), !id.isEmpty, id.utf8.count <= 200 else { throw APIError(400, "invalid_id", "missing or oversized run id") }
    return id
}

/// How much of a request body the API reads, and for how long.
struct BodyLimit: Sendable {
    var bytes: Int
    var timeout: Duration
}

/// The request body, up to `limit.bytes` and within `limit.timeout`. The idle timeout of the
/// HTTP server only sees whole HTTP parts, and every trickled body byte is one, so a body
/// sent a byte a second needs its own deadline (413 / 408, then the connection closes).
func collect(_ request: Request, limit: BodyLimit) async throws -> ByteBuffer {
    let tooLarge = APIError(413, "body_too_large", "request body exceeds the limit of \(limit.bytes) bytes (max_request_bytes)")
    do {
        return try await withThrowingTaskGroup(of: ByteBuffer?.self) { group in
            group.addTask { try await request.body.collect(upTo: limit.bytes) }
            group.addTask { try await Task.sleep(for: limit.timeout); return nil }
            defer { group.cancelAll() }
            guard let body = try await group.next()! else {
                throw APIError(408, "request_timeout", "the request body did not arrive within \(limit.timeout.components.seconds) s (request_timeout_seconds)")
            }
            return body
        }
    } catch let e as HTTPError where e.status == .contentTooLarge {
        throw tooLarge
    } catch is NIOTooManyBytesError {
        throw tooLarge
    }
}

func decodeCreate(_ body: ByteBuffer) throws -> CreateRunRequest {
    let data = Data(buffer: body)
    guard let obj = try? JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed]) else {
        throw APIError(400, "malformed_json", "the request body is not valid JSON")
    }
    guard let dict = obj as? [String: Any] else { throw APIError(400, "malformed_json", "the request body must be a JSON object") }
    let allowed: Set = ["spec", "spec_yaml", "name", "overrides"]
    for k in dict.keys.sorted() where !allowed.contains(k) {
        throw APIError(422, "unknown_field", "unknown field '\(k.prefix(60))' (allowed: \(allowed.sorted().joined(separator: ", ")))", field: String(k.prefix(60)))
    }
    if let s = dict["spec"], !(s is [String: Any]) { throw APIError(422, "invalid_value", "spec must be a JSON object", field: "spec") }
    if let s = dict["spec_yaml"], !(s is String) { throw APIError(422, "invalid_value", "spec_yaml must be a string", field: "spec_yaml") }
    if let s = dict["name"], !(s is String) { throw APIError(422, "invalid_value", "name must be a string", field: "name") }
    if let s = dict["overrides"], !(s is [String]) { throw APIError(422, "invalid_value", "overrides must be an array of \"key=value\" strings", field: "overrides") }
    do { return try JSONDecoder().decode(CreateRunRequest.self, from: data) } catch {
        throw APIError(400, "malformed_json", "cannot decode the request: \(error)")
    }
}

func json<T: Encodable>(_ value: T, status: HTTPResponse.Status = .ok) throws -> Response {
    var data = try RunManager.encoder.encode(value)
    data.append(0x0A)
    return jsonResponse(data, status: status)
}

/// A response whose body is already-encoded JSON (ending in a newline).
func jsonResponse(_ data: Data, status: HTTPResponse.Status = .ok) -> Response {
    var headers = HTTPFields()
    headers[.contentType] = "application/json"
    return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: data)))
}

func line<T: Encodable>(_ value: T) -> ByteBuffer {
    var data = (try? RunManager.encoder.encode(value)) ?? Data("{}".utf8)
    data.append(0x0A)
    return ByteBuffer(bytes: data)
}

/// Runs blocking work (data loading, evaluation) on a Dispatch thread, off the event loops
/// and the cooperative pool.
func offload<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { (c: CheckedContinuation<T, Error>) in
        // A thread of the process's own priority, not Dispatch's pool: work started from a
        // (lowered) event loop could make the pool create threads that inherit its priority and
        // later run training (see `ThreadPriority`).
        TrainingThreadLauncher.shared.launch(name: "nnd-offload", stackSize: 8 << 20) { c.resume(with: Result { try work() }) }
    }
}

/// Turns every error into the JSON error body with a stable code.
struct ErrorMiddleware: RouterMiddleware {
    typealias Context = BasicRequestContext
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do { return try await next(request, context) } catch let e as APIError {
            return errorResponse(e)
        } catch let e as HTTPError {
            let code: String = switch e.status.code {
            case 404: "not_found"
            case 405: "method_not_allowed"
            case 413: "body_too_large"
            default: "http_\(e.status.code)"
            }
            let msg = e.status == .notFound ? "no such endpoint: \(request.method.rawValue) \(request.uri.path.prefix(200))" : (e.body ?? e.status.reasonPhrase)
            return errorResponse(APIError(e.status.code, code, msg))
        } catch {
            return errorResponse(APIError(500, "internal", "\(error)"))
        }
    }
    func errorResponse(_ e: APIError) -> Response {
        struct Body: Encodable { var error: APIError }
        var response = (try? json(Body(error: e), status: .init(code: e.status))) ?? Response(status: .internalServerError)
        // After a timed-out body the rest of it may still trickle in: end the connection.
        if e.status == 408 { response.headers[.connection] = "close" }
        return response
    }
}
