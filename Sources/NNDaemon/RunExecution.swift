import Foundation
import Logging
import NNCheckpoint
import NNTraining

/// One run training on its own thread (training blocks; it must not sit on the Swift
/// concurrency pool or the NIO event loops). Loads data, restores the latest good checkpoint,
/// trains until done or told to pause/stop, then reports back to the `RunManager`.
final class RunExecution: Sendable {
    let record: RunRecord
    let runDirectory: String
    let workers: Int
    let flag = ControlFlag()
    let manager: RunManager
    let hub: EventHub
    let datasets: DatasetCache
    let dataDir: String?
    let logger: Logger

    init(record: RunRecord, runDirectory: String, workers: Int, manager: RunManager, hub: EventHub, datasets: DatasetCache, dataDir: String?, logger: Logger) {
        self.record = record; self.runDirectory = runDirectory; self.workers = workers; self.manager = manager
        self.hub = hub; self.datasets = datasets; self.dataDir = dataDir; self.logger = logger
    }

    func start() {
        let thread = Thread { [self] in self.main() }
        thread.name = "nnd-run-\(record.id)"
        thread.stackSize = 8 << 20
        thread.start()
    }

    private func main() {
        let id = record.id, spec = record.spec
        let store = CheckpointStore(directory: "\(runDirectory)/checkpoints", keep: spec.checkpoint.keep)
        var history: [EpochRecord] = record.history
        do {
            let data = try datasets.load(spec: spec, dataDir: dataDir)
            let (checkpoint, path, skipped) = store.loadLatestValid()
            var notes: [String] = skipped.map { "skipped unreadable checkpoint: \($0)" }
            if let path { notes.append("resuming from \((path as NSString).lastPathComponent) (epoch \(checkpoint!.state.epoch + 1), step \(checkpoint!.state.stepInEpoch))") }
            for n in notes { logger.warning("\(n)", metadata: ["run": "\(id)"]) }
            if let recorded = record.dataHash, recorded != data.contentHash {
                throw TrainingError.data("the data files changed since the run started: \(data.files.joined(separator: ", ")) (content hash \(data.contentHash.prefix(12))…, recorded \(recorded.prefix(12))…); refusing to continue")
            }
            Task { await manager.noted(id, notes.joined(separator: "; "), dataHash: data.contentHash) }
            let trainer = try Trainer(spec: spec, train: data.train, test: data.test, workers: workers, dataHash: data.contentHash, resume: checkpoint)
            history = trainer.state.history
            if trainer.state.finished {
                let acc = (trainer.evaluate(data.train).accuracy, trainer.evaluate(data.test).accuracy)
                Task { await manager.executionEnded(id, result: .success(.completed), history: history, accuracies: acc) }
                return
            }
            let outcome = try trainer.run(control: flag, checkpointSink: { c, best in
                let w = try store.write(c, isBest: best)
                let path = w.path
                Task { await self.manager.checkpointWritten(id, path: path) }
            }, onEvent: { e in
                self.hub.publish(run: id, event: e)
                if e.kind == .epoch {
                    let h = trainer.state.history
                    Task { await self.manager.epochFinished(id, event: e, history: h) }
                }
            })
            history = trainer.state.history
            var acc: (Double, Double)?
            if outcome == .completed { acc = (trainer.evaluate(data.train).accuracy, trainer.evaluate(data.test).accuracy) }
            let result: Result<TrainingOutcome, Error> = .success(outcome)
            let finalAcc = acc
            Task { await manager.executionEnded(id, result: result, history: history, accuracies: finalAcc) }
        } catch {
            let h = history
            Task { await manager.executionEnded(id, result: .failure(error), history: h, accuracies: nil) }
        }
    }
}
