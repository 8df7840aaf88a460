import Foundation
import Hummingbird
import NNAPI

/// `/v1/health` and `/metrics`: the daemon itself.
struct ServiceController {
    let manager: RunManager
    let version: String

    func addRoutes(to routes: APIRoutes) {
        routes.get("/v1/health", use: health)
        routes.get("/metrics", use: metrics)
    }

    @Sendable func health(_ request: Request, context: APIRequestContext) async throws -> Health {
        await manager.health(version: version)
    }

    /// Prometheus text exposition format 0.0.4.
    @Sendable func metrics(_ request: Request, context: APIRequestContext) async throws -> Response {
        .bytes(Array(await manager.metricsText().utf8), contentType: "text/plain; version=0.0.4; charset=utf-8")
    }
}
