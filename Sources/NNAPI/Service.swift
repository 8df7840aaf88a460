#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

/// `GET /v1/health`.
public struct Health: Codable, Sendable {
    public var status: String
    public var version: String
    public var uptimeSeconds: Double
    /// Runs by state (`RunState` raw values).
    public var runs: [String: Int]
    /// Bytes under the state directory (runs, checkpoints, models).
    public var stateDirectoryBytes: Int
    /// The state directory's file system: bytes an unprivileged writer may still use, and its
    /// size (`statvfs`). A checkpoint that does not fit fails its run (which resumes from the
    /// last good one once there is room); absent when the daemon could not tell.
    public var stateFilesystemAvailableBytes: Int?
    public var stateFilesystemSizeBytes: Int?
    /// Memory the runs may hold together, and what the running ones hold (estimates).
    public var memoryBudgetBytes: Int
    public var memoryHeldBytes: Int
    /// Run records (`<state>/runs/<id>/run.json`) the daemon could not read at start, each as
    /// "path: reason": those runs are left out of every list, their files kept. Absent when none.
    public var unreadableRunRecords: [String]?

    public init(
        status: String = "ok", version: String, uptimeSeconds: Double, runs: [String: Int], stateDirectoryBytes: Int,
        memoryBudgetBytes: Int, memoryHeldBytes: Int, unreadableRunRecords: [String]? = nil,
        stateFilesystemAvailableBytes: Int? = nil, stateFilesystemSizeBytes: Int? = nil
    ) {
        self.stateFilesystemAvailableBytes = stateFilesystemAvailableBytes
        self.stateFilesystemSizeBytes = stateFilesystemSizeBytes
        self.status = status
        self.version = version
        self.uptimeSeconds = uptimeSeconds
        self.runs = runs
        self.stateDirectoryBytes = stateDirectoryBytes
        self.memoryBudgetBytes = memoryBudgetBytes
        self.memoryHeldBytes = memoryHeldBytes
        self.unreadableRunRecords = unreadableRunRecords
    }
}

/// Every error the API returns: `{"error": {"status", "code", "message", "field"?}}`.
/// `code` is stable (clients branch on it); `message` names the file, field or value.
public struct APIError: Error, Codable, Sendable, CustomStringConvertible {
    public var status: Int
    public var code: String
    public var message: String
    public var field: String?

    public init(_ status: Int, _ code: String, _ message: String, field: String? = nil) {
        self.status = status
        self.code = code
        self.message = message
        self.field = field
    }

    public var description: String { "\(message) (HTTP \(status) \(code))" }

    public static func notFound(_ what: String) -> APIError { APIError(404, "not_found", what) }
    public static func conflict(_ what: String) -> APIError { APIError(409, "illegal_transition", what) }
}

/// The body of an error response.
public struct ErrorBody: Codable, Sendable {
    public var error: APIError
    public init(error: APIError) { self.error = error }
}

/// The version of nnd, nnctl and the API they speak (`GET /v1/health`, `--version`).
public enum NNDVersion {
    public static let current = "0.2.0"
}
