import Dispatch
import Foundation
import NNAPI
import NNData
import NNNumerics
import Synchronization

/// Cost and accuracy of one step or one evaluation pass.
public struct PassResult: Sendable, Equatable {
    /// Σ cross-entropy over the records (Float64), without the L2 term.
    public var costSum: Double
    public var correct: Int
    public var records: Int
    public var accuracy: Double { records == 0 ? 0 : Double(correct) / Double(records) }

    static let zero = PassResult(costSum: 0, correct: 0, records: 0)

    mutating func add(_ other: PassResult) {
        costSum += other.costSum
        correct += other.correct
        records += other.records
    }
}

/// Data-parallel training engine for a fully connected softmax classifier.
///
/// A step splits the mini-batch into one contiguous shard per worker (sizes differ by at most
/// one record). One `concurrentPerform` runs up to `maxStepsPerCall` steps (`steps`), each in
/// four phases, each claimed piece by piece through atomics and closed by a barrier:
/// 1. each shard gathers its records' inputs into its rows of the batch's input matrix;
/// 2. each iteration computes one slice of the first layer's output units for the whole batch
///    (`Z₁[:, units] = X · W₁[units]ᵀ`, in its own block, then copied into Z₁), the same
///    units whose gradient and update it owns in phase 4 — so each worker reads and writes only
///    its own rows of W₁, the network's largest matrix (627 KB for the seed's), and they stay
///    in that core's cache from step to step;
/// 3. each shard runs the rest of the forward pass, the loss and the backward pass (deltas)
///    on its rows;
/// 4. each iteration claims a gradient slice — output units `[n·w/W, n·(w+1)/W)` of every
///    layer — computes those rows of the weight gradient summed over all records of the batch
///    (one GEMM per layer whose inner sum runs over every shard's rows), their
///    bias gradient, and applies the optimiser update to exactly those parameters.
/// So each worker reduces one slice of the flat gradient over all workers' records and updates
/// that slice, without first writing a whole per-worker gradient and then summing the copies:
/// a shard's full weight-gradient GEMM writes and re-reads every gradient element whatever the
/// shard's size, so that fixed cost does not shrink with more workers. Phase 2 is the same
/// observation for the forward pass: a shard's first-layer GEMM packs and reads all of W₁.
/// Measurements behind both: docs/performance.md.
/// A network without hidden layers has a softmax first layer, which needs whole rows: there
/// phase 2 is skipped and the shards run the first layer too.
/// Which thread runs a shard or slice changes nothing in the arithmetic, so a step is bitwise
/// reproducible for a given worker count.
///
/// Everything is allocated in `init`; `step` neither allocates nor locks.
///
/// Where to read on: the step's schedule is in StepSchedule.swift, the layer math (with each
/// matrix's shape) in LayerMath.swift, the updates in Optimizer.swift, the buffers and their
/// NUMA placement in BatchBuffers.swift and NUMA.swift.
///
/// `@unchecked Sendable`: the engine is driven by one training task at a time (the
/// `TrainingLoop` owns it); inside a step the workers write disjoint memory (see `FloatBuffer`).
public final class DataParallelEngine: @unchecked Sendable {
    public let layout: NetworkLayout
    public let activation: Activation
    public let optimizer: OptimizerConfig
    public let lambda: Float
    /// Pieces each phase of a step is split into (shards of the batch, slices of the
    /// gradient, of the first layer and of its sparse buffers), one per worker thread.
    public let workerCount: Int
    public let maxBatch: Int
    public let placements: [WorkerPlacement]
    public let placer: any MemoryPlacer

    /// All parameters, one flat buffer; per-layer views through `layout`.
    public let parameters: FloatBuffer
    /// Σ over the step's records of ∂J/∂θ, laid out like the parameters.
    public let gradient: FloatBuffer
    /// Optimiser state (velocity, or Adam's m and v), same layout as the parameters.
    public let optimizerState: [FloatBuffer]
    /// Adam's step counter t (number of updates applied so far).
    public var updateCount: Int = 0

