import Dispatch
import Foundation
import NNAPI
import NNCheckpoint
import NNData
import NNEngine
import NNNumerics

/// What the driver (CLI or daemon) wants, checked between engine calls: every
/// `Trainer.stepsPerCall` (64) steps at most, and at every epoch's end.
public enum ControlDecision: Sendable { case proceed, pause, stop }

public protocol TrainingControl: Sendable {
    func decision() -> ControlDecision
}

/// Never pauses or stops.
public struct RunToCompletion: TrainingControl {
    public init() {}
    public func decision() -> ControlDecision { .proceed }
}

/// A step-duration histogram filled by the training thread without locks or allocation
/// (fixed buckets, counts updated in place); copied into progress events for /metrics.
public struct StepDurations: Sendable {
    public static let bounds: [Double] = [
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1,
    ]
    public private(set) var counts = [Int](repeating: 0, count: bounds.count + 1)
    public private(set) var sum = 0.0
    @inline(__always) mutating func record(_ seconds: Double) {
        var i = 0
        while i < Self.bounds.count && seconds > Self.bounds[i] { i += 1 }
        counts[i] += 1
        sum += seconds
    }
    /// Cumulative counts, as Prometheus buckets want them.
    public var cumulative: [Int] {
        var c = 0
        return counts.map {
            c += $0
            return c
        }
    }
}

public enum TrainingOutcome: Sendable, Equatable { case completed, paused, stopped }

public enum TrainingError: Error, CustomStringConvertible, Sendable {
    case diverged(epoch: Int, step: Int, cost: Double)
    case data(String)
    case checkpoint(String)
    case replicasDiverged(String)

    public var description: String {
        switch self {
        case .diverged(let e, let s, let c):
            "cost became \(c) at epoch \(e) step \(s): training diverged (lower training.learning_rate); checkpoints hold the last finite parameters"
        case .data(let m): m
        case .checkpoint(let m): m
        case .replicasDiverged(let m): m
        }
    }
}

/// The epoch loop of the seed (stochastic, batch or mini-batch gradient descent with
/// annealing) around a `DataParallelEngine`, with pause/stop points between steps (every
/// engine call, ≤ `stepsPerCall` steps) and
/// checkpoints that resume exactly.
///
/// Not `Sendable`: one thread drives a trainer at a time.
public final class Trainer {
    public let spec: RunSpec
    public let engine: DataParallelEngine
    /// A run across processes: each rank's host and workers (gathered once, at start).
    public let rankPlacements: [RankPlacement]?
    /// A run across processes: the fewest and the most workers a rank runs.
    public let rankWorkerCounts: ClosedRange<Int>?
    public let train: Dataset
    public let test: Dataset?
    /// Records held out of the training data (`training.validation`): they choose the epoch
    /// whose weights the run keeps, and stop it early. The test set is only ever reported.
    public let validation: Dataset?
    /// The weights of the best validation epoch so far, and which epoch that is (nil when not
    /// known, e.g. after a resume that found no best checkpoint). Allocated once.
    let bestParameters: FloatBuffer?
    private(set) var bestParametersEpoch: Int?
    /// `training.average_from_epoch`: the mean of the weights at the ends of the epochs averaged
    /// so far (`state.averagedEpochs` of them), and room to hold the training weights while the
    /// mean is evaluated. Allocated once, when the run averages.
    let averagedParameters: FloatBuffer?
    let heldParameters: FloatBuffer?
    /// Set when the run stopped before its epoch limit, with why.
    public private(set) var earlyStop: String?
    /// The epoch whose weights the finished run kept (the best validation epoch), when chosen.
    public private(set) var keptEpoch: Int?

