import Foundation
import NNAPI
import NNCheckpoint
import NNControl
import NNInflate
import XCTest

let repoRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().path
let sharedMNIST = URL(fileURLWithPath: repoRoot + "/../shared/datasets/mnist").standardized.path

/// The built `nnd` and `nnctl` sit next to the test bundle.
let binDir: String = {
    for b in Bundle.allBundles where b.bundlePath.hasSuffix(".xctest") {
        return (b.bundlePath as NSString).deletingLastPathComponent
    }
    return (CommandLine.arguments[0] as NSString).deletingLastPathComponent
}()

/// A real `nnd serve` process on a temporary socket and state directory.
final class DaemonProcess {
    let dir: String
    var socket: String { "\(dir)/nnd.sock" }
    var stateDir: String { "\(dir)/state" }
    var process: Process?
    var logPath: String { "\(dir)/nnd.log" }
    var extraEnv: [String: String]
    /// A command that runs `nnd` (e.g. setpriv to drop root); empty: `nnd` itself.
    var launcher: [String] = []
    /// `nnd serve`'s own arguments; nil: this process's socket, state directory and MNIST.
    var serveArgs: [String]?

    init(extraEnv: [String: String] = [:]) {
        dir = NSTemporaryDirectory() + "nnd-test-\(UUID().uuidString.prefix(8))"
        try! FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        self.extraEnv = extraEnv
    }

    func start(args: [String] = [], file: StaticString = #filePath, line: UInt = #line) throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: launcher.first ?? "\(binDir)/nnd")
        p.arguments =
            (launcher.isEmpty ? [] : launcher.dropFirst() + ["\(binDir)/nnd"])
            + ["serve"]
            + (serveArgs ?? ["--socket", socket, "--state-dir", stateDir, "--workers", "2", "--data-dir", sharedMNIST])
            + args
        var env = ProcessInfo.processInfo.environment
        for (k, v) in extraEnv { env[k] = v }
        p.environment = env
        if !FileManager.default.fileExists(atPath: logPath) {
            _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        }
        let logHandle = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
        logHandle.seekToEndOfFile()
        p.standardOutput = logHandle
        p.standardError = logHandle
        try p.run()
        process = p
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline {
            if (try? client.request("GET", "/v1/health"))?.status == 200 { return }
            if !p.isRunning { break }
            usleep(50_000)
        }
        XCTFail("daemon did not come up; log:\n\(log())", file: file, line: line)
        throw NSError(domain: "nnd-test", code: 1)
    }

    var client: UnixHTTPClient { UnixHTTPClient(socketPath: socket, timeoutSeconds: 60) }

    func log() -> String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    func kill9() {
        guard let p = process else { return }
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
        process = nil
    }

    /// SIGTERM (or `signal`); returns (exit status, seconds taken).
    func terminate(signal: Int32 = SIGTERM) -> (Int32, Double) {
        guard let p = process else { return (-1, 0) }
        let t0 = Date()
        kill(p.processIdentifier, signal)
        p.waitUntilExit()
        process = nil
        return (p.terminationStatus, Date().timeIntervalSince(t0))
    }

    deinit {
        if let p = process, p.isRunning {
            kill(p.processIdentifier, SIGKILL)
            p.waitUntilExit()
        }
        try? FileManager.default.removeItem(atPath: dir)
    }

    // MARK: API helpers

    func post(_ path: String, _ body: [String: Any]? = nil) throws -> (Int, [String: Any]) {
        let data = try body.map { try [UInt8](JSONSerialization.data(withJSONObject: $0)) }
        let r = try client.request("POST", path, json: data)
        return (r.status, (try? JSONSerialization.jsonObject(with: Data(r.body)) as? [String: Any]) ?? [:])
    }

    func get(_ path: String) throws -> (Int, [String: Any]) {
        let r = try client.request("GET", path)
        return (r.status, (try? JSONSerialization.jsonObject(with: Data(r.body)) as? [String: Any]) ?? [:])
    }

    func createRun(_ yaml: String, overrides: [String] = []) throws -> String {
        let (status, body) = try post("/v1/runs", ["spec_yaml": yaml, "overrides": overrides])
        XCTAssertEqual(status, 201, "\(body)")
        return body["id"] as! String
    }

    func state(_ id: String) throws -> String { try get("/v1/runs/\(id)").1["state"] as? String ?? "?" }

    /// The steps run `id` has taken and the seconds inside them, from its step-duration histogram.
    func stepClock(_ id: String) throws -> (count: Int, sum: Double) {
        let p = try get("/v1/runs/\(id)").1["progress"] as? [String: Any] ?? [:]
        return ((p["step_duration_buckets"] as? [Int])?.last ?? 0, p["step_duration_sum"] as? Double ?? 0)
    }

