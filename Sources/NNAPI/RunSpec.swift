/// A run spec: everything that defines a training run. This is the document's shape;
/// `RunSpec.parse` (NNTraining) reads it from YAML or JSON, fills the defaults and checks
/// every field. On the wire and in YAML the keys are snake_case (`batch_size`).
public struct RunSpec: Codable, Sendable, Equatable {
    public var name: String
    public var model: Model
    public var training: Training
    public var data: DataSource
    public var checkpoint: Checkpointing
    /// Present for retraining runs: where a completed run's model may be promoted.
    public var promotion: Promotion?
    /// Present for runs trained by several processes (MPI ranks) that the daemon launches.
    public var distributed: Distributed?

    public init(
        name: String, model: Model, training: Training, data: DataSource, checkpoint: Checkpointing,
        promotion: Promotion? = nil, distributed: Distributed? = nil
    ) {
        self.name = name
        self.model = model
        self.training = training
        self.data = data
        self.checkpoint = checkpoint
        self.promotion = promotion
        self.distributed = distributed
    }

    public struct Model: Codable, Sendable, Equatable {
        /// Units per layer, input first: the seed's `[784, 200, 100, 50, 10]`.
        public var layers: [Int]
        public var activation: Activation
        public var initialisation: Initialisation
        /// How the first layer reads the inputs: from their non-zeros (`sparse`), as a dense
        /// matrix (`dense`), or chosen from the data's measured density (`auto`, the default).
        /// Absent from specs stored before the field existed: those trained, and resume, dense.
        public var inputPath: InputPath?
        enum CodingKeys: String, CodingKey {
            case layers, activation
            case initialisation = "init"
            case inputPath
        }
    }

    public enum Mode: String, WireEnum { case stochastic, batch, minibatch }

    public struct Training: Codable, Sendable, Equatable {
        public var mode: Mode
        public var batchSize: Int
        public var epochs: Int
        public var learningRate: Double
        public var lambda: Double
        public var anneal: Bool
        public var optimizer: OptimizerKind
        public var momentum: Double
        public var seed: UInt64
        /// Evaluate on the test set after every epoch (for curves; the test set never chooses weights).
        public var evaluateEveryEpoch: Bool
        /// Share of the training records held out (chosen with the run's seed) to choose the best
        /// epoch and to stop early; 0 = none. Optional only so that records written before it
        /// existed still load; `RunSpec.parse` always sets it.
        public var validation: Double?
        /// Stop when the validation metric has not improved for this many epochs; 0 = never.
        public var earlyStoppingPatience: Int?
        /// Which validation figure chooses the best epoch and stops early.
        public var earlyStoppingMetric: EarlyStoppingMetric?
        /// Stochastic weight averaging: from this epoch (1-based) on, the run's weights are the
        /// mean of the weights at the end of each epoch since, while training goes on from the
        /// last ones; test accuracy is the mean's, and the mean is what the run keeps. 0 = off.
        /// Optional only so that records written before it existed still load.
        public var averageFromEpoch: Int?
    }

    public enum EarlyStoppingMetric: String, WireEnum {
        /// Mean cross-entropy on the validation records: lower is better.
        case validationCost = "validation_cost"
        /// Accuracy on the validation records: higher is better.
        case validationAccuracy = "validation_accuracy"
    }

    /// The files and directories the spec names, with their fields: what training opens.
    public var paths: [(field: String, path: String)] {
        let named = [
            ("data.dir", data.dir), ("data.train_csv", data.trainCSV), ("data.test_csv", data.testCSV),
            ("distributed.hostfile", distributed?.hostfile),
        ]
        return named.compactMap { field, path in path.map { (field, $0) } }
    }

    public struct DataSource: Codable, Sendable, Equatable {
        /// Directory with the four MNIST IDX files (plain or .gz); nil = `nnd`'s default search.
        public var dir: String?
        /// CSV files in the seed's layout instead of IDX (both or neither).
        public var trainCSV: String?
        public var testCSV: String?
        /// Use only the first N records (quick runs, tests).
        public var trainLimit: Int?
        public var testLimit: Int?
        /// CSV values are divided by this: 255 for the seed's 0–255 pixels, 1 for features
        /// already scaled. Optional only so that older records load; `parse` always sets it.
        public var featureScale: Double?
        // camelCase raw values: see `APIJSON` (on the wire: train_csv, test_csv).
        enum CodingKeys: String, CodingKey {
            case dir
            case trainCSV = "trainCsv"
            case testCSV = "testCsv"
            case featureScale
            case trainLimit, testLimit
        }
    }

    public struct Checkpointing: Codable, Sendable, Equatable {
        /// Write a checkpoint every N steps (0 = off).
        public var everySteps: Int
        /// ... and/or every T seconds (0 = off).
        public var everySeconds: Double
        /// Keep the last K checkpoints (plus the best by test accuracy).
        public var keep: Int
    }

    public struct Promotion: Codable, Sendable, Equatable {
        /// Model name: `<state>/models/<model>/`.
        public var model: String
        /// Promote unless the new test accuracy is below the current model's by more than this
        /// (percentage points).
        public var margin: Double
        /// Start from the current model's weights instead of a fresh initialisation.
        public var warmStart: Bool
    }

    /// A data-parallel run across processes: the daemon starts `ranks` copies of `nnd` through
    /// the launcher (Open MPI's `mpirun` or Slurm's `srun`); each trains its share of every
    /// mini-batch and the gradients are summed with MPI_Allreduce.
    public struct Distributed: Codable, Sendable, Equatable {
        /// Processes (MPI ranks); 1 trains in the daemon itself.
        public var ranks: Int
        /// An Open MPI hostfile (`host slots=N` per line); nil: every rank on this machine.
        public var hostfile: String?
        public var launcher: Launcher
        /// More arguments for the launcher, before the program (e.g. `--mca btl_tcp_if_include eth0`).
        public var launcherArgs: [String]

        public init(ranks: Int, hostfile: String? = nil, launcher: Launcher = .mpirun, launcherArgs: [String] = []) {
            self.ranks = ranks
            self.hostfile = hostfile
            self.launcher = launcher
            self.launcherArgs = launcherArgs
        }
    }

    /// Effective records per step.
    public func stepSize(trainCount: Int) -> Int {
        switch training.mode {
        case .stochastic: 1
        case .batch: trainCount
        case .minibatch: min(training.batchSize, trainCount)
        }
    }
}
