import Foundation
import NNCheckpoint
import NNDistributed
import NNEngine
import XCTest

/// Skips where Open MPI is not installed — but not in CI: .ci/run installs it, and a missing
/// mpirun must fail there.
func requireMPI() throws {
    let (code, _, _) = try runProgram("/usr/bin/env", ["sh", "-c", "command -v mpirun"])
    if code != 0 && ProcessInfo.processInfo.environment["CI"] == nil {
        throw XCTSkip("mpirun not installed (apt install openmpi-bin libopenmpi-dev)")
    }
}

/// The `nnd rank` processes of a run, by MPI rank.
func rankProcesses(ofRun id: String, in daemon: DaemonProcess) -> [Int: pid_t] {
    var found: [Int: pid_t] = [:]
    let runDir = "\(daemon.stateDir)/runs/\(id)"
    for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
        guard let pid = pid_t(entry),
            let cmd = FileManager.default.contents(atPath: "/proc/\(entry)/cmdline"),
            String(decoding: cmd, as: UTF8.self).split(separator: "\0").contains(where: { $0 == runDir }),
            String(decoding: cmd, as: UTF8.self).contains("\0rank\0"),
            let env = FileManager.default.contents(atPath: "/proc/\(entry)/environ")
        else { continue }
        // mpirun's ranks have OMPI_COMM_WORLD_RANK; srun's, PMIX_RANK.
        for v in String(decoding: env, as: UTF8.self).split(separator: "\0") {
            for key in ["OMPI_COMM_WORLD_RANK=", "PMIX_RANK="] where v.hasPrefix(key) {
                found[Int(v.dropFirst(key.count))!] = pid
            }
        }
    }
    return found
}

/// Waits until the run is in its second epoch with a checkpoint written: mid-run.
func waitUntilMidRun(_ id: String, _ daemon: DaemonProcess) throws {
    let deadline = Date().addingTimeInterval(60)
    while Date() < deadline {
        let (_, r) = try daemon.get("/v1/runs/\(id)")
        let epoch = (r["progress"] as? [String: Any])?["epoch"] as? Int ?? 0
        if epoch >= 2 && (r["checkpoints_written"] as? Int ?? 0) >= 1 { return }
        if r["state"] as? String != "running" && r["state"] as? String != "queued" {
            return XCTFail("run \(id) is \(r["state"] ?? "?") before it could be interrupted")
        }
        usleep(20_000)
    }
    XCTFail("run \(id) did not reach its second epoch")
}

/// `nnd train` as the ranks of an Open MPI job on loopback (`mpirun -np 2`): the gradient
/// summed across processes gives the network a single process with as many workers trains.
final class DistributedTests: XCTestCase {
    /// mpirun, as root too (CI runs as root); ranks may share this machine's cores.
    static func mpirun(_ ranks: Int, _ args: [String]) throws -> (Int32, String, String) {
        var launcher = ["-np", "\(ranks)", "--oversubscribe"]
        if getuid() == 0 { launcher.insert("--allow-run-as-root", at: 0) }
        return try runProgram("/usr/bin/env", ["mpirun"] + launcher + ["\(binDir)/nnd"] + args, timeout: 120)
    }

    override func setUpWithError() throws { try requireMPI() }

    /// A rank's workers when none are given: its host's CPUs shared among the host's ranks when
    /// it may run on every CPU its launcher may (the daemon's `--bind-to none`), its own CPUs
    /// when the launcher bound it to fewer (mpirun's default: one core each for up to 2 ranks).
    func testDefaultWorkersFollowTheRanksBinding() {
        let twoRanksHere = ["OMPI_COMM_WORLD_LOCAL_SIZE": "2"]
        let host = Array(0..<16)
        XCTAssertEqual(MPIReducer.defaultWorkers(environment: twoRanksHere, ownCPUs: host, launcherCPUs: host), 8)
        XCTAssertEqual(MPIReducer.defaultWorkers(environment: [:], ownCPUs: host, launcherCPUs: host), 16)
        XCTAssertEqual(MPIReducer.defaultWorkers(environment: twoRanksHere, ownCPUs: [3], launcherCPUs: host), 1)
        XCTAssertEqual(
            MPIReducer.defaultWorkers(environment: twoRanksHere, ownCPUs: Array(0..<8), launcherCPUs: host), 8)
        XCTAssertEqual(MPIReducer.defaultWorkers(environment: twoRanksHere, ownCPUs: host, launcherCPUs: nil), 8)
        // Slurm's srun does not set OMPI_COMM_WORLD_LOCAL_SIZE: MPI's count of the ranks on the host.
        XCTAssertEqual(MPIReducer.defaultWorkers(environment: [:], ownCPUs: host, launcherCPUs: host, localRanks: 4), 4)
        XCTAssertEqual(
            MPIReducer.defaultWorkers(environment: twoRanksHere, ownCPUs: host, launcherCPUs: host, localRanks: 4), 8)
    }

