import Foundation
import NNAPI
import NNCheckpoint
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
        let (nc, _, nothingEarlier) = try nnctl(["rollback", "digits"], env: env)
        XCTAssertEqual(nc, 1)
        XCTAssertTrue(nothingEarlier.contains("model digits has no earlier version to roll back to"), nothingEarlier)
        let (vc, _, noVersion) = try nnctl(["promote", "digits", "no-such-version"], env: env)
        XCTAssertEqual(vc, 1)
        XCTAssertTrue(noVersion.contains("model digits has no version no-such-version"), noVersion)
        // A misspelt model is named as such, not as a model without that version or history.
        for command in [["promote", "digts", versions[0]], ["rollback", "digts"]] {
            let (code, _, err) = try nnctl(command, env: env)
            XCTAssertEqual(code, 1)
            XCTAssertTrue(err.contains("no model named digts (GET /v1/models lists them) (HTTP 404 not_found)"), err)
        }

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

extension RetrainTests {
    /// Tomorrow's model has seen today's data: a shard added to the data directory is in the next
    /// warm-started retrain, and what each run trained on (records, fingerprint) is in its status,
    /// its checkpoint, its model version, `nnctl models` and the report.
    func testWarmStartRetrainTakesInANewShard() throws {
        let d = DaemonProcess()
        try d.start()
        let env = ["NND_SOCKET": d.socket]
        // The data directory: 2,000 training records as IDX, the test files as they are.
        let data = "\(d.dir)/data"
        try FileManager.default.createDirectory(atPath: data, withIntermediateDirectories: true)
        for name in ["t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"] {
            try FileManager.default.createSymbolicLink(
                atPath: "\(data)/\(name).gz", withDestinationPath: "\(sharedMNIST)/\(name).gz")
        }
        func idx(_ magic: UInt32, _ dims: [Int], _ body: ArraySlice<UInt8>) -> Data {
            Data(
                ([Int(magic)] + dims).flatMap { v in (0..<4).map { UInt8(truncatingIfNeeded: v >> (24 - 8 * $0)) } }
                    + body)
        }
        let trainImages = try gunzip("\(sharedMNIST)/train-images-idx3-ubyte.gz").dropFirst(16)
        let trainLabels = try gunzip("\(sharedMNIST)/train-labels-idx1-ubyte.gz").dropFirst(8)
        try idx(0x0803, [2000, 28, 28], trainImages.prefix(2000 * 784)).write(
            to: URL(fileURLWithPath: "\(data)/train-images-idx3-ubyte"))
        try idx(0x0801, [2000], trainLabels.prefix(2000)).write(
            to: URL(fileURLWithPath: "\(data)/train-labels-idx1-ubyte"))

        let spec = "\(d.dir)/grow.yaml"
        try
            (smallSpec(name: "grow", epochs: 1)
            .replacingOccurrences(
                of: "data: {train_limit: 3000, test_limit: 1000}", with: "data: {dir: \(data), test_limit: 1000}")
            + "\npromotion: {model: grow, margin: 100}\n")
            .write(toFile: spec, atomically: true, encoding: .utf8)
        XCTAssertEqual(try nnctl(["retrain", spec], env: env).0, 0)

        // Tonight's shard: 1,000 more records, named like a nightly export.
        let shardImages = trainImages.dropFirst(2000 * 784).prefix(1000 * 784)
        try idx(0x0803, [1000, 28, 28], shardImages).write(
            to: URL(fileURLWithPath: "\(data)/train-2026-11-30-images-idx3-ubyte"))
        try idx(0x0801, [1000], trainLabels.dropFirst(2000).prefix(1000)).write(
            to: URL(fileURLWithPath: "\(data)/train-2026-11-30-labels-idx1-ubyte"))
        // Evaluating last night's run on its training data reads the files it trained on, not
        // the shard that landed since.
        let trained = try APIJSON.decoder.decode(RunList.self, from: Data(try d.client.request("GET", "/v1/runs").body))
        let lastNight = try XCTUnwrap(trained.runs.first?.id)
        let (ec, eout, eerr) = try nnctl(["eval", lastNight, "--data", "train"], env: env)
        XCTAssertEqual(ec, 0, eout + eerr)
        XCTAssertTrue(eout.hasPrefix("\(lastNight): train accuracy "), eout)
        XCTAssertTrue(eout.contains("(2000 records, cost "), eout)
        let (_, ejson, _) = try nnctl(["eval", lastNight, "--data", "train", "--json"], env: env)
        XCTAssertEqual(try APIJSON.decoder.decode(Evaluation.self, from: Data(ejson.utf8)).records, 2000, ejson)
        let (rc, rout, rerr) = try nnctl(["retrain", spec, "--warm-start"], env: env)
        XCTAssertEqual(rc, 0, rout + rerr)

        let runs = try APIJSON.decoder.decode(RunList.self, from: Data(try d.client.request("GET", "/v1/runs").body))
        XCTAssertEqual(runs.runs.count, 2)
        var records: [RunRecord] = []
        for run in runs.runs {
            records.append(
                try APIJSON.decoder.decode(
                    RunRecord.self, from: Data(try d.client.request("GET", "/v1/runs/\(run.id)").body)))
        }
        let (first, second) = (records[0], records[1])
        XCTAssertEqual(first.trainRecords, 2000)
        XCTAssertEqual(second.trainRecords, 3000)
        let fingerprint = try XCTUnwrap(second.dataFingerprint)
        XCTAssertNotEqual(first.dataFingerprint, fingerprint, "a new shard is new data")
        XCTAssertTrue(second.notes.contains { $0.contains("warm start from model grow version") }, "\(second.notes)")

        // The checkpoint carries it too (so a report or an export without the run record knows).
        let checkpointPath = try XCTUnwrap(second.lastCheckpoint)
        let checkpoint = try Checkpoint.decode(
            [UInt8](try Data(contentsOf: URL(fileURLWithPath: checkpointPath))), path: checkpointPath)
        XCTAssertEqual(checkpoint.state.trainRecords, 3000)
        XCTAssertEqual(checkpoint.state.dataFingerprint, fingerprint)

        // The model versions, through nnctl, as JSON and as the table.
        let (mc, mout, _) = try nnctl(["models", "--json"], env: env)
        XCTAssertEqual(mc, 0)
        let versions = try XCTUnwrap(
            try APIJSON.decoder.decode(ModelList.self, from: Data(mout.utf8)).models.first { $0.name == "grow" }
        ).versions
        XCTAssertEqual(versions.map(\.trainRecords), [2000, 3000])
        XCTAssertEqual(versions.last?.dataFingerprint, fingerprint)
        let (_, table, _) = try nnctl(["models"], env: env)
        XCTAssertTrue(table.contains("3000") && table.contains(String(fingerprint.prefix(12))), table)

        // And the report.
        let report = "\(d.dir)/grow.html"
        XCTAssertEqual(try nnctl(["report", second.id, "-o", report], env: env).0, 0)
        let html = try String(contentsOfFile: report, encoding: .utf8)
        XCTAssertTrue(
            html.contains("3000 training records, fingerprint \(fingerprint)"), "data row missing from the report")
    }
}

extension RetrainTests {
    /// Versions are listed oldest first by when they were made, also when two are stored within
    /// one second and their names (second + run id) sort the other way (a flake CI once hit).
    func testVersionsListInTheOrderTheyWereMade() throws {
        let root = NSTemporaryDirectory() + "nnd-registry-\(UUID().uuidString.prefix(8))"
        defer { try? FileManager.default.removeItem(atPath: root) }
        let registry = ModelRegistry(root: root)
        var made: [String] = []
        for run in ["night-zzzzzzzzzzzz", "night-aaaaaaaaaaaa"] {
            made.append(
                try registry.add(
                    model: "m", run: run, checkpointBytes: [0], testAccuracy: 90, trainAccuracy: 91, layers: [2, 2],
                    activation: .relu
                ).version)
        }
        XCTAssertEqual(registry.list().first?.versions.map(\.version), made)
    }
}
