import ArgumentParser
import Dispatch
import Foundation
import NNAPI
import NNData
import NNDaemon
import NNEngine
import NNNumerics
import NNTraining

@main
struct NND: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "nnd",
        abstract: "nnd — a training daemon for fully connected MNIST classifiers.",
        version: NNDVersion.current,
        subcommands: [Serve.self, Train.self, Bench.self, DatasetCommand.self, Info.self])

    static func main() async {
        if CommandLine.arguments.dropFirst().first == "serve" { Daemon.prepareProcess() }
        // Must run before anything calls into OpenBLAS: choose its kernel and re-exec if needed.
        BLASKernelSelector.reexecWithBestKernelIfNeeded()
        BLAS.useSingleThread()
        BLASKernelSelector.verifyOrFallBack(shapes: [(32, 200, 784), (32, 100, 200), (32, 10, 50), (200, 784, 32)])
        do {
            var command = try parseAsRoot()
            if var asyncCommand = command as? AsyncParsableCommand { try await asyncCommand.run() } else { try command.run() }
        } catch {
            exit(withError: error)
        }
    }
}

func stderrLine(_ s: String) { FileHandle.standardError.write(Data((s + "\n").utf8)) }

func jsonLine<T: Encodable>(_ value: T) -> String {
    String(decoding: try! APIJSON.encoder.encode(value), as: UTF8.self)
}

struct Info: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show the BLAS kernel, NUMA topology and workers nnd would use.")
    func run() throws {
        let topo = NUMATopology.detect()
        print("blas kernel: \(BLAS.kernelName)")
        print("element-wise kernels: \(VectorKernels.instructionSet)")
        print("numa: \(topo.numaAvailable ? "available" : "unavailable"); \(topo)")
        print("default workers: \(topo.cpus.count)")
    }
}

struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Train a run spec in the foreground.")
    @Argument(help: "Run spec (YAML), e.g. etc/nnd/runs/mnist-seed.yaml") var spec: String
    @Option(help: "Directory with the MNIST IDX files (default: found automatically)") var data: String?
    @Option(help: "Override training.epochs") var epochs: Int?
    @Option(help: "Worker threads (default: online CPUs)") var workers: Int?
    @Option(name: .customLong("set"), help: "Override a spec field, e.g. --set training.batch_size=128") var overrides: [String] = []
    @Flag(help: "One JSON object per line") var json = false

    func run() throws {
        var ov = overrides
        if let epochs { ov.append("training.epochs=\(epochs)") }
        let spec: RunSpec
        do { spec = try RunSpec.load(path: self.spec, overrides: ov) } catch { stderrLine("nnd: \(error)"); throw ExitCode(2) }
        let nWorkers = workers ?? NUMATopology.detect().cpus.count
        guard nWorkers >= 1 && nWorkers <= 1024 else { stderrLine("nnd: --workers \(nWorkers) must be between 1 and 1024"); throw ExitCode(2) }
        let loaded: DataLoading.Loaded
        do { loaded = try DataLoading.load(spec: spec, dataDirOverride: data) } catch { stderrLine("nnd: \(error)"); throw ExitCode(1) }
        let trainer = try Trainer(spec: spec, train: loaded.train, test: loaded.test, workers: nWorkers, dataHash: loaded.contentHash)
        if !json {
            print("nnd: \(spec.name): \(spec.model.layers.map(String.init).joined(separator: "-")) \(spec.model.activation.rawValue), \(spec.training.mode.rawValue) batch \(trainer.stepSize), \(spec.training.optimizer.rawValue) lr \(spec.training.learningRate), \(spec.training.epochs) epochs")
            print("nnd: \(loaded.train.count) train / \(loaded.test.count) test records, \(nWorkers) workers, BLAS kernel \(BLAS.kernelName), params \(trainer.engine.parameterPlacement), batch buffers \(trainer.engine.batchBufferPlacement)")
        }
        // Ctrl-C / SIGTERM: stop between steps, report, exit.
        let flag = ControlFlag()
        signal(SIGINT, SIG_IGN); signal(SIGTERM, SIG_IGN)
        var sources: [DispatchSourceSignal] = []
        for sig in [SIGINT, SIGTERM] {
            let s = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            s.setEventHandler { flag.request(.stop) }
            s.resume()
            sources.append(s)
        }
        let outcome = try trainer.run(control: flag, onEvent: { e in
            guard e.kind == .epoch else { return }
            if json {
                print(jsonLine(e)); fflush(nil)
            } else {
                print(String(format: "epoch %3d/%d  cost %.6f  lr %.5g  %.2fs  %.0f samples/s  train %.2f%%%@",
                             e.epoch, e.epochs, e.cost ?? .nan, Double(e.learningRate), e.seconds, e.samplesPerSecond, e.trainAccuracy ?? 0,
                             e.testAccuracy.map { String(format: "  test %.2f%%", $0) } ?? ""))
                fflush(nil)
            }
        })
        _ = sources
        if outcome != .completed { stderrLine("nnd: interrupted after \(trainer.state.history.count) epochs") }
        let trainAcc = trainer.evaluate(loaded.train).accuracy, testAcc = trainer.evaluate(loaded.test).accuracy
        let secs = trainer.state.history.map(\.seconds)
        let perEpoch = secs.isEmpty ? 0 : secs.reduce(0, +) / Double(secs.count)
        struct Final: Encodable { var kind = "result"; var trainAccuracy: Double; var testAccuracy: Double; var secondsPerEpoch: Double; var epochs: Int; var workers: Int; var blasKernel: String; var completed: Bool }
        let f = Final(trainAccuracy: trainAcc, testAccuracy: testAcc, secondsPerEpoch: perEpoch, epochs: trainer.state.history.count,
                      workers: nWorkers, blasKernel: BLAS.kernelName, completed: outcome == .completed)
        if json { print(jsonLine(f)) } else {
            print(String(format: "train accuracy %.2f%%  test accuracy %.2f%%  (%.3f s/epoch over %d epochs)", trainAcc, testAcc, perEpoch, secs.count))
        }
        if outcome != .completed { throw ExitCode(130) }
    }
}

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Measure GEMM reference and training-step speed (use a release build).")
    @Option(help: "Workers for the all-worker measurement (default: online CPUs)") var workers: Int?
    @Option(help: "Mini-batch size") var batch: Int = 64
    @Option(help: "Measurement rounds; each quantity keeps its best round") var rounds: Int = 5
    @Flag(help: "One JSON object") var json = false
    func run() throws {
        let w = workers ?? NUMATopology.detect().cpus.count
        guard w >= 1, batch >= 1, rounds >= 1 else { stderrLine("nnd: --workers, --batch and --rounds must be ≥ 1"); throw ExitCode(2) }
        let r = Benchmark.run(workers: w, batch: batch, rounds: rounds) { if !json { stderrLine("nnd bench: \($0)") } }
        if json { print(jsonLine(r)); return }
        print("BLAS kernel:                 \(r.blasKernel); element-wise kernels \(r.vectorKernels)")
        print("best of \(r.rounds) rounds:")
        print(String(format: "GEMM reference:              %.1f GFLOP/s (1 core), %.1f GFLOP/s (%d cores)", r.gemmGflopsOneCore, r.gemmGflopsAllCores, w))
        print(String(format: "step, 1 worker, batch %d:    %.0f samples/s, %.1f GFLOP/s = %.0f%% of 1-core GEMM", batch, r.stepSamplesPerSecondOneWorker, r.stepGflopsOneWorker, r.ratioOneWorkerToGemm * 100))
        print(String(format: "step, %d workers, batch %d:   %.0f samples/s, %.1f GFLOP/s = %.0f%% of %d-core GEMM", w, batch, r.stepSamplesPerSecondAllWorkers, r.stepGflopsAllWorkers, r.ratioAllWorkersToGemm * 100, w))
        print(String(format: "speedup %d workers / 1:       %.2fx (the GEMM reference's own %d-core / 1-core: %.2fx)", w, r.speedup, w, r.gemmSpeedup))
        print(String(format: "MNIST epoch (60000 records): %.3f s", r.secondsPerMNISTEpoch))
        print(String(format: "median of rounds:            %.0f%% of %d-core GEMM, speedup %.2fx", r.medianRatioAllWorkersToGemm * 100, w, r.medianSpeedup))
        let p = r.phasesOfBestRound
        print(String(format: "%d-worker step (best round): %.0f µs; input gather %.0f µs, first layer %.0f µs; shards %@ µs; waiting for shards %.0f µs, gradient slices + update %.0f µs (all but shards summed over threads)",
                     w, p.stepMicroseconds, p.inputGatherMicroseconds, p.firstLayerMicroseconds, p.shardMicroseconds.map { String(format: "%.0f", $0) }.joined(separator: " / "),
                     p.barrierWaitMicroseconds, p.gradientMicroseconds))
    }
}