    /// Each test's checkpoints (a few MB) go with it; they were left in the temporary directory.
    override func tearDown() { try? FileManager.default.removeItem(atPath: dir) }

    let dir = NSTemporaryDirectory() + "nnd-mpi-\(UUID().uuidString.prefix(8))"

    func trainArgs(_ save: String, workers: Int, extra: [String] = []) -> [String] {
        [
            "train", "\(repoRoot)/etc/nnd/runs/mnist-seed.yaml", "--data", sharedMNIST, "--epochs", "1",
            "--workers", "\(workers)", "--save", "\(dir)/\(save)",
            "--set", "data.train_limit=3000", "--set", "data.test_limit=1000",
        ] + extra
    }

    func parameters(_ name: String) throws -> [Float] {
        let path = "\(dir)/\(name)"
        return try Checkpoint.decode([UInt8](try Data(contentsOf: URL(fileURLWithPath: path))), path: path).parameters
    }

    func resultLine(_ out: String) throws -> [String: Any] {
        let last = try XCTUnwrap(out.split(separator: "\n").last, "no output")
        return try XCTUnwrap(JSONSerialization.jsonObject(with: Data(last.utf8)) as? [String: Any], String(last))
    }

    /// The issue's exactness test: 2 ranks × 1 worker against 1 process × 2 workers on the same
    /// global batch — parameters to 1e-5 after an epoch, for the seed's SGD, momentum in
    /// stochastic mode (a step of one record: one rank has none) and Adam in batch mode (steps
    /// larger than the buffers, in chunks); on MNIST's default sparse first layer (its gradient
    /// summed from the workers' transposed slices) and on the dense one.
    func testTwoRanksTrainTheNetworkOneProcessWithTwoWorkersTrains() throws {
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let dense = ["--set", "model.input_path=dense"]
        let stochastic = [
            "--set", "training.mode=stochastic", "--set", "training.optimizer=momentum",
            "--set", "training.learning_rate=0.01", "--set", "data.train_limit=600",
        ]
        let batch = [
            "--set", "training.mode=batch", "--set", "training.optimizer=adam", "--set", "training.learning_rate=0.001",
        ]
        let recipes: [(String, [String])] = [
            ("seed-sgd", []), ("seed-sgd-dense", dense),
            ("stochastic-momentum", stochastic), ("stochastic-momentum-dense", stochastic + dense),
            ("batch-adam", batch), ("batch-adam-dense", batch + dense),
        ]
        for (name, recipe) in recipes {
            let extra = ["--json"] + recipe
            let (c1, out1, err1) = try runBuilt("nnd", trainArgs("\(name)-1x2", workers: 2, extra: extra))
            XCTAssertEqual(c1, 0, err1)
            let (c2, out2, err2) = try Self.mpirun(2, trainArgs("\(name)-2x1", workers: 1, extra: extra))
            XCTAssertEqual(c2, 0, "\(name): \(err2)")
            let one = try resultLine(out1)
            let two = try resultLine(out2)
            XCTAssertEqual(two["ranks"] as? Int, 2, "\(name): \(out2)")
            XCTAssertEqual(one["ranks"] as? Int, 1)
            let path = name.hasSuffix("-dense") ? "dense" : "sparse"
            XCTAssertEqual(two["input_path"] as? String, path, "\(name): \(out2)")
            XCTAssertEqual(one["input_path"] as? String, path, "\(name): \(out1)")
            XCTAssertEqual(
                out2.split(separator: "\n").filter { $0.contains("\"kind\":\"result\"") }.count, 1,
                "\(name): rank 0 alone reports: \(out2)")
            let a = try parameters("\(name)-1x2")
            let b = try parameters("\(name)-2x1")
            XCTAssertEqual(a.count, b.count)
            let maxDiff = zip(a, b).map { abs($0 - $1) }.max() ?? .infinity
            XCTAssertLessThanOrEqual(maxDiff, 1e-5, "\(name): parameters differ by \(maxDiff)")
            print(
                "\(name): \(a.count) parameters, max |difference| \(maxDiff), \(zip(a, b).filter { $0 != $1 }.count) differ"
            )
            let accOne = try XCTUnwrap(one["test_accuracy"] as? Double)
            let accTwo = try XCTUnwrap(two["test_accuracy"] as? Double)
            XCTAssertEqual(accOne, accTwo, accuracy: 0.1, "\(name)")
        }
    }

