import Dispatch
import Foundation
import NNAPI
import NNData
import NNEngine
import NNNumerics
import Synchronization

/// `nnd bench`: the machine's own large-GEMM rate (the reference) and the training step's
/// rate for the seed's network, measured in one process with the same BLAS.
public enum Benchmark {
    public struct Result: Codable, Sendable {
        public var blasKernel: String
        /// The kernel nnd chooses for this CPU; a different `blasKernel` came from the
        /// environment's `OPENBLAS_CORETYPE` or the self-check's fallback, and a figure measured
        /// that way says so in its JSON.
        public var blasKernelBestForCPU: String
        public var vectorKernels: String
        /// What runs the hidden layers' small products (`BLAS.smallProductKernel`).
        public var smallProductKernel: String
        public var workers: Int
        public var batch: Int
        public var rounds: Int
        public var gemmGflopsOneCore: Double
        public var gemmGflopsAllCores: Double
        public var stepSamplesPerSecondOneWorker: Double
        public var stepSamplesPerSecondAllWorkers: Double
        public var stepGflopsOneWorker: Double
        public var stepGflopsAllWorkers: Double
        public var ratioOneWorkerToGemm: Double
        public var ratioAllWorkersToGemm: Double
        public var speedup: Double
        /// The GEMM reference's own all-core / 1-core rate: on this VM one busy core runs
        /// faster than each of two, which bounds what any step speedup can reach.
        public var gemmSpeedup: Double
        public var secondsPerMNISTEpoch: Double
        public var medianRatioAllWorkersToGemm: Double
        public var medianSpeedup: Double
        /// Where the all-worker steps' time went in the best round.
        public var phasesOfBestRound: StepPhases
        /// The sparse first layer on synthetic inputs of `sparseDensity` non-zeros (MNIST's
        /// 19 % by default): its step, the dense step on the same data, and the sparse step's
        /// dense-equivalent GFLOP/s (the dense network's FLOPs per record × samples/s) against
        /// the same run's all-core GEMM reference.
        public var sparseDensity: Double
        public var sparseKernels: String
        public var sparseStepSamplesPerSecond: Double
        public var denseStepOnSparseDataSamplesPerSecond: Double
        public var sparseEffectiveGflops: Double
        public var ratioSparseEffectiveToGemm: Double
        public var sparseSpeedupOverDense: Double
        /// The sparse step on one worker, and all workers' best round over one's (and the median
        /// of the rounds' ratios): the path MNIST trains on.
        public var sparseStepSamplesPerSecondOneWorker: Double
        public var sparseSpeedup: Double
        public var sparseMedianSpeedup: Double
        public var sparsePhasesOfBestRound: StepPhases
        /// The 1-worker sparse step's phases in its best round: set beside the all-worker
        /// step's, per phase, what splitting the step costs on top of the work itself.
        public var sparsePhasesOneWorkerOfBestRound: StepPhases
        public var densePhasesOnSparseDataOfBestRound: StepPhases
        /// `workers` 1-worker sparse steps at once, each its own engine on its own thread
        /// (nothing shared but the read-only records): their summed rate, and it over one
        /// worker's (best round; median of the rounds' ratios). What this machine gives the
        /// step's work on all cores when no step is split — the ceiling for `sparseSpeedup`,
        /// which a shared VM's memory and caches can keep below `gemmSpeedup`.
        public var independentSparseSamplesPerSecond: Double
        public var independentSparseSpeedup: Double
        public var independentSparseMedianSpeedup: Double
        /// The speedups again, measured in alternating pairs of short slices after the rounds
        /// (`AlternatingPairs`): the VM's speed drifts by tens of per cent from second to
        /// second, and a round's 1-worker and all-worker figures come from different seconds;
        /// within a pair the drift falls on both sides of the ratio.
        public var pairs: AlternatingPairs
    }

