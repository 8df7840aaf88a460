#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

/// Where a run is in its life. `queued` → `running` → `completed`, with `paused`, `stopped`
/// and `failed` on the way; `resume` takes paused, stopped and failed runs back to `queued`.
public enum RunState: String, Codable, Sendable, CaseIterable {
    case queued, running, paused, completed, stopped, failed

    /// The run will not change again unless someone resumes it.
    public var isSettled: Bool { self != .queued && self != .running }
}

/// A run as the daemon keeps it (`runs/<id>/run.json`) and as `GET /v1/runs/{id}` returns it.
public struct RunRecord: Codable, Sendable {
    public var id: String
    public var name: String
    public var spec: RunSpec
    public var state: RunState
    public var createdAt: Date
    public var startedAt: Date?
    public var finishedAt: Date?
    /// Why a run failed or was interrupted.
    public var reason: String?
    /// Timestamped remarks, such as a skipped corrupt checkpoint or a promotion decision.
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
    /// Records in the training data (base files and shards, before any validation hold-out),
    /// and the fingerprint of the data files (`DataLoading.Loaded.fingerprint`).
    public var trainRecords: Int?
    public var dataFingerprint: String?
    /// Estimated peak memory of the run, bytes (what admission compared with the budget).
    public var memoryEstimateBytes: Int?
    /// Times the daemon started this run since its last checkpoint (kept durably): a daemon
    /// that dies this often while the run trains stops resuming it (`quarantine_after_crashes`).
    public var startsSinceCheckpoint: Int?

    /// A new queued run.
    public init(id: String, spec: RunSpec, workers: Int, createdAt: Date = Date()) {
        self.id = id
        self.name = spec.name
        self.spec = spec
        self.state = .queued
        self.createdAt = createdAt
        self.notes = []
        self.history = []
        self.checkpointsWritten = 0
        self.workers = workers
        self.resumeOnStart = false
    }
}

/// A run in `GET /v1/runs`: what a list needs.
public struct RunSummary: Codable, Sendable {
    public var id: String
    public var name: String
    public var state: RunState
    public var epoch: Int?
    public var epochs: Int
    public var cost: Double?
    public var testAccuracy: Double?
    public var reason: String?
    public var createdAt: Date

    public init(_ run: RunRecord) {
        id = run.id
        name = run.name
        state = run.state
        epoch = run.progress?.epoch
        epochs = run.spec.training.epochs
        cost = run.history.last?.cost
        testAccuracy = run.testAccuracy ?? run.history.last?.testAccuracy
        reason = run.reason
        createdAt = run.createdAt
    }
}

/// `GET /v1/runs`.
public struct RunList: Codable, Sendable {
    public var runs: [RunSummary]
    public init(runs: [RunSummary]) { self.runs = runs }
}

/// `POST /v1/runs`: a spec as a JSON object or as YAML text, with overrides.
public struct CreateRunRequest: Codable, Sendable {
    /// The spec as a JSON object …
    public var spec: AnyJSON?
    /// … or as YAML text (what `nnctl start FILE` sends).
    public var specYAML: String?
    /// Replaces the spec's name.
    public var name: String?
    /// `section.field=value` pairs applied to the spec before it is checked.
    public var overrides: [String]?

    public init(spec: AnyJSON? = nil, specYAML: String? = nil, name: String? = nil, overrides: [String]? = nil) {
        self.spec = spec
        self.specYAML = specYAML
        self.name = name
        self.overrides = overrides
    }
    // camelCase raw value: see `APIJSON` (on the wire: spec_yaml).
    enum CodingKeys: String, CodingKey {
        case spec
        case specYAML = "specYaml"
        case name, overrides
    }
}

/// The name the daemon gives a request's spec in its messages (`spec: not valid YAML/JSON: …`),
/// which has no file name.
public let requestSpecSource = "spec"