    /// Ranks that run different worker counts (hosts with different CPU counts, by default) each
    /// split their share among their own workers, and their gradients match in the allreduce
    /// (the sparse first layer's is one Wᵀ buffer whatever the split): the MNIST run trains
    /// sparse and gets 1 process × 2 workers' parameters; `auto` takes the sparse path as one
    /// process would. `nnd bench` runs such a job too (it ended in MPI_ERR_TRUNCATE before the
    /// twentieth session, when the first layer's gradient was one buffer per slice).
    func testRanksWithDifferentWorkerCountsTrainAsOneProcess() throws {
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        var launcher = ["-np", "1", "--oversubscribe"]
        if getuid() == 0 { launcher.insert("--allow-run-as-root", at: 0) }
        func uneven(_ rank0: [String], _ rank1: [String]) throws -> (Int32, String, String) {
            try runProgram(
                "/usr/bin/env",
                ["mpirun"] + launcher + ["\(binDir)/nnd"] + rank0 + [":", "-np", "1", "\(binDir)/nnd"] + rank1,
                timeout: 120)
        }
        let sparse = ["--set", "model.input_path=sparse"]
        let (code, out, err) = try uneven(
            trainArgs("uneven", workers: 2, extra: sparse), trainArgs("uneven", workers: 1, extra: sparse))
        XCTAssertEqual(code, 0, err)
        XCTAssertTrue(out.contains("nnd: first layer sparse (model.input_path: sparse"), out)
        XCTAssertTrue(out.contains("2 MPI ranks × 1–2 workers"), out)
        XCTAssertTrue(out.contains("train accuracy"), out)
        let (c1, _, err1) = try runBuilt("nnd", trainArgs("one", workers: 2, extra: sparse))
        XCTAssertEqual(c1, 0, err1)
        let a = try parameters("one")
        let b = try parameters("uneven")
        let maxDiff = zip(a, b).map { abs($0 - $1) }.max() ?? .infinity
        XCTAssertLessThanOrEqual(maxDiff, 1e-5, "parameters differ by \(maxDiff)")
        // auto: MNIST is sparse enough on any worker counts; nothing to time.
        let (autoCode, autoOut, autoErr) = try uneven(
            trainArgs("uneven-auto", workers: 2), trainArgs("uneven-auto", workers: 1))
        XCTAssertEqual(autoCode, 0, autoErr)
        XCTAssertTrue(autoOut.contains("nnd: first layer sparse (auto: inputs "), autoOut)
        XCTAssertTrue(autoOut.contains("non-zero (sparse at or below "), autoOut)
        let quick = ["bench", "--rounds", "1", "--seconds", "0.05"]
        let (benchCode, bench, benchErr) = try uneven(quick + ["--workers", "2"], quick + ["--workers", "1"])
        XCTAssertEqual(benchCode, 0, benchErr)
        XCTAssertTrue(bench.contains("2 ranks × 1–2 workers, global batch 64"), bench)
        XCTAssertTrue(bench.contains("sparse / dense: "), bench)
    }

    /// `nnd bench` under mpirun measures the distributed step with the dense and the sparse
    /// first layer and says where each step's time goes, in text and in `--json`.
    func testBenchUnderMPIReportsBothFirstLayers() throws {
        let quick = ["bench", "--workers", "1", "--rounds", "1", "--seconds", "0.05"]
        let (code, text, err) = try Self.mpirun(2, quick)
        XCTAssertEqual(code, 0, err)
        for line in [
            "distributed step, best of 1 rounds: 2 ranks × 1 workers, global batch 64", "dense first layer: ",
            "sparse first layer, inputs 19% non-zero: ", "sparse / dense: ", "allreduce of 730880 bytes alone: ",
        ] {
            XCTAssertTrue(text.contains(line), "no \"\(line)\" in: \(text)")
        }
        XCTAssertEqual(text.components(separatedBy: "  per step: compute ").count, 3, "dense and sparse: \(text)")
        let (jsonCode, json, jsonErr) = try Self.mpirun(2, quick + ["--density", "0.3", "--json"])
        XCTAssertEqual(jsonCode, 0, jsonErr)
        let r = try resultLine(json)
        XCTAssertEqual(r["ranks"] as? Int, 2)
        XCTAssertEqual(r["sparse_density"] as? Double, 0.3)
        XCTAssertGreaterThan(r["sparse_speedup_over_dense"] as? Double ?? 0, 0, json)
        for path in ["dense", "sparse"] {
            let figures = try XCTUnwrap(r[path] as? [String: Any], json)
            for key in ["step_samples_per_second", "compute_microseconds", "allreduce_microseconds"] {
                XCTAssertGreaterThan(figures[key] as? Double ?? 0, 0, "\(path).\(key) in \(json)")
            }
        }
        let (bad, _, badErr) = try Self.mpirun(2, quick + ["--density", "0"])
        XCTAssertNotEqual(bad, 0)
        XCTAssertTrue(badErr.contains("--density 0.0 must be in (0, 1]"), badErr)
    }

