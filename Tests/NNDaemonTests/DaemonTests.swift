import Foundation
import NNAPI
import NNCheckpoint
import NNControl
import XCTest

final class DaemonTests: XCTestCase {
    /// Start → watch → completes, through nnctl; list and status show it; socket permissions.
    func testStartWatchCompleteListStatusWithNNCtl() throws {
        let d = DaemonProcess()
        try d.start()
        let specPath = "\(d.dir)/spec.yaml"
        try smallSpec(name: "cli", trainLimit: 2000, epochs: 2).write(
            toFile: specPath, atomically: true, encoding: .utf8)
        let env = ["NND_SOCKET": d.socket]
        let (code, out, err) = try nnctl(["start", specPath, "--wait"], env: env)
        XCTAssertEqual(code, 0, out + err)
        XCTAssertTrue(out.contains("epoch 2/2"), out)
        XCTAssertTrue(out.contains("state: completed"), out)
        XCTAssertTrue(out.contains("test accuracy"), out)
        let (lc, list, _) = try nnctl(["list"], env: env)
        XCTAssertEqual(lc, 0)
        XCTAssertTrue(list.contains("cli") && list.contains("completed"), list)
        let (sc, status, _) = try nnctl(["status", "cli", "--json"], env: env)
        XCTAssertEqual(sc, 0)
        let obj = try JSONSerialization.jsonObject(with: Data(status.utf8)) as! [String: Any]
        XCTAssertEqual(obj["state"] as? String, "completed")
        XCTAssertGreaterThan(obj["test_accuracy"] as! Double, 50)
        XCTAssertEqual((obj["history"] as! [Any]).count, 2)
        // Socket 0660 in a 0750 directory; state dir 0750.
        let sockMode = (try FileManager.default.attributesOfItem(atPath: d.socket)[.posixPermissions] as! NSNumber)
            .intValue
        XCTAssertEqual(sockMode & 0o777, 0o660)
        let stateMode = (try FileManager.default.attributesOfItem(atPath: d.stateDir)[.posixPermissions] as! NSNumber)
            .intValue
        XCTAssertEqual(stateMode & 0o777, 0o750)
        // Exit codes: refused 1, usage 2, unreachable 3.
        XCTAssertEqual(try nnctl(["resume", "cli"], env: env).0, 1)
        XCTAssertEqual(try nnctl(["pause"], env: env).0, 2)
        XCTAssertEqual(try nnctl(["list"], env: ["NND_SOCKET": "\(d.dir)/none.sock"]).0, 3)
    }

    /// pause → resume and stop → resume end with parameters bitwise equal to an uninterrupted run.
    func testPauseResumeAndStopResumeAreBitwiseExact() throws {
        let d = DaemonProcess()
        try d.start()
        let spec = smallSpec(name: "ref", trainLimit: 4000, epochs: 3, batch: 16)
        let reference = try d.referenceParameters(spec)

        let run = try d.createRun(spec, overrides: ["name=interrupted"])
        try d.waitFor(run, states: ["running"])
        usleep(300_000)
        XCTAssertEqual(try d.post("/v1/runs/\(run)/pause").0, 200)
        try d.waitFor(run, states: ["paused"])
        let paused = try d.get("/v1/runs/\(run)").1
        XCTAssertNotNil(paused["last_checkpoint"] as? String, "\(paused)")
        XCTAssertEqual(try d.post("/v1/runs/\(run)/resume").0, 200)
        try d.waitFor(run, states: ["running"])
        usleep(300_000)
        XCTAssertEqual(try d.post("/v1/runs/\(run)/stop").0, 200)
        let stopped = try d.waitFor(run, states: ["stopped", "completed"])
        if stopped["state"] as? String == "stopped" {
            XCTAssertEqual(try d.post("/v1/runs/\(run)/resume").0, 200)
        }
        let done = try d.waitFor(run, states: ["completed"])
        XCTAssertEqual(
            try d.parameters(run), reference,
            "parameters after pause/resume/stop/resume differ from the uninterrupted run")
        XCTAssertEqual((done["history"] as? [Any])?.count, 3)
    }

