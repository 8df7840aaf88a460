import Foundation
import NNControl
import XCTest

/// Load on the control API. Durations and client counts come from the environment so CI runs a
/// short version (`NND_LOAD_SECONDS`, default 8; the README reports the 60 s run).
final class LoadTests: XCTestCase {
    func rssKiB(_ pid: Int32) -> Int {
        let status = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
        let line = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") } ?? ""
        return Int(line.split(separator: " ").dropFirst().first ?? "") ?? 0
    }

    /// 50 clients poll status and stream progress while a run trains: no failed request; p99
    /// status latency and the run's throughput (against the same run unobserved) are printed.
    func testFiftyClientsWhileTraining() throws {
        let seconds = Double(ProcessInfo.processInfo.environment["NND_LOAD_SECONDS"] ?? "") ?? 8
        let clients = Int(ProcessInfo.processInfo.environment["NND_LOAD_CLIENTS"] ?? "") ?? 50
        let d = DaemonProcess()
        try d.start()
        let spec = smallSpec(name: "loaded", trainLimit: 60000, epochs: 50, batch: 64, everySteps: 0, optimizer: "sgd", layers: "[784, 200, 100, 50, 10]")
        // Unobserved reference throughput first.
        let quiet = try d.createRun(spec)
        try d.waitFor(quiet, states: ["running"])
        usleep(UInt32(min(seconds, 6) * 1_000_000))
        let quietRate = try d.get("/v1/runs/\(quiet)").1["progress"].flatMap { ($0 as? [String: Any])?["samples_per_second"] as? Double } ?? 0
        XCTAssertEqual(try d.post("/v1/runs/\(quiet)/stop").0, 200)
        try d.waitFor(quiet, states: ["stopped"])

        let run = try d.createRun(spec, overrides: ["name=loaded2"])
        try d.waitFor(run, states: ["running"])
        final class Tally: @unchecked Sendable { // guarded by lock
            let lock = NSLock(); var ok = 0; var failed = 0; var latencies: [Double] = []; var lines = 0
        }
        let tally = Tally()
        let deadline = Date().addingTimeInterval(seconds)
        let client = d.client
        // One thread per client (concurrentPerform would run only as many as there are cores).
        let group = DispatchGroup()
        for i in 0..<clients {
            group.enter()
            if i % 5 == 0 { // every fifth client streams events until the deadline
                let t = Thread {
                    _ = try? client.stream("/v1/runs/\(run)/events") { _ in
                        tally.lock.withLock { tally.lines += 1 }
                        if Date() > deadline { throw CancellationError() }
                    }
                }
                t.start()
            }
            let poller = Thread {
                while Date() < deadline {
                    let t0 = Date()
                    let ok = (try? client.request("GET", "/v1/runs/\(run)"))?.status == 200
                    let dt = Date().timeIntervalSince(t0)
                    tally.lock.withLock { if ok { tally.ok += 1; tally.latencies.append(dt) } else { tally.failed += 1 } }
                    usleep(100_000)
                }
                group.leave()
            }
            poller.start()
        }
        group.wait()
        let loadedRate = try d.get("/v1/runs/\(run)").1["progress"].flatMap { ($0 as? [String: Any])?["samples_per_second"] as? Double } ?? 0
        let sorted = tally.lock.withLock { tally.latencies.sorted() }
        let p99 = sorted.isEmpty ? 0 : sorted[min(sorted.count - 1, Int(Double(sorted.count) * 0.99))]
        let p50 = sorted.isEmpty ? 0 : sorted[sorted.count / 2]
        XCTAssertEqual(tally.failed, 0)
        XCTAssertGreaterThan(tally.ok, clients)
        print(String(format: "load test: %d clients for %.0f s: %d status requests ok, %d failed, %d event lines; status latency p50 %.1f ms, p99 %.1f ms; training %.0f samples/s unobserved vs %.0f under load (%+.1f%%)",
                     clients, seconds, tally.ok, tally.failed, tally.lines, p50 * 1000, p99 * 1000, quietRate, loadedRate, (loadedRate / max(quietRate, 1) - 1) * 100))
        _ = try d.post("/v1/runs/\(run)/stop")
    }

    /// 1,000 runs created and listed (all but one queued, then stopped): memory and response
    /// times stay flat.
    func testThousandRunsStayFlat() throws {
        let total = Int(ProcessInfo.processInfo.environment["NND_MANY_RUNS"] ?? "") ?? 1000
        let d = DaemonProcess()
        try d.start()
        let pid = d.process!.processIdentifier
        let spec = smallSpec(name: "many", trainLimit: 60000, epochs: 50, everySteps: 0)
        var samples: [(Int, Double, Double, Int)] = [] // runs, create ms, list ms, RSS KiB
        for i in 1...total {
            let t0 = Date()
            let id = try d.createRun(spec)
            let createMs = Date().timeIntervalSince(t0) * 1000
            if i > 1 { XCTAssertEqual(try d.post("/v1/runs/\(id)/stop").0, 200) } // queued → stopped at once
            if i == 1 || i % (total / 4) == 0 {
                let t1 = Date()
                let (status, list) = try d.get("/v1/runs")
                XCTAssertEqual(status, 200); XCTAssertEqual((list["runs"] as? [Any])?.count, i)
                samples.append((i, createMs, Date().timeIntervalSince(t1) * 1000, rssKiB(pid)))
            }
        }
        for s in samples { print(String(format: "many runs: %4d runs: create %.1f ms, list %.1f ms, RSS %d MiB", s.0, s.1, s.2, s.3 / 1024)) }
        let first = samples.first!, last = samples.last!
        XCTAssertLessThan(last.3 - first.3, 300 * 1024, "RSS grew by more than 300 MiB over \(total) runs")
        XCTAssertLessThan(last.2, 2000, "listing \(total) runs took \(last.2) ms")
        XCTAssertEqual(try d.get("/v1/health").0, 200)
    }
}
