import Foundation
import NNAPI

/// What rank 0 of a distributed run tells the daemon that launched it: one JSON object per
/// line on its standard output (`nnd rank`), read by the daemon into the run's status, events,
/// metrics and checkpoints list exactly as a run in the daemon's own process reports them.
public struct RankReport: Codable, Sendable, Equatable {
    public enum Kind: String, WireEnum {
        /// A training event; epoch events carry the run's history so far.
        case event
        /// A checkpoint rank 0 wrote.
        case checkpoint
        /// How training ended (`completed`, `paused`, `stopped`) — the last line.
        case outcome
    }
    public var kind: Kind
    public var event: TrainingEvent?
    public var history: [EpochRecord]?
    public var checkpointPath: String?
    public var checkpointBytes: Int?
    public var checkpointSeconds: Double?
    public var outcome: String?
    /// How the finished run chose its weights (validation, early stop), as `Trainer.weightsChoice`.
    public var weightsChoice: String?

    public init(kind: Kind) { self.kind = kind }

    /// The line's text (no newline).
    public var line: String { String(decoding: try! APIJSON.encoder.encode(self), as: UTF8.self) }
}

/// Where a distributed run keeps what its processes share, inside the run's directory (which
/// every host must see at the same path: shared storage across hosts).
public enum DistributedFiles {
    /// The run spec the ranks train (APIJSON).
    public static func spec(runDirectory: String) -> String { "\(runDirectory)/distributed/spec.json" }
    /// The training shards' image files the ranks read (APIJSON array): those the daemon read.
    public static func shards(runDirectory: String) -> String { "\(runDirectory)/distributed/shards.json" }
    /// The warm-start parameters, when the run starts from a model version.
    public static func warmStart(runDirectory: String) -> String {
        "\(runDirectory)/distributed/warm-start.safetensors"
    }
    /// The launcher's standard error (Open MPI's and the ranks' messages).
    public static func launcherLog(runDirectory: String) -> String { "\(runDirectory)/distributed/launcher.log" }
}