    /// The GEMM reference's and the sparse step's all / 1 ratios from `count` quads of short
    /// slices (`sliceSeconds` each: GEMM on 1 and all cores, the sparse step on 1 and all
    /// workers, in ABBA order from one quad to the next). The step's scaling goal is set where
    /// the GEMM reference itself scales ≥ 1.85× on 2 cores (docs/performance.md), so the quads
    /// whose GEMM ratio reaches 92.5 % of linear are also given apart.
    public struct AlternatingPairs: Codable, Sendable {
        public var count: Int
        public var sliceSeconds: Double
        public var gemmSpeedups: [Double]
        public var sparseSpeedups: [Double]
        public var gemmMedianSpeedup: Double
        public var sparseMedianSpeedup: Double
        /// The GEMM ratio a quad needs to count as one where the reference scales.
        public var gemmScalingThreshold: Double
        /// How many quads reached it, and the sparse step's median ratio in those (nil: none did).
        public var quadsWhereGemmScales: Int
        public var sparseMedianSpeedupWhereGemmScales: Double?
        /// Per quad, the round trip of a cache line between two cores (`CoreToCoreProbe`, the
        /// slower of a probe before and one after the quad; empty on 1 worker, nil where a probe
        /// could not run): what a split step pays for each barrier and for each line of data the
        /// other core wrote, and what GEMM, which shares nothing, does not feel. A VM's vCPUs
        /// may share a core complex or not, and the hypervisor moves them within seconds.
        public var roundTripNanoseconds: [Double?]
        /// Quads whose round trip was at most twice the fastest of the run ("cores near"), the
        /// sparse step's median ratio in those and in the others (nil: no such quad).
        public var quadsCoresNear: Int
        public var sparseMedianSpeedupCoresNear: Double?
        public var sparseMedianSpeedupCoresFar: Double?
    }

    /// How long a cache line takes to go from one core to another and back: two busy threads
    /// (this one and one started for the probe) hand a counter back and forth. Not the
    /// workers' own threads, but on a machine with as many CPUs as workers the same two CPUs,
    /// and so the same distance between them.
    final class CoreToCoreProbe: Sendable {
        private let counter = Atomic<Int>(0)
        private let abandoned = Atomic<Bool>(false)

        /// Mean nanoseconds per round trip over `handoffs` of them; nil if the other thread did
        /// not answer within a second (a machine too busy to run both at once).
        func roundTripNanoseconds(handoffs: Int = 2000) -> Double? {
            counter.store(0, ordering: .relaxed)
            abandoned.store(false, ordering: .relaxed)
            let finished = DispatchSemaphore(value: 0)
            let answerer = Thread { [self] in
                defer { finished.signal() }
                // Round trip i: wait for 2i + 1, answer 2i + 2 (round trip 0 is the start-up).
                for i in 0...handoffs {
                    while counter.load(ordering: .acquiring) != 2 * i + 1 {
                        if abandoned.load(ordering: .relaxed) { return }
                    }
                    counter.store(2 * i + 2, ordering: .releasing)
                }
            }
            answerer.start()
            let deadline = DispatchTime.now().uptimeNanoseconds + 1_000_000_000
            var start: UInt64 = 0
            for i in 0...handoffs {
                counter.store(2 * i + 1, ordering: .releasing)
                var loads = 0
                while counter.load(ordering: .acquiring) != 2 * i + 2 {
                    loads &+= 1
                    if loads & 1023 == 0 && DispatchTime.now().uptimeNanoseconds > deadline {
                        abandoned.store(true, ordering: .relaxed)
                        finished.wait()
                        return nil
                    }
                }
                if i == 0 { start = DispatchTime.now().uptimeNanoseconds }
            }
            let elapsed = DispatchTime.now().uptimeNanoseconds - start
            finished.wait()
            return Double(elapsed) / Double(handoffs)
        }
    }

    /// Mean microseconds per step: wall time; the input gather and the first layer by units,
    /// each with its barrier; each shard's forward + backward (deltas); time threads spent
    /// waiting at the barriers for the slowest shard and for the previous step's gradient
    /// slices, and computing gradient slices over the whole batch with their update (all but
    /// the shards summed over threads).
    public struct StepPhases: Codable, Sendable {
        public var stepMicroseconds: Double
        public var inputGatherMicroseconds: Double
        public var firstLayerMicroseconds: Double
        public var shardMicroseconds: [Double]
        public var barrierWaitMicroseconds: Double
        public var gradientMicroseconds: Double
    }