    /// kill -9 at several moments, including inside a (slowed) checkpoint write; restart; the
    /// run completes with the parameters of an uninterrupted run, bit for bit.
    func testKill9AndRestartResumesExactly() throws {
        let wanted = Int(ProcessInfo.processInfo.environment["NND_KILLS"] ?? "") ?? 5  // README reports a 20-kill run
        let spec = longSpec(name: "crash", everySteps: 200, epochs: wanted > 5 ? 8 : 3)
        let refDaemon = DaemonProcess()
        try refDaemon.start()
        let reference = try refDaemon.referenceParameters(spec)

        // Every checkpoint write pauses 150 ms halfway, so kills often land inside one.
        // Kills land anywhere, often twice before a checkpoint: quarantine (its own test in
        // OvernightTests) is raised out of the way, this test is about exact resumption.
        let d = DaemonProcess(
            extraEnv: ["NND_TEST_CHECKPOINT_WRITE_DELAY_MS": "150", "NND_QUARANTINE_AFTER_CRASHES": "100"])
        try d.start()
        let run = try d.createRun(spec)
        var kills = 0
        var rng = SystemRandomNumberGenerator()
        while kills < wanted {
            if try d.state(run) == "completed" { break }
            usleep(UInt32.random(in: 200_000...900_000, using: &rng))
            d.kill9()
            kills += 1
            // No checkpoint file is ever unreadable.
            let store = CheckpointStore(directory: "\(d.stateDir)/runs/\(run)/checkpoints", keep: 3)
            for path in store.list() { XCTAssertNoThrow(try store.load(path), "unreadable after kill -9: \(path)") }
            try d.start()
        }
        XCTAssertGreaterThanOrEqual(kills, 3, "the run finished too fast to be interrupted")
        let done = try d.waitFor(run, states: ["completed"], timeout: 300)
        XCTAssertEqual(
            try d.parameters(run), reference, "parameters after \(kills) kill -9 differ from the uninterrupted run")
        print(
            "crash test: \(kills) kill -9, \(kills) restarts resumed, final parameters bitwise equal: \(try d.parameters(run) == reference)"
        )
        XCTAssertTrue(
            ((done["notes"] as? [String]) ?? []).contains { $0.contains("unclean exit") }, "\(done["notes"] ?? "")")
    }

    /// SIGTERM: exits 0 within seconds after checkpointing; the run resumes on the next start.
    func testSIGTERMCheckpointsAndRunResumesOnRestart() throws {
        try checkGracefulStop(signal: SIGTERM)
    }

    /// SIGHUP (the terminal of a daemon started by hand closes) does the same; before, it killed
    /// the daemon on the spot, and its runs lost their steps since the last checkpoint.
    func testSIGHUPIsAGracefulStopToo() throws {
        try checkGracefulStop(signal: SIGHUP)
    }

    private func checkGracefulStop(signal: Int32) throws {
        let spec = longSpec(name: "term", everySteps: 0, epochs: 6)
        let d = DaemonProcess()
        try d.start()
        let reference = try d.referenceParameters(spec)
        let run = try d.createRun(spec, overrides: ["name=term2"])
        try d.waitFor(run, states: ["running"])
        usleep(300_000)  // some steps in, well before the end
        let (status, seconds) = d.terminate(signal: signal)
        let saved = try String(contentsOfFile: "\(d.stateDir)/runs/\(run)/run.json", encoding: .utf8)
        XCTAssertTrue(saved.contains("interrupted by daemon shutdown"), saved)
        XCTAssertEqual(status, 0, d.log().suffix(2000).description)
        XCTAssertLessThan(seconds, 10)
        XCTAssertFalse(FileManager.default.fileExists(atPath: d.socket), "socket left behind")
        try d.start()
        let done = try d.waitFor(run, states: ["completed"])
        XCTAssertTrue(try d.parameters(run) == reference, "not bit for bit the uninterrupted run's weights")
        XCTAssertTrue(
            ((done["notes"] as? [String]) ?? []).contains { $0.contains("resuming from step-") },
            "\(done["notes"] ?? "")")
    }

