import Dispatch
import Foundation
import NNAPI
import NNData
import NNNumerics
import Synchronization

/// The mini-batch's activations and deltas: per layer one row-major matrix with the records of
/// every shard one after another (shard s starts at the step's row `c·s/W`). Keeping the
/// shards' rows adjacent is what lets the weight gradient of the whole batch be one GEMM per
/// layer and slice, whose inner sum runs over every shard's records — the reduction over
/// workers happens inside that sum instead of in a pass over per-worker gradient copies.
///
/// One allocation; worker w's nominal rows `[w·maxRows, (w+1)·maxRows)` of every matrix are
/// a band bound to w's NUMA node (see `MemoryPlacer`), so each worker's forward and backward
/// write memory on its own node; so is worker w's first-layer block, where it computes its
/// slice of the first layer's units (`blockFloats` floats). Allocated once, before the first step.
final class BatchBuffers {
    let memory: FloatBuffer
    /// activations[l]: rows × sizes[l] (l = 0 is the gathered input)
    let activations: [UnsafeMutablePointer<Float>]
    /// deltas[l]: rows × sizes[l] for l ≥ 1 (index 0 unused, points at activations[0])
    let deltas: [UnsafeMutablePointer<Float>]
    /// firstLayerBlocks[w]: worker w's rows × (its units) of the first layer, before they are
    /// copied into activations[1].
    let firstLayerBlocks: [UnsafeMutablePointer<Float>]

    /// Float offsets of the matrices and then of the workers' blocks inside `memory`, and each
    /// worker's band of bytes in them.
    static func plan(sizes: [Int], workers: Int, maxRows: Int, blockFloats: Int = 0)
        -> (offsets: [Int], blockOffsets: [Int], total: Int, bands: [[MemoryBand.Range]]) {
        func align(_ x: Int) -> Int { (x + 15) / 16 * 16 }
        var offsets: [Int] = [], total = 0
        for s in sizes + sizes { offsets.append(total); total += align(workers * maxRows * s) }
        var blockOffsets: [Int] = []
        for _ in 0..<workers { blockOffsets.append(total); total += align(blockFloats) }
        let f = MemoryLayout<Float>.stride
        let bands = (0..<workers).map { w in
            zip(offsets, sizes + sizes).map { off, s in MemoryBand.Range(byteOffset: (off + w * maxRows * s) * f, byteCount: maxRows * s * f) }
                + (blockFloats > 0 ? [MemoryBand.Range(byteOffset: blockOffsets[w] * f, byteCount: blockFloats * f)] : [])
        }
        return (offsets, blockOffsets, total, bands)
    }

    init(sizes: [Int], workers: Int, maxRows: Int, blockFloats: Int, placements: [WorkerPlacement], placer: any MemoryPlacer) {
        let plan = Self.plan(sizes: sizes, workers: workers, maxRows: maxRows, blockFloats: blockFloats)
        let bands = placements.map { p in MemoryBand(node: p.node, ranges: plan.bands[p.worker]) }
        let memory = FloatBuffer(count: plan.total, allocator: placer.allocator(bands: bands))
        self.memory = memory
        activations = plan.offsets[0..<sizes.count].map { memory.pointer + $0 }
        deltas = plan.offsets[sizes.count...].map { memory.pointer + $0 }
        firstLayerBlocks = plan.blockOffsets.map { memory.pointer + $0 }
    }
}

/// The part of the weight gradient and update one `concurrentPerform` iteration owns after
/// the barrier: output units `rows` of layer `layer` (weight rows and their biases).
struct GradientSlice: Sendable, Equatable {
    var layer: Int   // 1-based, as in `layout.sizes`
    var rows: Range<Int>
}

/// Cost and accuracy of one step or one evaluation pass.
public struct PassResult: Sendable, Equatable {
    /// Σ cross-entropy over the records (Float64), without the L2 term.
    public var costSum: Double
    public var correct: Int
    public var records: Int
    public var accuracy: Double { records == 0 ? 0 : Double(correct) / Double(records) }

    static let zero = PassResult(costSum: 0, correct: 0, records: 0)