    /// `threads` concurrent n×n×n SGEMMs (one per thread, BLAS single-threaded): the reference.
    final class GEMMProbe {
        let threads: Int, n: Int
        let buffers: [(FloatBuffer, FloatBuffer, FloatBuffer)]
        init(threads: Int, n: Int = 1536) {
            self.threads = threads
            self.n = n
            buffers = (0..<threads).map { _ in
                (FloatBuffer(count: n * n), FloatBuffer(count: n * n), FloatBuffer(count: n * n))
            }
            for (a, b, _) in buffers {
                for i in 0..<(n * n) {
                    a[i] = Float(i % 7) * 0.1
                    b[i] = Float(i % 5) * 0.1
                }
            }
            _ = measure(seconds: 0)
        }
        private func run(_ reps: Int) {
            let n = n
            let buffers = buffers
            DispatchQueue.concurrentPerform(iterations: threads) { t in
                let (a, b, c) = buffers[t]
                for _ in 0..<reps {
                    BLAS.sgemm(
                        transA: false, transB: false, m: n, n: n, k: n, alpha: 1, a: a.pointer, lda: n, b: b.pointer,
                        ldb: n, beta: 0, c: c.pointer, ldc: n)
                }
            }
        }
        /// GFLOP/s over about `seconds`.
        func measure(seconds: Double) -> Double {
            let t0 = Date()
            run(1)
            let one = Date().timeIntervalSince(t0)
            let reps = max(1, Int(seconds / max(one, 1e-6)))
            let t1 = Date()
            run(reps)
            let dt = Date().timeIntervalSince(t1)
            return Double(threads * reps) * 2 * pow(Double(n), 3) / dt / 1e9
        }
    }

    /// Training steps of the seed's network on synthetic MNIST-shaped data.
    final class StepProbe {
        let batch: Int
        /// Synthetic records the steps cycle through; the largest batch `nnd bench` takes.
        static let records = 8192
        let records = StepProbe.records
        let data: Dataset
        let engine: DataParallelEngine
        let order: UnsafeMutableBufferPointer<Int32>
        let results = UnsafeMutableBufferPointer<PassResult>.allocate(capacity: DataParallelEngine.maxStepsPerCall)
        var position = 0
        /// The sparse index of `data` (sparse probes).
        let rows: SparseRows?
        /// With `sharing`, the probe steps through that probe's records and index (`density` is
        /// then ignored) instead of making its own.
        init(
            workers: Int, batch: Int, layers: [Int] = [784, 200, 100, 50, 10], reducer: (any GradientReducer)? = nil,
            density: Double = 1, sparse: Bool = false, sharing: StepProbe? = nil
        ) {
            self.batch = batch
            data =
                sharing?.data
                ?? Dataset.synthetic(
                    records: records, features: layers[0], classes: layers.last!, density: density, seed: 7)
            rows = sparse ? (sharing?.rows ?? SparseRows(data)) : nil
            var rng = DeterministicRNG(seed: 8)
            engine = DataParallelEngine(
                layout: NetworkLayout(sizes: layers), activation: .logistic, optimizer: OptimizerConfig(),
                lambda: 0.01, workers: workers, maxBatch: batch, recordPhaseTimes: true, sparseFirstLayer: sparse)
            engine.layout.initialise(engine.parameters, scheme: .xavier, rng: &rng)
            engine.reducer = reducer
            if let rows { engine.useSparseInput(rows) }
            order = .allocate(capacity: records)
            for i in 0..<records { order[i] = Int32(i) }
            rng.shuffle(order)
            steps(50)
        }
        deinit {
            order.deallocate()
            results.deallocate()
        }
        /// `k` steps, handed to the engine in groups as the trainer does.
        private func steps(_ k: Int) {
            var left = k
            while left > 0 {
                // A group never runs past the end of the records (large batches: fewer steps per group).
                let g = min(left, DataParallelEngine.maxStepsPerCall, records / batch)
                if position + g * batch > records { position = 0 }
                _ = engine.steps(
                    data: data, indices: order.baseAddress! + position, stepSize: batch, records: g * batch,
                    learningRate: 0.01, results: results)
                position += g * batch
                left -= g
            }
        }
        /// Samples/s over about `seconds`, and where the steps' time went.
        func measure(seconds: Double) -> (samplesPerSecond: Double, phases: StepPhases) {
            let t0 = Date()
            steps(20)
            let probe = Date().timeIntervalSince(t0) / 20
            var k = max(50, Int(seconds / max(probe, 1e-7)))
            if let reducer = engine.reducer {  // every rank must run the same number of steps
                var agreed = Int64(k)
                reducer.max(&agreed, count: 1)
                k = Int(agreed)
            }
            _ = engine.phaseTimes.takeMeans()
            let t1 = Date()
            steps(k)
            let dt = Date().timeIntervalSince(t1)
            let p = engine.phaseTimes.takeMeans()
            return (
                Double(k * batch) / dt,
                StepPhases(
                    stepMicroseconds: dt / Double(k) * 1e6, inputGatherMicroseconds: p.input,
                    firstLayerMicroseconds: p.firstLayer, shardMicroseconds: p.shards,
                    barrierWaitMicroseconds: p.wait, gradientMicroseconds: p.gradient)
            )
        }
    }

