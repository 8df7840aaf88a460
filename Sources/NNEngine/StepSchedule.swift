import CFutex
import Dispatch
import Foundation
import NNData
import Synchronization

// The step's schedule: which iteration of the `concurrentPerform` does what, in which order,
// and how the phases wait for each other (atomics only, no locks, no allocation). The layer
// math the phases call is in LayerMath.swift; the updates in Optimizer.swift.

/// The part of the weight gradient and update one `concurrentPerform` iteration owns after
/// the barrier: output units `rows` of layer `layer` (weight rows and their biases).
struct GradientSlice: Sendable, Equatable {
    var layer: Int  // 1-based, as in `layout.sizes`
    var rows: Range<Int>
}

extension DataParallelEngine {
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
    func runRound(
        _ round: Int, iteration: Int, data: Dataset, indices: UnsafeMutablePointer<Int32>, rows c: Int,
        accumulate: Bool, update n: Int?, learningRate: Float, adamStep: Int, nextRows: Int = 0
    ) {
        let W = workerCount
        let splitFirstLayer = !firstLayerUnits.isEmpty
        let sparseInput = inputPath == .sparse
        let columnSet = round % SparseFirstLayer.columnSets
        var t = phaseTimes.now()
        // Pieces a thread took at the end of the previous round (below) are no longer free here.
        while let s = schedule.gather.claim(round: round, preferring: iteration) {
            gatherShard(s, data: data, indices: indices, rows: c, columnSet: columnSet)
            schedule.gather.finish()
        }
        // The dense first layer reads the gathered inputs; the sparse one reads the records'
        // non-zeros directly, and only the gradient slices need the column indexes (below).
        if !sparseInput { schedule.gather.waitForAll(round: round) }
        phaseTimes.add(.input, index: iteration, since: &t)
        if splitFirstLayer {
            while let w = schedule.firstLayer.claim(round: round, preferring: iteration) {
                firstLayerSlice(w, indices: indices, rows: c)
                schedule.firstLayer.finish()
            }
            schedule.firstLayer.waitForAll(round: round)
        }
        phaseTimes.add(.firstLayer, index: iteration, since: &t)
        while let s = schedule.shards.claim(round: round, preferring: iteration) {
            let band = Self.evenSlice(of: c, workers: W, slice: s)
            roundResults[round * W + s] = runShard(
                s, data: data, indices: indices, row: band.lowerBound, rows: band.count,
                fromLayer: splitFirstLayer ? 2 : 1)
            // Before `finish`, so the next round's claimer of shard s writes its slot after this.
            phaseTimes.add(.shard, index: s, since: &t)
            schedule.shards.finish()
        }
        schedule.shards.waitForAll(round: round)
        if sparseInput { schedule.gather.waitForAll(round: round) }
        phaseTimes.add(.wait, index: iteration, since: &t)
        // A round that is a whole step (never an accumulating chunk) can fuse the update: SGD's
        // into every layer's gradient, momentum's into the sparse first layer's.
        let wholeStep = n == c
        // The next step's records (rows c ..< c + nextRows of `indices`) are scattered over the
        // whole data set; asking now for their non-zeros among this thread's inputs (what its
        // next index and forward read) lets memory fetch them while the gradient slices compute,
        // so that the next gather waits neither on memory nor on the other core.
        if sparseInput && nextRows > 0 {
            prefetchRecords(ofPiece: iteration, indices: indices + c, rows: nextRows)
        }
        while let slice = schedule.slices.claim(round: round, preferring: iteration) {
            if wholeStep && optimizer.kind == .sgd {
                sgdUpdateFromBatch(slice: slice, columnSet: columnSet, rows: c, learningRate: learningRate)
            } else if wholeStep && optimizer.kind == .momentum && sparseInput {
                momentumUpdateFromBatch(slice: slice, columnSet: columnSet, rows: c, learningRate: learningRate)
            } else {
                weightGradient(slice: slice, columnSet: columnSet, rows: c, accumulate: accumulate)
                if let n { applyUpdate(slice: slice, records: n, learningRate: learningRate, adamStep: adamStep) }
            }
            schedule.slices.finish()
        }
        phaseTimes.add(.gradient, index: iteration, since: &t)
        // A thread done with its slices would wait at the next step's start for the others';
        // it builds the next step's column indexes instead, in the other set (every reader of
        // that set, two steps back, has finished: this step's shards started after it). Any
        // shard still free is taken, so a slow thread finds its index built.
        if sparseInput && nextRows > 0 {
            while let s = schedule.gather.claim(round: round + 1, preferring: iteration) {
                gatherShard(
                    s, data: data, indices: indices + c, rows: nextRows,
                    columnSet: (round + 1) % SparseFirstLayer.columnSets)
                schedule.gather.finish()
            }
            phaseTimes.add(.input, index: iteration, since: &t)
        }
    }
}