    /// How the finished run chose its weights, in a sentence (for notes and `nnd train`); nil
    /// when it simply ran all its epochs without validation records.
    public var weightsChoice: String? {
        let averaged = state.finished ? state.averagedEpochs : nil
        let parts = [
            earlyStop, keptEpoch.map { "kept the weights of epoch \($0), the best by \(metric.rawValue)" },
            averaged.map {
                "kept the mean of the weights at the ends of epochs \(state.epoch - $0 + 1)–\(state.epoch)"
            },
        ].compactMap { $0 }
        return parts.isEmpty ? nil : parts.joined(separator: "; ")
    }
    public private(set) var state: ResumeState
    public let stepSize: Int
    public let stepsPerEpoch: Int
    public private(set) var stepDurations = StepDurations()
    /// The most steps handed to the engine in one call, and so the most steps between two
    /// pause/stop points (64 of the seed's steps take ≈ 20 ms). Each call wakes the pool's other
    /// threads and transposes W₁'s slices in and out; calls of 64 instead of 16 steps made the
    /// 2-worker step 4–5 % faster (docs/performance.md). Tests that pause mid-epoch on small
    /// data sets lower it to land there; 1 … `DataParallelEngine.maxStepsPerCall`.
    public var stepsPerCall = DataParallelEngine.maxStepsPerCall {
        didSet { precondition((1...DataParallelEngine.maxStepsPerCall).contains(stepsPerCall)) }
    }
    /// The current epoch's record order; allocated once.
    let order: UnsafeMutableBufferPointer<Int32>
    /// Cost and accuracy of each step of one `engine.steps` call; allocated once.
    let stepResults = UnsafeMutableBufferPointer<PassResult>.allocate(capacity: DataParallelEngine.maxStepsPerCall)
    var rng: DeterministicRNG
    /// How the first layer reads the inputs, the training data's density (non-zero share; nil
    /// when not measured) and why that path.
    public private(set) var inputPath: InputPathChoice
    public let inputDensity: Double?
    public private(set) var inputPathReason: String
    /// `model.input_path: auto` takes the sparse first layer at or below the first density (MNIST,
    /// 19 %, is always sparse, so its runs are reproducible) and the dense one at or above the
    /// second; in between (around the measured crossover, about 29 % non-zero on the seed
    /// network: docs/performance.md) it times both on the first batches.
    public static let autoSparseDensity = (sureBelow: 0.22, sureAbove: 0.45)
    /// A decision and a due flag, agreed across processes (distributed runs); allocated once.
    let agreement = UnsafeMutablePointer<Int64>.allocate(capacity: 2)
    /// How often (in steps) the processes of a distributed run compare their parameters,
    /// besides at every checkpoint.
    public static let replicaCheckSteps = 1000

