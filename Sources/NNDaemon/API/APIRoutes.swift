import Hummingbird
import NNAPI

/// What the controllers register their routes on: the Hummingbird router, with each
/// route's method and path also kept for 405 answers (`RouteTable`).
final class APIRoutes {
    let router: Router<APIRequestContext>
    private(set) var entries: [(path: String, method: HTTPRequest.Method)] = []

    init(router: Router<APIRequestContext>) { self.router = router }

    /// Registers `handler` for GET `path`; `query` lists the query parameters it reads, and a
    /// request with any other is refused (422 `unknown_field`), as unknown body fields are.
    func get<Output: ResponseGenerator>(
        _ path: String, query: Set<String> = [],
        use handler: @escaping @Sendable (Request, APIRequestContext) async throws -> Output
    ) { add(.get, path, query: query, handler) }

    func post<Output: ResponseGenerator>(
        _ path: String, query: Set<String> = [],
        use handler: @escaping @Sendable (Request, APIRequestContext) async throws -> Output
    ) { add(.post, path, query: query, handler) }

    func delete<Output: ResponseGenerator>(
        _ path: String, query: Set<String> = [],
        use handler: @escaping @Sendable (Request, APIRequestContext) async throws -> Output
    ) { add(.delete, path, query: query, handler) }

    /// The one place a route is registered: kept for 405 answers, guarded against unknown query
    /// parameters.
    private func add<Output: ResponseGenerator>(
        _ method: HTTPRequest.Method, _ path: String, query: Set<String>,
        _ handler: @escaping @Sendable (Request, APIRequestContext) async throws -> Output
    ) {
        entries.append((path, method))
        router.on(RouterPath(path), method: method, use: Self.refusingUnknownQuery(query, handler))
    }

    /// `handler`, after a check that the request's query parameters are all in `allowed`: a
    /// misspelt or made-up one (`?state=failed` on the run list) would otherwise be ignored.
    static func refusingUnknownQuery<Output: ResponseGenerator>(
        _ allowed: Set<String>, _ handler: @escaping @Sendable (Request, APIRequestContext) async throws -> Output
    ) -> @Sendable (Request, APIRequestContext) async throws -> Output {
        { request, context in
            for parameter in request.uri.queryParameters where !allowed.contains(String(parameter.key)) {
                let known = allowed.isEmpty ? "none" : allowed.sorted().joined(separator: ", ")
                throw APIError(
                    422, "unknown_field", "unknown query parameter '\(parameter.key.prefix(40))' (allowed: \(known))",
                    field: String(parameter.key.prefix(40)))
            }
            return try await handler(request, context)
        }
    }
}

extension APIRequestContext {
    /// A path parameter that names a run, model or version: 1-100 of `A-Z a-z 0-9 - _ .`,
    /// not starting with a dot (they become file names under the state directory).
    func name(_ key: String) throws(APIError) -> String {
        guard let value = parameters.get(key), RunManager.isValidID(value) else {
            throw APIError(400, "invalid_name", "invalid \(key) in the path")
        }
        return value
    }

    /// A run id or name from the path, percent-decoded (so that a 404 quotes what the client
    /// asked for: `nnctl status "my run"` sends `my%20run`); names are looked up, so only the
    /// length is checked here.
    func runKey() throws(APIError) -> String {
        guard let raw = parameters.get("id"), !raw.isEmpty, raw.utf8.count <= 200 else {
            throw APIError(400, "invalid_id", "missing or oversized run id")
        }
        return raw.removingPercentEncoding ?? raw
    }
}
