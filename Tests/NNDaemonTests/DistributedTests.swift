import Foundation
import NNCheckpoint
import XCTest

/// `nnd train` as the ranks of an Open MPI job on loopback (`mpirun -np 2`): the gradient
/// summed across processes gives the network a single process with as many workers trains.
final class DistributedTests: XCTestCase {
    /// mpirun, as root too (CI runs as root); ranks may share this machine's cores.
    static func mpirun(_ ranks: Int, _ args: [String]) throws -> (Int32, String, String) {
        var launcher = ["-np", "\(ranks)", "--oversubscribe"]
        if getuid() == 0 { launcher.insert("--allow-run-as-root", at: 0) }
        return try runProgram("/usr/bin/env", ["mpirun"] + launcher + ["\(binDir)/nnd"] + args, timeout: 120)
    }

    override func setUpWithError() throws {
        let (code, _, _) = try runProgram("/usr/bin/env", ["sh", "-c", "command -v mpirun"])
        // Not a skip in CI: .ci/run installs Open MPI, and a missing mpirun must fail there.
        if code != 0 && ProcessInfo.processInfo.environment["CI"] == nil {
            throw XCTSkip("mpirun not installed (apt install openmpi-bin libopenmpi-dev)")
        }
    }

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

    /// The exactness test: 2 ranks × 1 worker against 1 process × 2 workers on the same
    /// global batch — parameters to 1e-5 after an epoch, for the seed's SGD, momentum in
    /// stochastic mode (a step of one record: one rank has none) and Adam in batch mode (steps
    /// larger than the buffers, in chunks).
    func testTwoRanksTrainTheNetworkOneProcessWithTwoWorkersTrains() throws {
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let recipes: [(String, [String])] = [
            ("seed-sgd", ["--json"]),
            (
                "stochastic-momentum",
                [
                    "--json", "--set", "training.mode=stochastic", "--set", "training.optimizer=momentum",
                    "--set", "training.learning_rate=0.01", "--set", "data.train_limit=600",
                ]
            ),
            (
                "batch-adam",
                [
                    "--json", "--set", "training.mode=batch", "--set", "training.optimizer=adam",
                    "--set", "training.learning_rate=0.001",
                ]
            ),
        ]
        for (name, extra) in recipes {
            let (c1, out1, err1) = try runBuilt("nnd", trainArgs("\(name)-1x2", workers: 2, extra: extra))
            XCTAssertEqual(c1, 0, err1)
            let (c2, out2, err2) = try Self.mpirun(2, trainArgs("\(name)-2x1", workers: 1, extra: extra))
            XCTAssertEqual(c2, 0, "\(name): \(err2)")
            let one = try resultLine(out1)
            let two = try resultLine(out2)
            XCTAssertEqual(two["ranks"] as? Int, 2, "\(name): \(out2)")
            XCTAssertEqual(one["ranks"] as? Int, 1)
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
