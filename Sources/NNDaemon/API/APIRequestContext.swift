import Foundation
import Hummingbird
import NIOCore
import NNAPI
import Synchronization

/// The request context of the control API: bodies are decoded with `APIRequestDecoder`
/// (nnd's JSON configuration, unknown fields refused, errors that name the field) and typed
/// answers encoded with `APIResponseEncoder`.
public struct APIRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    public init(source: Source) { coreContext = .init(source: source) }
    public var requestDecoder: APIRequestDecoder { APIRequestDecoder() }
    public var responseEncoder: APIResponseEncoder { APIResponseEncoder() }
    /// `BodyLimitMiddleware` has already collected the body within `max_request_bytes`.
    public var maxUploadSize: Int { .max }
}

/// A request body type: its wire fields, so that a misspelt one is refused (422
/// `unknown_field`) instead of silently ignored.
protocol RequestBody: Decodable {
    static var fields: [String] { get }
}

extension CreateRunRequest: RequestBody {
    static var fields: [String] { ["spec", "spec_yaml", "name", "overrides"] }
}
extension EvaluationRequest: RequestBody {
    static var fields: [String] { ["data"] }
}
extension PromoteRequest: RequestBody {
    static var fields: [String] { ["version"] }
}
extension PredictRequest: RequestBody {
    static var fields: [String] { ["inputs"] }
}

/// JSON bodies through `APIJSON.decoder`; every failure becomes an `APIError` naming the field.
public struct APIRequestDecoder: RequestDecoder {
    public func decode<T: Decodable>(_ type: T.Type, from request: Request, context: some RequestContext) async throws
        -> T
    {
        try APIContentType.require(.json, of: request)
        let buffer = try await request.body.collect(upTo: .max)
        return try Self.decode(type, from: Data(buffer: buffer))
    }

    static func decode<T: Decodable>(_ type: T.Type, from data: Data) throws(APIError) -> T {
        let object: Any
        do { object = try JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed]) } catch {
            let detail = Self.syntaxDetail(error).map { ": \($0)" } ?? ""
            throw APIError(400, "malformed_json", "the request body is not valid JSON\(detail)")
        }
        guard let members = object as? [String: Any] else {
            throw APIError(400, "malformed_json", "the request body must be a JSON object")
        }
        if let body = T.self as? any RequestBody.Type {
            for key in members.keys.sorted() where !body.fields.contains(key) {
                let shown = String(key.prefix(60))
                throw APIError(
                    422, "unknown_field", "unknown field '\(shown)' (allowed: \(body.fields.joined(separator: ", ")))",
                    field: shown)
            }
        }
        do { return try APIJSON.decoder.decode(T.self, from: data) } catch let error as DecodingError {
            throw Self.apiError(error)
        } catch {
            throw APIError(400, "malformed_json", "cannot decode the request: \(error)")
        }
    }

    static func apiError(_ error: DecodingError) -> APIError {
        func field(_ path: [any CodingKey]) -> String {
            path.map { $0.intValue.map { "[\($0)]" } ?? APIJSON.snakeCase($0.stringValue) }.joined(separator: ".")
        }
        switch error {
        case .typeMismatch(let type, let context):
            let name = field(context.codingPath)
            return APIError(422, "invalid_value", "\(name) must be \(Self.describe(type))", field: name)
        case .valueNotFound(let type, let context):
            let name = field(context.codingPath)
            return APIError(422, "invalid_value", "\(name) must be \(Self.describe(type)), not null", field: name)
        case .keyNotFound(let key, let context):
            let name = field(context.codingPath + [key])
            return APIError(422, "invalid_value", "\(name) is required", field: name)
        case .dataCorrupted(let context):
            // Corrupt at the root (not JSON at all): no field to name, but where the syntax broke.
            let name = field(context.codingPath)
            let detail = context.underlyingError.flatMap(Self.syntaxDetail).map { " (\($0))" } ?? ""
            let message =
                name.isEmpty ? context.debugDescription + detail : "\(name): \(context.debugDescription)\(detail)"
            return APIError(422, "invalid_value", message, field: name.isEmpty ? nil : name)
        @unknown default:
            return APIError(400, "malformed_json", "cannot decode the request: \(error)")
        }
    }

    /// Where and how a JSON parser gave up ("Invalid value around character 11.", "Number
    /// 1e400 is not representable in Swift."), from Foundation's error; nil if it says nothing.
    static func syntaxDetail(_ error: any Error) -> String? {
        (error as NSError).userInfo[NSDebugDescriptionErrorKey] as? String
    }

    static func describe(_ type: Any.Type) -> String {
        switch type {
        case is String.Type: "a string"
        case is [String].Type: "an array of strings"
        case is Int.Type, is Double.Type: "a number"
        case is Bool.Type: "true or false"
        case is [[Float]].Type, is [[Double]].Type: "an array of arrays of numbers"
        default: "a JSON value of another type"
        }
    }
}