/// A refused spec's message, as a command that read it from `file` prints it: a problem with the
/// whole document (no field) names the file where the parser named `source`; a field's problem
/// says where its value came from, the `--set` that gave it or else the file.
///     "training.epochs: -2 must be between 1 and 100000" + " (from --set training.epochs=-2)"
public func specProblemMessage(
    _ message: String, field: String?, source: String, file: String, overrides: [String]
) -> String {
    guard let field, !field.isEmpty else {
        return message.hasPrefix("\(source): ") ? "\(file): " + message.dropFirst(source.count + 2) : message
    }
    let given = overrides.last { $0.split(separator: "=", maxSplits: 1).first.map(String.init) == field }
    return "\(message) (\(given.map { "from --set \($0)" } ?? "in \(file)"))"
}

/// `POST /v1/runs/{id}/eval`; an empty body means `{"data": "test"}`.
public struct EvaluationRequest: Codable, Sendable {
    public var data: EvaluationData?
    public init(data: EvaluationData? = nil) { self.data = data }
}

/// The answer to `POST /v1/runs/{id}/eval`: accuracy in percent, mean cost per record.
public struct Evaluation: Codable, Sendable {
    public var run: String
    public var data: EvaluationData
    public var records: Int
    public var accuracy: Double
    public var cost: Double
    /// Epochs completed by the evaluated checkpoint.
    public var epoch: Int

    public init(run: String, data: EvaluationData, records: Int, accuracy: Double, cost: Double, epoch: Int) {
        self.run = run
        self.data = data
        self.records = records
        self.accuracy = accuracy
        self.cost = cost
        self.epoch = epoch
    }
}

/// One line of a run's event stream (`GET /v1/runs/{id}/events`, NDJSON).
public struct StreamLine: Codable, Sendable {
    public enum Kind: String, Codable, Sendable { case progress, state, heartbeat }
    /// How often the daemon writes a heartbeat line into a stream that has nothing else to say;
    /// a client that hears nothing for several of these can tell a hung daemon from a quiet run.
    public static let heartbeatSeconds = 10
    public var type: Kind
    public var run: String
    public var event: TrainingEvent?
    public var state: RunState?
    public var reason: String?

    public init(
        type: Kind, run: String, event: TrainingEvent? = nil, state: RunState? = nil, reason: String? = nil
    ) {
        self.type = type
        self.run = run
        self.event = event
        self.state = state
        self.reason = reason
    }
}

/// One process (MPI rank) of a run across processes: the host it runs on and its worker threads.
public struct RankPlacement: Codable, Sendable, Equatable {
    public var host: String
    public var workers: Int
    /// The most ranks whose placement a run's events list (each event carries the list).
    public static let listedRanks = 64
    public init(host: String, workers: Int) {
        self.host = host
        self.workers = workers
    }
}

/// Progress, for `--json` lines, `nnctl watch`, the event stream and metrics.
public struct TrainingEvent: Codable, Sendable, Equatable {
    public enum Kind: String, Codable, Sendable { case started, step, epoch, checkpoint, finished }
    public var kind: Kind
    /// 1-based epoch the event belongs to.
    public var epoch: Int
    public var epochs: Int
    /// Steps done in that epoch.
    public var step: Int
    public var stepsPerEpoch: Int
    /// Epoch cost (epoch events) or running mean cost (step events).
    public var cost: Double?
    public var learningRate: Float
    public var samplesPerSecond: Double
    /// Seconds of the epoch so far / of the epoch.
    public var seconds: Double
    public var trainAccuracy: Double?
    public var testAccuracy: Double?
    public var etaSeconds: Double?
    public var message: String?
    /// Step durations since the trainer started: cumulative counts per `StepDurations.bounds`
    /// bucket (the last is +Inf), their sum in seconds, and the step count.
    public var stepDurationBuckets: [Int]?
    public var stepDurationSum: Double?
    /// Epoch events of a run with validation records: mean cross-entropy and accuracy on them.
    public var validationCost: Double?
    public var validationAccuracy: Double?
    /// Runs across processes (MPI ranks): how many, and the mean seconds per step since the
    /// previous event spent computing this rank's share and in the gradient's allreduce.
    public var ranks: Int?
    /// Where each rank runs and with how many workers, in rank order (runs of up to
    /// `RankPlacement.listedRanks` ranks).
    public var rankPlacements: [RankPlacement]?
    public var stepComputeSeconds: Double?
    public var stepAllreduceSeconds: Double?
    /// How the first layer reads the inputs (`dense` or `sparse`, `model.input_path` resolved)
    /// and the share of the training inputs that are not zero (when measured).
    public var inputPath: String?
    public var inputDensity: Double?