    /// `workers` 1-worker probes of `one`'s records and index, stepping at once, one per thread.
    final class IndependentProbes {
        let probes: [StepProbe]
        init(workers: Int, like one: StepProbe) {
            probes = (0..<workers).map { _ in
                StepProbe(workers: 1, batch: one.batch, sparse: one.rows != nil, sharing: one)
            }
        }
        /// The probes' summed samples/s, each measured for about `seconds` at the same time.
        func measure(seconds: Double) -> Double {
            // `@unchecked Sendable`: iteration i touches only probe i and slot i of `rates`.
            struct Shared: @unchecked Sendable {
                let probes: [StepProbe]
                let rates: UnsafeMutableBufferPointer<Double>
            }
            let shared = Shared(probes: probes, rates: .allocate(capacity: probes.count))
            defer { shared.rates.deallocate() }
            DispatchQueue.concurrentPerform(iterations: probes.count) { i in
                shared.rates[i] = shared.probes[i].measure(seconds: seconds).samplesPerSecond
            }
            return shared.rates.reduce(0, +)
        }
    }

    /// `nnd bench` under mpirun: the seed network's global step split over the ranks, and
    /// where its time goes, with the dense first layer (on dense synthetic inputs) and with the
    /// sparse one (on inputs of `sparseDensity` non-zeros, MNIST's default path), plus a bare
    /// allreduce of the gradient's size.
    public struct DistributedResult: Codable, Sendable {
        public var ranks: Int
        /// This rank's workers (rank 0's, in what it prints).
        public var workersPerRank: Int
        /// The fewest and the most workers a rank runs (each splits its share of the step among its
        /// own workers, as training does).
        public var fewestWorkersPerRank: Int
        public var mostWorkersPerRank: Int
        /// The global mini-batch (each rank computes about batch / ranks records).
        public var batch: Int
        public var rounds: Int
        public var parameterBytes: Int
        public var dense: DistributedStepFigures
        public var sparse: DistributedStepFigures
        /// Non-zero share of the sparse step's synthetic inputs.
        public var sparseDensity: Double
        /// The sparse step's samples/s over the dense step's (best rounds of the same rounds).
        public var sparseSpeedupOverDense: Double
        /// MPI_Allreduce of `parameterBytes` alone (median of 200 calls).
        public var bareAllreduceMicroseconds: Double
        /// NCCL's "bus bandwidth" convention: 2·(R−1)/R · bytes / time.
        public var bareAllreduceBusGigabytesPerSecond: Double
    }

    /// A distributed step's best round, and per step the time computing this rank's share, in
    /// the gradient's allreduce (with the wait for the slowest rank) and in the update.
    public struct DistributedStepFigures: Codable, Sendable {
        public var stepSamplesPerSecond: Double
        public var stepMicroseconds: Double
        public var computeMicroseconds: Double
        public var allreduceMicroseconds: Double
        public var updateMicroseconds: Double
        /// The allreduce's share of a step.
        public var allreduceFraction: Double

        init(samplesPerSecond: Double, stepMicroseconds: Double, times t: DistributedTimes) {
            stepSamplesPerSecond = samplesPerSecond
            self.stepMicroseconds = stepMicroseconds
            computeMicroseconds = t.meanCompute * 1e6
            allreduceMicroseconds = t.meanAllreduce * 1e6
            updateMicroseconds = t.meanUpdate * 1e6
            allreduceFraction = t.allreduceSeconds / max(1e-12, t.computeSeconds + t.allreduceSeconds + t.updateSeconds)
        }
    }

