import Dispatch
import Foundation
import NNData

// Data-parallel training across processes (MPI ranks): each process runs this engine on its
// contiguous share of every global mini-batch, the flat gradient is summed across processes,
// and every process applies the identical update. The engine does not know MPI: it calls a
// `GradientReducer` (NNDistributed implements it on Open MPI).

/// Sums across the processes of a data-parallel job. Every process calls each method at the
/// same point of the same step (they are collective operations), from the training thread.
public protocol GradientReducer: AnyObject {
    /// This process's index 0..<size; rank 0 is the one that writes checkpoints and reports.
    var rank: Int { get }
    var size: Int { get }
    /// The name of the host this process runs on.
    var host: String { get }
    /// Sums `count` floats element-wise across all processes, in place.
    func sum(_ buffer: UnsafeMutablePointer<Float>, count: Int)
    /// Sums `count` doubles element-wise across all processes, in place.
    func sum(_ buffer: UnsafeMutablePointer<Double>, count: Int)
    /// The element-wise maximum of `count` integers across all processes, in place.
    func max(_ buffer: UnsafeMutablePointer<Int64>, count: Int)
    /// Every process's `value`, in rank order.
    func gather(_ value: UInt64) -> [UInt64]
    /// Every process's `text` (its first `RankText.maxBytes` bytes), in rank order. It
    /// allocates: for once per run, never inside a step.
    func gather(_ text: String) -> [String]
}

/// The longest text `GradientReducer.gather(_:)` carries for each process, in bytes.
public enum RankText { public static let maxBytes = 256 }

extension GradientReducer {
    /// Records `lo..<hi` of a global step of `n` records: rank r's contiguous share
    /// `[n·r/R, n·(r+1)/R)` — the same split the engine makes of a batch across its workers.
    public func share(of n: Int) -> Range<Int> { (n * rank / size)..<(n * (rank + 1) / size) }

    /// The fewest and the most workers any process runs, given this one's (one `max` across
    /// them, every process must call it), for the headers: each process splits its share of a
    /// step among its own workers.
    public func workerCountRange(own workers: Int) -> ClosedRange<Int> {
        var extremes: [Int64] = [Int64(workers), -Int64(workers)]
        self.max(&extremes, count: 2)
        return Int(-extremes[1])...Int(extremes[0])
    }
}

/// Workers per process as the headers print them: `2`, or `1–2` when processes differ.
public func workerCountText(_ counts: ClosedRange<Int>) -> String {
    counts.count > 1 ? "\(counts.lowerBound)–\(counts.upperBound)" : "\(counts.lowerBound)"
}

/// Where a distributed step's time went, summed since the last `take` (for `nnd bench` and metrics).
public struct DistributedTimes: Sendable, Equatable {
    /// Forward, backward and local gradient on this process's share.
    public var computeSeconds = 0.0
    /// The gradient's (and the step's cost and counts') allreduce, including waiting for the slowest process.
    public var allreduceSeconds = 0.0
    /// The optimiser update after the allreduce.
    public var updateSeconds = 0.0
    public var steps = 0
    public init() {}

    /// Per step: compute, allreduce and update seconds (zero before any step).
    public var meanCompute: Double { computeSeconds / Double(max(1, steps)) }
    public var meanAllreduce: Double { allreduceSeconds / Double(max(1, steps)) }
    public var meanUpdate: Double { updateSeconds / Double(max(1, steps)) }
}

extension DataParallelEngine {
    /// One global step of `n` records (`indices[0..<n]`, the same on every process): this
    /// process's share through the local phases (gather, first layer, shards, gradient slices,
    /// in chunks when it is larger than the buffers), then the allreduce of the gradient and of
    /// the step's cost and counts, then the optimiser update of every slice with the global
    /// record count. No fused SGD here: the update needs the global sum. On the sparse path the
    /// first layer's weight gradient is in the transposed buffer (the caller has transposed the
    /// weights in, `transposeSlices`), so that is summed instead of W₁'s part of the flat
    /// gradient, which that path never writes.
    func distributedStep(
        _ reducer: any GradientReducer, data: Dataset, indices: UnsafeMutablePointer<Int32>, count n: Int,
        learningRate: Float
    ) -> PassResult {
        let share = reducer.share(of: n)
        let t0 = DispatchTime.now().uptimeNanoseconds
        var local = PassResult.zero
        if share.isEmpty {
            // A process with no records this step (n < processes) adds nothing.
            gradient.zero()
            if inputPath == .sparse { sparse!.gradient.zero() }
        } else {
            var chunkStart = 0
            while chunkStart < share.count {
                let c = min(maxBatch, share.count - chunkStart)
                let base = SharedPointer(indices + share.lowerBound + chunkStart)
                let accumulate = chunkStart > 0
                schedule.reset()
                onWorkers { iteration in
                    runRound(
                        0, iteration: iteration, data: data, indices: base.pointer, rows: c, accumulate: accumulate,
                        update: nil, learningRate: learningRate, adamStep: 0)
                }
                local.add(roundTotal(0))
                chunkStart += c
            }
        }
        let t1 = DispatchTime.now().uptimeNanoseconds
        // ΣJ_i, correct and record counts travel as doubles (exact for counts below 2⁵³).
        reducedCounts[0] = local.costSum
        reducedCounts[1] = Double(local.correct)
        reducedCounts[2] = Double(local.records)
        if inputPath == .sparse {
            // ∂J/∂Wᵀ (padding columns included: zero on every process), then the flat gradient
            // from b₁ on (the layout puts W₁ first).
            let g = sparse!.gradient
            reducer.sum(g.pointer, count: g.count)
            let rest = layout.biasOffsets[0]
            reducer.sum(gradient.pointer + rest, count: gradient.count - rest)
        } else {
            reducer.sum(gradient.pointer, count: gradient.count)
        }
        reducer.sum(reducedCounts, count: 3)
        let t2 = DispatchTime.now().uptimeNanoseconds
        updateCount += 1
        let adamStep = updateCount
        onWorkers { w in
            applyUpdate(slice: w, records: n, learningRate: learningRate, adamStep: adamStep)
        }
        let t3 = DispatchTime.now().uptimeNanoseconds
        distributedTimes.computeSeconds += Double(t1 - t0) * 1e-9
        distributedTimes.allreduceSeconds += Double(t2 - t1) * 1e-9
        distributedTimes.updateSeconds += Double(t3 - t2) * 1e-9
        distributedTimes.steps += 1
        phaseTimes.countStep()
        return PassResult(costSum: reducedCounts[0], correct: Int(reducedCounts[1]), records: Int(reducedCounts[2]))
    }

    /// The distributed step times since the last call, then starts over.
    public func takeDistributedTimes() -> DistributedTimes {
        defer { distributedTimes = DistributedTimes() }
        return distributedTimes
    }

    /// A checksum of the parameters (FNV-1a over their bytes): equal on every process while
    /// they hold identical replicas.
    public func parameterChecksum() -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        let bytes = UnsafeRawBufferPointer(start: parameters.pointer, count: parameters.count * 4)
        var i = 0
        // 8 bytes at a time: the words are what differ, and it keeps a 0.7 MB checksum cheap.
        while i + 8 <= bytes.count {
            h = (h ^ bytes.loadUnaligned(fromByteOffset: i, as: UInt64.self)) &* 0x0000_0100_0000_01b3
            i += 8
        }
        while i < bytes.count {
            h = (h ^ UInt64(bytes[i])) &* 0x0000_0100_0000_01b3
            i += 1
        }
        return h
    }
}
