import Foundation
import NNAPI
import NNCheckpoint
import XCTest

final class DiskFullTests: XCTestCase {
    /// State dir on a 3 MiB tmpfs: when checkpoints no longer fit, the run fails with "no space"
    /// in its status, the last good checkpoint stays intact, the daemon keeps serving, and after
    /// space is freed the run resumes and completes.
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
        // Free space, resume: it completes from the last good checkpoint.
        XCTAssertEqual(sh(["mount", "-o", "remount,size=64m", d.stateDir]), 0)
        XCTAssertEqual(try d.post("/v1/runs/\(run)/resume").0, 200)
        let done = try d.waitFor(run, states: ["completed", "failed"])
        XCTAssertEqual(done["state"] as? String, "completed", "\(done["reason"] ?? "")")
    }
}
