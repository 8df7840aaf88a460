import Foundation
import XCTest

final class RetrainTests: XCTestCase {
    /// Nightly retraining through nnctl: the first model is promoted, a worse one is stored but
    /// not promoted, and promote/rollback move the `current` pointer by hand.
    func testRetrainPromotionGateAndManualPromoteRollback() throws {
        let d = DaemonProcess()
        try d.start()
        let env = ["NND_SOCKET": d.socket]
        let spec = "\(d.dir)/nightly.yaml"
        try (smallSpec(name: "nightly", trainLimit: 2000, epochs: 2) + "\npromotion: {model: digits, margin: 0.5}\n")
            .write(toFile: spec, atomically: true, encoding: .utf8)

        let (c1, o1, e1) = try nnctl(["retrain", spec], env: env)
        XCTAssertEqual(c1, 0, o1 + e1)
        XCTAssertTrue(o1.contains("promoted digits version") && o1.contains("first model"), o1)

        // A run that cannot learn in one tiny epoch: stored, not promoted.
        let (c2, o2, e2) = try nnctl(
            ["retrain", spec, "--set", "training.learning_rate=0.000001", "--set", "training.epochs=1"], env: env)
        XCTAssertEqual(c2, 0, o2 + e2)
        XCTAssertTrue(o2.contains("kept current digits version"), o2)

        let (mc, models, _) = try nnctl(["models", "--json"], env: env)
        XCTAssertEqual(mc, 0)
        let list =
            (try JSONSerialization.jsonObject(with: Data(models.utf8)) as! [String: Any])["models"] as! [[String: Any]]
        let digits = try XCTUnwrap(list.first { $0["name"] as? String == "digits" })
        let versions = (digits["versions"] as! [[String: Any]]).map { $0["version"] as! String }
        XCTAssertEqual(versions.count, 2)
        XCTAssertEqual(digits["current"] as? String, versions[0])
        let current = try String(contentsOfFile: "\(d.stateDir)/models/digits/current/info.json", encoding: .utf8)
        XCTAssertTrue(current.contains(versions[0]))

        XCTAssertEqual(try nnctl(["promote", "digits", versions[1]], env: env).0, 0)
        XCTAssertEqual(
            try FileManager.default.destinationOfSymbolicLink(atPath: "\(d.stateDir)/models/digits/current"),
            versions[1])
        let (rc, ro, _) = try nnctl(["rollback", "digits"], env: env)
        XCTAssertEqual(rc, 0)
        XCTAssertTrue(ro.contains(versions[0]), ro)
        XCTAssertEqual(try nnctl(["rollback", "digits"], env: env).0, 1)  // nothing earlier
        XCTAssertEqual(try nnctl(["promote", "digits", "no-such-version"], env: env).0, 1)

        // Warm start from the current model; the outcome is in the run's record and status.
        let (c3, o3, e3) = try nnctl(
            ["retrain", spec, "--warm-start", "--set", "training.epochs=1", "--json"], env: env)
        XCTAssertEqual(c3, 0, o3 + e3)
        let (_, runs) = try d.get("/v1/runs")
        let last = try XCTUnwrap((runs["runs"] as! [[String: Any]]).last)
        let record = try d.get("/v1/runs/\(last["id"] as! String)").1
        XCTAssertTrue(
            ((record["notes"] as? [String]) ?? []).contains { $0.contains("warm start from model digits") },
            "\(record["notes"] ?? "")")
        XCTAssertNotNil(record["promotion"] as? [String: Any])
    }
}