    /// For a given rank count, worker count and seed a run is bitwise reproducible; the
    /// human-readable header names the ranks.
    func testTwoRankRunsAreBitwiseReproducible() throws {
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let (c1, out1, err1) = try Self.mpirun(2, trainArgs("first", workers: 1))
        XCTAssertEqual(c1, 0, err1)
        XCTAssertTrue(out1.contains("2 MPI ranks × 1 workers"), out1)
        XCTAssertTrue(out1.contains("train accuracy"), out1)
        XCTAssertEqual(out1.components(separatedBy: "train accuracy").count, 2, "one report, from rank 0: \(out1)")
        let (c2, _, err2) = try Self.mpirun(2, trainArgs("second", workers: 1))
        XCTAssertEqual(c2, 0, err2)
        XCTAssertEqual(try parameters("first"), try parameters("second"))
    }
}

/// Distributed runs driven by the daemon (`distributed.ranks: 2` in the spec): it launches the
/// job through mpirun, follows it, and pauses, stops, resumes and survives it as one run.
final class DaemonDistributedTests: XCTestCase {
    override func setUpWithError() throws { try requireMPI() }

    func ranks(of id: String, in daemon: DaemonProcess) -> [Int: pid_t] { rankProcesses(ofRun: id, in: daemon) }

    static let spec =
        smallSpec(name: "mpi", trainLimit: 3000, epochs: 8, batch: 32, everySteps: 20) + "\ndistributed: {ranks: 2}\n"