/// Typed answers as `application/json`, one line, through `APIJSON.encoder`.
public struct APIResponseEncoder: ResponseEncoder {
    public func encode(_ value: some Encodable, from request: Request, context: some RequestContext) throws -> Response
    {
        .json(try APIJSON.line(value))
    }
}

// The contract's response types answer with the API's encoder.
extension RunRecord: ResponseEncodable {}
extension RunList: ResponseEncodable {}
extension Evaluation: ResponseEncodable {}
extension Health: ResponseEncodable {}
extension ModelList: ResponseEncodable {}
extension ModelPointer: ResponseEncodable {}
extension Prediction: ResponseEncodable {}

extension Response {
    /// Already-encoded JSON (ending in a newline).
    static func json(_ data: Data, status: HTTPResponse.Status = .ok) -> Response {
        bytes(data, contentType: "application/json", status: status)
    }

    static func bytes(
        _ data: some Sequence<UInt8>, contentType: String, status: HTTPResponse.Status = .ok,
        extraHeaders: HTTPFields = [:]
    ) -> Response {
        var headers = extraHeaders
        headers[.contentType] = contentType
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }
}

/// The body types the API reads.
enum APIContentType: String {
    case json = "application/json"
    case yaml = "application/yaml"
    /// Raw little-endian float32 records (bulk predictions).
    case float32 = "application/octet-stream"

    /// The request's type; a body without `Content-Type` counts as JSON (curl -d sends
    /// `application/x-www-form-urlencoded`, which is taken as JSON too: the body decides).
    static func of(_ request: Request) -> APIContentType? {
        guard let header = request.headers[.contentType] else { return .json }
        let type = header.split(separator: ";").first.map { $0.trimmingCharacters(in: .whitespaces).lowercased() } ?? ""
        switch type {
        case "application/json", "application/x-www-form-urlencoded", "text/json", "": return .json
        case "application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml": return .yaml
        case "application/octet-stream": return .float32
        default: return nil
        }
    }

    /// Refuses (415) a body of a type other than those `accepted`.
    @discardableResult
    static func require(_ accepted: APIContentType..., of request: Request) throws(APIError) -> APIContentType {
        if let type = of(request), accepted.contains(type) { return type }
        let header = request.headers[.contentType] ?? ""
        throw APIError(
            415, "unsupported_media_type",
            "Content-Type '\(header.prefix(80))' is not accepted here; send \(accepted.map(\.rawValue).joined(separator: " or "))"
        )
    }
}

/// Reads every request body before routing, up to `max_request_bytes` and within
/// `request_timeout_seconds`. The HTTP server's idle timeout sees whole HTTP parts and every
/// trickled body byte is one, so a body sent a byte a second needs its own deadline
/// (413 / 408, then the connection closes).
struct BodyLimitMiddleware<Context: RequestContext>: RouterMiddleware {
    let bytes: Int
    let timeout: Duration

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws
        -> Response
    {
        guard request.method == .post || request.method == .put || request.method == .patch else {
            return try await next(request, context)
        }
        var request = request
        let body = try await collect(request)
        request.body = .init(buffer: body)
        return try await next(request, context)
    }