extension DataParallelEngine {
    /// Piece s of a step's input, on batch rows 0..<rows of `indices`: for the sparse first layer,
    /// which reads the records' non-zeros directly, piece s of the batch's column index (in set
    /// `columnSet`) for the weight gradient (`sparseBatchColumns`); else a dense copy of shard
    /// s's rows.
    @inline(__always)
    func gatherShard(_ s: Int, data: Dataset, indices: UnsafeMutablePointer<Int32>, rows c: Int, columnSet: Int) {
        let band = Self.evenSlice(of: c, workers: workerCount, slice: s)
        placer.bindCurrentThread(toNode: placements[s].node)
        if inputPath == .sparse {
            sparseBatchColumns(s, columnSet: columnSet, indices: indices, rows: c)
        } else {
            gatherInputs(data: data, indices: indices, row: band.lowerBound, rows: band.count)
        }
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
/// Atomics only. Piece p's claim counter holds the number of rounds in which it has been
/// claimed, so round r's piece p is free while the counter is r; consecutive steps need no
/// reset (which would need every thread stopped). A thread asks for its own piece first
/// (iteration w for piece w): W₁'s slice w and the gradient rows of slice w then stay in the
/// cache of the core that ran iteration w, instead of changing cores whenever the threads
/// arrive in a different order (313 KB of W₁ and its optimiser state for the seed's network on
/// 2 workers). Any piece still free is taken next, so the wait — on pieces that running threads
/// have already claimed — always ends: a thread claims before it waits, and if the pool runs the
/// iterations one after another, the first one does every piece itself. A thread leaves a
/// phase's claims only when every piece of the round is taken, so no counter lags behind the
/// round a thread is in.
///
/// How a thread waits (`StepSchedule` chooses, from the workers and the cores): when every worker
/// has a core of its own, it spins, then sleeps on a futex. It does not call `sched_yield` then:
/// that handed the core to any other runnable task, of whatever priority, for as long as the
/// scheduler gave it, and beside two `nice 19` busy loops a 2-worker run trained 1.6× slower
/// instead of losing the ~1.5 % their nice value entitles them to (docs/performance.md,
/// "Sixteenth session"). Spinning covers the usual waits, a few µs; a thread that waits longer
/// (its partner preempted) sleeps, so that the partner can have the core. The daemon's control
/// plane, which used to run in those yields, now gets the share its nice value gives it: fine
/// for a few clients, slower under 50 polling ones (docs/reliability.md, "Load"). With more workers
/// than cores, a waiter's partner is often waiting for the very core the waiter holds, and
/// yielding it at once is the quickest hand-over (spinning first cost 4 and 7 workers on 2
/// cores 7–10 %, sleeping at once 4–7 %).
final class WorkQueue: @unchecked Sendable {
    /// claims[p]: rounds in which piece p was claimed. Allocated in `init`, never moved.
    private let claims: UnsafeMutablePointer<Atomic<Int>>
    private let pieces: Int
    /// Pieces finished since `reset`; the futex word the sleepers wait on, so allocated (a
    /// stable address) and 32 bits wide. A call's rounds × pieces stay far below 2³².
    private let done: UnsafeMutablePointer<Atomic<UInt32>>
    /// Threads asleep (or about to sleep) on `done`: `finish` makes the futex call only then.
    private let sleepers = Atomic<Int>(0)
    /// Sleeps on the futex so far (tests check that the sleeping path ran).
    let sleeps = Atomic<Int>(0)
    /// How long a wait spins before it sleeps; nil: it yields the core until the pieces are done.
    let spinNanoseconds: UInt64?

    init(pieces: Int, spinNanoseconds: UInt64? = StepSchedule.spinWhenEveryWorkerHasACore) {
        self.pieces = pieces
        self.spinNanoseconds = spinNanoseconds
        claims = .allocate(capacity: pieces)
        for p in 0..<pieces { (claims + p).initialize(to: Atomic(0)) }
        done = .allocate(capacity: 1)
        done.initialize(to: Atomic(0))
    }

    deinit {
        claims.deinitialize(count: pieces)
        claims.deallocate()
        done.deinitialize(count: 1)
        done.deallocate()
    }

    /// Called between `concurrentPerform`s, when no worker runs.
    func reset() {
        for p in 0..<pieces { claims[p].store(0, ordering: .relaxed) }
        done.pointee.store(0, ordering: .relaxed)
    }

    /// Piece `preferred` of round `round` if it is free, else another free piece, or nil when
    /// all are taken.
    func claim(round: Int, preferring preferred: Int) -> Int? {
        for i in 0..<pieces {
            let p = (preferred + i) % pieces
            // A plain load first: most pieces a thread looks at are taken.
            if claims[p].load(ordering: .relaxed) == round
                && claims[p].compareExchange(expected: round, desired: round + 1, ordering: .relaxed).exchanged
            {
                return p
            }
        }
        return nil
    }

    /// Publishes the piece's writes (release) to the threads of the next phase, and wakes any
    /// that sleep. Sequentially consistent, with the same in `waitForAll`: either this load
    /// sees the sleeper, or the sleeper's load sees this piece finished (and does not sleep).
    func finish() {
        done.pointee.wrappingAdd(1, ordering: .sequentiallyConsistent)
        if sleepers.load(ordering: .sequentiallyConsistent) > 0 { nn_futex_wake_all(futexWord) }
    }

    /// Returns once all pieces of round `round` are finished; their writes are visible (acquire).
    func waitForAll(round: Int) {
        let end = UInt32((round + 1) * pieces)
        if done.pointee.load(ordering: .acquiring) >= end { return }
        guard let spinNanoseconds else {
            while done.pointee.load(ordering: .acquiring) < end { sched_yield() }
            return
        }
        // Spin: plain loads, no PAUSE (a long PAUSE loop makes KVM take the vCPU away,
        // docs/performance.md), the clock read every 64 of them; then sleep.
        let spinEnd = DispatchTime.now().uptimeNanoseconds &+ spinNanoseconds
        var spinning = true
        var loads = 0
        while done.pointee.load(ordering: .acquiring) < end {
            if spinning {
                loads &+= 1
                if loads & 63 == 0 && DispatchTime.now().uptimeNanoseconds >= spinEnd { spinning = false }
                continue
            }
            // Sleep until a piece finishes; the timeout only bounds a sleep that a wake-up missed.
            sleepers.wrappingAdd(1, ordering: .sequentiallyConsistent)
            let seen = done.pointee.load(ordering: .sequentiallyConsistent)
            if seen < end {
                sleeps.wrappingAdd(1, ordering: .relaxed)
                nn_futex_wait(futexWord, seen, 1_000_000)
            }
            sleepers.wrappingSubtract(1, ordering: .sequentiallyConsistent)
        }
    }

    private var futexWord: UnsafeMutablePointer<UInt32> {
        UnsafeMutableRawPointer(done).assumingMemoryBound(to: UInt32.self)
    }
}

/// The phases of one step, in order: input gather, first layer (by units; sparse: by inputs),
/// shards, gradient slices.
final class StepSchedule: Sendable {
    let gather: WorkQueue
    let firstLayer: WorkQueue
    let shards: WorkQueue
    let slices: WorkQueue

    /// How long a wait spins before it sleeps when every worker can have a core of its own:
    /// longer than a step's usual waits (a few µs, at most tens). With 5 µs, a 2-worker run
    /// beside two nice-19 busy loops lost 10 % more than with 50 µs.
    static let spinWhenEveryWorkerHasACore: UInt64 = 50_000

    /// Queues for `workers` pieces per phase, one per worker thread, on a machine where the
    /// process may use `cores` cores: spin then sleep while every thread can have a core, else
    /// yield (see `WorkQueue`).
    init(workers: Int, cores: Int = ProcessInfo.processInfo.activeProcessorCount) {
        let spin = workers <= cores ? Self.spinWhenEveryWorkerHasACore : nil
        gather = WorkQueue(pieces: workers, spinNanoseconds: spin)
        firstLayer = WorkQueue(pieces: workers, spinNanoseconds: spin)
        shards = WorkQueue(pieces: workers, spinNanoseconds: spin)
        slices = WorkQueue(pieces: workers, spinNanoseconds: spin)
    }

    func reset() {
        gather.reset()
        firstLayer.reset()
        shards.reset()
        slices.reset()
    }
}

/// Per-phase time of the steps, for `nnd bench`: the input gather and the first layer (each
/// with its barrier), each shard's forward + backward, the time threads wait at the barriers
/// for the slowest shard and, at the start of each step after a call's first, for the previous
/// step's gradient slices, and the gradient slices with their update. Off by default, then
/// every call is one predictable branch. Recording neither allocates nor locks.
///
/// `@unchecked Sendable`: the counters are plain memory allocated in `init`, and every slot has
/// one writer per step — shard s's slot the thread that claimed shard s (written before the
/// shard is published as finished, so ordered before the next step's claimer writes it), the
/// other slots the `concurrentPerform` iteration that owns them — and `concurrentPerform` joins
/// all writers before `takeMeans` (called between engine calls) reads them.
public final class PhaseTimes: @unchecked Sendable {
    public enum Phase: Int, Sendable {
        case shard = 0
        case wait = 1
        case gradient = 2
        case input = 3
        case firstLayer = 4
    }
    static let count = 5
    let enabled: Bool
    let workers: Int
    private let slots: UnsafeMutablePointer<UInt64>  // [phase * workers + index]
    private var steps: UInt64 = 0

    init(workers: Int, enabled: Bool) {
        self.enabled = enabled
        self.workers = workers
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
        func sum(_ p: Phase) -> Double {
            (0..<workers).reduce(0.0) { $0 + Double(slots[p.rawValue * workers + $1]) } / k
        }
        let result = (
            sum(.input), sum(.firstLayer), (0..<workers).map { Double(slots[$0]) / k }, sum(.wait), sum(.gradient)
        )
        slots.update(repeating: 0, count: Self.count * workers)
        steps = 0
        return result
    }
}