    func testDistributedRunCompletesThroughNnctlAndInterruptionsLoseNothing() throws {
        let daemon = DaemonProcess()
        try daemon.start()
        let specPath = "\(daemon.dir)/mpi.yaml"
        try Self.spec.write(toFile: specPath, atomically: true, encoding: .utf8)

        // Uninterrupted, through nnctl: the reference.
        let (code, out, err) = try nnctl(["--socket", daemon.socket, "start", specPath, "--wait"])
        XCTAssertEqual(code, 0, err + daemon.log().suffix(2000))
        XCTAssertTrue(out.contains("state: completed"), out)
        let (_, list) = try daemon.get("/v1/runs")
        let runs = try XCTUnwrap(list["runs"] as? [[String: Any]])
        let refRun = try XCTUnwrap(runs.first)["id"] as! String
        let expected = try daemon.parameters(refRun)
        // Status names the ranks, human-readable and JSON (rank 0's per-step timings arrive in events).
        let (_, status, _) = try nnctl(["--socket", daemon.socket, "status", refRun])
        XCTAssertTrue(status.contains("2 ranks via mpirun"), status)
        // Where each rank ran: this machine's CPUs shared by its 2 ranks.
        let share = ProcessInfo.processInfo.activeProcessorCount / 2
        let workers = "\(share) worker\(share == 1 ? "" : "s")"
        XCTAssertTrue(status.contains("rank 0 on ") && status.contains("(\(workers)), rank 1 on "), status)
        let (_, json, _) = try nnctl(["--socket", daemon.socket, "status", refRun, "--json"])
        let record = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])
        XCTAssertEqual(((record["spec"] as? [String: Any])?["distributed"] as? [String: Any])?["ranks"] as? Int, 2)
        XCTAssertEqual((record["progress"] as? [String: Any])?["ranks"] as? Int, 2, json)
        let placements = try XCTUnwrap(
            (record["progress"] as? [String: Any])?["rank_placements"] as? [[String: Any]], json)
        XCTAssertEqual(placements.map { $0["workers"] as? Int }, [share, share], json)
        XCTAssertFalse(placements.contains { ($0["host"] as? String ?? "").isEmpty }, json)
        XCTAssertEqual(record["checkpoints_written"] as? Int ?? 0 > 0, true)

        // pause → resume
        let paused = try daemon.createRun(Self.spec)
        try waitUntilMidRun(paused, daemon)
        let (pc, pout, perr) = try nnctl(["--socket", daemon.socket, "pause", paused])
        XCTAssertEqual(pc, 0, perr)
        XCTAssertTrue(pout.contains("paused"), pout)
        XCTAssertEqual(try daemon.state(paused), "paused")
        XCTAssertTrue(ranks(of: paused, in: daemon).isEmpty, "every rank exits when paused")
        XCTAssertEqual(try nnctl(["--socket", daemon.socket, "resume", paused]).0, 0)
        try daemon.waitFor(paused, states: ["completed"])
        XCTAssertEqual(try daemon.parameters(paused), expected, "pause/resume changed the result")

        // stop → resume
        let stopped = try daemon.createRun(Self.spec)
        try waitUntilMidRun(stopped, daemon)
        XCTAssertEqual(try nnctl(["--socket", daemon.socket, "stop", stopped]).0, 0)
        XCTAssertEqual(try daemon.state(stopped), "stopped")
        XCTAssertEqual(try nnctl(["--socket", daemon.socket, "resume", stopped]).0, 0)
        try daemon.waitFor(stopped, states: ["completed"])
        XCTAssertEqual(try daemon.parameters(stopped), expected, "stop/resume changed the result")

        // kill -9 of rank 1: the run fails naming it; resume finishes it.
        let killed = try daemon.createRun(Self.spec)
        try waitUntilMidRun(killed, daemon)
        let pids = ranks(of: killed, in: daemon)
        XCTAssertEqual(pids.keys.sorted(), [0, 1], "two ranks running")
        kill(try XCTUnwrap(pids[1]), SIGKILL)
        let failed = try daemon.waitFor(killed, states: ["failed"])
        let reason = failed["reason"] as? String ?? ""
        XCTAssertTrue(reason.contains("rank 1") && reason.contains("signal 9"), reason)
        XCTAssertTrue(reason.contains("on host "), reason)
        let (_, failedStatus, _) = try nnctl(["--socket", daemon.socket, "status", killed])
        XCTAssertTrue(failedStatus.contains("rank 1") && failedStatus.contains("nnctl resume"), failedStatus)
        XCTAssertEqual(try nnctl(["--socket", daemon.socket, "resume", killed]).0, 0)
        try daemon.waitFor(killed, states: ["completed"])
        XCTAssertEqual(try daemon.parameters(killed), expected, "a rank's death changed the result")

        // kill -9 of the daemon: no rank outlives it; the restarted daemon resumes the run.
        let orphaned = try daemon.createRun(Self.spec)
        try waitUntilMidRun(orphaned, daemon)
        XCTAssertEqual(ranks(of: orphaned, in: daemon).count, 2)
        daemon.kill9()
        let deadline = Date().addingTimeInterval(10)
        while !ranks(of: orphaned, in: daemon).isEmpty && Date() < deadline { usleep(50_000) }
        XCTAssertTrue(ranks(of: orphaned, in: daemon).isEmpty, "ranks outlived the killed daemon")
        try daemon.start()
        try daemon.waitFor(orphaned, states: ["completed"])
        XCTAssertEqual(try daemon.parameters(orphaned), expected, "the daemon's kill -9 changed the result")
    }

    /// A launcher that is not installed, more ranks than the machine has CPUs, or a bad hostfile
    /// are refused when the run is created, naming the field and the value.
    func testBadDistributedSpecsAreRefusedAtCreation() throws {
        // A PATH with mpirun on it and no srun (this machine may have Slurm installed).
        let bin = NSTemporaryDirectory() + "nnd-path-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: bin, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: bin) }
        let (_, mpirun, _) = try runProgram("/usr/bin/env", ["sh", "-c", "command -v mpirun"])
        try FileManager.default.createSymbolicLink(
            atPath: "\(bin)/mpirun", withDestinationPath: mpirun.trimmingCharacters(in: .whitespacesAndNewlines))
        let daemon = DaemonProcess(extraEnv: ["PATH": bin])
        try daemon.start()
        let specPath = "\(daemon.dir)/mpi.yaml"
        try Self.spec.write(toFile: specPath, atomically: true, encoding: .utf8)
        let hostfile = "\(daemon.dir)/hosts"
        try "node-a slots=2\nnode-b slots=two\n".write(toFile: hostfile, atomically: true, encoding: .utf8)
        let cases: [([String], String)] = [
            (["--set", "distributed.ranks=\(ProcessInfo.processInfo.activeProcessorCount + 1)"], "CPUs"),
            (["--set", "distributed.hostfile=\(hostfile)"], "line 2: 'slots=two' is not slots=N"),
            (["--set", "distributed.hostfile=\(daemon.dir)/absent"], "cannot read"),
            // Resolved from the daemon's working directory, not nnctl's: refused.
            (
                ["--set", "distributed.hostfile=hosts"],
                "nnctl: distributed.hostfile: 'hosts' is a relative path; the daemon needs an absolute one"
            ),
            (["--set", "distributed.launcher=srun"], "'srun' is not on the daemon's PATH"),
            (["--set", "distributed.launcher=mpiexec"], "distributed.launcher"),
            (["--set", "distributed.ranks=0"], "distributed.ranks: 0 must be between 1 and 4096"),
        ]
        for (args, message) in cases {
            let (code, _, err) = try nnctl(["--socket", daemon.socket, "start", specPath] + args)
            XCTAssertNotEqual(code, 0, "\(args)")
            XCTAssertTrue(err.contains(message), "\(args): \(err)")
        }
        let (_, list) = try daemon.get("/v1/runs")
        XCTAssertEqual((list["runs"] as? [Any])?.count, 0, "no run was created")
    }
}

/// Two hosts on one machine: two network namespaces, each with its own address and TCP stack,
/// joined by a bridge to the machine's own namespace (the head node, where the daemon and
/// mpirun run), and an ssh stand-in that starts mpirun's `orted` in a host's namespace. The
/// daemon runs a 2-rank job with a hostfile naming both hosts, so the gradient crosses a network
/// on Open MPI's TCP transport instead of shared memory. Root only (CI runs as root).
final class TwoHostTests: XCTestCase {
    /// The hosts scripts/two-hosts.sh makes (10.231.0.1 and .2), by rank.
    static let namespaces = ["nnd-host-a", "nnd-host-b"]
    let dir = NSTemporaryDirectory() + "nnd-hosts-\(UUID().uuidString.prefix(8))"

