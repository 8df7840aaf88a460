import Hummingbird
import NNAPI

/// What the controllers register their routes on: the Hummingbird router, with each
/// route's method and path also kept for 405 answers (`RouteTable`).
final class APIRoutes {
    let router: Router<APIRequestContext>
    private(set) var entries: [(path: String, method: HTTPRequest.Method)] = []

    init(router: Router<APIRequestContext>) { self.router = router }

    func get(
        _ path: String,
        use handler: @escaping @Sendable (Request, APIRequestContext) async throws -> some ResponseGenerator
    ) {
        entries.append((path, .get))
        router.get(RouterPath(path), use: handler)
    }

    func post(
        _ path: String,
        use handler: @escaping @Sendable (Request, APIRequestContext) async throws -> some ResponseGenerator
    ) {
        entries.append((path, .post))
        router.post(RouterPath(path), use: handler)
    }

    func delete(
        _ path: String,
        use handler: @escaping @Sendable (Request, APIRequestContext) async throws -> some ResponseGenerator
    ) {
        entries.append((path, .delete))
        router.delete(RouterPath(path), use: handler)
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

    /// A run id or name from the path; names are looked up, so only the length is checked here.
    func runKey() throws(APIError) -> String {
        guard let id = parameters.get("id"), !id.isEmpty, id.utf8.count <= 200 else {
            throw APIError(400, "invalid_id", "missing or oversized run id")
        }
        return id
    }
}
