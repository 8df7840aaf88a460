import ArgumentParser
import Foundation
import NNAPI
import NNCheckpoint
import NNData
import NNDistributed
import NNEngine
import NNTraining

/// One process of a distributed run: `nnd serve` starts `ranks` of these through mpirun or
/// srun (`distributed:` in the run spec). Every rank reads the run's spec and latest checkpoint
/// from the run directory, trains its share of every mini-batch and takes part in the
/// gradient's allreduce; rank 0 writes the checkpoints and reports to the daemon on its
/// standard output (`RankReport` lines).
struct Rank: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "One rank of a distributed run that nnd serve launched (not started by hand).",
        discussion: """
            The daemon runs, for a spec with distributed.ranks: N,
              mpirun -np N [--hostfile H] --bind-to none [launcher_args] nnd rank --run-dir <state>/runs/<id>
            SIGUSR1 pauses and SIGUSR2 or SIGTERM stops every rank at the same step (mpirun forwards \
            them); rank 0 writes a checkpoint first.
            """,
        shouldDisplay: false)

    @Option(help: "The run's directory (the same path on every host)") var runDir: String
    @Option(help: "Directory with the MNIST IDX files") var dataDir: String?
    @Option(help: "Worker threads per rank (default: online CPUs shared among this host's ranks)") var workers: Int?

    /// How long a rank given SIGTERM may take to reach the ranks' next agreed step and stop.
    static let termGraceSeconds = 10.0

    func run() throws {
        // A rank ends with its launcher: if mpirun dies (the daemon was killed), stop here too.
        MPIReducer.stopWithLauncher()
        let reducer: MPIReducer
        do { reducer = try MPIReducer() } catch {
            stderrLine("nnd: rank: \(error)")
            throw ExitCode(1)
        }
        let reporting = reducer.rank == 0
        func report(_ r: RankReport) {
            guard reporting else { return }
            print(r.line)
            fflush(nil)
        }
        do {
            let specPath = DistributedFiles.spec(runDirectory: runDir)
            guard let specData = FileManager.default.contents(atPath: specPath) else {
                throw TrainingError.data(
                    "\(specPath): cannot read the run's spec; every host must see the run directory, "
                        + "on storage they all share, at the same path")
            }
            let spec = try APIJSON.decoder.decode(RunSpec.self, from: specData)
            // The shards the daemon read; absent (a job launched by hand): every shard.
            var onlyShards: Set<String>?
            if let bytes = FileManager.default.contents(atPath: DistributedFiles.shards(runDirectory: runDir)) {
                onlyShards = Set(try APIJSON.decoder.decode([String].self, from: bytes))
            }
            let data = try DataLoading.load(spec: spec, dataDirOverride: dataDir, onlyShards: onlyShards)
            let store = CheckpointStore(directory: "\(runDir)/checkpoints", keep: spec.checkpoint.keep)
            let (checkpoint, _, _) = store.loadLatestValid()
            var warm: [Float]?
            let warmPath = DistributedFiles.warmStart(runDirectory: runDir)
            if checkpoint == nil, let bytes = FileManager.default.contents(atPath: warmPath) {
                warm = try Checkpoint.decode([UInt8](bytes), path: warmPath).parameters
            }
            let nWorkers = workers ?? MPIReducer.defaultWorkers(localRanks: reducer.localSize)
            let trainer = try Trainer(
                spec: spec, train: data.train, test: data.test, workers: nWorkers, dataHash: data.contentHash,
                dataFingerprint: data.fingerprint, resume: checkpoint,
                best: checkpoint == nil ? nil : store.loadBest(), warmStart: warm, reducer: reducer)
            var outcome = TrainingOutcome.completed
            if !trainer.state.finished {
                let flag = ControlFlag()
                let signals = flag.request(on: [(SIGUSR1, .pause), (SIGUSR2, .stop), (SIGINT, .stop)])
                // SIGTERM stops at the ranks' next agreed step, as SIGUSR2 does; but it is also
                // what a launcher sends the ranks left when one has died (Slurm's step daemon does,
                // then SIGKILL after its KillWait, 30 s by default), and those wait for the dead
                // one in a collective call that never returns: so the rank ends itself if it has
                // not stopped within `Self.termGraceSeconds`. A checkpoint in the middle of its
                // write is lost, never half-written (a temporary file renamed into place).
                signal(SIGTERM, SIG_IGN)
                let term = DispatchSource.makeSignalSource(signal: SIGTERM, queue: .global())
                let rankName = "rank \(reducer.rank) on \(reducer.host)"
                term.setEventHandler {
                    flag.request(.stop)
                    DispatchQueue.global().asyncAfter(deadline: .now() + Self.termGraceSeconds) {
                        // Not "nnd: rank …", the form of a rank's own failure, which the daemon
                        // names as the job's reason: the reason is whatever ended the other rank.
                        stderrLine(
                            "nnd: not stopped \(Int(Self.termGraceSeconds)) s after SIGTERM (another rank gone?); exiting (\(rankName))"
                        )
                        _exit(128 + SIGTERM)
                    }
                }
                term.resume()
                defer { for s in signals + [term] { s.cancel() } }
                outcome = try trainer.run(
                    control: flag,
                    checkpointSink: reporting
                        ? { (c: Checkpoint, best: Bool) throws in
                            let w = try store.write(c, isBest: best)
                            var r = RankReport(kind: .checkpoint)
                            r.checkpointPath = w.path
                            r.checkpointBytes = w.bytes
                            r.checkpointSeconds = w.seconds
                            report(r)
                        } : nil,
                    onEvent: { e in
                        var r = RankReport(kind: .event)
                        r.event = e
                        if e.kind == .epoch { r.history = trainer.state.history }
                        report(r)
                    })
            }
            var r = RankReport(kind: .outcome)
            r.outcome = outcome == .completed ? "completed" : outcome == .paused ? "paused" : "stopped"
            r.weightsChoice = trainer.weightsChoice
            r.history = trainer.state.history
            report(r)
            reducer.finish()
        } catch {
            // The same message from every rank that failed; the daemon names the first.
            stderrLine("nnd: rank \(reducer.rank) on \(reducer.host): \(error)")
            // The other ranks wait in a collective call that will never complete: end the job.
            if reducer.size > 1 { reducer.abort(code: 1) }
            throw ExitCode(1)
        }
    }
}