    /// A second daemon on the same state directory (say, a hand-started `nnd serve` next to the
    /// service) would resume the first one's runs and write their checkpoints too. It is refused
    /// at start, naming the daemon that holds the directory, and the first one trains on
    /// undisturbed; once that one has stopped, or died by `kill -9`, the directory is free again.
    func testSecondDaemonOnTheSameStateDirectoryIsRefused() throws {
        let d = DaemonProcess()
        try d.start()
        let run = try d.createRun(longSpec(name: "held", everySteps: 0, epochs: 6))
        try d.waitFor(run, states: ["running"])
        let otherSocket = "\(d.dir)/other.sock"
        let (code, out, err) = try runBuilt(
            "nnd", ["serve", "--socket", otherSocket, "--state-dir", d.stateDir, "--data-dir", sharedMNIST], timeout: 30
        )
        XCTAssertEqual(code, 1, out + err)
        let pid = try XCTUnwrap(d.process).processIdentifier
        XCTAssertTrue(
            err.contains(
                "nnd: state directory \(d.stateDir) is in use by another nnd (pid \(pid), serving on \(d.socket)); "
                    + "stop it, or give this one its own --state-dir"), err)
        XCTAssertFalse(FileManager.default.fileExists(atPath: otherSocket), "the refused daemon made a socket")
        XCTAssertEqual(try d.state(run), "running")
        XCTAssertEqual(try d.get("/v1/runs").0, 200)

        d.kill9()
        try d.start()
        XCTAssertEqual(try d.get("/v1/health").0, 200)
        let (status, _) = d.terminate()
        XCTAssertEqual(status, 0)
        let free = DaemonProcess()
        free.serveArgs = ["--socket", free.socket, "--state-dir", d.stateDir, "--data-dir", sharedMNIST]
        try free.start()
        XCTAssertEqual(try free.get("/v1/health").0, 200)
    }

    /// A watcher following a queued run (as the nightly unit's `nnctl retrain` does) must not hold
    /// the daemon's shutdown open until systemd's TimeoutStopSec= kills it: SIGTERM ends every
    /// event stream, and the watcher reconnects to the restarted daemon and sees its run through.
    func testSIGTERMIsQuickWithAWatcherOfAQueuedRun() throws {
        let d = DaemonProcess()
        try d.start(args: ["--max-concurrent-runs", "1"])
        let busy = try d.createRun(longSpec(name: "busy", everySteps: 0, epochs: 6))
        try d.waitFor(busy, states: ["running"])
        let waiting = try d.createRun(smallSpec(name: "waiting", epochs: 1))
        XCTAssertEqual(try d.state(waiting), "queued")
        let watch = Process()
        watch.executableURL = URL(fileURLWithPath: "\(binDir)/nnctl")
        watch.arguments = ["watch", waiting, "--socket", d.socket]
        watch.standardOutput = FileHandle.nullDevice
        watch.standardError = FileHandle.nullDevice
        try watch.run()
        usleep(500_000)
        // SIGTERM with a deadline of our own (terminate() would wait for ever on a regression).
        let daemon = try XCTUnwrap(d.process)
        let sent = Date()
        kill(daemon.processIdentifier, SIGTERM)
        while daemon.isRunning && Date().timeIntervalSince(sent) < 10 { usleep(20_000) }
        let seconds = Date().timeIntervalSince(sent)
        if daemon.isRunning { d.kill9() } else { d.process = nil }
        XCTAssertEqual(daemon.terminationStatus, 0)
        XCTAssertLessThan(seconds, 3, "an open event stream held the shutdown")
        try d.start(args: ["--max-concurrent-runs", "1"])
        let deadline = Date().addingTimeInterval(120)
        while watch.isRunning && Date() < deadline { usleep(100_000) }
        if watch.isRunning { watch.terminate() }
        XCTAssertEqual(watch.terminationStatus, 0, "the watcher did not follow its run to the end")
        XCTAssertEqual(try d.state(waiting), "completed")
    }