    /// The largest `--batch` the step probes take.
    public static let maxBatch = StepProbe.records

    public static func runDistributed(
        reducer: any GradientReducer, workers: Int, batch: Int, rounds: Int = 5, seconds: Double = 1,
        density: Double = 0.19, log: (String) -> Void = { _ in }
    ) -> DistributedResult {
        let layout = NetworkLayout(sizes: [784, 200, 100, 50, 10])
        let counts = reducer.workerCountRange(own: workers)
        let (fewest, most) = (counts.lowerBound, counts.upperBound)
        let denseProbe = StepProbe(workers: workers, batch: batch, reducer: reducer)
        let sparseProbe = StepProbe(workers: workers, batch: batch, reducer: reducer, density: density, sparse: true)
        func measure(_ p: StepProbe) -> DistributedStepFigures {
            _ = p.engine.takeDistributedTimes()
            let m = p.measure(seconds: seconds)
            return DistributedStepFigures(
                samplesPerSecond: m.samplesPerSecond, stepMicroseconds: m.phases.stepMicroseconds,
                times: p.engine.takeDistributedTimes())
        }
        var dense: DistributedStepFigures?
        var sparse: DistributedStepFigures?
        for r in 1...max(1, rounds) {
            let d = measure(denseProbe)
            let s = measure(sparseProbe)
            log(
                String(
                    format: "round %d/%d: step %.0f samples/s, sparse first layer %.0f samples/s", r, rounds,
                    d.stepSamplesPerSecond, s.stepSamplesPerSecond))
            if dense == nil || d.stepSamplesPerSecond > dense!.stepSamplesPerSecond { dense = d }
            if sparse == nil || s.stepSamplesPerSecond > sparse!.stepSamplesPerSecond { sparse = s }
        }
        // The bare collective, on a buffer the size of the gradient.
        let buffer = FloatBuffer(count: layout.parameterCount)
        var calls: [Double] = []
        for i in 0..<220 {
            let t0 = DispatchTime.now().uptimeNanoseconds
            reducer.sum(buffer.pointer, count: buffer.count)
            if i >= 20 { calls.append(Double(DispatchTime.now().uptimeNanoseconds - t0) / 1000) }
        }
        let bare = calls.sorted()[calls.count / 2]
        let bytes = layout.parameterCount * MemoryLayout<Float>.stride
        let ranks = Double(reducer.size)
        return DistributedResult(
            ranks: reducer.size, workersPerRank: workers, fewestWorkersPerRank: fewest, mostWorkersPerRank: most,
            batch: batch, rounds: max(1, rounds), parameterBytes: bytes,
            dense: dense!, sparse: sparse!, sparseDensity: density,
            sparseSpeedupOverDense: sparse!.stepSamplesPerSecond / dense!.stepSamplesPerSecond,
            bareAllreduceMicroseconds: bare,
            bareAllreduceBusGigabytesPerSecond: 2 * (ranks - 1) / ranks * Double(bytes) / (bare * 1e-6) / 1e9)
    }