    mutating func add(_ other: PassResult) {
        costSum += other.costSum; correct += other.correct; records += other.records
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
/// with 2 workers a 32-row shard's full weight-gradient GEMM (and the pass that added the
/// copies) cost more than half of the 64-row one, because its fixed cost — writing and
/// re-reading every gradient element — does not shrink with the shard. Phase 2 is the same
/// observation for the forward pass: a 32-row shard's first-layer GEMM packs and reads all of
/// W₁, as the 64-row one does, and reads the half the other core has just rewritten.
/// A network without hidden layers has a softmax first layer, which needs whole rows: there
/// phase 2 is skipped and the shards run the first layer too.
/// Which thread runs a shard or slice changes nothing in the arithmetic, so a step is bitwise
/// reproducible for a given worker count.
///
/// Everything is allocated in `init`; `step` neither allocates nor locks.
///
/// `@unchecked Sendable`: the engine is driven by one training task at a time (the
/// `TrainingLoop` owns it); inside a step the workers write disjoint memory (see `FloatBuffer`).
public final class DataParallelEngine: @unchecked Sendable {
    public let layout: NetworkLayout
    public let activation: Activation
    public let optimizer: OptimizerConfig
    public let lambda: Float
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
    let schedule = StepSchedule()
    /// Cost and accuracy of shard s in round r of a `steps` call (or of worker s's part of an
    /// evaluation chunk, r = 0), at [r·W + s].
    let roundResults: UnsafeMutablePointer<PassResult>
    /// Where a step's time goes (off unless `recordPhaseTimes`; `nnd bench` turns it on).
    public let phaseTimes: PhaseTimes

    public init(layout: NetworkLayout, activation: Activation, optimizer: OptimizerConfig, lambda: Float,
                workers: Int, maxBatch: Int, placer: any MemoryPlacer = LibNUMAPlacer(), recordPhaseTimes: Bool = false) {
        precondition(workers >= 1 && maxBatch >= 1)
        phaseTimes = PhaseTimes(workers: workers, enabled: recordPhaseTimes)
        self.layout = layout; self.activation = activation; self.optimizer = optimizer; self.lambda = lambda
        self.workerCount = workers; self.maxBatch = maxBatch; self.placer = placer
        let placements = placer.plan(workers: workers)
        self.placements = placements
        let shared = placer.sharedAllocator(nodes: placements.map(\.node))
        parameters = FloatBuffer(count: layout.parameterCount, allocator: shared)
        gradient = FloatBuffer(count: layout.parameterCount, allocator: shared)
        optimizerState = (0..<optimizer.stateBuffers).map { _ in FloatBuffer(count: layout.parameterCount, allocator: shared) }
        let maxRows = (maxBatch + workers - 1) / workers
        self.maxRows = maxRows
        let sizes = layout.sizes
        let split = (0..<workers).map { Self.unitSlice(units: sizes[1], workers: workers, slice: $0) }
        firstLayerUnits = sizes.count > 2 ? split : []
        batch = BatchBuffers(sizes: sizes, workers: workers, maxRows: maxRows,
                             blockFloats: sizes.count > 2 ? maxBatch * split.map(\.count).max()! : 0,
                             placements: placements, placer: placer)
        roundResults = .allocate(capacity: Self.maxStepsPerCall * workers)
        roundResults.initialize(repeating: .zero, count: Self.maxStepsPerCall * workers)
        gradientSlices = (0..<workers).map { w in
            (1..<sizes.count).compactMap { l in
                let rows = Self.unitSlice(units: sizes[l], workers: workers, slice: w)
                return rows.isEmpty ? nil : GradientSlice(layer: l, rows: rows)
            }
        }
    }

    /// Slice w of a layer's n output units: `[n·w/W, n·(w+1)/W)`.
    static func unitSlice(units n: Int, workers: Int, slice w: Int) -> Range<Int> {
        (n * w / workers)..<(n * (w + 1) / workers)
    }

    deinit { roundResults.deallocate() }

    /// Where each worker's band of the batch buffers is, and the shared buffers, for reports and tests.
    public var batchBufferPlacement: String { batch.memory.allocator.placement }
    public var parameterPlacement: String { parameters.allocator.placement }

    // MARK: - Training step

    /// The most steps `steps` runs in one `concurrentPerform`.
    public static let maxStepsPerCall = 16

    /// One gradient-descent step on the records `indices[0..<count]` of `data`. A step larger
    /// than `maxBatch` (batch mode) is processed in chunks whose gradients accumulate.
    public func step(data: Dataset, indices: UnsafePointer<Int32>, count n: Int, learningRate: Float) -> PassResult {
        precondition(n >= 1, "empty step")
        var result = PassResult.zero
        if n <= maxBatch {
            _ = withUnsafeMutablePointer(to: &result) { r in
                steps(data: data, indices: indices, stepSize: n, records: n, learningRate: learningRate,
                      results: UnsafeMutableBufferPointer(start: r, count: 1))
            }
            return result
        }
        let W = workerCount
        let indices = SharedPointer(UnsafeMutablePointer(mutating: indices))
        updateCount += 1
        phaseTimes.countStep()
        let adamStep = updateCount
        var chunkStart = 0
        while chunkStart < n {
            let c = min(maxBatch, n - chunkStart), base = chunkStart
            let accumulate = chunkStart > 0, lastChunk = chunkStart + c == n
            schedule.reset()
            DispatchQueue.concurrentPerform(iterations: W) { iteration in
                runRound(0, iteration: iteration, data: data, indices: indices.pointer + base, rows: c,
                         accumulate: accumulate, update: lastChunk ? n : nil, learningRate: learningRate, adamStep: adamStep)
            }
            result.add(roundTotal(0))
            chunkStart += c
        }
        return result
    }

    /// Consecutive gradient-descent steps over `indices[0..<records]`, `stepSize` records each
    /// (the last one takes what is left; `stepSize ≤ maxBatch`), in one `concurrentPerform`:
    /// waking the pool's second thread costs ≈ 25 µs per call on this machine, ≈ 5 % of a
    /// seed step, so the trainer hands over up to `maxStepsPerCall` steps at a time. Writes each
    /// step's cost and accuracy to `results` and returns the number of steps run: all of them,
    /// or up to and including the first step whose cost is not finite (its update is applied,
    /// as `step` would; nothing after it runs).
    ///
    /// Round r's phases wait only for pieces already claimed by running threads, and round r
    /// begins with a wait for round r − 1's gradient slices (its gather overwrites what they
    /// read); so nothing waits on a thread that has not started, and if the pool runs the
    /// iterations one after another the first one runs every step.
    public func steps(data: Dataset, indices: UnsafePointer<Int32>, stepSize: Int, records: Int, learningRate: Float,
                      results: UnsafeMutableBufferPointer<PassResult>) -> Int {
        precondition(stepSize >= 1 && stepSize <= maxBatch && records >= 1, "bad step group")
        let k = (records + stepSize - 1) / stepSize
        precondition(k <= Self.maxStepsPerCall && k <= results.count, "too many steps for one call")
        let W = workerCount
        let indices = SharedPointer(UnsafeMutablePointer(mutating: indices))
        let firstUpdate = updateCount + 1
        schedule.reset()
        DispatchQueue.concurrentPerform(iterations: W) { iteration in
            for r in 0..<k {
                if r > 0 { schedule.slices.waitForAll(W, round: r - 1) }
                let lo = r * stepSize, n = min(stepSize, records - lo)
                runRound(r, iteration: iteration, data: data, indices: indices.pointer + lo, rows: n,
                         accumulate: false, update: n, learningRate: learningRate, adamStep: firstUpdate + r)
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

    /// Cost and accuracy of round r, summed over its shards (valid once they are finished).
    @inline(__always)
    func roundTotal(_ r: Int) -> PassResult {
        var total = PassResult.zero
        for s in 0..<workerCount { total.add(roundResults[r * workerCount + s]) }
        return total
    }

    /// The phases of one step (or chunk) on batch rows 0..<rows, run by every iteration of the
    /// `concurrentPerform`: gather, first layer, shards, gradient slices with — when `update`
    /// gives the step's record count — the optimiser update. Each phase claims pieces of round
    /// `round` and waits only for pieces already claimed (see `WorkQueue`).
    @inline(__always)
    func runRound(_ round: Int, iteration: Int, data: Dataset, indices: UnsafeMutablePointer<Int32>, rows c: Int,
                  accumulate: Bool, update n: Int?, learningRate: Float, adamStep: Int) {
        let W = workerCount, splitFirstLayer = !firstLayerUnits.isEmpty
        var t = phaseTimes.now()
        while let s = schedule.gather.claim(below: W, round: round) {
            placer.bindCurrentThread(toNode: placements[s].node)
            gatherInputs(data: data, indices: indices, row: c * s / W, rows: c * (s + 1) / W - c * s / W)
            schedule.gather.finish()
        }
        schedule.gather.waitForAll(W, round: round)
        phaseTimes.add(.input, index: iteration, since: &t)
        if splitFirstLayer {
            while let w = schedule.firstLayer.claim(below: W, round: round) {
                firstLayerSlice(w, rows: c)
                schedule.firstLayer.finish()
            }
            schedule.firstLayer.waitForAll(W, round: round)
        }
        phaseTimes.add(.firstLayer, index: iteration, since: &t)
        while let s = schedule.shards.claim(below: W, round: round) {
            let lo = c * s / W, hi = c * (s + 1) / W
            roundResults[round * W + s] = runShard(s, data: data, indices: indices, row: lo, rows: hi - lo,
                                                   fromLayer: splitFirstLayer ? 2 : 1)
            // Before `finish`, so the next round's claimer of shard s writes its slot after this.
            phaseTimes.add(.shard, index: s, since: &t)
            schedule.shards.finish()
        }
        schedule.shards.waitForAll(W, round: round)
        phaseTimes.add(.wait, index: iteration, since: &t)
        while let slice = schedule.slices.claim(below: W, round: round) {
            // A round that is a whole step (never an accumulating chunk) can fuse the SGD update.
            if optimizer.kind == .sgd, let n, n == c {
                sgdUpdateFromBatch(slice: slice, rows: c, learningRate: learningRate)
            } else {
                weightGradient(slice: slice, rows: c, accumulate: accumulate)
                if let n { applyUpdate(slice: slice, records: n, learningRate: learningRate, adamStep: adamStep) }
            }
            schedule.slices.finish()
        }
        phaseTimes.add(.gradient, index: iteration, since: &t)
    }

    /// Copies the inputs of records indices[row..<row + rows] into those rows of the batch's
    /// input matrix (on behalf of the shard that owns the rows, so on its node).
    @inline(__always)
    func gatherInputs(data: Dataset, indices: UnsafeMutablePointer<Int32>, row: Int, rows: Int) {
        let inSize = layout.inputSize, features = data.features.pointer, input = batch.activations[0]
        for r in row..<(row + rows) {
            memcpy(input + r * inSize, features + Int(indices[r]) * inSize, inSize * MemoryLayout<Float>.stride)
        }
    }

    /// Forward from layer `fromLayer` on, loss and backward (deltas only) of the batch rows
    /// `row..<row + rows` (records indices[row...]), on behalf of worker `shard`; the layers
    /// below `fromLayer` are already computed for these rows. Returns the rows' cost and accuracy.
    @inline(__always)
    func runShard(_ shard: Int, data: Dataset, indices: UnsafeMutablePointer<Int32>, row: Int, rows: Int, fromLayer: Int) -> PassResult {
        if rows == 0 { return .zero }
        placer.bindCurrentThread(toNode: placements[shard].node)
        let inSize = layout.sizes[fromLayer - 1]
        forward(from: fromLayer, input: batch.activations[fromLayer - 1] + row * inSize, row: row, rows: rows)
        let (cost, correct) = data.labels.withUnsafeBufferPointer { labels in
            lossAndOutputDelta(row: row, rows: rows) { labels[Int(indices[row + $0])] }
        }
        backwardDeltas(row: row, rows: rows)
        return PassResult(costSum: cost, correct: correct, records: rows)
    }

    /// Forward pass of `rows` records from layer `from` on: `input` is their layer `from − 1`
    /// (rows × sizes[from − 1]); layers `from…` go into batch rows `row…`.
    @inline(__always)
    func forward(from: Int = 1, input: UnsafePointer<Float>, row: Int, rows: Int) {
        let sizes = layout.sizes
        var a = input
        for l in from..<sizes.count {
            forwardLayer(l, input: a, row: row, rows: rows)
            a = UnsafePointer(batch.activations[l] + row * sizes[l])
        }
    }

    /// Slice w's units of the first layer for batch rows 0..<rows: Z = X · W₁[units]ᵀ, bias and
    /// activation in worker w's own block, then copied into those columns of activations[1].
    /// The slices meet inside rows of activations[1] (unit 100 is byte 400 of a row, inside a
    /// 64-byte line): written by the GEMM in place, that line of every row passed between the
    /// cores on each of the GEMM's passes; copied, once per step.
    @inline(__always)
    func firstLayerSlice(_ w: Int, rows: Int) {
        let units = firstLayerUnits[w], nIn = layout.sizes[0], nOut = layout.sizes[1], lo = units.lowerBound
        if units.isEmpty { return }
        let z = batch.firstLayerBlocks[w], u = units.count
        BLAS.sgemm(transA: false, transB: true, m: rows, n: u, k: nIn, alpha: 1, a: batch.activations[0], lda: nIn,
                   b: parameters.pointer + layout.weightOffsets[0] + lo * nIn, ldb: nIn, beta: 0, c: z, ldc: u)
        activate(z, bias: parameters.pointer + layout.biasOffsets[0] + lo, rows: rows, cols: u)
        let a1 = batch.activations[1]
        for r in 0..<rows { memcpy(a1 + r * nOut + lo, z + r * u, u * MemoryLayout<Float>.stride) }
    }

    /// Layer `l` for batch rows `row..<row + rows`, from `input` (rows × sizes[l-1]):
    /// Z = A · Wᵀ, then bias and activation (softmax on the output layer).
    @inline(__always)
    func forwardLayer(_ l: Int, input: UnsafePointer<Float>, row: Int, rows: Int) {
        let nIn = layout.sizes[l - 1], nOut = layout.sizes[l]
        let z = batch.activations[l] + row * nOut
        let w = UnsafePointer(parameters.pointer + layout.weightOffsets[l - 1])
        let b = UnsafePointer(parameters.pointer + layout.biasOffsets[l - 1])
        // Z = A · Wᵀ   (rows×nIn · nIn×nOut)
        BLAS.sgemm(transA: false, transB: true, m: rows, n: nOut, k: nIn, alpha: 1, a: input, lda: nIn,
                   b: w, ldb: nIn, beta: 0, c: z, ldc: nOut)
        if l == layout.sizes.count - 1 {
            VectorKernels.softmax(z, bias: b, rows: rows, cols: nOut)
        } else {
            activate(z, bias: b, rows: rows, cols: nOut)
        }
    }

    @inline(__always)
    func activate(_ z: UnsafeMutablePointer<Float>, bias: UnsafePointer<Float>, rows: Int, cols: Int) {
        switch activation {
        case .logistic:
            VectorKernels.logistic(z, bias: bias, rows: rows, cols: cols)
        case .tanh:
            for r in 0..<rows { let row = z + r * cols; for j in 0..<cols { row[j] = tanhf(row[j] + bias[j]) } }
        case .relu:
            VectorKernels.relu(z, bias: bias, rows: rows, cols: cols)
        }
    }

    /// Cross-entropy with the seed's clipping (eps 1e-10), accuracy, and δ_out = ŷ − y.
    @inline(__always)
    func lossAndOutputDelta(row: Int, rows: Int, label: (Int) -> Int32) -> (cost: Double, correct: Int) {
        let L = layout.sizes.count, k = layout.outputSize
        let yhat = batch.activations[L - 1] + row * k, delta = batch.deltas[L - 1] + row * k
        var cost = 0.0, correct = 0
        for r in 0..<rows {
            let y = Int(label(r))
            let p = yhat + r * k, d = delta + r * k
            var best = 0
            for j in 0..<k {
                d[j] = p[j]
                if p[j] > p[best] { best = j }
            }
            d[y] -= 1
            if best == y { correct += 1 }
            // The seed clips ŷ to [eps, 1-eps]; a NaN must not be clipped away, or divergence would go unnoticed.
            let py = Double(p[y])
            let clipped = py.isNaN ? py : min(max(py, 1e-10), 1 - 1e-10)
            cost -= Foundation.log(clipped)
        }
        return (cost, correct)
    }

    /// Backpropagation of δ_out through the hidden layers of batch rows `row…`:
    /// δ_prev = (δ · W) ⊙ g'(a_prev). Per record, so it runs shard by shard before the barrier.
    @inline(__always)
    func backwardDeltas(row: Int, rows: Int) {
        let sizes = layout.sizes
        var l = sizes.count - 1
        while l > 1 {
            let nIn = sizes[l - 1], nOut = sizes[l]
            let delta = UnsafePointer(batch.deltas[l] + row * nOut)
            let a = UnsafePointer(batch.activations[l - 1] + row * nIn)
            let w = UnsafePointer(parameters.pointer + layout.weightOffsets[l - 1])
            let dPrev = batch.deltas[l - 1] + row * nIn
            BLAS.sgemm(transA: false, transB: false, m: rows, n: nIn, k: nOut, alpha: 1, a: delta, lda: nOut,
                       b: w, ldb: nIn, beta: 0, c: dPrev, ldc: nIn)
            let count = rows * nIn
            switch activation {
            case .logistic: VectorKernels.logisticBackward(dPrev, output: a, count: count)
            case .tanh: for i in 0..<count { dPrev[i] *= 1 - a[i] * a[i] }
            case .relu: VectorKernels.reluBackward(dPrev, output: a, count: count)
            }
            l -= 1
        }
    }

    /// Slice `slice` of the gradient over the batch's first `rows` rows — every shard's records:
    /// ∂J/∂W[units, :] = δ[:, units]ᵀ · A_prev and ∂J/∂b[units] = Σ_rows δ[:, units], written
    /// (or, with `accumulate`, added) into `gradient`.
    @inline(__always)
    func weightGradient(slice: Int, rows: Int, accumulate: Bool) {
        for s in gradientSlices[slice] {
            sliceGEMM(s, rows: rows, alpha: 1, beta: accumulate ? 1 : 0, into: gradient.pointer)
            biasGradient(s, rows: rows, accumulate: accumulate)
        }
    }

    /// The seed's SGD update of slice `slice` straight from the batch, for a step that fits the
    /// buffers: θ ← (1 − α·λ/n)·θ − (α/n)·δᵀ·A_prev is one GEMM with β = 1 − α·λ/n and α' = −α/n
    /// writing the parameters, and b ← b − (α/n)·Σδ. Same rule as `update` (to float rounding);
    /// it saves writing the slice's gradient and reading it back — per step, for the first
    /// layer, more bytes than the GEMM's own inputs.
    @inline(__always)
    func sgdUpdateFromBatch(slice: Int, rows: Int, learningRate: Float) {
        let scale = learningRate / Float(rows)
        for s in gradientSlices[slice] {
            sliceGEMM(s, rows: rows, alpha: -scale, beta: 1 - scale * lambda, into: parameters.pointer)
            biasGradient(s, rows: rows, accumulate: false)
            let b = parameters.pointer + layout.biasOffsets[s.layer - 1], gb = gradient.pointer + layout.biasOffsets[s.layer - 1]
            for j in s.rows { b[j] -= scale * gb[j] }
        }
    }

    /// C[units, :] = alpha · δ[:, units]ᵀ · A_prev + beta · C, where C is the slice's weight rows
    /// in a buffer laid out like the parameters (the gradient, or the parameters themselves).
    @inline(__always)
    func sliceGEMM(_ s: GradientSlice, rows: Int, alpha: Float, beta: Float, into base: UnsafeMutablePointer<Float>) {
        let nIn = layout.sizes[s.layer - 1], nOut = layout.sizes[s.layer], lo = s.rows.lowerBound
        BLAS.sgemm(transA: true, transB: false, m: s.rows.count, n: nIn, k: rows, alpha: alpha,
                   a: UnsafePointer(batch.deltas[s.layer] + lo), lda: nOut,
                   b: UnsafePointer(batch.activations[s.layer - 1]), ldb: nIn,
                   beta: beta, c: base + layout.weightOffsets[s.layer - 1] + lo * nIn, ldc: nIn)
    }

    /// ∂J/∂b[units] = Σ over the batch's rows of δ[:, units] (row order), into `gradient`.
    @inline(__always)
    func biasGradient(_ s: GradientSlice, rows: Int, accumulate: Bool) {
        let nOut = layout.sizes[s.layer], delta = batch.deltas[s.layer]
        let gb = gradient.pointer + layout.biasOffsets[s.layer - 1]
        if !accumulate { for j in s.rows { gb[j] = 0 } }
        for r in 0..<rows { let d = delta + r * nOut; for j in s.rows { gb[j] += d[j] } }
    }

    /// The optimiser update of slice `slice`'s parameters from their summed gradient.
    @inline(__always)
    func applyUpdate(slice: Int, records: Int, learningRate: Float, adamStep: Int) {
        let g = gradient.pointer
        let s1 = optimizerState.first?.pointer
        let s2 = optimizerState.count > 1 ? optimizerState[1].pointer : nil
        func apply(_ seg: NetworkLayout.Segment) {
            update(config: optimizer, isWeight: seg.isWeight, params: parameters.pointer, state1: s1, state2: s2,
                   start: seg.start, end: seg.end, learningRate: learningRate, lambda: lambda, records: records,
                   adamStep: adamStep) { g[$0] }
        }
        for s in gradientSlices[slice] {
            let (weights, biases) = segments(of: s)
            apply(weights); apply(biases)
        }
    }

    /// The slice's weight rows and biases as ranges of the flat buffers.
    func segments(of s: GradientSlice) -> (weights: NetworkLayout.Segment, biases: NetworkLayout.Segment) {
        let nIn = layout.sizes[s.layer - 1], w = layout.weightOffsets[s.layer - 1], b = layout.biasOffsets[s.layer - 1]
        return (.init(start: w + s.rows.lowerBound * nIn, end: w + s.rows.upperBound * nIn, isWeight: true),
                .init(start: b + s.rows.lowerBound, end: b + s.rows.upperBound, isWeight: false))
    }

    // MARK: - Evaluation

    /// Forward pass over a whole dataset (in parallel, no parameter change): cost and accuracy.
    public func evaluate(_ data: Dataset) -> PassResult {
        let W = workerCount, chunk = maxRows, inSize = layout.inputSize
        var total = PassResult.zero
        var start = 0
        while start < data.count {
            let end = min(data.count, start + W * chunk)
            let n = end - start
            let base = start
            DispatchQueue.concurrentPerform(iterations: W) { w in
                placer.bindCurrentThread(toNode: placements[w].node)
                let lo = n * w / W, hi = n * (w + 1) / W, rows = hi - lo
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

/// A pointer handed to the worker closures of `concurrentPerform`.
/// `@unchecked Sendable`: each worker reads shared input (the shuffle order) or writes
/// only its own disjoint range, and `concurrentPerform` joins every worker before returning,
/// so the memory outlives every access and no two threads write the same element.
struct SharedPointer<T>: @unchecked Sendable {
    let pointer: UnsafeMutablePointer<T>
    init(_ pointer: UnsafeMutablePointer<T>) { self.pointer = pointer }
}


/// One phase of a step: pieces claimed one at a time, and a count of finished ones to wait on.
/// Atomics only. The counters only grow during one `concurrentPerform`: round r's pieces are
/// claims r·count ..< (r+1)·count, and a claim never takes a number past its round's end, so
/// consecutive steps need no reset (which would need every thread stopped). The wait spins
/// (yielding the CPU) on pieces that running threads have already claimed, so it always ends —
/// a thread claims before it waits, so if the pool runs the iterations one after another, the
/// first one does every piece itself.
final class WorkQueue: Sendable {
    private let next = Atomic<Int>(0)
    private let done = Atomic<Int>(0)

    /// Called between `concurrentPerform`s, when no worker runs.
    func reset() {
        next.store(0, ordering: .relaxed)
        done.store(0, ordering: .relaxed)
    }

    /// A piece 0..<count of round `round`, or nil when all are taken.
    func claim(below count: Int, round: Int) -> Int? {
        let end = (round + 1) * count
        var v = next.load(ordering: .relaxed)
        while v < end {
            let (exchanged, original) = next.compareExchange(expected: v, desired: v + 1, ordering: .relaxed)
            if exchanged { return v - round * count }
            v = original
        }
        return nil
    }

    /// Publishes the piece's writes (release) to the threads of the next phase.
    func finish() { done.wrappingAdd(1, ordering: .releasing) }

    /// Returns once all `count` pieces of round `round` are finished; their writes are visible (acquire).
    func waitForAll(_ count: Int, round: Int) {
        let end = (round + 1) * count
        while done.load(ordering: .acquiring) < end { sched_yield() }
    }
}

/// The phases of one step, in order: input gather, first layer by units, shards, gradient slices.
final class StepSchedule: Sendable {
    let gather = WorkQueue()
    let firstLayer = WorkQueue()
    let shards = WorkQueue()
    let slices = WorkQueue()

    func reset() { gather.reset(); firstLayer.reset(); shards.reset(); slices.reset() }
}

/// Per-phase time of the steps, for `nnd bench`: the input gather and the first layer (each
/// with its barrier), each shard's forward + backward, the time threads wait at the barrier for the
/// slowest shard, and the gradient slices with their update. Off by default, then
/// every call is one predictable branch. Recording neither allocates nor locks.
///
/// `@unchecked Sendable`: the counters are plain memory allocated in `init`, and every slot has
/// one writer per step — shard s's slot the thread that claimed shard s (written before the
/// shard is published as finished, so ordered before the next step's claimer writes it), the
/// other slots the `concurrentPerform` iteration that owns them — and `concurrentPerform` joins
/// all writers before `takeMeans` (called between engine calls) reads them.
public final class PhaseTimes: @unchecked Sendable {
    public enum Phase: Int, Sendable { case shard = 0, wait = 1, gradient = 2, input = 3, firstLayer = 4 }
    static let count = 5
    let enabled: Bool
    let workers: Int
    private let slots: UnsafeMutablePointer<UInt64>   // [phase * workers + index]
    private var steps: UInt64 = 0

    init(workers: Int, enabled: Bool) {
        self.enabled = enabled; self.workers = workers
        slots = .allocate(capacity: Self.count * workers)
        slots.initialize(repeating: 0, count: Self.count * workers)
    }
    deinit { slots.deallocate() }

    @inline(__always) func now() -> UInt64 { enabled ? DispatchTime.now().uptimeNanoseconds : 0 }

    /// Adds the time since `t` to (phase, index) and moves `t` to now.
    @inline(__always) func add(_ phase: Phase, index: Int, since t: inout UInt64) {
        guard enabled else { return }
        let n = DispatchTime.now().uptimeNanoseconds
        slots[phase.rawValue * workers + index] &+= n &- t
        t = n
    }

    @inline(__always) func countStep() { if enabled { steps &+= 1 } }

    /// Mean microseconds per step since the last call — per shard; the other phases summed
    /// over the threads — then starts over.
    public func takeMeans() -> (input: Double, firstLayer: Double, shards: [Double], wait: Double, gradient: Double) {
        let k = Double(max(1, steps)) * 1000
        func sum(_ p: Phase) -> Double { (0..<workers).reduce(0.0) { $0 + Double(slots[p.rawValue * workers + $1]) } / k }
        let result = (sum(.input), sum(.firstLayer), (0..<workers).map { Double(slots[$0]) / k }, sum(.wait), sum(.gradient))
        slots.update(repeating: 0, count: Self.count * workers); steps = 0
        return result
    }
}