    /// Builds the engine and either initialises the parameters from the spec's seed or
    /// restores `resume`.
    public init(
        spec: RunSpec, train: Dataset, test: Dataset?, workers: Int, placer: any MemoryPlacer = LibNUMAPlacer(),
        dataHash: String = "", dataFingerprint: String? = nil, resume: Checkpoint? = nil, best: Checkpoint? = nil,
        warmStart: [Float]? = nil, reducer: (any GradientReducer)? = nil
    ) throws {
        guard train.featureCount == spec.model.layers.first else {
            throw TrainingError.data(
                "model.layers starts with \(spec.model.layers.first!) inputs but the training data has \(train.featureCount) features per record"
            )
        }
        guard train.classCount <= spec.model.layers.last! else {
            throw TrainingError.data(
                "model.layers ends with \(spec.model.layers.last!) outputs but the data has \(train.classCount) classes"
            )
        }
        self.spec = spec
        self.test = test
        let loadedRecords = train.count  // what the run trains on, before any validation hold-out
        let fraction = spec.training.validation ?? 0
        if fraction > 0 {
            let (kept, heldOut) = Self.holdOut(train.count, fraction: fraction, seed: spec.training.seed)
            self.train = train.subset(kept)
            validation = train.subset(heldOut)
        } else {
            self.train = train
            validation = nil
        }
        let train = self.train
        stepSize = spec.stepSize(trainCount: train.count)
        stepsPerEpoch = (train.count + stepSize - 1) / stepSize
        let opt = OptimizerConfig(kind: spec.training.optimizer, momentum: Float(spec.training.momentum))
        // The input path: dense unless asked for, or (auto) the data is sparse enough; never
        // without a hidden layer. Across processes every rank decides alike: the density is the
        // same training set's, and a timing near the crossover is agreed below.
        let requested = spec.model.inputPath ?? .dense
        let recorded = resume?.state.inputPath
        // Near the crossover both paths are timed (below), once the engine exists.
        var timeBothPaths = false
        // Ranks may run different worker counts (hosts with different CPU counts do, by default):
        // each cuts its share of a step into its own workers' pieces, and the gradients still
        // match in the allreduce — the flat buffer, and the sparse first layer's one Wᵀ buffer,
        // are laid out the same whatever the pieces. The counts are only shown.
        rankWorkerCounts = reducer?.workerCountRange(own: workers)
        if requested == .dense {
            (inputPath, inputDensity, inputPathReason) = (.dense, nil, "model.input_path: dense")
        } else if spec.model.layers.count < 3 {
            (inputPath, inputDensity, inputPathReason) = (.dense, nil, "the network has no hidden layer")
        } else {
            let density = SparseRows.density(of: train)
            inputDensity = density
            let pct = String(format: "%.1f %%", density * 100)
            let (below, above) = Self.autoSparseDensity
            if requested == .sparse {
                (inputPath, inputPathReason) = (.sparse, "model.input_path: sparse; inputs \(pct) non-zero")
            } else if let recorded {
                (inputPath, inputPathReason) = (
                    recorded == "sparse" ? .sparse : .dense,
                    "auto: as the run chose when it started; inputs \(pct) non-zero"
                )
            } else if density <= below {
                (inputPath, inputPathReason) = (
                    .sparse, "auto: inputs \(pct) non-zero (sparse at or below \(Int(below * 100)) %)"
                )
            } else if density >= above || stepSize > max(1024, workers) {
                (inputPath, inputPathReason) = (
                    .dense, "auto: inputs \(pct) non-zero (dense at or above \(Int(above * 100)) %, or batch mode)"
                )
            } else {
                (inputPath, inputPathReason) = (.sparse, "")
                timeBothPaths = true
            }
        }
        // The training data's index of non-zeros (the engine keeps it).
        let sparseRows = inputPath == .sparse ? SparseRows(train) : nil
        // Batch mode can be the whole training set; the engine processes a step in chunks of at
        // most 1024 records and accumulates, so its buffers stay small.
        engine = DataParallelEngine(
            layout: NetworkLayout(sizes: spec.model.layers), activation: spec.model.activation,
            optimizer: opt, lambda: Float(spec.training.lambda), workers: workers,
            maxBatch: min(stepSize, max(1024, workers)), placer: placer, sparseFirstLayer: inputPath == .sparse)
        engine.reducer = reducer
        rankPlacements = reducer.flatMap { r in
            guard r.size <= RankPlacement.listedRanks else { return nil }
            return zip(r.gather(r.host), r.gather(UInt64(workers))).map { RankPlacement(host: $0, workers: Int($1)) }
        }
        engine.useSparseInput(sparseRows)
        if timeBothPaths, let sparseRows {
            var (faster, reason) = Self.timeInputPaths(
                engine, train, sparseRows, stepSize: stepSize, learningRate: Float(spec.training.learningRate))
            if let reducer {
                // Each rank timed its own share; all must take one path (they meet in every
                // step's allreduce, and sum the same buffers): dense if any rank found it faster.
                var denseSomewhere: Int64 = faster == .dense ? 1 : 0
                reducer.max(&denseSomewhere, count: 1)
                faster = denseSomewhere == 1 ? .dense : .sparse
                reason += " on rank \(reducer.rank); \(faster) on every rank"
            }
            inputPath = faster
            inputPathReason =
                String(format: "auto: inputs %.1f %% non-zero, near the crossover: ", inputDensity! * 100) + reason
            if faster == .dense { engine.useSparseInput(nil) }
        }
        order = .allocate(capacity: train.count)
        bestParameters = validation == nil ? nil : FloatBuffer(count: engine.parameters.count)
        let averages = (spec.training.averageFromEpoch ?? 0) > 0
        averagedParameters = averages ? FloatBuffer(count: engine.parameters.count) : nil
        heldParameters = averages ? FloatBuffer(count: engine.parameters.count) : nil
        rng = DeterministicRNG(seed: spec.training.seed)
        if let resume {
            try resume.restore(into: engine)
            state = resume.state
            if state.hasAverage {
                guard let averagedParameters else {
                    throw TrainingError.data(
                        "the checkpoint holds the mean of \(state.averagedEpochs!) epochs' weights but the spec does not average them (training.average_from_epoch: 0)"
                    )
                }
                guard let mean = resume.averagedParameters, mean.count == averagedParameters.count else {
                    throw TrainingError.data("the checkpoint's averaged_epochs is set but its mean is missing")
                }
                averagedParameters.load(mean)
            }
            if !dataHash.isEmpty && !state.dataHash.isEmpty && dataHash != state.dataHash {
                throw TrainingError.data(
                    "the training data changed since the run started (content hash \(dataHash.prefix(12))…, recorded \(state.dataHash.prefix(12))…)"
                )
            }
            state.workers = workers
            state.trainRecords = state.trainRecords ?? loadedRecords
            state.dataFingerprint = state.dataFingerprint ?? dataFingerprint
            // The kept weights of a resumed run: its best checkpoint, when that is the best epoch's.
            if let bestParameters, let bestEpoch = state.bestValidationEpoch(by: metric) {
                if let best, best.state.epoch == bestEpoch, best.state.stepInEpoch == 0,
                    best.parameters.count == bestParameters.count
                {
                    bestParameters.load(best.parameters)
                    bestParametersEpoch = bestEpoch
                } else if state.epoch == bestEpoch && state.stepInEpoch == 0 {
                    bestParameters.copy(from: engine.parameters)
                    bestParametersEpoch = bestEpoch
                }
            }
        } else {
            engine.layout.initialise(engine.parameters, scheme: spec.model.initialisation, rng: &rng)
            if let warmStart {
                guard warmStart.count == engine.parameters.count else {
                    throw TrainingError.data(
                        "warm start: the current model has \(warmStart.count) parameters, the spec's network \(engine.parameters.count)"
                    )
                }
                engine.parameters.load(warmStart)
            }
            state = ResumeState(
                epochRNGState: rng.state, learningRate: Float(spec.training.learningRate), workers: workers,
                dataHash: dataHash, trainRecords: loadedRecords, dataFingerprint: dataFingerprint)
        }
        state.inputPath = inputPath == .sparse ? "sparse" : "dense"
        try checkRanksStartTogether()
    }