    /// Measures `rounds` times, each round all four quantities one after another, and keeps
    /// each quantity's best round: other load on the machine (this is a shared VM) only ever
    /// slows a measurement down, so the best round is the closest to what the code does, and
    /// the reference gets the same treatment as the step. The median of the per-round ratios
    /// is kept as well, to show the spread.
    public static func run(
        workers: Int, batch: Int, rounds: Int = 5, seconds: Double = 1, density: Double = 0.19,
        log: (String) -> Void = { _ in }
    ) -> Result {
        let flops = NetworkLayout(sizes: [784, 200, 100, 50, 10]).trainingFlopsPerRecord
        log(
            "preparing (GEMM \(1536)³ on 1 and \(workers) threads, dense and sparse steps on 1 and \(workers) workers)…"
        )
        let gemm1 = GEMMProbe(threads: 1)
        let gemmAll = GEMMProbe(threads: workers)
        let step1 = StepProbe(workers: 1, batch: batch)
        let stepAll = StepProbe(workers: workers, batch: batch)
        let sparseAll = StepProbe(workers: workers, batch: batch, density: density, sparse: true)
        let sparseOne = StepProbe(workers: 1, batch: batch, density: density, sparse: true)
        let denseOnSparse = StepProbe(workers: workers, batch: batch, density: density)
        let independent = IndependentProbes(workers: workers, like: sparseOne)
        var iS: [Double] = []
        var sS: [Double] = []
        var sS1: [Double] = []
        var dS: [Double] = []
        var sP: [StepPhases] = []
        var sP1: [StepPhases] = []
        var dP: [StepPhases] = []
        var g1: [Double] = []
        var gA: [Double] = []
        var s1: [Double] = []
        var sA: [Double] = []
        var phases: [StepPhases] = []
        for r in 1...max(1, rounds) {
            g1.append(gemm1.measure(seconds: 0.6 * seconds))
            gA.append(gemmAll.measure(seconds: 0.6 * seconds))
            s1.append(step1.measure(seconds: seconds).samplesPerSecond)
            let all = stepAll.measure(seconds: seconds)
            sA.append(all.samplesPerSecond)
            phases.append(all.phases)
            let sparseRound = sparseAll.measure(seconds: seconds)
            sS.append(sparseRound.samplesPerSecond)
            sP.append(sparseRound.phases)
            let sparseOneRound = sparseOne.measure(seconds: seconds)
            sS1.append(sparseOneRound.samplesPerSecond)
            sP1.append(sparseOneRound.phases)
            iS.append(independent.measure(seconds: seconds))
            let denseRound = denseOnSparse.measure(seconds: seconds)
            dS.append(denseRound.samplesPerSecond)
            dP.append(denseRound.phases)
            log(
                String(
                    format:
                        "round %d/%d: GEMM %.1f / %.1f GFLOP/s, step %.0f / %.0f samples/s; at density %.2f sparse %.0f / %.0f (independent %.0f), dense %.0f",
                    r, rounds, g1.last!, gA.last!, s1.last!, sA.last!, density, sS1.last!, sS.last!, iS.last!, dS.last!)
            )
        }
        let pairs = alternatingPairs(
            count: 4 * max(1, rounds), sliceSeconds: 0.1 * seconds, workers: workers, gemm: (gemm1, gemmAll),
            sparse: (sparseOne, sparseAll), log: log)
        let bestG1 = g1.max()!
        let bestGA = gA.max()!
        let bestS1 = s1.max()!
        let bestSA = sA.max()!
        return Result(
            blasKernel: BLAS.kernelName,
            blasKernelBestForCPU: BLASKernelSelector.bestKernelForThisCPU,
            vectorKernels: VectorKernels.instructionSet,
            smallProductKernel: BLAS.smallProductKernel, workers: workers, batch: batch,
            rounds: g1.count,
            gemmGflopsOneCore: bestG1, gemmGflopsAllCores: bestGA,
            stepSamplesPerSecondOneWorker: bestS1, stepSamplesPerSecondAllWorkers: bestSA,
            stepGflopsOneWorker: bestS1 * flops / 1e9, stepGflopsAllWorkers: bestSA * flops / 1e9,
            ratioOneWorkerToGemm: bestS1 * flops / 1e9 / bestG1, ratioAllWorkersToGemm: bestSA * flops / 1e9 / bestGA,
            speedup: bestSA / bestS1, gemmSpeedup: bestGA / bestG1, secondsPerMNISTEpoch: 60000 / bestSA,
            medianRatioAllWorkersToGemm: median(zip(sA, gA).map { $0 * flops / 1e9 / $1 }),
            medianSpeedup: median(zip(sA, s1).map { $0 / $1 }),
            phasesOfBestRound: phases[sA.firstIndex(of: bestSA)!],
            sparseDensity: density, sparseKernels: DataParallelEngine.sparseKernels,
            sparseStepSamplesPerSecond: sS.max()!, denseStepOnSparseDataSamplesPerSecond: dS.max()!,
            sparseEffectiveGflops: sS.max()! * flops / 1e9,
            ratioSparseEffectiveToGemm: sS.max()! * flops / 1e9 / bestGA,
            sparseSpeedupOverDense: median(zip(sS, dS).map { $0 / $1 }),
            sparseStepSamplesPerSecondOneWorker: sS1.max()!, sparseSpeedup: sS.max()! / sS1.max()!,
            sparseMedianSpeedup: median(zip(sS, sS1).map { $0 / $1 }),
            sparsePhasesOfBestRound: sP[sS.firstIndex(of: sS.max()!)!],
            sparsePhasesOneWorkerOfBestRound: sP1[sS1.firstIndex(of: sS1.max()!)!],
            densePhasesOnSparseDataOfBestRound: dP[dS.firstIndex(of: dS.max()!)!],
            independentSparseSamplesPerSecond: iS.max()!, independentSparseSpeedup: iS.max()! / sS1.max()!,
            independentSparseMedianSpeedup: median(zip(iS, sS1).map { $0 / $1 }), pairs: pairs)
    }

