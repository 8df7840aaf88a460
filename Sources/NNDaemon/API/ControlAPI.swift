import Foundation
import Hummingbird
import NNAPI
import NNTraining

/// The control API: HTTP/1.1 + JSON under `/v1` (and `/metrics`), served on the daemon's Unix
/// socket. Routes live in one controller per resource; bodies and answers are the `NNAPI`
/// types; every error is `{"error": {"status", "code", "message", "field"?}}` (docs/api.md).
public struct ControlAPI: Sendable {
    let manager: RunManager
    let maxRequestBytes: Int
    let requestTimeout: Duration
    let version: String

    public init(manager: RunManager, maxRequestBytes: Int, requestTimeout: Duration = .seconds(30), version: String) {
        self.manager = manager
        self.maxRequestBytes = maxRequestBytes
        self.requestTimeout = requestTimeout
        self.version = version
    }

    public func router() -> Router<APIRequestContext> {
        Self.router(maxRequestBytes: maxRequestBytes, requestTimeout: requestTimeout) { routes in
            RunsController(manager: manager).addRoutes(to: routes)
            ModelsController(
                registry: manager.models,
                predictor: ModelPredictor(registry: manager.models, maxRows: manager.config.maxPredictRows)
            ).addRoutes(to: routes)
            ServiceController(manager: manager, version: version).addRoutes(to: routes)
        }
    }

    /// The optional TCP listener (`metrics_listen`) serves /metrics and nothing else.
    public static func metricsOnlyRouter(manager: RunManager, version: String) -> Router<APIRequestContext> {
        router(maxRequestBytes: 1024, requestTimeout: .seconds(30)) { routes in
            routes.get("/metrics", use: ServiceController(manager: manager, version: version).metrics)
        }
    }

    /// A router with the API's middleware (errors outermost, then the body limit); HEAD is
    /// answered wherever GET is, and a known path with another method gets 405.
    static func router(maxRequestBytes: Int, requestTimeout: Duration, _ register: (APIRoutes) -> Void)
        -> Router<APIRequestContext>
    {
        let router = Router(context: APIRequestContext.self, options: .autoGenerateHeadEndpoints)
        let table = RouteTable()
        // Middleware applies to the routes added after it: first the two, then the routes.
        router.add(middleware: ErrorMiddleware(routes: table))
        router.add(middleware: BodyLimitMiddleware(bytes: maxRequestBytes, timeout: requestTimeout))
        let routes = APIRoutes(router: router)
        register(routes)
        table.set(routes.entries)
        return router
    }
}

/// Runs blocking work (data loading, evaluation) on a thread of the process's own priority,
/// off the event loops and the cooperative pool: work started from a (lowered) event loop
/// could make Dispatch's pool create threads that inherit its priority and later run
/// training (see `ThreadPriority`).
func offload<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, Error>) in
        TrainingThreadLauncher.shared.launch(name: "nnd-offload", stackSize: 8 << 20) {
            continuation.resume(with: Result { try work() })
        }
    }
}