struct DatasetCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "dataset", abstract: "Fetch and verify datasets.", subcommands: [Fetch.self])
    struct Fetch: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Fetch MNIST, verifying its content against pinned SHA-256s.")
        @Argument(help: "Dataset name (mnist)") var name: String
        @Option(help: "Destination directory (default ~/.local/share/nnd/datasets/mnist)") var into: String?
        @Option(help: "Take the files from this directory first (also NND_DATASET_MIRROR)") var from: String?
        func run() throws {
            guard name == "mnist" else { stderrLine("nnd: unknown dataset '\(name)' (known: mnist)"); throw ExitCode(2) }
            let dest = into ?? DataLoading.defaultFetchDirectory()
            do {
                let src = try MNIST.fetch(into: dest, from: from) { stderrLine("nnd: \($0)") }
                print("mnist: ready in \(dest) (from \(src))")
            } catch { stderrLine("nnd: \(error)"); throw ExitCode(1) }
        }
    }
}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the daemon: control API on a Unix socket, runs in a state directory.")
    @Option(help: "YAML settings file (e.g. /etc/nnd/nnd.yaml); NND_CONFIG also works") var config: String?
    @Option(help: "Control socket path") var socket: String?
    @Option(help: "State directory (runs, checkpoints)") var stateDir: String?
    @Option(help: "Worker threads per run") var workers: Int?
    @Option(help: "Runs that train at once") var maxConcurrentRuns: Int?
    @Option(help: "Default MNIST directory for specs that name none") var dataDir: String?
    @Option(help: "trace|debug|info|notice|warning|error|critical") var logLevel: String?
    @Option(help: "Also serve /metrics on this TCP host:port (off by default)") var metricsListen: String?

    func run() async throws {
        var c = DaemonConfig.userDefaults()
        do {
            let env = ProcessInfo.processInfo.environment
            if let path = config ?? env["NND_CONFIG"] {
                guard let data = FileManager.default.contents(atPath: path), let text = String(data: data, encoding: .utf8) else {
                    throw DaemonConfig.ConfigError(source: path, field: "-", message: "cannot read the settings file")
                }
                try c.apply(yaml: text, source: path)
            }
            try c.apply(environment: env)
            if let socket { try c.set("socket", socket, source: "--socket") }
            if let stateDir { try c.set("state_dir", stateDir, source: "--state-dir") }
            if let workers { try c.set("workers", String(workers), source: "--workers") }
            if let maxConcurrentRuns { try c.set("max_concurrent_runs", String(maxConcurrentRuns), source: "--max-concurrent-runs") }
            if let dataDir { try c.set("data_dir", dataDir, source: "--data-dir") }
            if let logLevel { try c.set("log_level", logLevel, source: "--log-level") }
            if let metricsListen { try c.set("metrics_listen", metricsListen, source: "--metrics-listen") }
        } catch {
            stderrLine("nnd: \(error)")
            throw ExitCode(2)
        }
        do { try await Daemon.run(config: c) } catch {
            stderrLine("nnd: \(error)")
            throw ExitCode(1)
        }
    }
}