    override func setUpWithError() throws {
        try requireMPI()
        guard getuid() == 0 else { throw XCTSkip("making network namespaces needs root (CI runs as root)") }
        let (code, out, err) = try runProgram("\(repoRoot)/scripts/two-hosts.sh", ["up", dir])
        XCTAssertEqual(code, 0, "scripts/two-hosts.sh up: \(err)")
        launcherArgs = out.split(whereSeparator: \.isWhitespace).map(String.init)
    }

    override func tearDown() {
        _ = try? runProgram("\(repoRoot)/scripts/two-hosts.sh", ["down"])
        try? FileManager.default.removeItem(atPath: dir)
    }

    /// mpirun's arguments that reach the hosts (the ssh stand-in, the network to use).
    var launcherArgs: [String] = []

    /// Bytes host `i` has received on its network interface.
    func receivedBytes(host i: Int) throws -> Int {
        let (_, out, _) = try runProgram(
            "/usr/bin/env",
            ["ip", "netns", "exec", Self.namespaces[i], "cat", "/sys/class/net/nnd-h\(i)/statistics/rx_bytes"])
        return Int(out.trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1
    }

    /// A small run with a rank on each host (8 epochs of 94 steps, a checkpoint every 20).
    func twoHostSpec(_ name: String) -> String {
        smallSpec(name: name, trainLimit: 3000, epochs: 8, batch: 32, everySteps: 20)
            + "\ndistributed: {ranks: 2, hostfile: \(dir)/hostfile, launcher_args: [\(launcherArgs.map { "\"\($0)\"" }.joined(separator: ", "))]}\n"
    }

    /// A host that does not see the run directory the others see (storage not shared): resuming,
    /// its rank finds no checkpoint while rank 0 finds one. The run fails at once naming the rank,
    /// the host and the cause, instead of training on to a replica check that names diverged
    /// parameters; with the storage back, `nnctl resume` completes it.
    func testHostWithoutTheSharedRunDirectoryIsNamed() throws {
        let daemon = DaemonProcess()
        try daemon.start()
        let id = try daemon.createRun(twoHostSpec("unshared"))
        try waitUntilMidRun(id, daemon)
        XCTAssertEqual(try nnctl(["--socket", daemon.socket, "pause", id]).0, 0)
        // Host b's ssh stand-in now hides the run's checkpoints under an empty tmpfs, in the
        // mount namespace its commands run in.
        let agent = "\(dir)/netns-rsh"
        let shared = try String(contentsOfFile: agent, encoding: .utf8)
        let hidden = "\(daemon.stateDir)/runs/\(id)/checkpoints"
        let unshared = shared.replacingOccurrences(
            of: #"sh -c "$*""#, with: #"sh -c "[ $ns = nnd-host-b ] && mount -t tmpfs tmpfs \#(hidden); $*""#)
        XCTAssertNotEqual(unshared, shared, "the stand-in's command line changed: \(shared)")
        try unshared.write(toFile: agent, atomically: false, encoding: .utf8)  // in place: it stays executable
        XCTAssertEqual(try nnctl(["--socket", daemon.socket, "resume", id]).0, 0)
        let failed = try daemon.waitFor(id, states: ["failed"])
        let reason = failed["reason"] as? String ?? ""
        XCTAssertTrue(reason.contains("rank 1 (on ") && reason.contains("would resume from step 0"), reason)
        XCTAssertTrue(reason.contains("storage they all share"), reason)
        let (_, status, _) = try nnctl(["--socket", daemon.socket, "status", id])
        XCTAssertTrue(status.contains("storage they all share"), status)
        // Shared again: the run resumes and completes.
        try shared.write(toFile: agent, atomically: false, encoding: .utf8)
        XCTAssertEqual(try nnctl(["--socket", daemon.socket, "resume", id]).0, 0)
        try daemon.waitFor(id, states: ["completed"])
    }

    /// The run trains with one rank in each host's namespace, each free to use every CPU of its
    /// host (mpirun's default binding would give a rank alone on its host a single core), and
    /// its gradient crosses the network: host b receives at least the gradient's bytes per step.
    func testRunOnTwoHostsCrossesTheNetworkAndUsesEveryCoreOfEachHost() throws {
        let daemon = DaemonProcess()
        try daemon.start()
        let spec = twoHostSpec("hosts")
        let received = try receivedBytes(host: 1)
        let id = try daemon.createRun(spec)
        try waitUntilMidRun(id, daemon)
        let ranks = rankProcesses(ofRun: id, in: daemon)
        XCTAssertEqual(ranks.keys.sorted(), [0, 1], "two ranks running: \(daemon.log().suffix(2000))")
        let everyCPU = try XCTUnwrap(NUMATopology.allowedCPUs(ofProcess: "self"))
        for (rank, pid) in ranks {
            // In its host's network namespace…
            let ns = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/ns/net")
            var info = stat()
            XCTAssertEqual(stat("/run/netns/\(Self.namespaces[rank])", &info), 0)
            XCTAssertEqual(ns, "net:[\(info.st_ino)]", "rank \(rank) is not in \(Self.namespaces[rank])")
            // …and free to use every CPU there.
            XCTAssertEqual(
                NUMATopology.allowedCPUs(ofProcess: "\(pid)"), everyCPU, "rank \(rank) was bound to fewer CPUs")
        }
        let done = try daemon.waitFor(id, states: ["completed"])
        let progress = try XCTUnwrap(done["progress"] as? [String: Any])
        XCTAssertEqual(progress["ranks"] as? Int, 2)
        // MNIST's inputs take the sparse first layer across hosts too; its slices' gradient
        // (32 units each, no padding) is what crosses in place of W₁'s.
        XCTAssertEqual(progress["input_path"] as? String, "sparse", "\(progress)")
        let steps = try XCTUnwrap(progress["epochs"] as? Int) * XCTUnwrap(progress["steps_per_epoch"] as? Int)
        let gradientBytes = (784 * 64 + 64 + 64 * 32 + 32 + 32 * 10 + 10) * 4
        let crossed = try receivedBytes(host: 1) - received
        XCTAssertGreaterThan(
            crossed, steps * gradientBytes * 9 / 10, "host b received \(crossed) bytes over \(steps) steps")
        let accuracy = try XCTUnwrap(progress["test_accuracy"] as? Double)
        XCTAssertGreaterThan(accuracy, 80, "test accuracy \(accuracy) %")
        let (_, status, _) = try nnctl(["--socket", daemon.socket, "status", id])
        XCTAssertTrue(status.contains("2 ranks via mpirun"), status)
        // Each rank alone on its host runs a worker for each of the host's CPUs.
        let cpus = ProcessInfo.processInfo.activeProcessorCount
        XCTAssertTrue(status.contains("rank 1 on "), status)
        XCTAssertEqual(
            (progress["rank_placements"] as? [[String: Any]])?.map { $0["workers"] as? Int }, [cpus, cpus],
            "\(progress)")
        print(
            "two hosts: \(steps) steps, \(crossed) bytes into host b (\(crossed / max(1, steps)) a step), test accuracy \(accuracy) %"
        )
    }
}