    /// Every error path of the API answers with the right status and a clear JSON error, and the daemon keeps serving.
    func testAPIErrorPaths() throws {
        let d = DaemonProcess()
        try d.start(args: ["--max-concurrent-runs", "1"])
        func expect(
            _ method: String, _ path: String, _ body: [UInt8]?, _ status: Int, _ code: String, _ text: String,
            line: UInt = #line
        ) throws {
            let r = try d.client.request(method, path, json: body)
            XCTAssertEqual(r.status, status, r.text, line: line)
            let obj = try JSONSerialization.jsonObject(with: Data(r.body)) as? [String: Any]
            let err = obj?["error"] as? [String: Any]
            XCTAssertEqual(err?["code"] as? String, code, r.text, line: line)
            XCTAssertTrue((err?["message"] as? String ?? "").contains(text), "'\(r.text)' lacks '\(text)'", line: line)
        }
        func b(_ s: String) -> [UInt8] { Array(s.utf8) }
        try expect(
            "POST", "/v1/runs", b("{not json"), 400, "malformed_json",
            "the request body is not valid JSON: Invalid value around character 1.")
        try expect(
            "POST", "/v1/runs", b("{\"spec\": {\"training\": {\"epochs\": 1e400}}}"), 400, "malformed_json",
            "not valid JSON: Number 1e400 is not representable in Swift.")
        try expect("POST", "/v1/runs", b("[1,2]"), 400, "malformed_json", "JSON object")
        try expect("POST", "/v1/runs", b("{\"spec\": {}, \"colour\": 1}"), 422, "unknown_field", "colour")
        // Query parameters a route does not read are refused like unknown body fields.
        try expect(
            "GET", "/v1/runs?state=failed", nil, 422, "unknown_field", "unknown query parameter 'state' (allowed: none)"
        )
        try expect(
            "POST", "/v1/runs?nme=x", b("{\"spec\": {}}"), 422, "unknown_field",
            "unknown query parameter 'nme' (allowed: name)")
        try expect(
            "GET", "/v1/models/x/export?format=onnx&verison=1", nil, 422, "unknown_field",
            "unknown query parameter 'verison' (allowed: format, version)")
        try expect(
            "POST", "/v1/runs", b("{\"spec\": {\"training\": {\"epochs\": 0}}}"), 422, "invalid_spec", "training.epochs"
        )
        try expect(
            "POST", "/v1/runs", b("{\"spec\": {\"training\": {\"epochz\": 3}}}"), 422, "invalid_spec", "training.epochz"
        )
        try expect(
            "POST", "/v1/runs", b("{\"spec\": {\"model\": {\"activation\": \"swish\"}}}"), 422, "invalid_spec", "swish")
        try expect("POST", "/v1/runs", b("{\"spec\": \"x\"}"), 422, "invalid_value", "spec must be")
        try expect(
            "POST", "/v1/runs", b("{\"spec\": {\"name\": \"../../etc/passwd\"}}"), 422, "invalid_spec",
            "not a valid run name")
        try expect("POST", "/v1/runs", b("{}"), 422, "invalid_request", "spec")
        try expect(
            "POST", "/v1/runs", b("{\"spec\": {\"data\": {\"train_csv\": \"train.csv\", \"test_csv\": \"/t.csv\"}}}"),
            422,
            "invalid_spec", "data.train_csv: 'train.csv' is a relative path; the daemon needs an absolute one")
        try expect(
            "POST", "/v1/runs", b("{\"spec_yaml\": \"name: a\", \"overrides\": [\"training.epochs=1e99\"]}"), 422,
            "invalid_spec", "training.epochs")
        // The daemon answers 413 without reading the rest of the body; the client must stop
        // sending and read that answer, not block in write until the request timeout (30 s).
        let oversizeStart = Date()
        try expect("POST", "/v1/runs", [UInt8](repeating: 0x20, count: 2 << 20), 413, "body_too_large", "limit")
        XCTAssertLessThan(Date().timeIntervalSince(oversizeStart), 15, "the 413 waited for the request timeout")
        try expect("GET", "/v1/runs/nope", nil, 404, "not_found", "nope")
        try expect("POST", "/v1/runs/nope/pause", nil, 404, "not_found", "nope")
        // The name as the client typed it (nnctl percent-encodes it into the path).
        try expect("GET", "/v1/runs/my%20run", nil, 404, "not_found", "no run with id or name 'my run'")
        try expect("GET", "/v1/unknown", nil, 404, "not_found", "/v1/unknown")
        try expect("DELETE", "/v1/runs", nil, 405, "method_not_allowed", "DELETE is not allowed on /v1/runs")
        // Illegal transitions: a queued run behind a running one can be paused, not resumed; a completed one cannot be paused.
        let first = try d.createRun(smallSpec(name: "busy", trainLimit: 6000, epochs: 3, batch: 16))
        let second = try d.createRun(smallSpec(name: "waiting", trainLimit: 1000, epochs: 1))
        XCTAssertEqual(try d.state(second), "queued")
        try expect("POST", "/v1/runs/\(second)/resume", nil, 409, "illegal_transition", "queued")
        try expect("POST", "/v1/runs/\(second)/eval", nil, 409, "no_checkpoint", "no checkpoint")
        try expect("POST", "/v1/runs/\(first)/eval", b("{\"data\": \"validation\"}"), 422, "invalid_value", "test")
        try expect("GET", "/v1/runs/\(first)/export?format=pickle", nil, 422, "invalid_value", "pickle")
        XCTAssertEqual(try d.post("/v1/runs/\(first)/stop").0, 200)
        try d.waitFor(second, states: ["completed"])
        try expect("POST", "/v1/runs/\(second)/pause", nil, 409, "illegal_transition", "completed")
        try expect("POST", "/v1/runs/\(second)/stop", nil, 409, "illegal_transition", "completed")
        // Still serving.
        XCTAssertEqual(try d.get("/v1/health").0, 200)
        XCTAssertEqual(try d.get("/v1/runs").0, 200)
    }

