import ArgumentParser
import Foundation
import NNAPI
import NNCheckpoint
import NNData
import NNDistributed
import NNEngine
import NNNumerics
import NNTraining

struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train a run spec in the foreground.",
        discussion: """
            Started by mpirun (or srun), each process is one rank of a data-parallel job: it trains on \
            its contiguous share of every mini-batch with its own workers, the gradients are summed \
            with MPI_Allreduce and every rank applies the same update. Rank 0 prints. For example
              mpirun -np 2 nnd train etc/nnd/runs/mnist-seed.yaml --workers 1
            """)
    @Argument(help: "Run spec (YAML), e.g. etc/nnd/runs/mnist-seed.yaml") var spec: String
    @Option(help: "Directory with the MNIST IDX files (default: found automatically)") var data: String?
    @Option(help: "Override training.epochs") var epochs: Int?
    @Option(help: "Worker threads (default: online CPUs, shared among the MPI ranks on this host)") var workers: Int?
    @Option(name: .customLong("set"), help: "Override a spec field, e.g. --set training.batch_size=128") var overrides:
        [String] = []
    @Option(
        help: "Write the trained parameters and resume state here (a safetensors checkpoint, as the daemon stores them)"
    )
    var save: String?
    @Flag(help: "One JSON object per line") var json = false

    /// Why a checkpoint could not be written at `path` (its directory missing, not a directory,
    /// not writable), or nil.
    static func unwritable(_ path: String) -> String? {
        let directory = URL(fileURLWithPath: path).deletingLastPathComponent().path
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory) else {
            return "\(directory): no such directory"
        }
        guard isDirectory.boolValue else { return "\(directory): not a directory" }
        guard access(directory, W_OK) == 0 else { return "\(directory): \(String(cString: strerror(errno)))" }
        return nil
    }

    func run() throws {
        var ov = overrides
        if let epochs { ov.append("training.epochs=\(epochs)") }
        let spec: RunSpec
        do { spec = try RunSpec.load(path: self.spec, overrides: ov) } catch {
            stderrLine("nnd: \(error)")
            throw ExitCode(2)
        }
        // Under mpirun every rank is a process of its own; rank 0 alone prints.
        let reducer: MPIReducer?
        do { reducer = MPIReducer.launchedByMPI() ? try MPIReducer() : nil } catch {
            stderrLine("nnd: \(error)")
            throw ExitCode(1)
        }
        defer { reducer?.finish() }
        let printing = (reducer?.rank ?? 0) == 0
        let nWorkers = workers ?? MPIReducer.defaultWorkers(localRanks: reducer?.localSize)
        guard nWorkers >= 1 && nWorkers <= 1024 else {
            stderrLine("nnd: --workers \(nWorkers) must be between 1 and 1024")
            throw ExitCode(2)
        }
        // A --save path that cannot be written is refused now, not after the whole run.
        if let save, let problem = Self.unwritable(save) {
            stderrLine("nnd: --save \(save): \(problem)")
            throw ExitCode(2)
        }
        // Refuse a spec too big for this machine before allocating anything.
        var dataSpec = spec
        if let data { dataSpec.data.dir = data }
        let estimate = MemoryEstimate.of(spec: dataSpec, fallbackDataDir: nil, workers: nWorkers)
        if let usable = MemoryLimits.usable(), estimate.bytes > usable {
            stderrLine(
                "nnd: model.layers \(spec.model.layers) needs ≈ \(estimate) of memory; "
                    + "this machine can give \(MemoryEstimate.format(usable)) (MemAvailable, cgroup memory.max)")
            throw ExitCode(1)
        }
        let loaded: DataLoading.Loaded
        do { loaded = try DataLoading.load(spec: spec, dataDirOverride: data) } catch {
            stderrLine("nnd: \(error)")
            throw ExitCode(1)
        }
        let trainer = try Trainer(
            spec: spec, train: loaded.train, test: loaded.test, workers: nWorkers, dataHash: loaded.contentHash,
            dataFingerprint: loaded.fingerprint, reducer: reducer)
        if printing { warnIfOpenBLASIsHeldBack() }
        if !json && printing {
            // Ranks on hosts with different CPU counts run different numbers of workers.
            let workerCounts = workerCountText(trainer.rankWorkerCounts ?? nWorkers...nWorkers)
            print(
                "nnd: \(spec.name): \(spec.model.layers.map(String.init).joined(separator: "-")) \(spec.model.activation.rawValue), \(spec.training.mode.rawValue) batch \(trainer.stepSize), \(spec.training.optimizer.rawValue) lr \(spec.training.learningRate), \(spec.training.epochs) epochs"
            )
            print(
                "nnd: first layer \(trainer.inputPath == .sparse ? "sparse" : "dense") (\(trainer.inputPathReason))"
            )
            print(
                "nnd: \(loaded.train.count) train / \(loaded.test.count) test records, \(reducer.map { "\($0.size) MPI ranks × " } ?? "")\(workerCounts) workers, BLAS kernel \(BLAS.kernelName), params \(trainer.engine.parameterPlacement), batch buffers \(trainer.engine.batchBufferPlacement)"
            )
        }
        // Ctrl-C / SIGTERM: stop between steps, report, exit.
        let flag = ControlFlag()
        let signals = flag.request(on: [(SIGINT, .stop), (SIGTERM, .stop)])
        let outcome = try trainer.run(
            control: flag,
            onEvent: { e in
                guard e.kind == .epoch, printing else { return }
                if json {
                    print(jsonLine(e))
                    fflush(nil)
                } else {
                    print(
                        String(
                            format: "epoch %3d/%d  cost %.6f  lr %.5g  %.2fs  %.0f samples/s  train %.2f%%%@",
                            e.epoch, e.epochs, e.cost ?? .nan, Double(e.learningRate), e.seconds, e.samplesPerSecond,
                            e.trainAccuracy ?? 0,
                            e.testAccuracy.map { String(format: "  test %.2f%%", $0) } ?? ""))
                    fflush(nil)
                }
            })
        _ = signals  // the sources act until training returns
        guard printing else {
            // The other ranks evaluate nothing: their parameters equal rank 0's (checked at the end).
            if outcome != .completed { throw ExitCode(130) }
            return
        }
        if let save {
            do { try CheckpointStore.atomicWrite(trainer.checkpoint().encode(), to: save) } catch {
                stderrLine("nnd: --save \(save): \(error)")
                throw ExitCode(1)
            }
        }
        if outcome != .completed { stderrLine("nnd: interrupted after \(trainer.state.history.count) epochs") }
        if let choice = trainer.weightsChoice, !json { print("nnd: \(choice)") }
        let trainAcc = trainer.evaluate(trainer.train).accuracy
        let testAcc = trainer.evaluate(loaded.test).accuracy
        let secs = trainer.state.history.map(\.seconds)
        let perEpoch = secs.isEmpty ? 0 : secs.reduce(0, +) / Double(secs.count)
        struct Final: Encodable {
            var kind = "result"
            var trainAccuracy: Double
            var testAccuracy: Double
            var secondsPerEpoch: Double
            var epochs: Int
            var workers: Int
            /// MPI ranks the run was split over (1 without mpirun).
            var ranks: Int
            var blasKernel: String
            /// The first layer's input path (dense or sparse) and the inputs' non-zero share.
            var inputPath: String
            var inputDensity: Double?
            var completed: Bool
            /// The epoch whose weights were kept (best validation), when the run had validation records.
            var keptEpoch: Int?
            /// Epoch ends whose mean the run kept (`training.average_from_epoch`), when it averaged.
            var averagedEpochs: Int?
            var validationRecords: Int
            /// Records in the training data (base files and shards, before the hold-out).
            var trainRecords: Int
            var dataFingerprint: String
        }
        let f = Final(
            trainAccuracy: trainAcc, testAccuracy: testAcc, secondsPerEpoch: perEpoch,
            epochs: trainer.state.history.count,
            workers: nWorkers, ranks: reducer?.size ?? 1, blasKernel: BLAS.kernelName,
            inputPath: trainer.inputPath == .sparse ? "sparse" : "dense", inputDensity: trainer.inputDensity,
            completed: outcome == .completed,
            keptEpoch: trainer.keptEpoch, averagedEpochs: trainer.state.averagedEpochs,
            validationRecords: trainer.validation?.count ?? 0,
            trainRecords: loaded.train.count, dataFingerprint: loaded.fingerprint)
        if json {
            print(jsonLine(f))
        } else {
            print(
                String(
                    format: "train accuracy %.2f%%  test accuracy %.2f%%  (%.3f s/epoch over %d epochs)", trainAcc,
                    testAcc, perEpoch, secs.count))
        }
        if outcome != .completed { throw ExitCode(130) }
    }
}