/// Distributed runs launched with Slurm's srun (`distributed.launcher: srun`) on a one-node
/// cluster that `scripts/slurm-local.sh` starts for the test (as root; CI installs Slurm and
/// runs as root): the ranks' workers, pause and resume, a rank killed, all through the daemon.
final class SlurmTests: XCTestCase {
    let dir = NSTemporaryDirectory() + "nnd-slurm-\(UUID().uuidString.prefix(8))"

    override func setUpWithError() throws {
        try requireMPI()
        let (found, _, _) = try runProgram("/usr/bin/env", ["sh", "-c", "command -v srun slurmd slurmctld munged"])
        if found != 0 && ProcessInfo.processInfo.environment["CI"] == nil {
            throw XCTSkip("Slurm not installed (apt install slurmd slurmctld slurm-client munge)")
        }
        guard getuid() == 0 else { throw XCTSkip("starting slurmd needs root (CI runs as root)") }
        XCTAssertEqual(
            Self.spawnAndWait(["\(repoRoot)/scripts/slurm-local.sh", "up", dir]), 0, "scripts/slurm-local.sh up")
    }

    override func tearDown() {
        _ = Self.spawnAndWait(["\(repoRoot)/scripts/slurm-local.sh", "down"])
        try? FileManager.default.removeItem(atPath: dir)
    }