    /// Across processes every rank must resume from the same checkpoint. Each reads the newest in
    /// the run's directory, so ranks that start at different steps see different directories:
    /// storage that is not shared by every host. Training on would fail at the first replica
    /// check, naming diverged parameters instead of the cause.
    func checkRanksStartTogether() throws {
        guard let reducer = engine.reducer else { return }
        let steps = reducer.gather(UInt64(state.updateCount))
        guard let r = steps.indices.first(where: { steps[$0] != steps[0] }) else { return }
        let host = { (rank: Int) in self.rankPlacements.map { " (on \($0[rank].host))" } ?? "" }
        throw TrainingError.replicasDiverged(
            "rank \(r)\(host(r)) would resume from step \(steps[r]) and rank 0\(host(0)) from step \(steps[0]): "
                + "they found different checkpoints in the run's directory; every host must see the same "
                + "run directory, on storage they all share, at the same path")
    }

    deinit {
        order.deallocate()
        stepResults.deallocate()
        agreement.deallocate()
    }

    public func checkpoint() -> Checkpoint {
        Checkpoint(
            engine: engine,
            // A finished run's weights are already the mean (see `run`).
            averagedParameters: state.hasAverage && !state.finished ? averagedParameters : nil,
            state: state)
    }

    /// At the end of epoch `epoch` (1-based): from `training.average_from_epoch` on, folds the
    /// weights into their running mean, m ← m + (θ − m) / n over the n epoch ends so far.
    func averageWeights(afterEpoch epoch: Int) {
        // Allocated only when the run averages (average_from_epoch > 0).
        guard let averagedParameters, epoch >= spec.training.averageFromEpoch! else { return }
        let n = (state.averagedEpochs ?? 0) + 1
        if n == 1 {
            averagedParameters.copy(from: engine.parameters)
        } else {
            let (mean, theta, share) = (averagedParameters.pointer, engine.parameters.pointer, Float(n))
            for i in 0..<averagedParameters.count { mean[i] += (theta[i] - mean[i]) / share }
        }
        state.averagedEpochs = n
    }

    /// Runs `body` with the averaged weights in the engine (when the run has them), then puts the
    /// training weights back.
    func withRunWeights<T>(_ body: () -> T) -> T {
        guard state.hasAverage, let averagedParameters, let heldParameters else { return body() }
        heldParameters.copy(from: engine.parameters)
        engine.parameters.copy(from: averagedParameters)
        defer { engine.parameters.copy(from: heldParameters) }
        return body()
    }

    /// The validation metric that chooses the kept epoch.
    var metric: RunSpec.EarlyStoppingMetric { spec.training.earlyStoppingMetric ?? .validationCost }