    static func median(_ x: [Double]) -> Double {
        let s = x.sorted()
        return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
    }

    /// `count` quads: GEMM on 1 and all cores and the sparse step on 1 and all workers, each
    /// measured for `sliceSeconds`; even quads in that order, odd quads backwards, so that a
    /// steady drift in the machine's speed does not favour either side of a ratio.
    static func alternatingPairs(
        count: Int, sliceSeconds: Double, workers: Int, gemm: (one: GEMMProbe, all: GEMMProbe),
        sparse: (one: StepProbe, all: StepProbe), log: (String) -> Void
    ) -> AlternatingPairs {
        var gemmRatios: [Double] = []
        var sparseRatios: [Double] = []
        var roundTrips: [Double?] = []
        let probe = workers > 1 ? CoreToCoreProbe() : nil
        // A probe that found no second CPU free (nil) is not tried again: each waits a second.
        var probing = probe != nil
        for q in 0..<count {
            let before = probing ? probe?.roundTripNanoseconds() : nil
            if before == nil { probing = false }
            var g = (one: 0.0, all: 0.0)
            var st = (one: 0.0, all: 0.0)
            let slices: [() -> Void] = [
                { g.one = gemm.one.measure(seconds: sliceSeconds) },
                { g.all = gemm.all.measure(seconds: sliceSeconds) },
                { st.one = sparse.one.measure(seconds: sliceSeconds).samplesPerSecond },
                { st.all = sparse.all.measure(seconds: sliceSeconds).samplesPerSecond },
            ]
            for slice in q % 2 == 0 ? slices : slices.reversed() { slice() }
            gemmRatios.append(g.all / g.one)
            sparseRatios.append(st.all / st.one)
            if let probe {
                let after = probing ? probe.roundTripNanoseconds() : nil
                if after == nil { probing = false }
                roundTrips.append(before.flatMap { b in after.map { max(b, $0) } })
            }
        }
        let threshold = 0.925 * Double(workers)
        let scaling = zip(gemmRatios, sparseRatios).filter { $0.0 >= threshold }.map(\.1)
        let fastest = roundTrips.compactMap { $0 }.min()
        let near = zip(roundTrips, sparseRatios).filter { t, _ in t.map { $0 <= 2 * fastest! } ?? false }.map(\.1)
        let far = zip(roundTrips, sparseRatios).filter { t, _ in t.map { $0 > 2 * fastest! } ?? false }.map(\.1)
        log(
            String(
                format: "%d alternating pairs of %.2f s: sparse %@; GEMM %@%@", count, sliceSeconds,
                sparseRatios.map { String(format: "%.2f", $0) }.joined(separator: " "),
                gemmRatios.map { String(format: "%.2f", $0) }.joined(separator: " "),
                probe == nil
                    ? ""
                    : "; cores' round trip (ns) "
                        + roundTrips.map { $0.map { String(format: "%.0f", $0) } ?? "-" }.joined(separator: " ")))
        return AlternatingPairs(
            count: count, sliceSeconds: sliceSeconds, gemmSpeedups: gemmRatios, sparseSpeedups: sparseRatios,
            gemmMedianSpeedup: median(gemmRatios), sparseMedianSpeedup: median(sparseRatios),
            gemmScalingThreshold: threshold, quadsWhereGemmScales: scaling.count,
            sparseMedianSpeedupWhereGemmScales: scaling.isEmpty ? nil : median(scaling),
            roundTripNanoseconds: roundTrips, quadsCoresNear: near.count,
            sparseMedianSpeedupCoresNear: near.isEmpty ? nil : median(near),
            sparseMedianSpeedupCoresFar: far.isEmpty ? nil : median(far))
    }
}