    @discardableResult
    func waitFor(_ id: String, states: Set<String>, timeout: Double = 120) throws -> [String: Any] {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            let (_, r) = try get("/v1/runs/\(id)")
            if let s = r["state"] as? String, states.contains(s) { return r }
            usleep(50_000)
        }
        XCTFail("run \(id) did not reach \(states); now \(try state(id)); log:\n\(log().suffix(3000))")
        return [:]
    }

    /// Trains `spec` to completion without interruption: the reference an interrupted run must match bit for bit.
    func referenceParameters(_ spec: String) throws -> [Float] {
        let ref = try createRun(spec)
        try waitFor(ref, states: ["completed"])
        return try parameters(ref)
    }

    /// The run's final parameters, from its exported safetensors.
    func parameters(_ id: String) throws -> [Float] { try exported(id).parameters }

    /// The run's exported safetensors (its latest checkpoint), decoded.
    func exported(_ id: String) throws -> Checkpoint {
        let r = try client.request("GET", "/v1/runs/\(id)/export?format=safetensors")
        XCTAssertEqual(r.status, 200, r.text)
        return try Checkpoint.decode(r.body, path: id)
    }

    /// Writes `spec` to `<name>.yaml` in the daemon's directory and runs it with
    /// `nnctl start --wait`, which must succeed; returns nnctl's output.
    func startAndWait(_ spec: String, name: String) throws -> String {
        let path = "\(dir)/\(name).yaml"
        try spec.write(toFile: path, atomically: true, encoding: .utf8)
        let (code, out, err) = try nnctl(["start", path, "--wait", "--socket", socket])
        XCTAssertEqual(code, 0, out + err)
        return out
    }
}

/// Runs `nnctl` and returns (exit code, stdout, stderr).
func nnctl(_ args: [String], env: [String: String] = [:]) throws -> (Int32, String, String) {
    try runBuilt("nnctl", args, env: env)
}

/// Runs a built executable (`nnd`, `nnctl`) with extra environment; (exit code, stdout,
/// stderr). Killed after `timeout` seconds.
func runBuilt(_ tool: String, _ args: [String], env: [String: String] = [:], timeout: Double = 300) throws -> (
    Int32, String, String
) {
    try runProgram("\(binDir)/\(tool)", args, env: env, timeout: timeout)
}

/// Runs any program (`/usr/bin/env` finds one on PATH); (exit code, stdout, stderr).
func runProgram(_ path: String, _ args: [String], env: [String: String] = [:], timeout: Double = 300) throws -> (
    Int32, String, String
) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: path)
    p.arguments = args
    var e = ProcessInfo.processInfo.environment
    for (k, v) in env { e[k] = v }
    p.environment = e
    let out = Pipe()
    let err = Pipe()
    p.standardOutput = out
    p.standardError = err
    try p.run()
    let watchdog = DispatchWorkItem { if p.isRunning { kill(p.processIdentifier, SIGKILL) } }
    DispatchQueue.global().asyncAfter(deadline: .now() + timeout, execute: watchdog)
    let o = out.fileHandleForReading.readDataToEndOfFile()
    let r = err.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    watchdog.cancel()
    return (p.terminationStatus, String(decoding: o, as: UTF8.self), String(decoding: r, as: UTF8.self))
}

/// A gzip file's bytes (the MNIST files), read with the project's own inflater.
func gunzip(_ path: String) throws -> [UInt8] {
    try Inflate.decompress([UInt8](try Data(contentsOf: URL(fileURLWithPath: path))), format: .gzip)
}

/// A small real-MNIST spec: long enough to interrupt, short enough for CI.
func smallSpec(
    name: String, trainLimit: Int = 3000, epochs: Int = 3, batch: Int = 32, everySteps: Int = 20,
    optimizer: String = "momentum",
    layers: String = "[784, 64, 32, 10]"
) -> String {
    """
    name: \(name)
    model: {layers: \(layers), activation: relu, init: he}
    training: {mode: minibatch, batch_size: \(batch), epochs: \(epochs), learning_rate: 0.02, lambda: 0.01, optimizer: \(optimizer), seed: 7}
    data: {train_limit: \(trainLimit), test_limit: 1000}
    checkpoint: {every_steps: \(everySteps), every_seconds: 0, keep: 3}
    """
}

/// A run that lasts long enough for kills and signals to land in the middle of it: 2,500 steps
/// of 8 records an epoch, ~0.2 s an epoch on 2 AMD Zen 3 cores. Tests that only wait for a
/// moment in the middle (a signal, a second daemon) take 6 epochs: 3 were once over before a
/// SIGHUP sent 0.8 s into the run. Tests that checkpoint often keep 3 (each write is a file).
func longSpec(name: String, everySteps: Int, epochs: Int = 3) -> String {
    smallSpec(
        name: name, trainLimit: 20000, epochs: epochs, batch: 8, everySteps: everySteps,
        layers: "[784, 200, 100, 50, 10]")
}
