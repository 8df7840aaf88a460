import Foundation
import NNAPI
import NNCheckpoint
import NNControl
import XCTest

/// Faults a nightly job meets on real machines: each against real `nnd` processes.
final class ReliabilityTests: XCTestCase {
    /// A corrupted newest checkpoint (while the daemon is down) is detected by its content hash,
    /// named in the run's notes, and the run resumes from the previous good one — still ending
    /// bit for bit where an uninterrupted run ends.
    func testCorruptNewestCheckpointIsSkippedAndRunStillEndsExactly() throws {
        let spec = longSpec(name: "corrupt", everySteps: 150)
        let d = DaemonProcess()
        try d.start()
        let reference = try d.referenceParameters(spec)
        let run = try d.createRun(spec, overrides: ["name=corrupt2"])
        let store = CheckpointStore(directory: "\(d.stateDir)/runs/\(run)/checkpoints", keep: 3)
        let deadline = Date().addingTimeInterval(60)
        while store.list().count < 2 && Date() < deadline { usleep(50_000) }
        d.kill9()
        let files = store.list()
        XCTAssertGreaterThanOrEqual(files.count, 2)
        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: files[0])))
        // Flip bytes in the tensor data (after the JSON header): only the stored SHA-256 can tell.
        let header =
            8 + Int(bytes[0..<8].enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) })
        for i in stride(from: header + 100, to: bytes.count, by: 997) { bytes[i] ^= 0x5A }
        try Data(bytes).write(to: URL(fileURLWithPath: files[0]))
        try d.start()
        let done = try d.waitFor(run, states: ["completed"])
        let notes = (done["notes"] as? [String]) ?? []
        XCTAssertTrue(
            notes.contains { $0.contains("skipped unreadable checkpoint") && $0.contains("content hash") }, "\(notes)")
        XCTAssertTrue(d.log().contains("skipped unreadable checkpoint"))
        XCTAssertEqual(try d.parameters(run), reference)
    }

    /// A run record damaged outside nnd (nnd writes it atomically): the daemon still starts and
    /// serves the other runs, leaves that run's files as they are, and says so where an operator
    /// looks: `nnctl status` (text and --json), GET /v1/health, /metrics (an alerting rule) and
    /// the log.
    func testUnreadableRunRecordIsReportedAndKept() throws {
        let d = DaemonProcess()
        try d.start()
        let env = ["NND_SOCKET": d.socket]
        let kept = try d.createRun(smallSpec(name: "kept", trainLimit: 500, epochs: 1))
        let damaged = try d.createRun(smallSpec(name: "damaged", trainLimit: 500, epochs: 1))
        try d.waitFor(kept, states: ["completed"])
        try d.waitFor(damaged, states: ["completed"])
        // While every record reads, none of it shows.
        let (_, healthy, _) = try nnctl(["status"], env: env)
        XCTAssertFalse(healthy.contains("unreadable"), healthy)
        XCTAssertFalse(try nnctl(["status", "--json"], env: env).1.contains("unreadable_run_records"))
        XCTAssertTrue(try d.client.request("GET", "/metrics").text.contains("\nnnd_run_records_unreadable 0.0\n"))
        XCTAssertEqual(d.terminate().0, 0)
        let record = "\(d.stateDir)/runs/\(damaged)/run.json"
        let bytes = try Data(contentsOf: URL(fileURLWithPath: record))
        try bytes.prefix(bytes.count / 2).write(to: URL(fileURLWithPath: record))
        try d.start()

        let (code, out, err) = try nnctl(["status"], env: env)
        XCTAssertEqual(code, 0, out + err)
        XCTAssertTrue(
            out.contains(
                "unreadable run record (the run is left out, its files kept): \(record): The given data was not valid JSON. ("
            ), out)
        // …and how it broke: the record was cut in half.
        XCTAssertTrue(out.contains("not valid JSON. (Unexpected end of file"), out)
        XCTAssertTrue(out.contains(kept) && !out.contains("\(damaged) "), out)
        let (_, json, _) = try nnctl(["status", "--json"], env: env)
        let health = try APIJSON.decoder.decode(Health.self, from: Data(json.utf8))
        XCTAssertEqual(health.unreadableRunRecords?.count, 1, json)
        XCTAssertTrue(health.unreadableRunRecords?.first?.hasPrefix("\(record): ") == true, json)
        XCTAssertTrue(
            try d.client.request("GET", "/metrics").text.contains("\nnnd_run_records_unreadable 1.0\n"), "metrics")
        XCTAssertTrue(d.log().contains("cannot read run record"), d.log())
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: record)), bytes.prefix(bytes.count / 2))
        XCTAssertFalse(
            CheckpointStore(directory: "\(d.stateDir)/runs/\(damaged)/checkpoints", keep: 3).list().isEmpty)
    }

    /// A learning rate that makes the cost blow up: the run fails at the first bad step with
    /// that reason, and no checkpoint holds a NaN.
    func testDivergenceFailsTheRunAndCheckpointsStayFinite() throws {
        let d = DaemonProcess()
        try d.start()
        let run = try d.createRun(
            smallSpec(name: "diverge", trainLimit: 2000, epochs: 2, everySteps: 1),
            overrides: ["training.learning_rate=1e9"])
        let r = try d.waitFor(run, states: ["failed"])
        XCTAssertTrue((r["reason"] as? String ?? "").contains("diverged"), "\(r["reason"] ?? "")")
        let store = CheckpointStore(directory: "\(d.stateDir)/runs/\(run)/checkpoints", keep: 3)
        for path in store.list() { XCTAssertTrue(try store.load(path).allFinite, path) }
        XCTAssertEqual(try d.get("/v1/health").0, 200)
    }

    /// Data files changed or deleted between start and resume: a clear failure naming the file;
    /// the checkpoints are not touched.
    func testChangedOrMissingDataFailsClearlyAndKeepsCheckpoints() throws {
        let d = DaemonProcess()
        try d.start()
        let data = "\(d.dir)/mnist"
        try FileManager.default.createDirectory(atPath: data, withIntermediateDirectories: true)
        for f in [
            "train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte",
        ] {
            try FileManager.default.copyItem(atPath: "\(sharedMNIST)/\(f).gz", toPath: "\(data)/\(f).gz")
        }
        let run = try d.createRun(longSpec(name: "data", everySteps: 200), overrides: ["data.dir=\(data)"])
        try d.waitFor(run, states: ["running"])
        usleep(500_000)
        XCTAssertEqual(try d.post("/v1/runs/\(run)/pause").0, 200)
        try d.waitFor(run, states: ["paused"])
        let checkpoints = CheckpointStore(directory: "\(d.stateDir)/runs/\(run)/checkpoints", keep: 3).list()
        XCTAssertFalse(checkpoints.isEmpty)
        // Changed: same size, one byte different — the content hash recorded at start catches it.
        let labels = "\(data)/t10k-labels-idx1-ubyte"
        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: labels + ".gz")))
        try FileManager.default.removeItem(atPath: labels + ".gz")
        bytes = try { () throws -> [UInt8] in
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            p.arguments = ["gzip", "-dc"]
            let i = Pipe()
            let o = Pipe()
            p.standardInput = i
            p.standardOutput = o
            try p.run()
            i.fileHandleForWriting.write(Data(bytes))
            try i.fileHandleForWriting.close()
            let out = o.fileHandleForReading.readDataToEndOfFile()
            p.waitUntilExit()
            return [UInt8](out)
        }()
        bytes[bytes.count - 1] = bytes[bytes.count - 1] == 1 ? 2 : 1
        try Data(bytes).write(to: URL(fileURLWithPath: labels))
        XCTAssertEqual(try d.post("/v1/runs/\(run)/resume").0, 200)
        var r = try d.waitFor(run, states: ["failed"])
        XCTAssertTrue((r["reason"] as? String ?? "").contains("changed"), "\(r["reason"] ?? "")")
        XCTAssertTrue((r["reason"] as? String ?? "").contains(labels), "\(r["reason"] ?? "")")
        // Gone: the error names the missing file.
        try FileManager.default.removeItem(atPath: labels)
        XCTAssertEqual(try d.post("/v1/runs/\(run)/resume").0, 200)
        r = try d.waitFor(run, states: ["failed"])
        XCTAssertTrue((r["reason"] as? String ?? "").contains("t10k-labels-idx1-ubyte"), "\(r["reason"] ?? "")")
        XCTAssertTrue((r["reason"] as? String ?? "").contains("no such file"), "\(r["reason"] ?? "")")
        let after = CheckpointStore(directory: "\(d.stateDir)/runs/\(run)/checkpoints", keep: 3).list()
        XCTAssertEqual(after, checkpoints, "checkpoints changed although no training happened")
    }

    /// Tonight's export drops a new training shard beside the data while a run is paused (or the
    /// daemon restarts under it): the resumed run goes on with the files it started with — bit for
    /// bit an uninterrupted run's result, with a note naming the shard — and the next run reads
    /// the shard. Before, the resume failed with "data changed since the run started".
    func testShardThatLandsDuringAPauseWaitsForTheNextRun() throws {
        let d = DaemonProcess()
        try d.start()
        let data = "\(d.dir)/mnist"
        try FileManager.default.createDirectory(atPath: data, withIntermediateDirectories: true)
        for f in ["train-images", "train-labels", "t10k-images", "t10k-labels"] {
            let name = "\(f)-idx\(f.hasSuffix("images") ? 3 : 1)-ubyte.gz"
            try FileManager.default.createSymbolicLink(
                atPath: "\(data)/\(name)", withDestinationPath: "\(sharedMNIST)/\(name)")
        }
        let spec = longSpec(name: "nightly", everySteps: 200)
        let uninterrupted = try d.createRun(spec, overrides: ["data.dir=\(data)"])
        try d.waitFor(uninterrupted, states: ["completed"])
        let reference = try d.parameters(uninterrupted)
        let run = try d.createRun(spec, overrides: ["data.dir=\(data)", "name=paused"])
        try d.waitFor(run, states: ["running"])
        usleep(500_000)
        XCTAssertEqual(try d.post("/v1/runs/\(run)/pause").0, 200)
        try d.waitFor(run, states: ["paused"])
        let shard = "\(data)/train-2026-12-01-images-idx3-ubyte.gz"
        try FileManager.default.createSymbolicLink(
            atPath: shard, withDestinationPath: "\(sharedMNIST)/t10k-images-idx3-ubyte.gz")
        try FileManager.default.createSymbolicLink(
            atPath: "\(data)/train-2026-12-01-labels-idx1-ubyte.gz",
            withDestinationPath: "\(sharedMNIST)/t10k-labels-idx1-ubyte.gz")
        XCTAssertEqual(try d.post("/v1/runs/\(run)/resume").0, 200)
        let done = try d.waitFor(run, states: ["completed", "failed"])
        XCTAssertEqual(done["state"] as? String, "completed", "\(done["reason"] ?? "")")
        XCTAssertTrue(try d.parameters(run) == reference, "not bit for bit the uninterrupted run's weights")
        let notes = (done["notes"] as? [String] ?? []).joined(separator: "\n")
        XCTAssertTrue(
            notes.contains("\(shard): added after this run started; not read by it (the next run trains on it)"), notes)
        XCTAssertNil((done["data_files"] as? [String: String])?[shard])

        let next = try d.createRun(smallSpec(name: "tomorrow", epochs: 1), overrides: ["data.dir=\(data)"])
        let read = try d.waitFor(next, states: ["completed"])
        XCTAssertNotNil((read["data_files"] as? [String: String])?[shard], "\(read["data_files"] ?? "")")
    }

    /// A daemon that is stopped or hung still accepts connections (the kernel queues them), so a
    /// follower would wait for ever. The event stream carries a heartbeat every 10 s; the client
    /// gives up on a stream silent for its limit (`nnctl watch`: 25 s, and it then reconnects as
    /// to a daemon that went away; `make test-system` checks that against a SIGSTOPped service).
    /// Here a socket that answers one line and then nothing, with a 1 s limit.
    func testSilentEventStreamIsGivenUpOn() throws {
        let path = NSTemporaryDirectory() + "nnd-silent-\(UUID().uuidString.prefix(8)).sock"
        defer { unlink(path) }
        let listener = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(listener) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (i, byte) in path.utf8.enumerated() { raw[i] = byte }
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(listener, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        XCTAssertEqual(bound, 0)
        XCTAssertEqual(listen(listener, 4), 0)
        let server = Thread {
            let connection = accept(listener, nil, nil)
            var request = [UInt8](repeating: 0, count: 4096)
            _ = read(connection, &request, request.count)
            let head = "HTTP/1.1 200 OK\r\ncontent-type: application/x-ndjson\r\ntransfer-encoding: chunked\r\n\r\n"
            let line = #"{"type":"state","run":"r","state":"running"}"# + "\n"
            let chunk = String(line.utf8.count, radix: 16) + "\r\n" + line + "\r\n"
            _ = (head + chunk).withCString { write(connection, $0, strlen($0)) }
            sleep(4)  // then nothing: a SIGSTOPped daemon
            close(connection)
        }
        server.start()
        var lines: [String] = []
        let started = Date()
        XCTAssertThrowsError(
            try UnixHTTPClient(socketPath: path).stream("/v1/runs/r/events", silenceLimit: 1) { lines.append($0) }
        ) { error in
            XCTAssertEqual(
                "\(error)",
                "nnd sent nothing on the event stream for 1 s, not even a heartbeat: the daemon is stopped or hung")
        }
        let waited = Date().timeIntervalSince(started)
        XCTAssertEqual(lines.count, 1)
        XCTAssertGreaterThan(waited, 0.9)
        XCTAssertLessThan(waited, 3.5, "gave up only when the server closed")
    }

    /// SIGTERM while three runs train and clients stream their progress: exit 0 within 10 s,
    /// and every run resumes and completes after a restart.
    func testGracefulStopUnderLoad() throws {
        let d = DaemonProcess()
        try d.start(args: ["--max-concurrent-runs", "3"])
        let runs = try (0..<3).map { try d.createRun(longSpec(name: "load\($0)", everySteps: 0, epochs: 6)) }
        for r in runs { try d.waitFor(r, states: ["running"]) }
        let client = d.client
        let streams = runs.map { run -> Thread in
            let t = Thread { _ = try? client.stream("/v1/runs/\(run)/events", silenceLimit: 60) { _ in } }
            t.start()
            return t
        }
        usleep(500_000)
        let (status, seconds) = d.terminate()
        XCTAssertEqual(status, 0)
        XCTAssertLessThan(seconds, 10)
        _ = streams
        try d.start(args: ["--max-concurrent-runs", "3"])
        for r in runs { try d.waitFor(r, states: ["completed"], timeout: 240) }
    }

    /// A user who is neither root, the daemon's user nor in its group cannot connect.
    func testOtherUsersCannotConnect() throws {
        guard getuid() == 0, FileManager.default.isExecutableFile(atPath: "/usr/bin/setpriv") else {
            throw XCTSkip("needs root and setpriv to run a client under another uid")
        }
        let d = DaemonProcess()
        try d.start()
        // The test directory is world-traversable; the socket's own directory and mode are what guard it.
        chmod(d.dir, 0o755)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/setpriv")
        p.arguments = [
            "--reuid=65534", "--regid=65534", "--clear-groups", "\(binDir)/nnctl", "list", "--socket", d.socket,
        ]
        let err = Pipe()
        p.standardError = err
        p.standardOutput = FileHandle.nullDevice
        try p.run()
        p.waitUntilExit()
        let msg = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        XCTAssertEqual(p.terminationStatus, 3, msg)
        XCTAssertTrue(msg.contains("Permission denied"), msg)
        XCTAssertEqual(try d.get("/v1/health").0, 200)
    }
}
