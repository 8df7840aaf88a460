import Foundation
import Logging
import NNAPI
import NNCheckpoint
import NNData
import NNEngine
import NNTraining

/// One run training on its own thread (training blocks; it must not sit on the Swift
/// concurrency pool or the NIO event loops). Loads data, restores the latest good checkpoint,
/// trains until done or told to pause/stop, then reports back to the `RunManager`.
final class RunExecution: Sendable {
    let record: RunRecord
    let runDirectory: String
    let models: ModelRegistry
    let workers: Int
    let flag = ControlFlag()
    let manager: RunManager
    let hub: EventHub
    let metrics: DaemonMetrics
    let datasets: DatasetCache
    let dataDir: String?
    let logger: Logger

    init(
        record: RunRecord, runDirectory: String, models: ModelRegistry, workers: Int, manager: RunManager,
        hub: EventHub, metrics: DaemonMetrics, datasets: DatasetCache, dataDir: String?, logger: Logger
    ) {
        self.record = record
        self.runDirectory = runDirectory
        self.models = models
        self.workers = workers
        self.manager = manager
        self.hub = hub
        self.metrics = metrics
        self.datasets = datasets
        self.dataDir = dataDir
        self.logger = logger
    }

    func start() {
        // Not `Thread` from here: this may be a control-plane thread with a lowered priority,
        // which the new thread would inherit (see `ThreadPriority`).
        TrainingThreadLauncher.shared.launch(name: "nnd-run-\(record.id)", stackSize: 8 << 20) { [self] in self.main() }
    }

    private func main() {
        let id = record.id
        let spec = record.spec
        let store = CheckpointStore(directory: "\(runDirectory)/checkpoints", keep: spec.checkpoint.keep)
        var history: [EpochRecord] = record.history
        do {
            // A resumed run reads the files it started with: a shard that landed since (tonight's
            // export, during a pause or a restart) waits for the next run instead of changing the
            // data under this one and failing it.
            let recordedFiles = record.dataFiles
            let data = try datasets.load(spec: spec, dataDir: dataDir, onlyShards: recordedFiles.map { Set($0.keys) })
            let (checkpoint, path, skipped) = store.loadLatestValid()
            var notes: [String] = skipped.map { "skipped unreadable checkpoint: \($0)" }
            if let path {
                notes.append(
                    "resuming from \((path as NSString).lastPathComponent) (epoch \(checkpoint!.state.epoch + 1), step \(checkpoint!.state.stepInEpoch))"
                )
            }
            for n in notes { logger.warning("\(n)", metadata: ["run": "\(id)"]) }
            for shard in data.shardsNotRead {
                let note = "\(shard): added after this run started; not read by it (the next run trains on it)"
                logger.notice("\(note)", metadata: ["run": "\(id)"])
                notes.append(note)
            }
            if let recordedHash = record.dataHash, recordedHash != data.contentHash {
                let recorded = recordedFiles ?? [:]
                let changed = data.files.filter { recorded[$0] != data.fileHashes[$0] }
                let gone = recorded.keys.filter { data.fileHashes[$0] == nil }.sorted().map { "\($0) (gone)" }
                let named = changed + gone
                throw TrainingError.data(
                    "data changed since the run started: \((named.isEmpty ? data.files : named).joined(separator: ", ")) (content hash differs from the one recorded at start); refusing to continue, checkpoints left as they are"
                )
            }
            Task {
                await manager.noted(
                    id, notes.joined(separator: "; "), dataHash: data.contentHash, dataFiles: data.fileHashes,
                    trainRecords: data.train.count, dataFingerprint: data.fingerprint)
            }
            var warm: [Float]?
            var warmCheckpoint: Checkpoint?
            if checkpoint == nil, let p = spec.promotion, p.warmStart, let cur = models.current(p.model) {
                warmCheckpoint = try models.load(p.model, cur.version)
                warm = warmCheckpoint!.parameters
                Task {
                    await manager.noted(id, "warm start from model \(p.model) version \(cur.version)", dataHash: nil)
                }
            }
            if let d = spec.distributed, d.ranks > 1 {
                try finishDistributed(
                    d, data: data, store: store, alreadyFinished: checkpoint?.state.finished == true,
                    warmStart: warmCheckpoint, history: &history)
                return
            }
            let trainer = try Trainer(
                spec: spec, train: data.train, test: data.test, workers: workers, dataHash: data.contentHash,
                dataFingerprint: data.fingerprint,
                resume: checkpoint, best: checkpoint == nil ? nil : store.loadBest(), warmStart: warm)
            history = trainer.state.history
            if trainer.state.finished {  // completed before a crash; only the bookkeeping was lost
                let acc = (trainer.evaluate(trainer.train).accuracy, trainer.evaluate(data.test).accuracy)
                Task {
                    await manager.executionEnded(id, result: .success(.completed), history: history, accuracies: acc)
                }
                return
            }
            let outcome = try trainer.run(
                control: flag,
                checkpointSink: { c, best in
                    let w = try store.write(c, isBest: best)
                    self.metrics.checkpointWritten(bytes: w.bytes, seconds: w.seconds)
                    let path = w.path
                    Task { await self.manager.checkpointWritten(id, path: path) }
                },
                onEvent: { e in
                    self.hub.publish(run: id, event: e)
                    if e.kind == .epoch {
                        let h = trainer.state.history
                        Task { await self.manager.epochFinished(id, event: e, history: h) }
                    }
                })
            history = trainer.state.history
            var acc: (Double, Double)?
            var promotion: PromotionOutcome?
            if outcome == .completed {
                if let note = trainer.weightsChoice {
                    logger.notice("\(note)", metadata: ["run": "\(id)"])
                    Task { await self.manager.noted(id, note, dataHash: nil) }
                }
                acc = (trainer.evaluate(trainer.train).accuracy, trainer.evaluate(data.test).accuracy)
                if let p = spec.promotion {
                    promotion = try promote(p, trainer: trainer, data: data, accuracies: acc!)
                }
            }
            let result: Result<TrainingOutcome, Error> = .success(outcome)
            let finalAcc = acc
            let finalPromotion = promotion
            Task {
                await manager.executionEnded(
                    id, result: result, history: history, accuracies: finalAcc, promotion: finalPromotion)
            }
        } catch {
            let h = history
            Task { await manager.executionEnded(id, result: .failure(error), history: h, accuracies: nil) }
        }
    }

