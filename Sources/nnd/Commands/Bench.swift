import ArgumentParser
import Foundation
import NNDistributed
import NNEngine
import NNNumerics
import NNTraining

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure GEMM reference and training-step speed (use a release build).",
        discussion: """
            Under mpirun (e.g. mpirun -np 2 nnd bench --workers 1) it measures the distributed step \
            instead: the global batch split over the ranks, and per step the time computing a rank's \
            share, in the gradient's allreduce and in the update, with the dense first layer and with \
            the sparse one (inputs of --density non-zeros), plus a bare allreduce of the gradient's \
            size. Rank 0 prints.
            """)
    @Option(help: "Workers for the all-worker measurement (default: online CPUs)") var workers: Int?
    @Option(help: "Mini-batch size") var batch: Int = 64
    @Option(help: "Measurement rounds; each quantity keeps its best round") var rounds: Int = 5
    @Option(
        help: ArgumentHelp(
            "Seconds each step quantity is measured for in a round (the GEMM reference: 0.6 of it)",
            discussion: "Shorter is quicker and noisier: --rounds 1 --seconds 0.2 takes a few seconds."))
    var seconds: Double = 1
    @Option(help: "Non-zero share of the synthetic inputs for the sparse first layer's step (MNIST: 0.19)")
    var density: Double = 0.19
    @Flag(help: "One JSON object") var json = false
    func run() throws {
        let w = workers ?? MPIReducer.defaultWorkers()
        guard w >= 1, batch >= 1, rounds >= 1 else {
            stderrLine("nnd: --workers, --batch and --rounds must be ≥ 1")
            throw ExitCode(2)
        }
        guard seconds > 0 && seconds <= 60 else {
            stderrLine("nnd: --seconds \(seconds) must be in (0, 60]")
            throw ExitCode(2)
        }
        guard batch <= Benchmark.maxBatch else {
            stderrLine("nnd: --batch \(batch) is larger than the benchmark's \(Benchmark.maxBatch) synthetic records")
            throw ExitCode(2)
        }
        guard density > 0 && density <= 1 else {
            stderrLine("nnd: --density \(density) must be in (0, 1]")
            throw ExitCode(2)
        }
        if MPIReducer.launchedByMPI() {
            let reducer = try MPIReducer()
            defer { reducer.finish() }
            let printing = reducer.rank == 0
            if printing { warnIfOpenBLASIsHeldBack() }
            let rankWorkers = workers ?? MPIReducer.defaultWorkers(localRanks: reducer.localSize)
            let r = Benchmark.runDistributed(
                reducer: reducer, workers: rankWorkers, batch: batch, rounds: rounds, seconds: seconds, density: density
            ) {
                if !json && printing { stderrLine("nnd bench: \($0)") }
            }
            guard printing else { return }
            if json { return print(jsonLine(r)) }
            print(
                "distributed step, best of \(r.rounds) rounds: \(r.ranks) ranks × \(workerCountText(r.fewestWorkersPerRank...r.mostWorkersPerRank)) workers, global batch \(r.batch)"
            )
            func show(_ title: String, _ f: Benchmark.DistributedStepFigures) {
                print(title + String(format: " %.0f µs, %.0f samples/s", f.stepMicroseconds, f.stepSamplesPerSecond))
                print(
                    String(
                        format: "  per step: compute %.0f µs, allreduce %.0f µs (%.0f%% of the step), update %.0f µs",
                        f.computeMicroseconds, f.allreduceMicroseconds, f.allreduceFraction * 100, f.updateMicroseconds)
                )
            }
            show("dense first layer:", r.dense)
            show(String(format: "sparse first layer, inputs %.0f%% non-zero:", r.sparseDensity * 100), r.sparse)
            print(String(format: "sparse / dense: %.2fx", r.sparseSpeedupOverDense))
            print(
                String(
                    format: "allreduce of %d bytes alone: %.0f µs median, bus bandwidth %.2f GB/s", r.parameterBytes,
                    r.bareAllreduceMicroseconds, r.bareAllreduceBusGigabytesPerSecond))
            return
        }
        warnIfOpenBLASIsHeldBack()
        let r = Benchmark.run(
            workers: w, batch: batch, rounds: rounds, seconds: seconds, density: density
        ) {
            if !json { stderrLine("nnd bench: \($0)") }
        }
        if json {
            print(jsonLine(r))
            return
        }
        let heldBack =
            BLASKernelSelector.isNarrower(r.blasKernel, than: r.blasKernelBestForCPU)
            ? " (this CPU's best: \(r.blasKernelBestForCPU))" : ""
        print("BLAS kernel:                 \(r.blasKernel)\(heldBack); element-wise kernels \(r.vectorKernels)")
        print("hidden-layer products:       \(r.smallProductKernel)")
        print("best of \(r.rounds) rounds:")
        print(
            String(
                format: "GEMM reference:              %.1f GFLOP/s (1 core), %.1f GFLOP/s (%d cores)",
                r.gemmGflopsOneCore, r.gemmGflopsAllCores, w))
        print(
            String(
                format: "step, 1 worker, batch %d:    %.0f samples/s, %.1f GFLOP/s = %.0f%% of 1-core GEMM", batch,
                r.stepSamplesPerSecondOneWorker, r.stepGflopsOneWorker, r.ratioOneWorkerToGemm * 100))
        print(
            String(
                format: "step, %d workers, batch %d:   %.0f samples/s, %.1f GFLOP/s = %.0f%% of %d-core GEMM", w, batch,
                r.stepSamplesPerSecondAllWorkers, r.stepGflopsAllWorkers, r.ratioAllWorkersToGemm * 100, w))
        print(
            String(
                format: "speedup %d workers / 1:       %.2fx (the GEMM reference's own %d-core / 1-core: %.2fx)", w,
                r.speedup, w, r.gemmSpeedup))
        print(String(format: "MNIST epoch (60000 records): %.3f s", r.secondsPerMNISTEpoch))
        print(
            String(
                format: "median of rounds:            %.0f%% of %d-core GEMM, speedup %.2fx",
                r.medianRatioAllWorkersToGemm * 100, w, r.medianSpeedup))
        print(
            String(
                format:
                    "sparse first layer (%@), inputs %.0f%% non-zero: %.0f samples/s = %.1f dense-equivalent GFLOP/s = %.0f%% of %d-core GEMM; dense step on the same data %.0f samples/s; sparse/dense %.2fx (median of rounds)",
                r.sparseKernels, r.sparseDensity * 100, r.sparseStepSamplesPerSecond, r.sparseEffectiveGflops,
                r.ratioSparseEffectiveToGemm * 100, w, r.denseStepOnSparseDataSamplesPerSecond,
                r.sparseSpeedupOverDense))
        print(
            String(
                format:
                    "sparse step, 1 worker:        %.0f samples/s; speedup %d workers / 1: %.2fx (median of rounds %.2fx)",
                r.sparseStepSamplesPerSecondOneWorker, w, r.sparseSpeedup, r.sparseMedianSpeedup))
        print(
            String(
                format:
                    "%d independent 1-worker sparse steps at once: %.0f samples/s = %.2fx one (median of rounds %.2fx): the most that splitting one step over %d workers can give on this machine",
                w, r.independentSparseSamplesPerSecond, r.independentSparseSpeedup, r.independentSparseMedianSpeedup, w)
        )
        let pairs = r.pairs
        let whereScales =
            pairs.sparseMedianSpeedupWhereGemmScales.map {
                String(
                    format: "in the %d where GEMM scaled ≥ %.2fx: sparse %.2fx", pairs.quadsWhereGemmScales,
                    pairs.gemmScalingThreshold, $0)
            } ?? String(format: "GEMM scaled ≥ %.2fx in none", pairs.gemmScalingThreshold)
        print(
            String(
                format:
                    "alternating pairs (%d × %.2f s slices, 1 and %d in turn): median speedup sparse step %.2fx, GEMM %.2fx; %@",
                pairs.count, pairs.sliceSeconds, w, pairs.sparseMedianSpeedup, pairs.gemmMedianSpeedup, whereScales))
        let trips = pairs.roundTripNanoseconds.compactMap { $0 }
        if let fastest = trips.min(), let slowest = trips.max() {
            func speedup(_ x: Double?) -> String { x.map { String(format: "%.2fx", $0) } ?? "none" }
            print(
                String(
                    format:
                        "cores' round trip in the pairs: %.0f–%.0f ns; sparse step %@ in the %d with the cores near (≤ %.0f ns), %@ in the %d others (a step split over cores pays this distance at every barrier and for every line the other core wrote; GEMM shares nothing)",
                    fastest, slowest, speedup(pairs.sparseMedianSpeedupCoresNear), pairs.quadsCoresNear, 2 * fastest,
                    speedup(pairs.sparseMedianSpeedupCoresFar), trips.count - pairs.quadsCoresNear))
        }
        for (workers, name, p) in [
            (w, "", r.phasesOfBestRound), (w, " sparse", r.sparsePhasesOfBestRound),
            (1, " sparse", r.sparsePhasesOneWorkerOfBestRound),
            (w, " dense on the sparse data", r.densePhasesOnSparseDataOfBestRound),
        ] {
            print(
                String(
                    format:
                        "%d-worker%@ step (best round): %.0f µs; input gather %.0f µs, first layer %.0f µs; shards %@ µs; waiting at barriers %.0f µs, gradient slices + update %.0f µs (all but shards summed over threads)",
                    workers, name, p.stepMicroseconds, p.inputGatherMicroseconds, p.firstLayerMicroseconds,
                    p.shardMicroseconds.map { String(format: "%.0f", $0) }.joined(separator: " / "),
                    p.barrierWaitMicroseconds, p.gradientMicroseconds))
        }
    }
}