    public init(
        kind: Kind, epoch: Int, epochs: Int, step: Int, stepsPerEpoch: Int, cost: Double?, learningRate: Float,
        samplesPerSecond: Double, seconds: Double, trainAccuracy: Double?, testAccuracy: Double?,
        etaSeconds: Double?, message: String?, stepDurationBuckets: [Int]? = nil, stepDurationSum: Double? = nil
    ) {
        self.kind = kind
        self.epoch = epoch
        self.epochs = epochs
        self.step = step
        self.stepsPerEpoch = stepsPerEpoch
        self.cost = cost
        self.learningRate = learningRate
        self.samplesPerSecond = samplesPerSecond
        self.seconds = seconds
        self.trainAccuracy = trainAccuracy
        self.testAccuracy = testAccuracy
        self.etaSeconds = etaSeconds
        self.message = message
        self.stepDurationBuckets = stepDurationBuckets
        self.stepDurationSum = stepDurationSum
    }
}

/// One finished epoch (kept in the run's history and in every checkpoint).
public struct EpochRecord: Codable, Sendable, Equatable {
    public var epoch: Int
    public var cost: Double
    public var learningRate: Float
    public var trainAccuracy: Double
    public var testAccuracy: Double?
    public var seconds: Double
    public var annealed: Bool
    /// Mean cross-entropy and accuracy (percent) on the validation records held out of the
    /// training set (`training.validation`), when there are any.
    public var validationCost: Double?
    public var validationAccuracy: Double?

    public init(
        epoch: Int, cost: Double, learningRate: Float, trainAccuracy: Double, testAccuracy: Double?, seconds: Double,
        annealed: Bool, validationCost: Double? = nil, validationAccuracy: Double? = nil
    ) {
        self.validationCost = validationCost
        self.validationAccuracy = validationAccuracy
        self.epoch = epoch
        self.cost = cost
        self.learningRate = learningRate
        self.trainAccuracy = trainAccuracy
        self.testAccuracy = testAccuracy
        self.seconds = seconds
        self.annealed = annealed
    }
}

/// Any JSON value, kept as text so it can be handed to the spec parser (JSON is YAML).
public struct AnyJSON: Codable, Sendable {
    public var json: String

    public init(json: String) { self.json = json }

    public init(from decoder: Decoder) throws {
        let container = try decoder.singleValueContainer()
        json = try Self.render(container)
    }

    public func encode(to encoder: Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(json)
    }

    static func render(_ container: SingleValueDecodingContainer) throws -> String {
        func quoted(_ text: String) throws -> String {
            String(decoding: try JSONEncoder().encode(text), as: UTF8.self)
        }
        if let object = try? container.decode([String: AnyJSON].self) {
            let members = try object.keys.sorted().map { key in "\(try quoted(key)): \(object[key]!.json)" }
            return "{" + members.joined(separator: ", ") + "}"
        }
        if let array = try? container.decode([AnyJSON].self) {
            return "[" + array.map(\.json).joined(separator: ", ") + "]"
        }
        if container.decodeNil() { return "null" }
        if let bool = try? container.decode(Bool.self) { return bool ? "true" : "false" }
        if let int = try? container.decode(Int.self) { return String(int) }
        if let double = try? container.decode(Double.self) { return String(double) }
        if let string = try? container.decode(String.self) { return try quoted(string) }
        throw DecodingError.dataCorruptedError(in: container, debugDescription: "unsupported JSON value")
    }
}