    /// A distributed run: the job trains (unless its final checkpoint already exists), then the
    /// daemon evaluates the final checkpoint and applies the promotion gate as for a local run.
    private func finishDistributed(
        _ d: RunSpec.Distributed, data: DataLoading.Loaded, store: CheckpointStore, alreadyFinished: Bool,
        warmStart: Checkpoint?, history: inout [EpochRecord]
    ) throws {
        let id = record.id
        var outcome = TrainingOutcome.completed
        var weightsChoice: String?
        if !alreadyFinished {
            let ended = try trainDistributed(d, warmStart: warmStart, shards: data.shards)
            outcome = ended.outcome
            history = ended.history
            weightsChoice = ended.weightsChoice
        }
        var acc: (Double, Double)?
        var promotion: PromotionOutcome?
        if outcome == .completed {
            let (final, path, _) = store.loadLatestValid()
            guard let final, final.state.finished else {
                throw DistributedRunError(
                    message: "the job ended without writing its final checkpoint (latest: \(path ?? "none"))")
            }
            let trainer = try Trainer(
                spec: record.spec, train: data.train, test: data.test, workers: workers, dataHash: data.contentHash,
                dataFingerprint: data.fingerprint, resume: final)
            history = trainer.state.history
            if let note = weightsChoice {
                logger.notice("\(note)", metadata: ["run": "\(id)"])
                Task { await self.manager.noted(id, note, dataHash: nil) }
            }
            acc = (trainer.evaluate(trainer.train).accuracy, trainer.evaluate(data.test).accuracy)
            if let p = record.spec.promotion {
                promotion = try promote(p, trainer: trainer, data: data, accuracies: acc!)
            }
        }
        let result: Result<TrainingOutcome, Error> = .success(outcome)
        let (h, finalAcc, finalPromotion) = (history, acc, promotion)
        Task {
            await manager.executionEnded(
                id, result: result, history: h, accuracies: finalAcc, promotion: finalPromotion)
        }
    }

    /// The promotion gate: evaluates the current model on the same held-out set and promotes
    /// the new one unless it is worse by more than the margin.
    private func promote(
        _ p: RunSpec.Promotion, trainer: Trainer, data: DataLoading.Loaded, accuracies: (Double, Double)
    ) throws -> PromotionOutcome {
        let test = data.test
        let newAcc = accuracies.1
        var currentAcc: Double?
        let current = models.current(p.model)
        if let cur = current {
            let c = try models.load(p.model, cur.version)
            currentAcc = try Inference(
                checkpoint: c, activation: cur.activation, inputs: test.featureCount, workers: workers
            )
            .evaluate(test, which: .test, run: cur.run).accuracy
        }
        let version = try models.add(
            model: p.model, run: record.id, checkpointBytes: trainer.checkpoint().encode(),
            testAccuracy: newAcc, trainAccuracy: accuracies.0, layers: record.spec.model.layers,
            activation: record.spec.model.activation, trainRecords: data.train.count,
            dataFingerprint: data.fingerprint)
        let promote = currentAcc.map { newAcc >= $0 - p.margin } ?? true
        if promote { try models.promote(model: p.model, version: version.version) }
        let message: String
        if let currentAcc, let current {
            message =
                promote
                ? String(
                    format: "promoted %@ version %@: test %.2f%% vs current %.2f%% (%@), margin %.2f", p.model,
                    version.version, newAcc, currentAcc, current.version, p.margin)
                : String(
                    format:
                        "kept current %@ version %@: new test %.2f%% is below current %.2f%% by more than the margin %.2f; new version %@ stored, not promoted",
                    p.model, current.version, newAcc, currentAcc, p.margin, version.version)
        } else {
            message = String(
                format: "promoted %@ version %@ (first model): test %.2f%%", p.model, version.version, newAcc)
        }
        return PromotionOutcome(
            model: p.model, version: version.version, promoted: promote, newTestAccuracy: newAcc,
            currentVersion: current?.version, currentTestAccuracy: currentAcc, margin: p.margin, message: message)
    }
}
