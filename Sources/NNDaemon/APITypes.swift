import Foundation
import NNCheckpoint
import NNTraining

public enum RunState: String, Codable, Sendable {
    case queued, running, paused, completed, stopped, failed
}

/// A run as the daemon keeps it (persisted as `runs/<id>/run.json`) and the API shows it.
public struct RunRecord: Codable, Sendable {
    public var id: String
    public var name: String
    public var spec: RunSpec
    public var state: RunState
    public var createdAt: Date
    public var startedAt: Date?
    public var finishedAt: Date?
    /// Why a run failed or was interrupted; also notes such as a skipped corrupt checkpoint.
    public var reason: String?
    public var notes: [String]
    public var progress: TrainingEvent?
    public var history: [EpochRecord]
    public var lastCheckpoint: String?
    public var checkpointsWritten: Int
    public var trainAccuracy: Double?
    public var testAccuracy: Double?
    public var workers: Int
    /// Set when the daemon stopped while the run was running: it resumes on the next start.
    public var resumeOnStart: Bool
    public var dataHash: String?
    /// SHA-256 of each data file when the run started, to name a file that changed.
    public var dataFiles: [String: String]?
    /// For retraining runs: what happened to the model at the end.
    public var promotion: PromotionOutcome?
}

/// The promotion gate's decision for a completed retraining run.
public struct PromotionOutcome: Codable, Sendable {
    public var model: String
    public var version: String
    public var promoted: Bool
    public var newTestAccuracy: Double
    public var currentVersion: String?
    public var currentTestAccuracy: Double?
    public var margin: Double
    public var message: String
}

public struct CreateRunRequest: Codable, Sendable {
    /// The spec as a JSON object …
    public var spec: AnyJSON?
    /// … or as YAML text (what `nnctl start FILE` sends).
    public var specYAML: String?
    public var name: String?
    public var overrides: [String]?
    enum CodingKeys: String, CodingKey { case spec, specYAML = "spec_yaml", name, overrides }
}

/// Any JSON value, kept as text so it can be handed to the spec parser (JSON is YAML).
public struct AnyJSON: Codable, Sendable {
    public var json: String
    public init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        json = try Self.render(c)
    }
    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(json)
    }
    static func render(_ c: SingleValueDecodingContainer) throws -> String {
        if let o = try? c.decode([String: AnyJSON].self) {
            let parts = try o.keys.sorted().map { k -> String in
                let key = String(decoding: try JSONEncoder().encode(k), as: UTF8.self)
                return "\(key): \(o[k]!.json)"
            }
            return "{" + parts.joined(separator: ", ") + "}"
        }
        if let a = try? c.decode([AnyJSON].self) { return "[" + a.map(\.json).joined(separator: ", ") + "]" }
        if c.decodeNil() { return "null" }
        if let b = try? c.decode(Bool.self) { return b ? "true" : "false" }
        if let i = try? c.decode(Int.self) { return String(i) }
        if let d = try? c.decode(Double.self) { return String(d) }
        if let s = try? c.decode(String.self) { return String(decoding: try JSONEncoder().encode(s), as: UTF8.self) }
        throw DecodingError.dataCorruptedError(in: c, debugDescription: "unsupported JSON value")
    }
}

/// Error body: `{"error": {"code": "...", "message": "...", "field": "..."}}`.
public struct APIError: Error, Codable, Sendable {
    public var status: Int
    public var code: String
    public var message: String
    public var field: String?
    public init(_ status: Int, _ code: String, _ message: String, field: String? = nil) {
        self.status = status; self.code = code; self.message = message; self.field = field
    }
    public static func notFound(_ what: String) -> APIError { APIError(404, "not_found", what) }
    public static func conflict(_ what: String) -> APIError { APIError(409, "illegal_transition", what) }
}