    /// Splits record indices 0..<count into (kept for training, held out), both ascending: the
    /// held-out ones are the first ⌈fraction·count⌉ of a shuffle with the run's seed, on a stream
    /// of their own (the epochs' shuffles are unchanged by it).
    static func holdOut(_ count: Int, fraction: Double, seed: UInt64) -> (kept: [Int], heldOut: [Int]) {
        var rng = DeterministicRNG(seed: seed &+ 0x9E37_79B9_7F4A_7C15)
        let shuffled = UnsafeMutableBufferPointer<Int32>.allocate(capacity: count)
        defer { shuffled.deallocate() }
        for i in 0..<count { shuffled[i] = Int32(i) }
        rng.shuffle(shuffled)
        let heldCount = min(max(1, Int((fraction * Double(count)).rounded(.up))), max(count - 1, 0))
        let heldOut = shuffled[0..<heldCount].map { Int($0) }.sorted()
        let held = Set(heldOut)
        return ((0..<count).filter { !held.contains($0) }, heldOut)
    }

    /// Reproduces the current epoch's order from the RNG state saved at its start.
    func prepareEpochOrder() {
        rng = DeterministicRNG(state: state.epochRNGState)
        for i in 0..<order.count { order[i] = Int32(i) }
        rng.shuffle(order)
    }

    /// Trains until done, or until `control` says pause/stop (returns after a checkpoint).
    /// `checkpointSink` receives checkpoints when they are due (`isBest` when test accuracy
    /// is the best so far); it may throw (disk full), which ends the run with that error.
    public func run(
        control: any TrainingControl = RunToCompletion(),
        checkpointSink: ((Checkpoint, _ isBest: Bool) throws -> Void)? = nil,
        onEvent: (TrainingEvent) -> Void = { _ in }
    ) throws -> TrainingOutcome {
        let epochs = spec.training.epochs
        let everySteps = spec.checkpoint.everySteps
        let everySeconds = spec.checkpoint.everySeconds
        var lastCheckpoint = Date()
        var lastEvent = Date.distantPast
        func save(best: Bool = false) throws {
            try checkReplicas()
            guard let checkpointSink else { return }
            let c = checkpoint()
            guard c.allFinite else {
                throw TrainingError.diverged(epoch: state.epoch + 1, step: state.stepInEpoch, cost: .nan)
            }
            try checkpointSink(c, best)
            lastCheckpoint = Date()
        }
        /// Whether a time-based checkpoint is due (every rank agreeing, across processes).
        func checkpointTimeDue(_ now: Date) -> Bool {
            agree(.proceed, due: everySeconds > 0 && now.timeIntervalSince(lastCheckpoint) >= everySeconds).due
        }
        onEvent(event(.started, seconds: 0, sps: 0))
        while state.epoch < epochs {
            prepareEpochOrder()
            var epochStart = Date().addingTimeInterval(-state.epochSeconds)
            while state.stepInEpoch < stepsPerEpoch {
                let decision = agree(control.decision(), due: false).decision
                if decision != .proceed {
                    state.epochSeconds = Date().timeIntervalSince(epochStart)
                    try save()
                    return decision == .stop ? .stopped : .paused
                }
                try trainOneEngineCall()
                let now = Date()
                if now.timeIntervalSince(lastEvent) >= 0.2 {
                    lastEvent = now
                    onEvent(progressEvent(since: epochStart, now: now))
                }
                let dueTime = checkpointTimeDue(now)  // every call, on every rank
                let dueSteps = everySteps > 0 && state.updateCount % everySteps == 0
                if (dueTime || dueSteps) && state.stepInEpoch < stepsPerEpoch {
                    state.epochSeconds = now.timeIntervalSince(epochStart)
                    try save()
                }
            }
            onEvent(try endEpoch(seconds: Date().timeIntervalSince(epochStart)))
            let isBest = noteBestEpoch()
            if let reason = earlyStopReason() {
                earlyStop = reason
                break
            }
            // Agreed every epoch, the last included, as every rank's calls must pair up.
            let due = checkpointTimeDue(Date()) || isBest
            if state.epoch < epochs && due { try save(best: isBest) }
            epochStart = Date()
        }
        let finalIsBest = keepChosenWeights()
        state.finished = true
        try save(best: finalIsBest)
        let records = Double(train.count * epochs)
        onEvent(event(.finished, seconds: state.trainingSeconds, sps: records / max(state.trainingSeconds, 1e-9)))
        return .completed
    }