    let batch: BatchBuffers
    /// gradientSlices[w]: the output units whose gradient and update slice w computes.
    let gradientSlices: [[GradientSlice]]
    /// firstLayerUnits[w]: the first layer's output units slice w computes in phase 2 — the
    /// same units as its layer-1 gradient slice. Empty when the first layer is the output layer.
    let firstLayerUnits: [Range<Int>]
    /// Per-worker shard size limit: ceil(maxBatch / workers).
    let maxRows: Int
    /// Claims and waits of the phases inside one `concurrentPerform`.
    let schedule: StepSchedule
    /// Cost and accuracy of shard s in round r of a `steps` call (or of worker s's part of an
    /// evaluation chunk, r = 0), at [r·W + s].
    let roundResults: UnsafeMutablePointer<PassResult>
    /// Where a step's time goes (off unless `recordPhaseTimes`; `nnd bench` turns it on).
    public let phaseTimes: PhaseTimes
    /// Set when this process is one of several training the same network (MPI ranks): every
    /// step then sums its gradient across them before the update (DistributedStep.swift).
    public var reducer: (any GradientReducer)?
    /// The step's cost, correct and record counts, summed across processes; allocated once.
    let reducedCounts = UnsafeMutablePointer<Double>.allocate(capacity: 3)
    /// Where distributed steps' time went since the last `takeDistributedTimes`.
    var distributedTimes = DistributedTimes()
    /// The sparse first layer's buffers (engines made with `sparseFirstLayer`); in use once
    /// `useSparseInput` gives it the data's index (SparseFirstLayer.swift).
    let sparse: SparseFirstLayer?

    public init(
        layout: NetworkLayout, activation: Activation, optimizer: OptimizerConfig, lambda: Float,
        workers: Int, maxBatch: Int, placer: any MemoryPlacer = LibNUMAPlacer(), recordPhaseTimes: Bool = false,
        sparseFirstLayer: Bool = false
    ) {
        precondition(workers >= 1 && maxBatch >= 1)
        phaseTimes = PhaseTimes(workers: workers, enabled: recordPhaseTimes)
        self.layout = layout
        self.activation = activation
        self.optimizer = optimizer
        self.lambda = lambda
        self.workerCount = workers
        self.maxBatch = maxBatch
        self.placer = placer
        let placements = placer.plan(workers: workers)
        self.placements = placements
        let shared = placer.sharedAllocator(nodes: placements.map(\.node))
        parameters = FloatBuffer(count: layout.parameterCount, allocator: shared)
        gradient = FloatBuffer(count: layout.parameterCount, allocator: shared)
        optimizerState = (0..<optimizer.stateBuffers).map { _ in
            FloatBuffer(count: layout.parameterCount, allocator: shared)
        }
        let maxRows = (maxBatch + workers - 1) / workers
        self.maxRows = maxRows
        let sizes = layout.sizes
        let split = (0..<workers).map { Self.evenSlice(of: sizes[1], workers: workers, slice: $0) }
        firstLayerUnits = sizes.count > 2 ? split : []
        // Only a hidden first layer is split (a softmax first layer needs whole rows).
        sparse =
            sparseFirstLayer && sizes.count > 2
            ? SparseFirstLayer(
                inputs: sizes[0], units: sizes[1], pieces: workers, stateBuffers: optimizer.stateBuffers,
                maxBatch: maxBatch) : nil
        // Each worker's block: its units' outputs on the dense path; on the sparse one its part of
        // every record's outputs, in rows padded to 16 floats.
        let blockWidth = sparse?.ldw ?? split.map(\.count).max()!
        batch = BatchBuffers(
            sizes: sizes, workers: workers, maxRows: maxRows,
            blockFloats: sizes.count > 2 ? maxBatch * blockWidth : 0,
            placements: placements, placer: placer)
        schedule = StepSchedule(workers: workers)
        roundResults = .allocate(capacity: Self.maxStepsPerCall * workers)
        roundResults.initialize(repeating: .zero, count: Self.maxStepsPerCall * workers)
        gradientSlices = (0..<workers).map { w in
            (1..<sizes.count).compactMap { l in
                let rows = Self.evenSlice(of: sizes[l], workers: workers, slice: w)
                return rows.isEmpty ? nil : GradientSlice(layer: l, rows: rows)
            }
        }
    }