    /// Runs a program and waits for it with waitpid; its output goes to the test's. (Foundation's
    /// Process never noticed the script's exit once it had started the Slurm daemons: its child
    /// stayed a zombie and `waitUntilExit` waited for ever.)
    static func spawnAndWait(_ argv: [String]) -> Int32 {
        var cArgs: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) } + [nil]
        defer { for a in cArgs { free(a) } }
        var pid: pid_t = 0
        guard posix_spawn(&pid, argv[0], nil, nil, &cArgs, environ) == 0 else { return -1 }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) == -1 && errno == EINTR {}
        return (status & 0x7f) == 0 ? (status >> 8) & 0xff : -1
    }

    static let spec =
        smallSpec(name: "srun", trainLimit: 3000, epochs: 8, batch: 32, everySteps: 20)
        + "\ndistributed: {ranks: 2, launcher: srun}\n"

    func testSrunRunsPausesResumesAndNamesAKilledRank() throws {
        let daemon = DaemonProcess(extraEnv: ["SLURM_CONF": "\(dir)/slurm.conf"])
        try daemon.start()
        let id = try daemon.createRun(Self.spec)
        try waitUntilMidRun(id, daemon)
        // srun sets no OMPI_COMM_WORLD_LOCAL_SIZE: each rank learns from MPI that it shares the
        // host with one other, and takes half of its CPUs.
        let (_, status, _) = try nnctl(["--socket", daemon.socket, "status", id])
        XCTAssertTrue(status.contains("2 ranks via srun"), status)
        let share = max(1, ProcessInfo.processInfo.activeProcessorCount / 2)
        XCTAssertTrue(status.contains("rank 1 on ") && status.contains("(\(share) worker"), status)

        // pause → resume: srun passes SIGUSR1 on to the ranks, which stop at the same step.
        XCTAssertEqual(try nnctl(["--socket", daemon.socket, "pause", id]).0, 0)
        XCTAssertEqual(try daemon.state(id), "paused")
        XCTAssertTrue(rankProcesses(ofRun: id, in: daemon).isEmpty, "every rank exits when paused")
        XCTAssertEqual(try nnctl(["--socket", daemon.socket, "resume", id]).0, 0)

        // kill -9 of rank 1: the run fails soon (rank 0, stuck waiting for it, ends itself after
        // Slurm's SIGTERM instead of at Slurm's KillWait), naming the rank; resume finishes it.
        try waitUntilMidRun(id, daemon)
        var pids: [Int: pid_t] = [:]
        let seen = Date().addingTimeInterval(20)
        while pids.count < 2 && Date() < seen {
            pids = rankProcesses(ofRun: id, in: daemon)
            usleep(20_000)
        }
        XCTAssertEqual(pids.keys.sorted(), [0, 1], "two ranks running")
        let killedAt = Date()
        kill(try XCTUnwrap(pids[1]), SIGKILL)
        let failed = try daemon.waitFor(id, states: ["failed"])
        let took = Date().timeIntervalSince(killedAt)
        XCTAssertLessThan(took, 25, "the job took \(took) s to end after a rank died")
        let reason = failed["reason"] as? String ?? ""
        XCTAssertTrue(reason.hasPrefix("rank 1 on host ") && reason.contains(": killed (srun)"), reason)
        XCTAssertTrue(reason.contains("nnctl resume"), reason)
        XCTAssertEqual(try nnctl(["--socket", daemon.socket, "resume", id]).0, 0)

        // A rank that hangs (stopped, not dead) holds the others in a collective call: a rank
        // given SIGTERM then ends itself after its grace period instead of waiting for ever.
        // (Once the relaunched ranks train: before, SIGTERM's default action ends a rank at once.)
        // (A checkpoint written after the resume shows they do: one comes every 20 steps.)
        let written = { (try? daemon.get("/v1/runs/\(id)").1["checkpoints_written"] as? Int) ?? 0 }
        let before = written()
        while written() == before && Date() < seen.addingTimeInterval(60) { usleep(20_000) }
        pids = [:]
        while pids.count < 2 && Date() < seen.addingTimeInterval(60) {
            pids = rankProcesses(ofRun: id, in: daemon)
            usleep(20_000)
        }
        let (hung, waiting) = (try XCTUnwrap(pids[1]), try XCTUnwrap(pids[0]))
        kill(hung, SIGSTOP)
        let termAt = Date()
        kill(waiting, SIGTERM)
        while kill(waiting, 0) == 0 && Date().timeIntervalSince(termAt) < 30 { usleep(50_000) }
        let ended = Date().timeIntervalSince(termAt)
        XCTAssertNotEqual(kill(waiting, 0), 0, "rank 0 still runs \(ended) s after SIGTERM")
        XCTAssertGreaterThan(ended, 5, "rank 0 ended before its grace period: it never waited")
        kill(hung, SIGCONT)
        kill(hung, SIGKILL)
        _ = try daemon.waitFor(id, states: ["failed"])
        XCTAssertTrue(
            try String(contentsOfFile: "\(daemon.stateDir)/runs/\(id)/distributed/launcher.log", encoding: .utf8)
                .contains("not stopped 10 s after SIGTERM (another rank gone?); exiting"))
        XCTAssertEqual(try nnctl(["--socket", daemon.socket, "resume", id]).0, 0)
        let done = try daemon.waitFor(id, states: ["completed"])
        let accuracy = try XCTUnwrap((done["progress"] as? [String: Any])?["test_accuracy"] as? Double)
        XCTAssertGreaterThan(accuracy, 80, "test accuracy \(accuracy) %")
        print(
            "srun: the job ended \(String(format: "%.1f", took)) s after rank 1 was killed; \(reason); rank 0 ended \(String(format: "%.1f", ended)) s after SIGTERM beside a hung rank 1"
        )
    }
}