    /// One engine call: up to `stepsPerCall` steps (one thread wake-up for all of them), ending
    /// at the epoch's end and at every due step-count checkpoint; the pause/stop decision, events
    /// and time-based checkpoints come between calls (≤ 64 steps, ≈ 20 ms for the seed's
    /// network). A step larger than the engine's buffers (batch mode) goes alone, in chunks.
    /// Steps of one call share its mean duration in `stepDurations`.
    func trainOneEngineCall() throws {
        let everySteps = spec.checkpoint.everySteps
        let grouped = stepSize <= engine.maxBatch
        let lo = state.stepInEpoch * stepSize
        var k = grouped ? min(stepsPerCall, stepsPerEpoch - state.stepInEpoch) : 1
        if everySteps > 0 { k = min(k, everySteps - state.updateCount % everySteps) }
        let records = min(k * stepSize, train.count - lo)
        let t0 = DispatchTime.now().uptimeNanoseconds
        let done: Int
        if grouped {
            done = engine.steps(
                data: train, indices: order.baseAddress! + lo, stepSize: stepSize, records: records,
                learningRate: state.learningRate, results: stepResults)
        } else {
            stepResults[0] = engine.step(
                data: train, indices: order.baseAddress! + lo, count: records, learningRate: state.learningRate)
            done = 1
        }
        let perStep = Double(DispatchTime.now().uptimeNanoseconds - t0) * 1e-9 / Double(done)
        let checkedBefore = state.updateCount / Self.replicaCheckSteps
        for i in 0..<done {
            let r = stepResults[i]
            stepDurations.record(perStep)
            guard r.costSum.isFinite else {
                throw TrainingError.diverged(epoch: state.epoch + 1, step: state.stepInEpoch + 1, cost: r.costSum)
            }
            state.epochCostSum += r.costSum
            state.epochCorrect += r.correct
            state.epochRecords += r.records
            state.stepInEpoch += 1
        }
        state.updateCount = engine.updateCount
        if engine.reducer != nil && state.updateCount / Self.replicaCheckSteps != checkedBefore {
            try checkReplicas()
        }
    }

    /// The `step` event: the epoch's progress and its mean cost so far.
    func progressEvent(since epochStart: Date, now: Date) -> TrainingEvent {
        let secs = now.timeIntervalSince(epochStart)
        var e = event(.step, seconds: secs, sps: Double(state.epochRecords) / max(secs, 1e-9))
        e.cost = state.epochCostSum / Double(max(state.epochRecords, 1))
        return e
    }

    /// The end of an epoch that took `seconds`: its cost, the annealing, the weights' running
    /// mean, the evaluations, its record in the history; the state moves to the next epoch.
    /// Returns the `epoch` event.
    func endEpoch(seconds: Double) throws -> TrainingEvent {
        let m = train.count
        // The seed's cost J = ΣJ_i/m + (λ/m)·Σθ², then annealing.
        let j =
            state.epochCostSum / Double(m) + spec.training.lambda / Double(m)
            * engine.layout.sumSquaredWeights(engine.parameters)
        guard j.isFinite else {
            throw TrainingError.diverged(epoch: state.epoch + 1, step: state.stepInEpoch, cost: j)
        }
        let lrUsed = state.learningRate
        // The seed anneals only once it has two earlier costs (`len(costs) > 1`); kept as is.
        let annealed = spec.training.anneal && state.history.count > 1 && j > state.history.last!.cost
        if annealed { state.learningRate = state.learningRate * 0.9 }
        averageWeights(afterEpoch: state.epoch + 1)
        // Test accuracy is the run's weights': the mean, once the run averages.
        let testAcc = withRunWeights {
            spec.training.evaluateEveryEpoch ? test.map { engine.evaluate($0).accuracy * 100 } : nil
        }
        let validated = validation.map { engine.evaluate($0) }
        let trainAcc = Double(state.epochCorrect) / Double(max(state.epochRecords, 1)) * 100
        state.history.append(
            EpochRecord(
                epoch: state.epoch + 1, cost: j, learningRate: lrUsed, trainAccuracy: trainAcc,
                testAccuracy: testAcc, seconds: seconds, annealed: annealed,
                validationCost: validated.map { $0.costSum / Double(max($0.records, 1)) },
                validationAccuracy: validated.map { $0.accuracy * 100 }))
        state.trainingSeconds += seconds
        state.epoch += 1
        state.stepInEpoch = 0
        state.epochCostSum = 0
        state.epochCorrect = 0
        state.epochRecords = 0
        state.epochSeconds = 0
        state.epochRNGState = rng.state  // the next epoch's shuffle continues this stream
        var e = event(.epoch, seconds: seconds, sps: Double(m) / max(seconds, 1e-9))
        e.epoch = state.epoch
        e.step = stepsPerEpoch
        e.cost = j
        e.learningRate = lrUsed
        e.trainAccuracy = trainAcc
        e.testAccuracy = testAcc
        e.validationCost = state.history.last?.validationCost
        e.validationAccuracy = state.history.last?.validationAccuracy
        if annealed { e.message = "cost rose: learning rate annealed to \(state.learningRate)" }
        return e
    }