    /// The npz export, loaded with numpy as the seed's loadWeights does, gives nnctl eval's accuracy.
    func testNPZExportLoadsInNumpyWithEvalAccuracy() throws {
        let d = DaemonProcess()
        try d.start()
        let run = try d.createRun(smallSpec(name: "npz", trainLimit: 2000, epochs: 2))
        try d.waitFor(run, states: ["completed"])
        let env = ["NND_SOCKET": d.socket]
        let (ec, evalOut, evalErr) = try nnctl(["eval", run, "--json"], env: env)
        XCTAssertEqual(ec, 0, evalErr)
        let acc = (try JSONSerialization.jsonObject(with: Data(evalOut.utf8)) as! [String: Any])["accuracy"] as! Double
        let npz = "\(d.dir)/w.npz"
        XCTAssertEqual(try nnctl(["export", run, "--format", "npz", "-o", npz], env: env).0, 0)
        let script = """
            import gzip, sys, numpy as np
            z = np.load(sys.argv[1])
            n_layers = len(z['n_nodes'])
            thetas = {l: z['theta_%d' % l] for l in range(1, n_layers)}
            biases = {l: z['bias_%d' % l] for l in range(1, n_layers)}
            assert thetas[1].shape == (64, 784) and biases[1].shape == (1, 64), (thetas[1].shape, biases[1].shape)
            lr, lam = float(z['lr']), float(z['lam'])
            def idx(p):
                d = gzip.open(p).read(); nd = d[3]
                dims = [int.from_bytes(d[4+4*i:8+4*i], 'big') for i in range(nd)]
                return np.frombuffer(d[4+4*nd:], dtype=np.uint8).reshape(dims)
            x = idx(sys.argv[2] + '/t10k-images-idx3-ubyte.gz')[:1000].reshape(1000, -1) / 255.
            y = idx(sys.argv[2] + '/t10k-labels-idx1-ubyte.gz')[:1000]
            a = x
            for l in range(1, n_layers):
                a = a @ thetas[l].T + biases[l]
                if l < n_layers - 1: a = np.maximum(a, 0)
            print((a.argmax(1) == y).mean() * 100)
            """
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["python3", "-c", script, npz, sharedMNIST]
        let out = Pipe()
        p.standardOutput = out
        try p.run()
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        XCTAssertEqual(p.terminationStatus, 0, text)
        XCTAssertEqual(Double(text.trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1, acc, accuracy: 0.001)
    }

    /// With NOTIFY_SOCKET set, the daemon sends READY=1, STATUS= and WATCHDOG=1 (and STOPPING=1 on SIGTERM).
    func testSystemdNotifyProtocol() throws {
        let dir = NSTemporaryDirectory() + "nnd-notify-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = "\(dir)/notify.sock"
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in for (i, b) in path.utf8.enumerated() { raw[i] = b } }
        XCTAssertEqual(
            withUnsafePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
                }
            }, 0)
        var tv = timeval(tv_sec: 0, tv_usec: 200_000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        // Read continuously, as systemd does (the socket queue holds only a few datagrams).
        final class Inbox: @unchecked Sendable {  // guarded by `lock`
            let lock = NSLock()
            var messages: [String] = []
            var done = false
        }
        let inbox = Inbox()
        let reader = Thread {
            var buf = [UInt8](repeating: 0, count: 4096)
            while !inbox.lock.withLock({ inbox.done }) {
                let n = recv(fd, &buf, buf.count, 0)
                if n > 0 {
                    let m = String(decoding: buf[0..<n], as: UTF8.self)
                    inbox.lock.withLock { inbox.messages.append(m) }
                }
            }
        }
        reader.start()
        let d = DaemonProcess(extraEnv: ["NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000"])
        try d.start()
        let run = try d.createRun(smallSpec(name: "notify", trainLimit: 2000, epochs: 2))
        try d.waitFor(run, states: ["completed"])
        _ = d.terminate()
        usleep(500_000)
        let messages = inbox.lock.withLock {
            inbox.done = true
            return inbox.messages
        }
        usleep(300_000)
        XCTAssertTrue(messages.contains { $0.contains("READY=1") }, "\(messages)")
        XCTAssertTrue(messages.contains { $0.contains("WATCHDOG=1") }, "\(messages)")
        XCTAssertTrue(messages.contains { $0.hasPrefix("STATUS=run notify: epoch 2/2, cost") }, "\(messages)")
        XCTAssertTrue(messages.contains { $0.contains("STOPPING=1") }, "\(messages)")
    }

    /// Threads of a process: name, nice value, CPU ticks used.
    /// Starts a long seed-network run and polls its status 50 times while it trains, so both
    /// the training threads and the control plane's have run; returns the run's id.
    func trainWhileClientsPoll(_ d: DaemonProcess) throws -> String {
        let run = try d.createRun(
            smallSpec(name: "prio", trainLimit: 20000, epochs: 100, batch: 64, everySteps: 0, optimizer: "sgd"))
        _ = try d.waitFor(run, states: ["running"])
        for _ in 0..<50 {
            XCTAssertEqual(try d.get("/v1/runs/\(run)").0, 200)
            usleep(20_000)
        }
        return run
    }

    func threads(of pid: Int32) -> [(name: String, nice: Int, cpu: Int)] {
        let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? []
        return tasks.compactMap { tid in
            guard let stat = try? String(contentsOfFile: "/proc/\(pid)/task/\(tid)/stat", encoding: .utf8),
                let open = stat.firstIndex(of: "("), let close = stat.lastIndex(of: ")")
            else { return nil }
            let f = stat[stat.index(after: close)...].split(separator: " ")  // f[0] is field 3 (state)
            return (
                String(stat[stat.index(after: open)..<close]), Int(f[16]) ?? 0, (Int(f[11]) ?? 0) + (Int(f[12]) ?? 0)
            )
        }
    }

    /// While a run trains and clients poll, the control plane's threads (NIO's event loops, which
    /// also run every async task) have control_nice's priority and the threads doing the
    /// training keep the process's own — so a client takes idle time rather than a worker's.
    func testControlPlaneRunsBelowTrainingPriority() throws {
        let d = DaemonProcess(extraEnv: ["NND_CONTROL_NICE": "12"])
        try d.start()
        let run = try trainWhileClientsPoll(d)
        let pid = d.process!.processIdentifier
        let base = threads(of: pid).first { $0.name == "nnd" || $0.name == "exe" }?.nice ?? 0
        let all = threads(of: pid)
        let loops = all.filter { $0.name.hasPrefix("NIO-") }
        XCTAssertFalse(loops.isEmpty, "\(all)")
        XCTAssertTrue(loops.allSatisfy { $0.nice == max(12, base) }, "\(all)")
        // The busiest threads are the run's thread and its concurrentPerform partners.
        let busiest = all.sorted { $0.cpu > $1.cpu }.prefix(2)
        XCTAssertTrue(busiest.allSatisfy { $0.nice == base && !$0.name.hasPrefix("NIO-") }, "\(all)")
        XCTAssertGreaterThan(busiest.last!.cpu, 10, "\(all)")
        _ = try d.post("/v1/runs/\(run)/stop")
    }

    /// As an unprivileged user without RLIMIT_NICE (a service without LimitNICE=+0), a lowered
    /// control plane could never hand normal priority back to the threads it makes: the daemon
    /// says so and leaves control_nice out, and the threads that train run at the process's
    /// priority, with no "errno=13" from libdispatch.
    func testUnprivilegedDaemonTrainsAtFullPriority() throws {
        guard getuid() == 0, FileManager.default.isExecutableFile(atPath: "/usr/bin/setpriv") else {
            throw XCTSkip("needs root and setpriv to run the daemon as another user")
        }
        let d = DaemonProcess(extraEnv: ["NND_CONTROL_NICE": "10", "HOME": "/tmp"])
        d.launcher = ["/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        XCTAssertEqual(chown(d.dir, 65534, 65534), 0)
        chmod(d.dir, 0o755)
        try d.start()
        let run = try trainWhileClientsPoll(d)
        usleep(500_000)
        let all = threads(of: d.process!.processIdentifier)
        let busiest = all.sorted { $0.cpu > $1.cpu }.prefix(2)
        XCTAssertTrue(all.allSatisfy { $0.nice == 0 }, "\(all)")
        XCTAssertGreaterThan(busiest.last!.cpu, 10, "\(all)")
        XCTAssertTrue(d.log().contains("control_nice not applied"), d.log())
        XCTAssertFalse(d.log().contains("errno=13"), d.log())
        _ = try d.post("/v1/runs/\(run)/stop")
    }

    /// Bad daemon settings stop `nnd serve` with exit 2 and a message naming the source, the
    /// setting and the value; nothing is created.
    func testBadSettingsAreRefusedNamingSourceFieldAndValue() throws {
        let dir = NSTemporaryDirectory() + "nnd-config-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        func serve(_ args: [String], env: [String: String] = [:], stateDir: String? = nil) throws -> (Int32, String) {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "\(binDir)/nnd")
            p.arguments = ["serve", "--socket", "\(dir)/s.sock", "--state-dir", stateDir ?? "\(dir)/state"] + args
            var e = ProcessInfo.processInfo.environment
            for (k, v) in env { e[k] = v }
            p.environment = e
            let err = Pipe()
            p.standardError = err
            p.standardOutput = Pipe()
            try p.run()
            let text = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            p.waitUntilExit()
            return (p.terminationStatus, text)
        }
        let yaml = "\(dir)/nnd.yaml"
        let cases: [(String, [String: String], [String], [String])] = [
            ("control_nice: 25\n", [:], [yaml, "control_nice", "'25'", "0 to 19"], []),
            ("workers: two\n", [:], [yaml, "workers", "'two'"], []),
            ("color: blue\n", [:], [yaml, "color", "unknown setting"], []),
            ("", ["NND_CONTROL_NICE": "-3"], ["NND_CONTROL_NICE", "control_nice", "'-3'"], []),
            ("", ["NND_REQUEST_TIMEOUT_SECONDS": "0"], ["NND_REQUEST_TIMEOUT_SECONDS", "'0'"], []),
            // Flags come from the same table as the file's keys and the variables.
            ("", [:], ["--control-nice", "control_nice", "'20'"], ["--control-nice", "20"]),
            ("", [:], ["--max-request-bytes", "'1'", "1024"], ["--max-request-bytes=1"]),
            ("", [:], ["--colour", "unknown option", "--metrics-listen"], ["--colour", "red"]),
        ]
        for (text, env, expected, flags) in cases {
            try text.write(toFile: yaml, atomically: true, encoding: .utf8)
            let (code, err) = try serve(["--config", yaml] + flags, env: env)
            XCTAssertEqual(code, 2, err)
            for word in expected { XCTAssertTrue(err.contains(word), "\(word) missing from: \(err)") }
            XCTAssertFalse(
                FileManager.default.fileExists(atPath: "\(dir)/state"), "state dir created despite bad settings")
        }
        // A settings file that cannot be read at all: the system's reason, not a bare "cannot read".
        let notUTF8 = "\(dir)/latin1.yaml"
        try Data([0x77, 0x6F, 0x72, 0x6B, 0x65, 0x72, 0x73, 0x3A, 0x20, 0xE9, 0x0A]).write(
            to: URL(fileURLWithPath: notUTF8))
        let files = [
            (
                "\(dir)/missing.yaml",
                "nnd: \(dir)/missing.yaml: cannot read the settings file: No such file or directory"
            ),
            (dir, "nnd: \(dir): cannot read the settings file: Is a directory"),
            (notUTF8, "nnd: \(notUTF8): the settings file is not UTF-8 text"),
        ]
        for (path, message) in files {
            let (code, err) = try serve(["--config", path])
            XCTAssertEqual(code, 2, err)
            XCTAssertEqual(err, message + "\n")
        }
        // A state directory that cannot be made: the system's reason too (exit 1, the daemon's own start).
        let (code, err) = try serve([], stateDir: "/proc/nnd-state")
        XCTAssertEqual(code, 1, err)
        XCTAssertEqual(err, "nnd: cannot create directory /proc/nnd-state: No such file or directory\n")
    }

    /// etc/nnd/nnd.yaml is what the settings table generates, so a setting added, renamed or
    /// re-documented in Sources/NNDaemon/DaemonSettings.swift cannot leave the shipped file behind;
    /// and the daemon accepts the file as it ships.
    func testShippedSettingsFileIsTheGeneratedOne() throws {
        let (code, generated, _) = try runBuilt("nnd", ["settings", "--yaml"])
        XCTAssertEqual(code, 0)
        let shipped = try String(contentsOfFile: "\(repoRoot)/etc/nnd/nnd.yaml", encoding: .utf8)
        XCTAssertEqual(shipped, generated, "regenerate with: .build/debug/nnd settings --yaml > etc/nnd/nnd.yaml")
        // Every setting is in the file, with its variable and flag named.
        for key in ["socket", "state_dir", "workers", "control_nice", "metrics_listen", "request_timeout_seconds"] {
            XCTAssertTrue(shipped.contains("\n\(key): ") || shipped.contains("\n# \(key): "), key)
            XCTAssertTrue(
                shipped.contains("NND_\(key.uppercased()), --\(key.replacingOccurrences(of: "_", with: "-"))."), key)
        }
        // Settings in one place under systemd: the file leaves the socket and the state directory
        // to the unit (RuntimeDirectory=, StateDirectory=), which the daemon finds in
        // $RUNTIME_DIRECTORY and $STATE_DIRECTORY, as `nnd serve --config` with nothing else.
        XCTAssertTrue(
            shipped.contains("\n# socket: /run/nnd/nnd.sock\n") && shipped.contains("\n# state_dir: /var/lib/nnd\n"))
        let d = DaemonProcess()
        d.extraEnv = ["RUNTIME_DIRECTORY": d.dir, "STATE_DIRECTORY": d.stateDir]
        d.serveArgs = []
        let config = "\(d.dir)/nnd.yaml"
        try shipped.replacingOccurrences(of: "socket_group: nnd", with: "socket_group: \"\"")
            .replacingOccurrences(of: "/var/lib/nnd/datasets/mnist", with: sharedMNIST)
            .write(toFile: config, atomically: true, encoding: .utf8)
        try d.start(args: ["--config", config])
        XCTAssertEqual(try d.get("/v1/health").0, 200)
        XCTAssertTrue(FileManager.default.fileExists(atPath: "\(d.stateDir)/runs"), "state not in $STATE_DIRECTORY")
    }
}
