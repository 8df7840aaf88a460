import Dispatch
import Foundation
import NNData
import NNEngine
import NNNumerics

/// `nnd bench`: the machine's own large-GEMM rate (the reference) and the training step's
/// rate for the seed's network, measured in one process with the same BLAS.
public enum Benchmark {
    public struct Result: Codable, Sendable {
        public var blasKernel: String
        public var workers: Int
        public var batch: Int
        public var gemmGflopsOneCore: Double
        public var gemmGflopsAllCores: Double
        public var stepSamplesPerSecondOneWorker: Double
        public var stepSamplesPerSecondAllWorkers: Double
        public var stepGflopsOneWorker: Double
        public var stepGflopsAllWorkers: Double
        public var ratioOneWorkerToGemm: Double
        public var ratioAllWorkersToGemm: Double
        public var speedup: Double
        public var secondsPerMNISTEpoch: Double
    }

    /// GFLOP/s of `threads` concurrent n×n×n SGEMMs (one per thread, BLAS single-threaded).
    public static func gemmRate(threads: Int, n: Int = 1536, seconds: Double = 1.5) -> Double {
        let bufs = (0..<threads).map { _ in (FloatBuffer(count: n * n), FloatBuffer(count: n * n), FloatBuffer(count: n * n)) }
        for (a, b, _) in bufs { for i in 0..<(n * n) { a[i] = Float(i % 7) * 0.1; b[i] = Float(i % 5) * 0.1 } }
        func run(_ reps: Int) {
            DispatchQueue.concurrentPerform(iterations: threads) { t in
                let (a, b, c) = bufs[t]
                for _ in 0..<reps {
                    BLAS.sgemm(transA: false, transB: false, m: n, n: n, k: n, alpha: 1, a: a.pointer, lda: n, b: b.pointer, ldb: n, beta: 0, c: c.pointer, ldc: n)
                }
            }
        }
        run(1)
        let t0 = Date(); run(1); let one = Date().timeIntervalSince(t0)
        let reps = max(1, Int(seconds / max(one, 1e-6)))
        let t1 = Date(); run(reps); let dt = Date().timeIntervalSince(t1)
        return Double(threads * reps) * 2 * pow(Double(n), 3) / dt / 1e9
    }

    /// Samples/s of training steps of the seed's network on synthetic MNIST-shaped data.
    public static func stepRate(workers: Int, batch: Int, layers: [Int] = [784, 200, 100, 50, 10], seconds: Double = 2) -> Double {
        let records = 8192
        let features = FloatBuffer(count: records * layers[0])
        var rng = DeterministicRNG(seed: 7)
        for i in 0..<features.count { features[i] = Float(rng.nextUnit()) }
        let labels = (0..<records).map { _ in Int32(rng.nextIndex(below: layers.last!)) }
        let data = Dataset(features: features, labels: labels, featureCount: layers[0], classCount: layers.last!, sources: ["synthetic"])
        let engine = DataParallelEngine(layout: NetworkLayout(sizes: layers), activation: .logistic, optimizer: OptimizerConfig(),
                                        lambda: 0.01, workers: workers, maxBatch: batch)
        engine.layout.initialise(engine.parameters, scheme: .xavier, rng: &rng)
        let order = UnsafeMutableBufferPointer<Int32>.allocate(capacity: records)
        defer { order.deallocate() }
        for i in 0..<records { order[i] = Int32(i) }
        rng.shuffle(order)
        var pos = 0
        func steps(_ k: Int) {
            for _ in 0..<k {
                if pos + batch > records { pos = 0 }
                _ = engine.step(data: data, indices: order.baseAddress! + pos, count: batch, learningRate: 0.01)
                pos += batch
            }
        }
        steps(50)
        let t0 = Date(); steps(50); let probe = Date().timeIntervalSince(t0) / 50
        let k = max(50, Int(seconds / max(probe, 1e-7)))
        let t1 = Date(); steps(k); let dt = Date().timeIntervalSince(t1)
        return Double(k * batch) / dt
    }

    public static func run(workers: Int, batch: Int, log: (String) -> Void = { _ in }) -> Result {
        let flops = NetworkLayout(sizes: [784, 200, 100, 50, 10]).trainingFlopsPerRecord
        log("measuring GEMM reference (1 core)…")
        let g1 = gemmRate(threads: 1)
        log("measuring GEMM reference (\(workers) cores)…")
        let gAll = workers == 1 ? g1 : gemmRate(threads: workers)
        log("measuring training step (1 worker, batch \(batch))…")
        let s1 = stepRate(workers: 1, batch: batch)
        log("measuring training step (\(workers) workers, batch \(batch))…")
        let sAll = workers == 1 ? s1 : stepRate(workers: workers, batch: batch)
        return Result(blasKernel: BLAS.kernelName, workers: workers, batch: batch, gemmGflopsOneCore: g1, gemmGflopsAllCores: gAll,
                      stepSamplesPerSecondOneWorker: s1, stepSamplesPerSecondAllWorkers: sAll,
                      stepGflopsOneWorker: s1 * flops / 1e9, stepGflopsAllWorkers: sAll * flops / 1e9,
                      ratioOneWorkerToGemm: s1 * flops / 1e9 / g1, ratioAllWorkersToGemm: sAll * flops / 1e9 / gAll,
                      speedup: sAll / s1, secondsPerMNISTEpoch: 60000 / sAll)
    }
}
