import Foundation
import NNAPI
import NNCheckpoint
import NNTraining
import Synchronization

/// How the daemon starts the processes of a distributed run (`distributed:` in the spec), and
/// the checks that make a missing launcher or a bad hostfile an error when the run is
/// created rather than when it is due to start.
enum DistributedLaunch {
    /// Problems with a spec's `distributed` section on this machine, as the API's 422.
    static func check(_ d: RunSpec.Distributed) throws(APIError) {
        guard d.ranks > 1 else { return }
        guard findOnPath(d.launcher.rawValue) != nil else {
            throw APIError(
                422, "invalid_spec",
                "distributed.launcher: '\(d.launcher.rawValue)' is not on the daemon's PATH (\(searchPath.joined(separator: ":"))); "
                    + (d.launcher == .mpirun
                        ? "install Open MPI (apt install openmpi-bin libopenmpi-dev)" : "install Slurm's srun"),
                field: "distributed.launcher")
        }
        let cpus = ProcessInfo.processInfo.activeProcessorCount
        if let hostfile = d.hostfile {
            let slots = try hostfileSlots(hostfile)
            if slots < d.ranks && !oversubscribes(d) {
                throw APIError(
                    422, "invalid_spec",
                    "distributed.ranks: \(d.ranks) ranks but \(hostfile) gives \(slots) slots; add hosts or slots, "
                        + "or --oversubscribe to distributed.launcher_args",
                    field: "distributed.ranks")
            }
        } else if d.launcher == .mpirun && d.ranks > cpus && !oversubscribes(d) {
            throw APIError(
                422, "invalid_spec",
                "distributed.ranks: \(d.ranks) ranks on this machine's \(cpus) CPUs; give a hostfile, fewer ranks, "
                    + "or --oversubscribe in distributed.launcher_args",
                field: "distributed.ranks")
        }
    }

    /// The slots an Open MPI hostfile offers (`host [slots=N] [max_slots=N]` per line, `#` comments).
    static func hostfileSlots(_ path: String) throws(APIError) -> Int {
        guard let data = FileManager.default.contents(atPath: path), let text = String(data: data, encoding: .utf8)
        else {
            throw APIError(
                422, "invalid_spec", "distributed.hostfile: cannot read '\(path)' (it must be readable by the daemon)",
                field: "distributed.hostfile")
        }
        var slots = 0
        var hosts = 0
        for (number, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
            let words = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard let host = words.first else { continue }
            guard host.allSatisfy({ $0.isLetter || $0.isNumber || "-._:".contains($0) }) else {
                throw APIError(
                    422, "invalid_spec",
                    "distributed.hostfile: \(path) line \(number + 1): '\(host)' is not a host name",
                    field: "distributed.hostfile")
            }
            var lineSlots = 1
            for option in words.dropFirst() {
                let kv = option.split(separator: "=", maxSplits: 1)
                guard kv.count == 2, ["slots", "max_slots", "max-slots"].contains(kv[0]), let n = Int(kv[1]), n >= 1
                else {
                    throw APIError(
                        422, "invalid_spec",
                        "distributed.hostfile: \(path) line \(number + 1): '\(option)' is not slots=N or max_slots=N (N ≥ 1)",
                        field: "distributed.hostfile")
                }
                if kv[0] == "slots" { lineSlots = n }
            }
            hosts += 1
            slots += lineSlots
        }
        guard hosts > 0 else {
            throw APIError(
                422, "invalid_spec", "distributed.hostfile: \(path) names no hosts", field: "distributed.hostfile")
        }
        return slots
    }

    static func oversubscribes(_ d: RunSpec.Distributed) -> Bool {
        d.launcherArgs.contains { $0 == "--oversubscribe" || $0 == "-oversubscribe" }
    }

    static var searchPath: [String] {
        (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin").split(separator: ":").map(
            String.init)
    }