    /// Whether the epoch just ended is the best so far — by validation (its weights are then
    /// kept in `bestParameters`), else by test accuracy.
    func noteBestEpoch() -> Bool {
        guard let bestParameters else {
            let testAcc = state.history.last?.testAccuracy
            return testAcc != nil && testAcc == state.bestTestAccuracy
        }
        let isBest = state.bestValidationEpoch(by: metric) == state.epoch
        if isBest {
            bestParameters.copy(from: engine.parameters)
            bestParametersEpoch = state.epoch
        }
        return isBest
    }

    /// Why the run stops before its epoch limit (`training.early_stopping_patience` epochs
    /// without a better validation metric), or nil.
    func earlyStopReason() -> String? {
        let patience = spec.training.earlyStoppingPatience ?? 0
        guard patience > 0, let bestEpoch = state.bestValidationEpoch(by: metric), state.epoch - bestEpoch >= patience,
            state.epoch < spec.training.epochs
        else { return nil }
        return "stopped early after epoch \(state.epoch): \(metric.rawValue) has not improved for "
            + "\(patience) epochs since epoch \(bestEpoch)"
    }

    /// The weights a finished run keeps — its best validation epoch's, or the mean of an
    /// averaging run: the final checkpoint, the export and the promotion gate see them. Returns
    /// whether the final checkpoint is the best one: best.safetensors stays the best epoch's own
    /// checkpoint (written at its end), unless that epoch is the last one, which had none.
    func keepChosenWeights() -> Bool {
        if bestParameters != nil, let bestEpoch = state.bestValidationEpoch(by: metric) {
            if bestEpoch != state.epoch, let bestParameters, bestParametersEpoch == bestEpoch {
                engine.parameters.copy(from: bestParameters)
            }
            keptEpoch = bestEpoch
        }
        if state.hasAverage, let averagedParameters { engine.parameters.copy(from: averagedParameters) }
        if bestParameters != nil { return keptEpoch == state.epoch }
        let lastTest = state.history.last?.testAccuracy
        return lastTest != nil && lastTest == state.bestTestAccuracy
    }

    /// Times `engine`'s steps on the first records with the sparse and the dense first layer
    /// (twice each, alternated; the best of each) and restores the parameters, optimiser state
    /// and update count afterwards, so the trial leaves no trace in the run. Returns the faster
    /// path and a sentence with the timings.
    static func timeInputPaths(
        _ engine: DataParallelEngine, _ data: Dataset, _ rows: SparseRows, stepSize: Int, learningRate: Float
    ) -> (InputPathChoice, String) {
        let saved = [engine.parameters] + engine.optimizerState
        let copies = saved.map { b -> FloatBuffer in
            let c = FloatBuffer(count: b.count)
            c.copy(from: b)
            return c
        }
        let updates = engine.updateCount
        let k = max(1, min(DataParallelEngine.maxStepsPerCall, data.count / stepSize))
        let order = UnsafeMutablePointer<Int32>.allocate(capacity: k * stepSize)
        defer { order.deallocate() }
        for i in 0..<(k * stepSize) { order[i] = Int32(i % data.count) }
        let results = UnsafeMutableBufferPointer<PassResult>.allocate(capacity: DataParallelEngine.maxStepsPerCall)
        defer { results.deallocate() }
        var best: [InputPathChoice: Double] = [:]
        for _ in 0..<3 {
            for path in [InputPathChoice.sparse, .dense] {
                engine.useSparseInput(path == .sparse ? rows : nil)
                let t0 = DispatchTime.now().uptimeNanoseconds
                _ = engine.steps(
                    data: data, indices: order, stepSize: stepSize, records: k * stepSize, learningRate: learningRate,
                    results: results)
                let t = Double(DispatchTime.now().uptimeNanoseconds - t0) * 1e-9
                best[path] = min(best[path] ?? .infinity, t)
                for (b, c) in zip(saved, copies) { b.copy(from: c) }
                engine.updateCount = updates
            }
        }
        engine.useSparseInput(rows)
        let (s, d) = (best[.sparse]!, best[.dense]!)
        return (
            s < d ? .sparse : .dense,
            String(format: "timed %d steps: sparse %.2f ms, dense %.2f ms", k, s * 1000, d * 1000)
        )
    }