    /// Runs `body(0 ..< workerCount)` concurrently, each with denormal floats flushed to zero for
    /// the call (Adam's second moment decays into them, at ~100 cycles an operation;
    /// `VectorKernels.withDenormalsFlushed` gives the borrowed thread its mode back): every
    /// parallel region of the engine goes through here. With more workers than Dispatch has
    /// threads, a thread runs several bodies one after another: a step's phases claim their
    /// pieces (`WorkQueue`), so the first body on a thread claims and runs the pieces no other
    /// thread has taken and the later ones find them done.
    @inline(__always)
    func onWorkers(_ body: @Sendable (Int) -> Void) {
        DispatchQueue.concurrentPerform(iterations: workerCount) { w in
            VectorKernels.withDenormalsFlushed { body(w) }
        }
    }

    /// Slice w of n things split evenly over W workers — a layer's output units, a batch's
    /// rows: `[n·w/W, n·(w+1)/W)`.
    static func evenSlice(of n: Int, workers: Int, slice w: Int) -> Range<Int> {
        (n * w / workers)..<(n * (w + 1) / workers)
    }

    deinit {
        roundResults.deallocate()
        reducedCounts.deallocate()
    }

    /// Where each worker's band of the batch buffers is, and the shared buffers, for reports and tests.
    public var batchBufferPlacement: String { batch.memory.allocator.placement }
    public var parameterPlacement: String { parameters.allocator.placement }

    // MARK: - Training steps

    /// The most steps `steps` runs in one `concurrentPerform`.
    public static let maxStepsPerCall = 64

    /// One gradient-descent step on the records `indices[0..<count]` of `data`. A step larger
    /// than `maxBatch` (batch mode) is processed in chunks whose gradients accumulate.
    public func step(data: Dataset, indices: UnsafePointer<Int32>, count n: Int, learningRate: Float) -> PassResult {
        precondition(n >= 1, "empty step")
        var result = PassResult.zero
        if n <= maxBatch && reducer == nil {
            _ = withUnsafeMutablePointer(to: &result) { r in
                steps(
                    data: data, indices: indices, stepSize: n, records: n, learningRate: learningRate,
                    results: UnsafeMutableBufferPointer(start: r, count: 1))
            }
            return result
        }
        checkSparseInput(data)
        transposeSlices(toSlices: true)
        defer { transposeSlices(toSlices: false) }
        if let reducer {
            return distributedStep(
                reducer, data: data, indices: UnsafeMutablePointer(mutating: indices), count: n,
                learningRate: learningRate)
        }
        let indices = SharedPointer(UnsafeMutablePointer(mutating: indices))
        updateCount += 1
        phaseTimes.countStep()
        let adamStep = updateCount
        var chunkStart = 0
        while chunkStart < n {
            let c = min(maxBatch, n - chunkStart)
            let base = chunkStart
            let accumulate = chunkStart > 0
            let lastChunk = chunkStart + c == n
            schedule.reset()
            onWorkers { iteration in
                runRound(
                    0, iteration: iteration, data: data, indices: indices.pointer + base, rows: c,
                    accumulate: accumulate, update: lastChunk ? n : nil, learningRate: learningRate,
                    adamStep: adamStep)
            }
            result.add(roundTotal(0))
            chunkStart += c
        }
        return result
    }

