import Foundation
import NNAPI
import NNCheckpoint
import XCTest

final class DiskFullTests: XCTestCase {
    /// State dir on a 3 MiB tmpfs: when checkpoints no longer fit, the run fails with "no space"
    /// in its status, the last good checkpoint stays intact, the daemon keeps serving, and after
    /// space is freed the run resumes and completes. The file system's room is in /metrics and
    /// `nnctl status` (human and --json), and the shipped NndStateDiskLow alert fires on the full
    /// file system's figures, not on the enlarged one's. While it is full, a new run and the
    /// resume are refused (507 insufficient_storage) instead of failing at their first checkpoint.
    func testDiskFullFailsRunKeepsLastCheckpointAndResumesAfterSpaceIsFreed() throws {
        let d = DaemonProcess()
        try FileManager.default.createDirectory(atPath: d.stateDir, withIntermediateDirectories: true)
        func sh(_ args: [String]) -> Int32 {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            p.arguments = args
            p.standardError = FileHandle.nullDevice
            do { try p.run() } catch { return -1 }
            p.waitUntilExit()
            return p.terminationStatus
        }
        guard getuid() == 0, sh(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", d.stateDir]) == 0 else {
            throw XCTSkip("needs root and tmpfs mounts")
        }
        defer {
            d.kill9()
            _ = sh(["umount", "-l", d.stateDir])
        }
        try d.start()
        // The file system's room, as /metrics, nnctl status and its --json show it.
        func gauge(_ name: String) throws -> Double? {
            try d.client.request("GET", "/metrics").text.split(separator: "\n")
                .first { $0.hasPrefix(name + " ") }.flatMap { $0.split(separator: " ").last.flatMap { Double($0) } }
        }
        XCTAssertEqual(try gauge("nnd_state_filesystem_size_bytes"), 3 * 1024 * 1024)
        XCTAssertGreaterThan(try gauge("nnd_state_filesystem_available_bytes") ?? 0, 2 * 1024 * 1024)
        let (statusCode, status, _) = try nnctl(["status", "--socket", d.socket])
        XCTAssertEqual(statusCode, 0)
        XCTAssertTrue(status.contains("; its file system "), status)
        XCTAssertTrue(status.contains(" free of 3.0 MiB ("), status)
        XCTAssertFalse(status.contains(": low"), status)
        let (_, statusJSON, _) = try nnctl(["status", "--socket", d.socket, "--json"])
        let health = try APIJSON.decoder.decode(Health.self, from: Data(statusJSON.utf8))
        XCTAssertEqual(health.stateFilesystemSizeBytes, 3 * 1024 * 1024)
        let spec = smallSpec(
            name: "full", trainLimit: 8000, epochs: 2, batch: 16, everySteps: 40, optimizer: "sgd",
            layers: "[784, 200, 100, 50, 10]"
        ).replacingOccurrences(of: "keep: 3", with: "keep: 6")
        let run = try d.createRun(spec)
        let failed = try d.waitFor(run, states: ["failed", "completed"])
        XCTAssertEqual(failed["state"] as? String, "failed")
        XCTAssertTrue(
            (failed["reason"] as? String ?? "").contains("no space left on device"), "\(failed["reason"] ?? "")")
        XCTAssertEqual(try d.get("/v1/health").0, 200)
        let store = CheckpointStore(directory: "\(d.stateDir)/runs/\(run)/checkpoints", keep: 6)
        let last = store.loadLatestValid()
        XCTAssertNotNil(last.checkpoint, "no loadable checkpoint left")
        XCTAssertTrue(last.skipped.isEmpty, "\(last.skipped)")
        XCTAssertTrue(last.checkpoint!.allFinite)
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: "\(d.stateDir)/runs/\(run)/checkpoints")
            .filter { $0.hasPrefix(".tmp-") }
        XCTAssertEqual(leftovers, [])
        // Full: nnctl status says so, and the shipped NndStateDiskLow rule fires on what /metrics
        // shows now, and not on what it shows once the file system is larger (below).
        let fullAvailable = try XCTUnwrap(try gauge("nnd_state_filesystem_available_bytes"))
        XCTAssertLessThan(fullAvailable, 0.1 * 3 * 1024 * 1024)
        let full = try nnctl(["status", "--socket", d.socket]).1
        XCTAssertTrue(full.contains(": low, checkpoints that no longer fit fail their runs"), full)
        // Still full: a new run, and the failed one's resume, are refused at once, with both figures.
        let (refusedStatus, refused) = try d.post("/v1/runs", ["spec_yaml": spec])
        XCTAssertEqual(refusedStatus, 507, "\(refused)")
        let error = refused["error"] as? [String: Any] ?? [:]
        XCTAssertEqual(error["code"] as? String, "insufficient_storage", "\(refused)")
        XCTAssertTrue(
            (error["message"] as? String ?? "").hasPrefix(
                "this run's checkpoints take 714 KiB each, written beside the previous one (1 MiB needed); "
                    + "the state directory's file system (\(d.stateDir)) has "), "\(refused)")
        let (resumeCode, _, resumeError) = try nnctl(["resume", run, "--socket", d.socket])
        XCTAssertEqual(resumeCode, 1, resumeError)
        XCTAssertTrue(resumeError.contains("run \(run)'s checkpoints take 714 KiB each"), resumeError)
        XCTAssertEqual(try d.state(run), "failed")
        // Free space, resume: it completes from the last good checkpoint.
        XCTAssertEqual(sh(["mount", "-o", "remount,size=64m", d.stateDir]), 0)
        XCTAssertEqual(try d.post("/v1/runs/\(run)/resume").0, 200)
        let done = try d.waitFor(run, states: ["completed", "failed"])
        XCTAssertEqual(done["state"] as? String, "completed", "\(done["reason"] ?? "")")
        let roomyAvailable = try XCTUnwrap(try gauge("nnd_state_filesystem_available_bytes"))
        let roomySize = try XCTUnwrap(try gauge("nnd_state_filesystem_size_bytes"))
        XCTAssertEqual(roomySize, 64 * 1024 * 1024)
        let (code, output) = try testShippedAlert(
            "NndStateDiskLow",
            series: [
                ("nnd_state_filesystem_available_bytes{instance=\"full\"}", "\(Int(fullAvailable))"),
                ("nnd_state_filesystem_size_bytes{instance=\"full\"}", "\(3 * 1024 * 1024)"),
                ("nnd_state_filesystem_available_bytes{instance=\"roomy\"}", "\(Int(roomyAvailable))"),
                ("nnd_state_filesystem_size_bytes{instance=\"roomy\"}", "\(Int(roomySize))"),
            ],
            expected: """
                - exp_labels: {severity: warning, instance: full}
                  exp_annotations:
                    summary: "nnd's state directory file system is over 90 % full"
                    description: "A checkpoint that no longer fits fails its run (no space left on device; \
                nnctl resume continues it from the last good checkpoint once there is room). nnctl status shows \
                what the state directory holds; nnctl rm old runs, or lower keep_finished_runs_days or \
                keep_model_versions in /etc/nnd/nnd.yaml."
                """, dir: d.dir)
        XCTAssertEqual(code, 0, output)
    }
}
