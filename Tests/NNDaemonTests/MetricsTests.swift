import Foundation
import NNNumerics
import XCTest

final class MetricsTests: XCTestCase {
    /// GET /metrics on the control socket and on the optional TCP listener, checked by promtool.
    func testMetricsExpositionPassesPromtool() throws {
        let port = Int.random(in: 20000...40000)
        let d = DaemonProcess()
        try d.start(args: ["--metrics-listen", "127.0.0.1:\(port)"])
        let run = try d.createRun(longSpec(name: "metered", everySteps: 100))
        try d.waitFor(run, states: ["running"])
        // The step histogram appears with the first step event (0.2 s of steps after the data
        // is loaded and indexed); poll for it rather than guess how long loading takes here.
        var during = try d.client.request("GET", "/metrics")
        let deadline = Date().addingTimeInterval(60)
        while !during.text.contains("nnd_step_duration_seconds_count{run=\"\(run)\"") && Date() < deadline {
            usleep(100_000)
            during = try d.client.request("GET", "/metrics")
        }
        XCTAssertEqual(during.status, 200)
        XCTAssertTrue(during.headers["content-type"]?.hasPrefix("text/plain; version=0.0.4") == true)
        XCTAssertTrue(during.text.contains("nnd_run_running{run=\"\(run)\",name=\"metered\"} 1"), during.text)
        XCTAssertTrue(during.text.contains("nnd_step_duration_seconds_count{run=\"\(run)\""), during.text)
        XCTAssertEqual(try d.post("/v1/runs/\(run)/stop").0, 200)
        try d.waitFor(run, states: ["stopped"])
        let after = try d.client.request("GET", "/metrics").text
        for needle in [
            "nnd_runs{state=\"stopped\"} 1", "nnd_run_epoch{run=\"\(run)\"", "nnd_run_samples_per_second{",
            "nnd_checkpoint_write_seconds_count",
            "nnd_checkpoints_written_total", "nnd_blas_info{kernel=", "nnd_workers 2", "nnd_uptime_seconds",
            "nnd_build_info{version=",
        ] {
            XCTAssertTrue(after.contains(needle), "missing \(needle) in:\n\(after)")
        }
        // The kernel nnd would choose beside the one in use, so that an alert can compare them.
        let best = BLASKernelSelector.bestKernelForThisCPU
        let blasInfo = after.split(separator: "\n").first { $0.hasPrefix("nnd_blas_info{") }
        XCTAssertTrue(blasInfo?.contains(",best_for_cpu=\"\(best)\"} 1") == true, "\(blasInfo ?? "no nnd_blas_info")")
        for text in [during.text, after] {
            let (status, message) = try promtool(["check", "metrics"], input: text)
            XCTAssertEqual(status, 0, "promtool: \(message)")
        }
        // The TCP listener serves /metrics and nothing else.
        let tcp = try String(contentsOf: URL(string: "http://127.0.0.1:\(port)/metrics")!, encoding: .utf8)
        XCTAssertTrue(tcp.contains("nnd_runs{state=\"stopped\"}"))
        XCTAssertThrowsError(try String(contentsOf: URL(string: "http://127.0.0.1:\(port)/v1/runs")!, encoding: .utf8))
    }
}
