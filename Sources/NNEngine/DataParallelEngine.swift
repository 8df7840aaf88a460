import Dispatch
import Foundation
import NNData
import NNNumerics
import Synchronization

/// One worker's memory: activations, deltas and the gradient of its shard, all carved out of
/// one flat buffer allocated on the worker's NUMA node before the first step.
final class WorkerWorkspace {
    let memory: FloatBuffer
    /// activations[l]: maxRows × sizes[l] (l = 0 is the gathered input)
    let activations: [UnsafeMutablePointer<Float>]
    /// deltas[l]: maxRows × sizes[l] for l ≥ 1 (index 0 unused, points at activations[0])
    let deltas: [UnsafeMutablePointer<Float>]
    /// Σ over the shard's records of ∂J/∂θ, laid out like the parameters.
    let gradient: UnsafeMutablePointer<Float>
    let placement: WorkerPlacement
    // Results of the last step, read by the caller after the join.
    var records = 0
    var costSum = 0.0
    var correct = 0

    init(layout: NetworkLayout, maxRows: Int, placement: WorkerPlacement, allocator: any BufferAllocator) {
        func align(_ x: Int) -> Int { (x + 15) / 16 * 16 }
        var total = 0
        var aOff: [Int] = [], dOff: [Int] = []
        for s in layout.sizes { aOff.append(total); total += align(maxRows * s) }
        for s in layout.sizes { dOff.append(total); total += align(maxRows * s) }
        let gOff = total
        total += layout.parameterCount
        let memory = FloatBuffer(count: total, allocator: allocator)
        self.memory = memory
        activations = aOff.map { memory.pointer + $0 }
        deltas = dOff.map { memory.pointer + $0 }
        gradient = memory.pointer + gOff
        self.placement = placement
    }
}

/// Cost and accuracy of one step or one evaluation pass.
public struct PassResult: Sendable, Equatable {
    /// Σ cross-entropy over the records (Float64), without the L2 term.
    public var costSum: Double
    public var correct: Int
    public var records: Int
    public var accuracy: Double { records == 0 ? 0 : Double(correct) / Double(records) }
}