    /// The decision and due flag every process takes: with several processes (they meet in
    /// collective calls, so they must checkpoint, pause and stop at the same step) the most
    /// urgent of theirs — stop over pause over proceed, due if due anywhere; alone, its own.
    func agree(_ decision: ControlDecision, due: Bool) -> (decision: ControlDecision, due: Bool) {
        guard let reducer = engine.reducer else { return (decision, due) }
        agreement[0] = decision == .stop ? 2 : decision == .pause ? 1 : 0
        agreement[1] = due ? 1 : 0
        reducer.max(agreement, count: 2)
        return (agreement[0] == 2 ? .stop : agreement[0] == 1 ? .pause : .proceed, agreement[1] != 0)
    }

    /// Compares the processes' parameters (a checksum from each): identical replicas are what
    /// the identical updates promise; a difference fails the run naming the processes.
    func checkReplicas() throws {
        guard let reducer = engine.reducer else { return }
        let sums = reducer.gather(engine.parameterChecksum())
        let differing = sums.indices.filter { sums[$0] != sums[0] }
        guard differing.isEmpty else {
            throw TrainingError.replicasDiverged(
                "the parameters of rank\(differing.count > 1 ? "s" : "") \(differing.map(String.init).joined(separator: ", ")) differ from rank 0's after \(state.updateCount) steps (checksums \(sums.map { String($0, radix: 16) }.joined(separator: " "))): the processes no longer train the same network"
            )
        }
    }

    func event(_ kind: TrainingEvent.Kind, seconds: Double, sps: Double) -> TrainingEvent {
        let epochs = spec.training.epochs
        let done = Double(state.epoch) + Double(state.stepInEpoch) / Double(stepsPerEpoch)
        let perEpoch =
            state.history.isEmpty
            ? (state.stepInEpoch > 0 ? seconds * Double(stepsPerEpoch) / Double(state.stepInEpoch) : nil)
            : state.trainingSeconds / Double(state.history.count)
        var e = TrainingEvent(
            kind: kind, epoch: min(state.epoch + 1, epochs), epochs: epochs, step: state.stepInEpoch,
            stepsPerEpoch: stepsPerEpoch, cost: state.history.last?.cost, learningRate: state.learningRate,
            samplesPerSecond: sps, seconds: seconds, trainAccuracy: nil, testAccuracy: state.history.last?.testAccuracy,
            etaSeconds: perEpoch.map { $0 * (Double(epochs) - done) }, message: nil,
            stepDurationBuckets: stepDurations.cumulative, stepDurationSum: stepDurations.sum)
        e.inputPath = inputPath == .sparse ? "sparse" : "dense"
        e.inputDensity = inputDensity
        if let reducer = engine.reducer {
            let t = engine.takeDistributedTimes()
            e.ranks = reducer.size
            e.rankPlacements = rankPlacements
            if t.steps > 0 {
                e.stepComputeSeconds = t.meanCompute
                e.stepAllreduceSeconds = t.meanAllreduce
            }
        }
        return e
    }

    /// Accuracy (percent) and mean cross-entropy on a dataset with the current parameters.
    public func evaluate(_ data: Dataset) -> (accuracy: Double, cost: Double) {
        let r = engine.evaluate(data)
        return (r.accuracy * 100, r.costSum / Double(max(r.records, 1)))
    }
}