    /// Consecutive gradient-descent steps over `indices[0..<records]`, `stepSize` records each
    /// (the last one takes what is left; `stepSize ≤ maxBatch`), in one `concurrentPerform`:
    /// every call wakes the pool's other threads, a cost of the order of a few per cent of a
    /// seed step (docs/performance.md), so the trainer hands over up to `maxStepsPerCall` steps. Writes each
    /// step's cost and accuracy to `results` and returns the number of steps run: all of them,
    /// or up to and including the first step whose cost is not finite (its update is applied,
    /// as `step` would; nothing after it runs).
    ///
    /// Round r's phases wait only for pieces already claimed by running threads, and round r
    /// begins with a wait for round r − 1's gradient slices (its gather overwrites what they
    /// read); so nothing waits on a thread that has not started, and if the pool runs the
    /// iterations one after another the first one runs every step.
    public func steps(
        data: Dataset, indices: UnsafePointer<Int32>, stepSize: Int, records: Int, learningRate: Float,
        results: UnsafeMutableBufferPointer<PassResult>
    ) -> Int {
        precondition(stepSize >= 1 && stepSize <= maxBatch && records >= 1, "bad step group")
        let k = (records + stepSize - 1) / stepSize
        precondition(k <= Self.maxStepsPerCall && k <= results.count, "too many steps for one call")
        // The sparse first layer's slices are loaded for the call's steps and written back after.
        checkSparseInput(data)
        transposeSlices(toSlices: true)
        defer { transposeSlices(toSlices: false) }
        if let reducer {
            // Across processes every step ends in an allreduce, so steps go one at a time.
            var done = 0
            for r in 0..<k {
                let lo = r * stepSize
                results[r] = distributedStep(
                    reducer, data: data, indices: UnsafeMutablePointer(mutating: indices) + lo,
                    count: min(stepSize, records - lo), learningRate: learningRate)
                done += 1
                if !results[r].costSum.isFinite { break }
            }
            return done
        }
        let indices = SharedPointer(UnsafeMutablePointer(mutating: indices))
        let firstUpdate = updateCount + 1
        schedule.reset()
        onWorkers { iteration in
            for r in 0..<k {
                if r > 0 {
                    var t = phaseTimes.now()
                    schedule.slices.waitForAll(round: r - 1)
                    phaseTimes.add(.wait, index: iteration, since: &t)
                }
                let lo = r * stepSize
                let n = min(stepSize, records - lo)
                runRound(
                    r, iteration: iteration, data: data, indices: indices.pointer + lo, rows: n,
                    accumulate: false, update: n, learningRate: learningRate, adamStep: firstUpdate + r,
                    nextRows: r + 1 < k ? min(stepSize, records - lo - n) : 0)
                // Every thread reads the same finished shard results, so all stop at the same step.
                if !roundTotal(r).costSum.isFinite { break }
            }
        }
        var done = 0
        for r in 0..<k {
            let result = roundTotal(r)
            results[r] = result
            done += 1
            phaseTimes.countStep()
            if !result.costSum.isFinite { break }
        }
        updateCount += done
        return done
    }

    /// The sparse path trains on the data set whose index it was given.
    func checkSparseInput(_ data: Dataset) {
        guard inputPath == .sparse, let rows = sparse?.rows else { return }
        precondition(rows.source == ObjectIdentifier(data), "the sparse index belongs to another data set")
    }

    // MARK: - Evaluation

    /// Forward pass over a whole dataset (in parallel, no parameter change): cost and accuracy.
    public func evaluate(_ data: Dataset) -> PassResult {
        let W = workerCount
        let chunk = maxRows
        let inSize = layout.inputSize
        var total = PassResult.zero
        var start = 0
        while start < data.count {
            let end = min(data.count, start + W * chunk)
            let n = end - start
            let base = start
            onWorkers { w in
                placer.bindCurrentThread(toNode: placements[w].node)
                let band = Self.evenSlice(of: n, workers: W, slice: w)
                let lo = band.lowerBound
                let rows = band.count
                roundResults[w] = .zero
                if rows == 0 { return }
                // Worker w's own band of the batch buffers.
                forward(input: data.features.pointer + (base + lo) * inSize, row: w * chunk, rows: rows)
                let (cost, correct) = data.labels.withUnsafeBufferPointer { labels in
                    lossAndOutputDelta(row: w * chunk, rows: rows) { labels[base + lo + $0] }
                }
                roundResults[w] = PassResult(costSum: cost, correct: correct, records: rows)
            }
            total.add(roundTotal(0))
            start = end
        }
        return total
    }

    /// Class probabilities for some records (used by reports and the numpy cross-check).
    public func probabilities(_ data: Dataset, range: Range<Int>) -> [[Float]] {
        var out: [[Float]] = []
        let k = layout.outputSize
        var s = range.lowerBound
        while s < range.upperBound {
            let rows = min(maxRows, range.upperBound - s)
            forward(input: data.features.pointer + s * layout.inputSize, row: 0, rows: rows)
            let yhat = batch.activations[layout.sizes.count - 1]
            for r in 0..<rows { out.append(Array(UnsafeBufferPointer(start: yhat + r * k, count: k))) }
            s += rows
        }
        return out
    }
}