/// Data-parallel training engine for a fully connected softmax classifier.
///
/// A step splits the mini-batch into one contiguous shard per worker (sizes differ by at most
/// one record); `concurrentPerform` runs forward and backward of every shard into that
/// worker's own buffers; then a second `concurrentPerform` reduces: worker w sums slice w of
/// the flat gradient over all workers, in worker order, and applies the update to that slice.
/// Summing in a fixed order makes a step bitwise reproducible for a given worker count.
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
    /// Optimiser state (velocity, or Adam's m and v), same layout as the parameters.
    public let optimizerState: [FloatBuffer]
    /// Adam's step counter t (number of updates applied so far).
    public var updateCount: Int = 0

    let workspaces: [WorkerWorkspace]
    /// reductionSlices[w]: the parts of the weight/bias segments that worker w reduces.
    let reductionSlices: [[NetworkLayout.Segment]]
    /// Per-worker shard size limit: ceil(maxBatch / workers).
    let maxRows: Int
    /// Claims and the barrier of the step's single `concurrentPerform`.
    let schedule = StepSchedule()
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
        optimizerState = (0..<optimizer.stateBuffers).map { _ in FloatBuffer(count: layout.parameterCount, allocator: shared) }
        let maxRows = (maxBatch + workers - 1) / workers
        self.maxRows = maxRows
        workspaces = placements.map { p in
            WorkerWorkspace(layout: layout, maxRows: maxRows, placement: p,
                            allocator: placer.allocator(forNode: p.node))
        }
        // Split the trainable elements into `workers` nearly equal contiguous slices.
        let total = layout.trainableCount
        var slices: [[NetworkLayout.Segment]] = Array(repeating: [], count: workers)
        let bounds = (0...workers).map { $0 * total / workers } // in trainable-element positions
        var seen = 0
        for seg in layout.segments {
            let length = seg.end - seg.start
            for w in 0..<workers {
                let lo = max(bounds[w], seen), hi = min(bounds[w + 1], seen + length)
                if lo < hi { slices[w].append(.init(start: seg.start + lo - seen, end: seg.start + hi - seen, isWeight: seg.isWeight)) }
            }
            seen += length
        }
        reductionSlices = slices
    }

    /// Memory placement of each worker's buffers, for reports and tests.
    public var workerBufferPlacements: [String] { workspaces.map { $0.memory.allocator.placement } }
    public var parameterPlacement: String { parameters.allocator.placement }

    // MARK: - Training step

    /// One gradient-descent step on the records `indices[0..<count]` of `data`. A step larger
    /// than `maxBatch` (batch mode) is processed in chunks whose gradients accumulate.
    ///
    /// Both phases run inside one `concurrentPerform`, so a step wakes the pool once: each
    /// iteration claims shards (forward + backward into shard s's workspace) until none are
    /// left, waits until every claimed shard is done, then claims reduction slices. The wait
    /// cannot deadlock: by then every shard has been claimed by a thread that is running it,
    /// and shards never wait on anything. If the pool runs the iterations one after another,
    /// the first one does all the work. Which thread runs a shard or slice changes nothing in
    /// the arithmetic: shard s always uses workspace s, and slice w always sums in worker order.
    public func step(data: Dataset, indices: UnsafePointer<Int32>, count n: Int, learningRate: Float) -> PassResult {
        precondition(n >= 1, "empty step")
        let W = workerCount
        let indices = SharedPointer(UnsafeMutablePointer(mutating: indices))
        for ws in workspaces { ws.records = 0; ws.costSum = 0; ws.correct = 0 }
        updateCount += 1
        phaseTimes.countStep()
        let adamStep = updateCount
        var chunkStart = 0
        while chunkStart < n {
            let c = min(maxBatch, n - chunkStart), base = chunkStart
            let accumulate = chunkStart > 0, lastChunk = chunkStart + c == n
            schedule.reset()
            DispatchQueue.concurrentPerform(iterations: W) { iteration in
                var t = phaseTimes.now()
                while let s = schedule.claimShard(below: W) {
                    runShard(s, data: data, indices: indices.pointer,
                             lo: base + c * s / W, hi: base + c * (s + 1) / W, accumulate: accumulate)
                    schedule.finishShard()
                    phaseTimes.add(.shard, index: s, since: &t)
                }
                guard lastChunk else { return }
                schedule.waitForShards(W)
                phaseTimes.add(.wait, index: iteration, since: &t)
                while let slice = schedule.claimSlice(below: W) {
                    reduceAndUpdate(slice: slice, records: n, learningRate: learningRate, adamStep: adamStep)
                }
                phaseTimes.add(.reduce, index: iteration, since: &t)
            }
            chunkStart += c
        }
        var result = PassResult(costSum: 0, correct: 0, records: n)
        for ws in workspaces { result.costSum += ws.costSum; result.correct += ws.correct }
        return result
    }

    /// Forward and backward of records indices[lo..<hi] into workspace `shard`.
    @inline(__always)
    func runShard(_ shard: Int, data: Dataset, indices: UnsafeMutablePointer<Int32>, lo: Int, hi: Int, accumulate: Bool) {
        let ws = workspaces[shard], rows = hi - lo, inSize = layout.inputSize, features = data.features.pointer
        if rows == 0 { return }
        placer.bindCurrentThread(toNode: ws.placement.node)
        let input = ws.activations[0]
        for r in 0..<rows {
            memcpy(input + r * inSize, features + Int(indices[lo + r]) * inSize, inSize * MemoryLayout<Float>.stride)
        }
        forward(ws, input: input, rows: rows)
        let (cost, correct) = data.labels.withUnsafeBufferPointer { labels in
            lossAndOutputDelta(ws, rows: rows) { labels[Int(indices[lo + $0])] }
        }
        backward(ws, rows: rows, accumulate: accumulate && ws.records > 0)
        ws.records += rows; ws.costSum += cost; ws.correct += correct
    }

    /// Forward pass of `rows` records from `input` (rows × inputSize) into the workspace.
    @inline(__always)
    func forward(_ ws: WorkerWorkspace, input: UnsafePointer<Float>, rows: Int) {
        let sizes = layout.sizes
        var a = input
        for l in 1..<sizes.count {
            let nIn = sizes[l - 1], nOut = sizes[l]
            let z = ws.activations[l]
            let w = UnsafePointer(parameters.pointer + layout.weightOffsets[l - 1])
            let b = UnsafePointer(parameters.pointer + layout.biasOffsets[l - 1])
            // Z = A · Wᵀ   (rows×nIn · nIn×nOut)
            BLAS.sgemm(transA: false, transB: true, m: rows, n: nOut, k: nIn, alpha: 1, a: a, lda: nIn,
                       b: w, ldb: nIn, beta: 0, c: z, ldc: nOut)
            if l == sizes.count - 1 {
                VectorKernels.softmax(z, bias: b, rows: rows, cols: nOut)
            } else {
                activate(z, bias: b, rows: rows, cols: nOut)
            }
            a = UnsafePointer(z)
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
    func lossAndOutputDelta(_ ws: WorkerWorkspace, rows: Int, label: (Int) -> Int32) -> (cost: Double, correct: Int) {
        let L = layout.sizes.count, k = layout.outputSize
        let yhat = ws.activations[L - 1], delta = ws.deltas[L - 1]
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

    /// Backpropagation from δ_out, writing (or, with `accumulate`, adding to) the shard's summed gradient.
    @inline(__always)
    func backward(_ ws: WorkerWorkspace, rows: Int, accumulate: Bool) {
        let sizes = layout.sizes
        var l = sizes.count - 1
        while l >= 1 {
            let nIn = sizes[l - 1], nOut = sizes[l]
            let delta = UnsafePointer(ws.deltas[l])
            let aPrev = UnsafePointer(ws.activations[l - 1])
            let gw = ws.gradient + layout.weightOffsets[l - 1]
            let gb = ws.gradient + layout.biasOffsets[l - 1]
            // ∂J/∂W = δᵀ · A_prev   (nOut×rows · rows×nIn)
            BLAS.sgemm(transA: true, transB: false, m: nOut, n: nIn, k: rows, alpha: 1, a: delta, lda: nOut,
                       b: aPrev, ldb: nIn, beta: accumulate ? 1 : 0, c: gw, ldc: nIn)
            // ∂J/∂b = Σ_rows δ
            if !accumulate { for j in 0..<nOut { gb[j] = 0 } }
            for r in 0..<rows { let d = delta + r * nOut; for j in 0..<nOut { gb[j] += d[j] } }
            if l > 1 {
                // δ_prev = (δ · W) ⊙ g'(a_prev)
                let w = UnsafePointer(parameters.pointer + layout.weightOffsets[l - 1])
                let dPrev = ws.deltas[l - 1]
                BLAS.sgemm(transA: false, transB: false, m: rows, n: nIn, k: nOut, alpha: 1, a: delta, lda: nOut,
                           b: w, ldb: nIn, beta: 0, c: dPrev, ldc: nIn)
                let count = rows * nIn
                let a = aPrev
                switch activation {
                case .logistic: VectorKernels.logisticBackward(dPrev, output: a, count: count)
                case .tanh: for i in 0..<count { dPrev[i] *= 1 - a[i] * a[i] }
                case .relu: VectorKernels.reluBackward(dPrev, output: a, count: count)
                }
            }
            l -= 1
        }
    }

    /// Worker `slice`'s share of the reduction: Σ over workers (in worker order) of their
    /// gradients on this slice, then the optimiser update on the same slice. The last worker's
    /// gradient is added inside the update loop, so with two workers the slice's gradient is
    /// read once and never written back.
    @inline(__always)
    func reduceAndUpdate(slice: Int, records: Int, learningRate: Float, adamStep: Int) {
        var active = 0, first = -1, last = -1
        for (i, ws) in workspaces.enumerated() where ws.records > 0 {
            if first < 0 { first = i }
            last = i; active += 1
        }
        let sum = workspaces[first].gradient
        let extra: UnsafeMutablePointer<Float>? = active > 1 ? workspaces[last].gradient : nil
        let s1 = optimizerState.first?.pointer
        let s2 = optimizerState.count > 1 ? optimizerState[1].pointer : nil
        for seg in reductionSlices[slice] {
            if active > 2 {
                for w in (first + 1)..<last where workspaces[w].records > 0 {
                    let g = workspaces[w].gradient
                    for i in seg.start..<seg.end { sum[i] += g[i] }
                }
            }
            applyUpdate(config: optimizer, isWeight: seg.isWeight, params: parameters.pointer, gradSum: sum, gradExtra: extra,
                        state1: s1, state2: s2, start: seg.start, end: seg.end, learningRate: learningRate,
                        lambda: lambda, records: records, adamStep: adamStep)
        }
    }

    // MARK: - Evaluation

    /// Forward pass over a whole dataset (in parallel, no parameter change): cost and accuracy.
    public func evaluate(_ data: Dataset) -> PassResult {
        let W = workerCount, chunk = maxRows, inSize = layout.inputSize
        var total = PassResult(costSum: 0, correct: 0, records: data.count)
        var start = 0
        while start < data.count {
            let end = min(data.count, start + W * chunk)
            let n = end - start
            let base = start
            DispatchQueue.concurrentPerform(iterations: W) { w in
                let ws = workspaces[w]
                placer.bindCurrentThread(toNode: ws.placement.node)
                let lo = n * w / W, hi = n * (w + 1) / W, rows = hi - lo
                ws.records = rows; ws.costSum = 0; ws.correct = 0
                if rows == 0 { return }
                forward(ws, input: data.features.pointer + (base + lo) * inSize, rows: rows)
                let (cost, correct) = data.labels.withUnsafeBufferPointer { labels in
                    lossAndOutputDelta(ws, rows: rows) { labels[base + lo + $0] }
                }
                ws.costSum = cost; ws.correct = correct
            }
            for ws in workspaces { total.costSum += ws.costSum; total.correct += ws.correct }
            start = end
        }
        return total
    }

    /// Class probabilities for some records (used by reports and the numpy cross-check).
    public func probabilities(_ data: Dataset, range: Range<Int>) -> [[Float]] {
        var out: [[Float]] = []
        let ws = workspaces[0], k = layout.outputSize
        var s = range.lowerBound
        while s < range.upperBound {
            let rows = min(maxRows, range.upperBound - s)
            forward(ws, input: data.features.pointer + s * layout.inputSize, rows: rows)
            let yhat = ws.activations[layout.sizes.count - 1]
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


/// The work claims of one step: shards first, then — after every shard is done — reduction
/// slices. Atomics only; the one wait spins (yielding the CPU) on shards that running
/// threads have already claimed, so it always ends.
final class StepSchedule: Sendable {
    private let nextShard = Atomic<Int>(0)
    private let shardsDone = Atomic<Int>(0)
    private let nextSlice = Atomic<Int>(0)

    /// Called between steps, when no worker runs.
    func reset() {
        nextShard.store(0, ordering: .relaxed)
        shardsDone.store(0, ordering: .relaxed)
        nextSlice.store(0, ordering: .relaxed)
    }

    func claimShard(below count: Int) -> Int? {
        let s = nextShard.wrappingAdd(1, ordering: .relaxed).oldValue
        return s < count ? s : nil
    }

    /// Publishes the shard's buffers (release) to whoever reduces them.
    func finishShard() { shardsDone.wrappingAdd(1, ordering: .releasing) }

    /// Returns once `count` shards are finished; their writes are visible (acquire).
    func waitForShards(_ count: Int) {
        while shardsDone.load(ordering: .acquiring) < count { sched_yield() }
    }

    func claimSlice(below count: Int) -> Int? {
        let s = nextSlice.wrappingAdd(1, ordering: .relaxed).oldValue
        return s < count ? s : nil
    }
}

/// Per-phase time of the steps, for `nnd bench`: each shard's forward + backward, the time
/// threads wait at the barrier for the slowest shard, and the reduction. Off by default, then
/// every call is one predictable branch. Recording neither allocates nor locks.
///
/// `@unchecked Sendable`: the counters are plain memory allocated in `init`, and every slot has
/// one writer per step — shard s's slot the thread that claimed shard s, the wait and reduce
/// slots the `concurrentPerform` iteration that owns them — and `concurrentPerform` joins all
/// writers before `takeMeans` (called between steps) reads them.
public final class PhaseTimes: @unchecked Sendable {
    public enum Phase: Int, Sendable { case shard = 0, wait = 1, reduce = 2 }
    let enabled: Bool
    let workers: Int
    private let slots: UnsafeMutablePointer<UInt64>   // [phase * workers + index]
    private var steps: UInt64 = 0

    init(workers: Int, enabled: Bool) {
        self.enabled = enabled; self.workers = workers
        slots = .allocate(capacity: 3 * workers)
        slots.initialize(repeating: 0, count: 3 * workers)
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

    /// Mean microseconds per step since the last call — per shard; waiting and reducing summed
    /// over the threads — then starts over.
    public func takeMeans() -> (shards: [Double], wait: Double, reduce: Double) {
        let k = Double(max(1, steps)) * 1000
        func sum(_ p: Phase) -> Double { (0..<workers).reduce(0.0) { $0 + Double(slots[p.rawValue * workers + $1]) } / k }
        let result = ((0..<workers).map { Double(slots[$0]) / k }, sum(.wait), sum(.reduce))
        slots.update(repeating: 0, count: 3 * workers); steps = 0
        return result
    }
}