    func collect(_ request: Request) async throws -> ByteBuffer {
        let tooLarge = APIError(
            413, "body_too_large", "request body exceeds the limit of \(bytes) bytes (max_request_bytes)")
        let limit = bytes
        do {
            return try await withThrowingTaskGroup(of: ByteBuffer?.self) { group in
                group.addTask { try await request.body.collect(upTo: limit) }
                group.addTask {
                    try await Task.sleep(for: timeout)
                    return nil
                }
                defer { group.cancelAll() }
                guard let body = try await group.next()! else {
                    throw APIError(
                        408, "request_timeout",
                        "the request body did not arrive within \(timeout.components.seconds) s (request_timeout_seconds)"
                    )
                }
                return body
            }
        } catch let error as HTTPError where error.status == .contentTooLarge {
            throw tooLarge
        } catch is NIOTooManyBytesError {
            throw tooLarge
        }
    }
}

/// The API's routes as patterns (`/v1/runs/:id`) with their methods: what a 405 answer's
/// `Allow` header lists. Filled by the controllers as they register their routes.
final class RouteTable: Sendable {
    private typealias Route = (segments: [Substring], methods: Set<HTTPRequest.Method>)
    private let routes = Mutex<[Route]>([])

    /// Called once, after the controllers registered their routes and before serving.
    func set(_ entries: [(path: String, method: HTTPRequest.Method)]) {
        var merged: [String: Set<HTTPRequest.Method>] = [:]
        for entry in entries { merged[entry.path, default: []].insert(entry.method) }
        let table = merged.map { (path, methods) -> Route in
            (path.split(separator: "/"), methods.contains(.get) ? methods.union([.head]) : methods)
        }
        routes.withLock { $0 = table }
    }

    /// The methods a path allows, or nil when no route matches it.
    func methods(for path: String) -> Set<HTTPRequest.Method>? {
        let segments = path.split(separator: "/")
        let matching = routes.withLock { $0 }.filter { route in
            route.segments.count == segments.count
                && zip(route.segments, segments).allSatisfy { $0.hasPrefix(":") || $0 == $1 }
        }
        return matching.isEmpty ? nil : matching.reduce(into: Set()) { $0.formUnion($1.methods) }
    }
}

/// Turns every error into the JSON error body with a stable code; a known path asked with
/// another method gets 405 and `Allow`.
struct ErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    let routes: RouteTable

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws
        -> Response
    {
        do { return try await next(request, context) } catch let error as APIError {
            return Self.response(error)
        } catch let error as HTTPError {
            return response(error, request: request)
        } catch {
            return Self.response(APIError(500, "internal", "\(error)"))
        }
    }

    func response(_ error: HTTPError, request: Request) -> Response {
        let path = String(request.uri.path.prefix(200))
        if error.status == .notFound, let allowed = routes.methods(for: request.uri.path) {
            let names = allowed.map(\.rawValue).sorted()
            var response = Self.response(
                APIError(
                    405, "method_not_allowed",
                    "\(request.method.rawValue) is not allowed on \(path) (allowed: \(names.joined(separator: ", ")))"))
            response.headers[.allow] = names.joined(separator: ", ")
            return response
        }
        let code: String =
            switch error.status.code {
            case 404: "not_found"
            case 413: "body_too_large"
            default: "http_\(error.status.code)"
            }
        let message =
            error.status == .notFound
            ? "no such endpoint: \(request.method.rawValue) \(path)" : (error.body ?? error.status.reasonPhrase)
        return Self.response(APIError(error.status.code, code, message))
    }

    static func response(_ error: APIError) -> Response {
        let body = (try? APIJSON.line(ErrorBody(error: error))) ?? Data("{}\n".utf8)
        var response = Response.json(body, status: .init(code: error.status))
        // After a timed-out body the rest of it may still trickle in: end the connection.
        if error.status == 408 { response.headers[.connection] = "close" }
        return response
    }
}