    static func findOnPath(_ program: String) -> String? {
        searchPath.map { "\($0)/\(program)" }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    /// The command line: `nnd exec-tied -- mpirun -np N [--hostfile H] --bind-to none [args] nnd rank …`.
    /// exec-tied makes the kernel send the launcher SIGTERM when the daemon's thread that
    /// started it ends — also when the daemon is killed with SIGKILL — and mpirun then ends
    /// every rank (MPIReducer.execTiedToParent).
    static func command(_ d: RunSpec.Distributed, runDirectory: String, dataDir: String?) -> [String] {
        let nnd =
            (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        var launcher: [String]
        switch d.launcher {
        case .mpirun:
            launcher = [findOnPath("mpirun") ?? "mpirun", "-np", "\(d.ranks)"]
            if let h = d.hostfile { launcher += ["--hostfile", h] }
            // mpirun binds each of up to 2 ranks to one core by default, which would leave a rank
            // alone on its host one core for all its workers; nnd places its own threads.
            let bindsItself = d.launcherArgs.contains {
                $0.hasPrefix("--bind-to") || $0.hasPrefix("-bind-to") || $0.contains("binding_policy")
            }
            if !bindsItself { launcher += ["--bind-to", "none"] }
        case .srun:
            launcher = [findOnPath("srun") ?? "srun", "--ntasks=\(d.ranks)", "--kill-on-bad-exit=1"]
        }
        return [nnd, "exec-tied", "--"] + launcher + d.launcherArgs
            + [nnd, "rank", "--run-dir", runDirectory] + (dataDir.map { ["--data-dir", $0] } ?? [])
    }

    /// Why the job ended badly, from the launcher's log: a rank's own error line (`nnd: rank …`)
    /// first, then Open MPI's account of a rank that died, then the log's last lines.
    static func failure(log: String, status: Int32, logPath: String) -> String {
        let lines = log.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
        if let own = lines.first(where: { $0.hasPrefix("nnd: rank ") }) {
            return String(own.dropFirst("nnd: ".count))
        }
        // "mpirun noticed that process rank 1 with PID 4242 on node host-a exited on signal 9 (Killed)."
        // (Open MPI sometimes reports PID 0, and may leave out the signal's name.)
        if let noticed = lines.first(where: { $0.contains("noticed that process rank") }),
            let match = noticed.firstMatch(
                of: #/process rank (\d+) with PID (\d+) on node (\S+) exited on signal (\d+)(?: \(([^)]*)\))?/#)
        {
            let (_, rank, pid, host, signal, name) = match.output
            return "rank \(rank)\(pid == "0" ? "" : " (pid \(pid))") on host \(host) was killed by signal \(signal)"
                + (name.map { " (\($0))" } ?? "") + "; the job ended"
        }
        // Slurm: "srun: error: host-a: task 1: Killed" or "…: task 1: Exited with exit code 3"
        // (the first such line is the task that failed first; later ones are the job ending).
        if let match = lines.lazy.compactMap({ $0.firstMatch(of: #/^srun: error: (\S+): tasks? (\d+)[^:]*: (.+)$/#) })
            .first
        {
            let (_, host, task, what) = match.output
            return
                "rank \(task) on host \(host): \(what.prefix(1).lowercased() + what.dropFirst()) (srun); the job ended"
        }
        let tail = lines.filter { !$0.isEmpty && !$0.allSatisfy { $0 == "-" } }.suffix(3).joined(separator: " | ")
        return "the launcher exited with status \(status)" + (tail.isEmpty ? "" : ": \(tail)") + " (log: \(logPath))"
    }
}

/// A distributed run that ended badly; the message names the rank, host and signal when known.
struct DistributedRunError: Error, CustomStringConvertible {
    var message: String
    var description: String { message }
}

extension RunExecution {
    /// Trains a run whose spec has `distributed.ranks` > 1: writes the spec (and warm-start
    /// weights) into the run directory, launches the job, turns rank 0's report lines into the
    /// run's events, metrics and checkpoint list, passes pause and stop on as SIGUSR1 / SIGUSR2
    /// (mpirun forwards them to every rank), and waits for it. Returns how training ended and
    /// rank 0's last history and weights choice. `shards`: the training shards the daemon read,
    /// which the ranks read too (not one that landed in between).
    func trainDistributed(
        _ d: RunSpec.Distributed, warmStart: Checkpoint?, shards: [String]
    ) throws -> (outcome: TrainingOutcome, history: [EpochRecord], weightsChoice: String?) {
        let id = record.id
        let fm = FileManager.default
        try fm.createDirectory(atPath: "\(runDirectory)/distributed", withIntermediateDirectories: true)
        try CheckpointStore.atomicWrite(
            [UInt8](try APIJSON.prettyEncoder.encode(record.spec)),
            to: DistributedFiles.spec(runDirectory: runDirectory))
        try CheckpointStore.atomicWrite(
            [UInt8](try APIJSON.prettyEncoder.encode(shards)), to: DistributedFiles.shards(runDirectory: runDirectory))
        let warmPath = DistributedFiles.warmStart(runDirectory: runDirectory)
        if let warmStart {
            try CheckpointStore.atomicWrite(warmStart.encode(), to: warmPath)
        } else if fm.fileExists(atPath: warmPath) {
            try fm.removeItem(atPath: warmPath)
        }
        let logPath = DistributedFiles.launcherLog(runDirectory: runDirectory)
        guard fm.createFile(atPath: logPath, contents: nil) else {
            throw DistributedRunError(message: "cannot create the launcher's log \(logPath)")
        }
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
        defer { try? log.close() }

        let command = DistributedLaunch.command(d, runDirectory: runDirectory, dataDir: dataDir)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: command[0])
        process.arguments = Array(command.dropFirst())
        var env = ProcessInfo.processInfo.environment
        if geteuid() == 0 {  // Open MPI refuses root unless told twice
            env["OMPI_ALLOW_RUN_AS_ROOT"] = "1"
            env["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1"
        }
        process.environment = env
        let out = Pipe()
        process.standardOutput = out
        process.standardError = log
        process.standardInput = FileHandle.nullDevice
        logger.info(
            "launching distributed run", metadata: ["run": "\(id)", "command": "\(command.joined(separator: " "))"])
        // From this thread, which waits for the job: the parent-death signal follows it.
        try process.run()
        let pid = process.processIdentifier

        // Pause and stop requests become signals to the launcher, which forwards them.
        let watching = ControlWatch()
        Thread.detachNewThread { [flag] in
            var sent = ControlDecision.proceed
            while !watching.ended {
                let want = flag.decision()
                if want != sent && want != .proceed {
                    kill(pid, want == .pause ? SIGUSR1 : SIGUSR2)
                    sent = want
                }
                usleep(50_000)
            }
        }
        defer { watching.end() }

        var outcome: TrainingOutcome?
        var history = record.history
        var weightsChoice: String?
        var pending = Data()
        let reader = out.fileHandleForReading
        while true {
            let chunk = reader.availableData
            if chunk.isEmpty { break }
            pending.append(chunk)
            while let nl = pending.firstIndex(of: 0x0A) {
                let line = pending[pending.startIndex..<nl]
                pending = Data(pending[(nl + 1)...])
                guard let r = try? APIJSON.decoder.decode(RankReport.self, from: line) else {
                    log.write(Data("rank 0 (not a report): ".utf8) + line + Data("\n".utf8))
                    continue
                }
                switch r.kind {
                case .event:
                    guard let e = r.event else { continue }
                    hub.publish(run: id, event: e)
                    if e.kind == .epoch, let h = r.history {
                        history = h
                        Task { await self.manager.epochFinished(id, event: e, history: h) }
                    }
                case .checkpoint:
                    guard let path = r.checkpointPath else { continue }
                    metrics.checkpointWritten(bytes: r.checkpointBytes ?? 0, seconds: r.checkpointSeconds ?? 0)
                    Task { await self.manager.checkpointWritten(id, path: path) }
                case .outcome:
                    outcome =
                        switch r.outcome {
                        case "completed": .completed
                        case "paused": .paused
                        default: .stopped
                        }
                    if let h = r.history { history = h }
                    weightsChoice = r.weightsChoice
                }
            }
        }
        process.waitUntilExit()
        let status = process.terminationStatus
        if let outcome, status == 0 { return (outcome, history, weightsChoice) }
        try? log.synchronize()
        let text = (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
        throw DistributedRunError(
            message: DistributedLaunch.failure(log: String(text.suffix(65536)), status: status, logPath: logPath)
                + "; nnctl resume \(id) relaunches it from the last checkpoint")
    }
}

/// Tells the signal-forwarding thread that the job has ended.
final class ControlWatch: Sendable {
    private let flag = Atomic<Bool>(false)
    var ended: Bool { flag.load(ordering: .acquiring) }
    func end() { flag.store(true, ordering: .releasing) }
}
