import Foundation
import NNAPI
import XCTest

@testable import NNCheckpoint
@testable import NNData
@testable import NNEngine
@testable import NNNumerics
@testable import NNTraining

let repoRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().path
let sharedMNIST = URL(fileURLWithPath: repoRoot + "/../shared/datasets/mnist").standardized.path

/// Proceeds `calls` times, then pauses. The trainer asks between engine calls, each of up to
/// `Trainer.stepsPerCall` steps, ending at epoch ends.
final class PauseAfter: TrainingControl, @unchecked Sendable {  // used from the one training thread only
    var remaining: Int
    init(_ calls: Int) { remaining = calls }
    func decision() -> ControlDecision {
        remaining -= 1
        return remaining < 0 ? .pause : .proceed
    }
}

final class TrainingTests: XCTestCase {
    override class func setUp() { BLAS.useSingleThread() }

    func expectSpecError(_ yaml: String, field: String, contains: String, overrides: [String] = [], line: UInt = #line)
    {
        XCTAssertThrowsError(try RunSpec.parse(yaml, overrides: overrides), line: line) { e in
            guard let s = e as? SpecError else { return XCTFail("\(e)", line: line) }
            XCTAssertEqual(s.field, field, "\(s)", line: line)
            XCTAssertTrue(s.description.contains(contains), "'\(s)' lacks '\(contains)'", line: line)
        }
    }

    func testShippedSpecsLoadAndMatchTheSeed() throws {
        let seed = try RunSpec.load(path: repoRoot + "/etc/nnd/runs/mnist-seed.yaml")
        XCTAssertEqual(seed.model.layers, [784, 200, 100, 50, 10])
        XCTAssertEqual(seed.model.activation, .logistic)
        XCTAssertEqual(seed.training.learningRate, 0.1)
        XCTAssertEqual(seed.training.lambda, 0.01)
        XCTAssertEqual(seed.training.batchSize, 64)
        XCTAssertEqual(seed.training.epochs, 50)
        XCTAssertEqual(seed.training.optimizer, .sgd)
        let fast = try RunSpec.load(path: repoRoot + "/etc/nnd/runs/mnist-fast.yaml")
        XCTAssertNotEqual(fast.training.optimizer, .sgd)
        let retrain = try RunSpec.load(path: repoRoot + "/etc/nnd/runs/mnist-retrain.yaml")
        XCTAssertEqual(retrain.promotion?.model, "mnist")
        XCTAssertEqual(retrain.promotion?.margin, 0.1)
        XCTAssertNil(seed.promotion)
        let over = try RunSpec.load(
            path: repoRoot + "/etc/nnd/runs/mnist-seed.yaml", overrides: ["training.epochs=3", "name=x1"])
        XCTAssertEqual(over.training.epochs, 3)
        XCTAssertEqual(over.name, "x1")
    }

    func testSpecErrorsNameFieldAndValue() {
        expectSpecError("name: a\ntraining:\n  epoch: 3\n", field: "training.epoch", contains: "unknown field")
        expectSpecError("name: a\nmodle: {}\n", field: "modle", contains: "unknown field")
        expectSpecError("training:\n  epochs: -2\n", field: "training.epochs", contains: "-2")
        expectSpecError("training:\n  epochs: many\n", field: "training.epochs", contains: "'many'")
        // Numbers too large for any field are out of range, not "not a valid Double".
        expectSpecError(
            "", field: "training.learning_rate", contains: "'1e+30' is out of range",
            overrides: ["training.learning_rate=1e30"])
        expectSpecError("training:\n  epochs: 1e20\n", field: "training.epochs", contains: "'1e+20' is out of range")
        expectSpecError(
            "", field: "training.learning_rate", contains: "inf must be a positive finite number",
            overrides: ["training.learning_rate=inf"])
        expectSpecError("training:\n  learning_rate: 0\n", field: "training.learning_rate", contains: "0")
        expectSpecError("model:\n  activation: sigmoid\n", field: "model.activation", contains: "sigmoid")
        expectSpecError("model:\n  layers: [784]\n", field: "model.layers", contains: "784")
        expectSpecError("training:\n  optimizer: rmsprop\n", field: "training.optimizer", contains: "rmsprop")
        expectSpecError("name: ../../etc\n", field: "name", contains: "../../etc")
        expectSpecError("training: 5\n", field: "training", contains: "mapping")
        expectSpecError(
            "training:\n  epochs: 5\n  average_from_epoch: 6\n", field: "training.average_from_epoch",
            contains: "6 must be between 0 (off) and training.epochs (5)")
        expectSpecError(
            "training:\n  average_from_epoch: 3\n  validation: 0.1\n", field: "training.average_from_epoch",
            contains: "training.validation")
        expectSpecError("", field: "training.batch_size", contains: "0", overrides: ["training.batch_size=0"])
        expectSpecError("a: [", field: "", contains: "not valid YAML")
        expectSpecError("promotion: {model: ../x}\n", field: "promotion.model", contains: "../x")
        expectSpecError("promotion: {model: m, margin: -1}\n", field: "promotion.margin", contains: "-1")
        expectSpecError("promotion: {model: m, keep: 1}\n", field: "promotion.keep", contains: "unknown field")
        XCTAssertNoThrow(try RunSpec.parse("{\"name\": \"j\", \"training\": {\"epochs\": 2}}"))
    }

    func smallSpec(_ extra: [String]) throws -> RunSpec {
        try RunSpec.parse(
            "name: t\n",
            overrides: [
                "data.train_limit=1200", "data.test_limit=500", "training.epochs=3",
                "checkpoint.every_seconds=0",
            ] + extra)
    }

    func testShortRealMNISTRunLearns() throws {
        let spec = try smallSpec([
            "data.train_limit=4000", "data.test_limit=1000", "training.optimizer=adam", "training.learning_rate=0.002",
            "model.activation=relu", "model.init=he", "training.epochs=3",
        ])
        let data = try DataLoading.load(spec: spec, dataDirOverride: sharedMNIST)
        let trainer = try Trainer(spec: spec, train: data.train, test: data.test, workers: 2)
        var epochs: [TrainingEvent] = []
        XCTAssertEqual(try trainer.run(onEvent: { if $0.kind == .epoch { epochs.append($0) } }), .completed)
        XCTAssertEqual(epochs.count, 3)
        XCTAssertLessThan(epochs.last!.cost!, epochs.first!.cost!)
        let acc = trainer.evaluate(data.test).accuracy
        XCTAssertGreaterThan(acc, 85, "test accuracy \(acc)% after 3 epochs on 4000 records")
    }

    func testSeedRecipeLearnsOnASubset() throws {
        // The seed's own recipe (logistic, SGD, lr 0.1) is slow to start; on 6000 records it must still leave chance behind.
        let spec = try RunSpec.load(
            path: repoRoot + "/etc/nnd/runs/mnist-seed.yaml",
            overrides: [
                "data.train_limit=6000", "data.test_limit=1000", "training.epochs=6", "checkpoint.every_seconds=0",
            ])
        let data = try DataLoading.load(spec: spec, dataDirOverride: sharedMNIST)
        let trainer = try Trainer(spec: spec, train: data.train, test: data.test, workers: 2)
        _ = try trainer.run()
        XCTAssertGreaterThan(trainer.evaluate(data.test).accuracy, 40)
    }

    /// Pause at an arbitrary step, checkpoint to bytes, resume in a new trainer: bitwise equal to an uninterrupted run.
    /// Validation records are held out with the run's seed (disjoint, complete, the same every
    /// time); early stopping ends the run when the validation cost stops improving, and the run
    /// keeps the best validation epoch's weights — bitwise those of a run trained for exactly
    /// that many epochs. A resume in between changes nothing.
    func testEarlyStoppingKeepsTheBestValidationEpoch() throws {
        let (training, heldOut) = Trainer.holdOut(1000, fraction: 0.2, seed: 7)
        XCTAssertEqual(heldOut.count, 200)
        XCTAssertEqual(Set(training).union(heldOut), Set(0..<1000))
        XCTAssertTrue(Set(training).isDisjoint(with: heldOut))
        XCTAssertEqual(Trainer.holdOut(1000, fraction: 0.2, seed: 7).heldOut, heldOut)
        XCTAssertNotEqual(Trainer.holdOut(1000, fraction: 0.2, seed: 8).heldOut, heldOut)

        let overrides = [
            "data.train_limit=2000", "model.layers=[784, 64, 32, 10]", "model.activation=relu", "model.init=he",
            "training.batch_size=32", "training.learning_rate=0.05", "training.lambda=0", "training.optimizer=momentum",
            "training.seed=7", "training.validation=0.2", "training.epochs=60", "training.early_stopping_patience=3",
        ]
        let spec = try smallSpec(overrides)
        let data = try DataLoading.load(spec: spec, dataDirOverride: sharedMNIST)
        var last: Checkpoint?
        let stopped = try Trainer(spec: spec, train: data.train, test: data.test, workers: 2)
        XCTAssertEqual(stopped.validation?.count, 400)
        XCTAssertEqual(stopped.train.count, 1600)
        XCTAssertEqual(try stopped.run(checkpointSink: { c, _ in last = c }), .completed)
        let epochs = stopped.state.history.count
        let kept = try XCTUnwrap(stopped.keptEpoch)
        XCTAssertLessThan(epochs, 60, "no early stop")
        XCTAssertEqual(epochs - kept, 3, "stopped \(epochs - kept) epochs after the best, patience 3")
        XCTAssertEqual(stopped.state.bestValidationEpoch(by: .validationCost), kept)
        let costs = stopped.state.history.compactMap(\.validationCost)
        XCTAssertEqual(costs.count, epochs)
        XCTAssertEqual(costs.min(), costs[kept - 1])
        XCTAssertNotNil(stopped.earlyStop)
        // The final checkpoint (what export and promotion see) holds the kept epoch's weights.
        XCTAssertEqual(last?.parameters, stopped.engine.parameters.toArray())
        let exact = try Trainer(
            spec: try smallSpec(overrides + ["training.epochs=\(kept)", "training.early_stopping_patience=0"]),
            train: data.train, test: data.test, workers: 2)
        _ = try exact.run()
        XCTAssertEqual(stopped.engine.parameters.toArray(), exact.engine.parameters.toArray())

        // Paused after the best epoch and resumed from that checkpoint and the best one: same end.
        var saved: [Checkpoint] = []
        var best: Checkpoint?
        let first = try Trainer(spec: spec, train: data.train, test: data.test, workers: 2)
        let steps = 1600 / 32
        let callsPerEpoch = (steps + first.stepsPerCall - 1) / first.stepsPerCall
        let outcome = try first.run(
            control: PauseAfter(callsPerEpoch * (kept + 1) + 1),
            checkpointSink: { c, isBest in
                saved.append(c)
                if isBest { best = c }
            })
        XCTAssertEqual(outcome, .paused)
        XCTAssertEqual(best?.state.epoch, kept)
        let resumed = try Trainer(
            spec: spec, train: data.train, test: data.test, workers: 2, resume: saved.last, best: best)
        XCTAssertEqual(try resumed.run(), .completed)
        XCTAssertEqual(resumed.engine.parameters.toArray(), stopped.engine.parameters.toArray())

        expectSpecError(
            "name: x\n", field: "training.early_stopping_patience", contains: "needs validation records",
            overrides: ["training.early_stopping_patience=3"])
        expectSpecError(
            "name: x\n", field: "training.validation", contains: "from 0 to 0.5", overrides: ["training.validation=0.9"]
        )
    }

    /// A data directory with the MNIST files and a 5,000-record shard trains on 65,000 records;
    /// the fingerprint names the data (a shard changes it); a bad shard fails naming its file.
    func testTrainingShardsJoinTheBaseFiles() throws {
        let dir = NSTemporaryDirectory() + "nnd-shards-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        for name in MNIST.files {
            try FileManager.default.createSymbolicLink(
                atPath: "\(dir)/\(name).gz", withDestinationPath: "\(sharedMNIST)/\(name).gz")
        }
        let spec = try RunSpec.parse("name: shards\n", overrides: ["training.epochs=1"])
        let before = try DataLoading.load(spec: spec, dataDirOverride: dir)
        XCTAssertEqual(before.train.count, 60000)
        // The shard: the first 5,000 test records, as plain IDX files named like a nightly export.
        let images = try IDXReader.read("\(sharedMNIST)/t10k-images-idx3-ubyte.gz", expectedDims: 3)
        let labels = try IDXReader.read("\(sharedMNIST)/t10k-labels-idx1-ubyte.gz", expectedDims: 1)
        func header(_ magic: UInt32, _ dims: [Int]) -> [UInt8] {
            ([Int(magic)] + dims).flatMap { v in (0..<4).map { UInt8(truncatingIfNeeded: v >> (24 - 8 * $0)) } }
        }
        let shardImages = "\(dir)/train-2026-11-30-images-idx3-ubyte"
        let shardLabels = "\(dir)/train-2026-11-30-labels-idx1-ubyte"
        try Data(header(0x0803, [5000, 28, 28]) + images.bytes.prefix(5000 * 784)).write(
            to: URL(fileURLWithPath: shardImages))
        try Data(header(0x0801, [5000]) + labels.bytes.prefix(5000)).write(to: URL(fileURLWithPath: shardLabels))
        let after = try DataLoading.load(spec: spec, dataDirOverride: dir)
        XCTAssertEqual(after.train.count, 65000)
        XCTAssertEqual(after.test.count, 10000, "the test files stay the held-out set")
        XCTAssertTrue(after.files.contains(shardImages) && after.files.contains(shardLabels))
        XCTAssertNotEqual(after.fingerprint, before.fingerprint)
        XCTAssertEqual(after.fingerprint, try DataLoading.load(spec: spec, dataDirOverride: dir).fingerprint)
        XCTAssertEqual(after.train.labels[60000..<65000].map { UInt8($0) }, Array(labels.bytes.prefix(5000)))
        XCTAssertEqual(
            MemoryEstimate.of(spec: spec, trainRecords: 65000, testRecords: 10000, workers: 2),
            MemoryEstimate.of(spec: spec, fallbackDataDir: dir, workers: 2))
        // A truncated shard, or one without labels, fails naming the file.
        try Data(header(0x0803, [5000, 28, 28]) + images.bytes.prefix(100)).write(to: URL(fileURLWithPath: shardImages))
        XCTAssertThrowsError(try DataLoading.load(spec: spec, dataDirOverride: dir)) { error in
            XCTAssertTrue("\(error)".contains(shardImages), "\(error)")
        }
        try FileManager.default.removeItem(atPath: shardLabels)
        XCTAssertThrowsError(try DataLoading.load(spec: spec, dataDirOverride: dir)) { error in
            XCTAssertTrue("\(error)".contains("train-2026-11-30-labels-idx1-ubyte"), "\(error)")
            XCTAssertTrue("\(error)".contains("has no labels file"), "\(error)")
        }
    }

    /// A CSV dataset that is not MNIST — a header, 64 features already in [0, 1], 10 classes —
    /// trains from its spec alone; a malformed value is named by file, line and column.
    func testNonMNISTCSVTrainsFromItsSpec() throws {
        let dir = NSTemporaryDirectory() + "nnd-csv-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var rng = DeterministicRNG(seed: 3)
        func write(_ name: String, records: Int) throws {
            var lines = ["class," + (0..<64).map { "f\($0)" }.joined(separator: ",")]
            for _ in 0..<records {
                let label = rng.nextIndex(below: 10)
                // Class c lights features 6c..6c+5; the rest is noise.
                let features = (0..<64).map { f in
                    (f / 6 == label ? 0.6 : 0) + rng.nextUnit() * 0.4
                }
                lines.append("\(label)," + features.map { String(format: "%.4f", $0) }.joined(separator: ","))
            }
            try lines.joined(separator: "\n").write(toFile: "\(dir)/\(name)", atomically: true, encoding: .utf8)
        }
        try write("train.csv", records: 2000)
        try write("test.csv", records: 500)
        let yaml = """
            name: sensors
            model: {layers: [64, 32, 10], activation: relu, init: he}
            training: {epochs: 5, batch_size: 32, learning_rate: 0.05, optimizer: momentum, lambda: 0}
            data: {train_csv: \(dir)/train.csv, test_csv: \(dir)/test.csv, feature_scale: 1}
            """
        let spec = try RunSpec.parse(yaml)
        let data = try DataLoading.load(spec: spec)
        XCTAssertEqual(data.train.count, 2000)
        XCTAssertEqual(data.train.featureCount, 64)
        XCTAssertLessThanOrEqual(data.train.features.toArray().max() ?? 2, 1)
        let trainer = try Trainer(spec: spec, train: data.train, test: data.test, workers: 2)
        XCTAssertEqual(try trainer.run(), .completed)
        XCTAssertGreaterThan(trainer.evaluate(data.test).accuracy, 90)

        try "class,a,b\n1,0.5,x\n".write(toFile: "\(dir)/bad.csv", atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try CSVReader.load("\(dir)/bad.csv", featureCount: 2, classCount: 10, featureScale: 1)) {
            XCTAssertTrue(
                "\($0)".contains("bad.csv") && "\($0)".contains("line 2, column 3: 'x' is not a number"), "\($0)")
        }
        expectSpecError(
            "name: x\n", field: "data.feature_scale", contains: "must be a positive finite number",
            overrides: ["data.feature_scale=0"])
    }

    /// The memory estimate a spec is admitted by counts the sparse first layer: MNIST's index of
    /// non-zeros alone is about a third of its float32 features, and a run on `auto` builds it.
    func testMemoryEstimateCountsTheSparseFirstLayersIndex() throws {
        func estimate(_ path: String) throws -> MemoryEstimate {
            MemoryEstimate.of(
                spec: try smallSpec(["model.input_path=\(path)", "data.train_limit=5000"]), trainRecords: 5000,
                testRecords: 500, workers: 2)
        }
        let data = try DataLoading.load(spec: try smallSpec(["data.train_limit=5000"]), dataDirOverride: sharedMNIST)
        let index = SparseRows(data.train)
        let built = index.offsets.count * 8 + index.columns.count * 4 + index.values.count * 4
        let (dense, auto, sparse) = (try estimate("dense"), try estimate("auto"), try estimate("sparse"))
        XCTAssertEqual(dense.parts["sparse first layer"], 0)
        XCTAssertGreaterThanOrEqual(try XCTUnwrap(auto.parts["sparse first layer"]), built)
        XCTAssertGreaterThan(sparse.bytes, auto.bytes, "sparse on any density: an index of every input")
        XCTAssertGreaterThanOrEqual(auto.bytes - dense.bytes, built)
    }

    /// Weight averaging holds two more copies of the weights (the mean, and the training weights
    /// while the mean is evaluated) and checkpoints the mean: three copies the estimate counts.
    func testMemoryEstimateCountsTheAveragedWeights() throws {
        func estimate(_ overrides: [String]) throws -> MemoryEstimate {
            MemoryEstimate.of(spec: try smallSpec(overrides), trainRecords: 5000, testRecords: 500, workers: 2)
        }
        let layers = try smallSpec([]).model.layers
        var weights = 0  // Σ n_{l−1}·n_l + n_l, unpadded, as the estimate counts them
        for l in 1..<layers.count { weights += layers[l - 1] * layers[l] + layers[l] }
        let copy = weights * MemoryLayout<Float>.stride
        let plain = try estimate([])
        let averaging = try estimate(["training.average_from_epoch=2"])
        XCTAssertEqual(averaging.bytes - plain.bytes, 3 * copy)
        XCTAssertEqual(try estimate(["training.validation=0.1"]).bytes - plain.bytes, copy)
    }

    func testResumeFromCheckpointIsBitwiseExact() throws {
        for opt in ["sgd", "adam"] {
            let spec = try smallSpec([
                "training.optimizer=\(opt)", "training.learning_rate=\(opt == "adam" ? 0.001 : 0.1)",
            ])
            let data = try DataLoading.load(spec: spec, dataDirOverride: sharedMNIST)
            let straight = try Trainer(spec: spec, train: data.train, test: data.test, workers: 2)
            _ = try straight.run()
            var saved: [UInt8] = []
            let first = try Trainer(spec: spec, train: data.train, test: data.test, workers: 2)
            // 19 steps per epoch, handed to the engine as 16 + 3: three calls end mid-epoch 2.
            first.stepsPerCall = 16
            let outcome = try first.run(control: PauseAfter(3), checkpointSink: { c, _ in saved = c.encode() })
            XCTAssertEqual(outcome, .paused)
            let ckpt = try Checkpoint.decode(saved, path: "memory")
            XCTAssertEqual(ckpt.state.epoch, 1)
            XCTAssertEqual(ckpt.state.stepInEpoch, 16)
            let resumed = try Trainer(spec: spec, train: data.train, test: data.test, workers: 2, resume: ckpt)
            XCTAssertEqual(try resumed.run(), .completed)
            XCTAssertEqual(
                resumed.engine.parameters.toArray(), straight.engine.parameters.toArray(),
                "\(opt): parameters differ after resume")
            XCTAssertEqual(resumed.state.history.map(\.cost), straight.state.history.map(\.cost))
            XCTAssertEqual(resumed.state.learningRate, straight.state.learningRate)
        }
    }

    /// `training.average_from_epoch`: the run keeps the mean of its weights at the epoch ends
    /// since that epoch, its test accuracy is the mean's, training itself is unchanged, and a
    /// run paused after the averaging began resumes to the same bits.
    func testWeightAveragingKeepsTheMeanOfEpochEndsAndResumesExactly() throws {
        let plain = try smallSpec([
            "model.activation=relu", "model.init=he", "training.optimizer=momentum", "training.learning_rate=0.05",
        ])
        let data = try DataLoading.load(spec: plain, dataDirOverride: sharedMNIST)
        func trained(_ spec: RunSpec) throws -> Trainer {
            let trainer = try Trainer(spec: spec, train: data.train, test: data.test, workers: 2)
            XCTAssertEqual(try trainer.run(), .completed)
            return trainer
        }
        var twoEpochs = plain
        twoEpochs.training.epochs = 2
        let theta2 = try trained(twoEpochs).engine.parameters.toArray()
        let plainRun = try trained(plain)
        let theta3 = plainRun.engine.parameters.toArray()
        var averaging = plain
        averaging.training.averageFromEpoch = 2
        let straight = try trained(averaging)
        XCTAssertEqual(straight.engine.parameters.toArray(), zip(theta2, theta3).map { m, t in m + (t - m) / 2 })
        XCTAssertEqual(straight.weightsChoice, "kept the mean of the weights at the ends of epochs 2–3")
        XCTAssertEqual(straight.state.history.map(\.cost), plainRun.state.history.map(\.cost), "training changed")
        XCTAssertEqual(straight.state.history.first?.testAccuracy, plainRun.state.history.first?.testAccuracy)
        XCTAssertEqual(straight.state.history.last?.testAccuracy, straight.engine.evaluate(data.test).accuracy * 100)
        XCTAssertNil(plainRun.weightsChoice)

        // 19 steps per epoch in calls of 16 + 3: five calls end 16 steps into epoch 3.
        var saved: [UInt8] = []
        let first = try Trainer(spec: averaging, train: data.train, test: data.test, workers: 2)
        first.stepsPerCall = 16
        XCTAssertEqual(try first.run(control: PauseAfter(5), checkpointSink: { c, _ in saved = c.encode() }), .paused)
        let checkpoint = try Checkpoint.decode(saved, path: "memory")
        XCTAssertEqual(checkpoint.state.epoch, 2)
        XCTAssertEqual(checkpoint.state.averagedEpochs, 1)
        XCTAssertEqual(checkpoint.averagedParameters, theta2, "the mean of one epoch end is that epoch's weights")
        let resumed = try Trainer(spec: averaging, train: data.train, test: data.test, workers: 2, resume: checkpoint)
        XCTAssertEqual(try resumed.run(), .completed)
        XCTAssertEqual(resumed.engine.parameters.toArray(), straight.engine.parameters.toArray())
        XCTAssertEqual(resumed.state.history.map(\.testAccuracy), straight.state.history.map(\.testAccuracy))
        // The same checkpoint under a spec that does not average is refused, naming why.
        XCTAssertThrowsError(
            try Trainer(spec: plain, train: data.train, test: data.test, workers: 2, resume: checkpoint)
        ) { XCTAssertTrue("\($0)".contains("average_from_epoch"), "\($0)") }
    }

    func testDivergenceStopsAtFirstBadStepAndCheckpointsHoldNoNaN() throws {
        let spec = try smallSpec([
            "training.learning_rate=1e9", "checkpoint.every_steps=1", "model.activation=relu", "model.init=he",
        ])
        let data = try DataLoading.load(spec: spec, dataDirOverride: sharedMNIST)
        let trainer = try Trainer(spec: spec, train: data.train, test: data.test, workers: 2)
        var written = 0
        XCTAssertThrowsError(
            try trainer.run(checkpointSink: { c, _ in
                XCTAssertTrue(c.allFinite)
                written += 1
            })
        ) { e in
            guard case TrainingError.diverged = e else { return XCTFail("\(e)") }
            XCTAssertTrue("\(e)".contains("diverged"))
        }
    }

    func testCheckpointStoreIsAtomicVerifiesAndKeepsTheLastK() throws {
        let dir = NSTemporaryDirectory() + "nnd-ckpt-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = CheckpointStore(directory: dir, keep: 2)
        // 12000 records: 188 steps per epoch, so every pause below (after 16-step engine calls) is mid-epoch.
        let spec = try smallSpec(["data.train_limit=12000"])
        let data = try DataLoading.load(spec: spec, dataDirOverride: sharedMNIST)
        let trainer = try Trainer(spec: spec, train: data.train, test: data.test, workers: 1)
        trainer.stepsPerCall = 16
        var states: [Int] = []
        _ = try trainer.run(
            control: PauseAfter(5),
            checkpointSink: { c, best in
                try store.write(c, isBest: best)
                states.append(c.state.updateCount)
            })
        for k in 1...3 {
            _ = try trainer.run(
                control: PauseAfter(k),
                checkpointSink: { c, best in
                    try store.write(c, isBest: best)
                    states.append(c.state.updateCount)
                })
        }
        XCTAssertEqual(store.list().count, 2)
        let newest = store.loadLatestValid()
        XCTAssertEqual(newest.checkpoint?.state.updateCount, 16 * 11)
        XCTAssertTrue(newest.skipped.isEmpty)
        // Flip bytes in the newest: it is detected and the previous one is used.
        var bytes = [UInt8](FileManager.default.contents(atPath: store.list()[0])!)
        bytes[bytes.count - 100] ^= 0xFF
        try Data(bytes).write(to: URL(fileURLWithPath: store.list()[0]))
        let fallback = store.loadLatestValid()
        XCTAssertEqual(fallback.checkpoint?.state.updateCount, 16 * 8)
        XCTAssertEqual(fallback.skipped.count, 1)
        XCTAssertTrue(fallback.skipped[0].contains("content hash"), fallback.skipped[0])
        // Truncated: also detected.
        try Data(bytes.prefix(1000)).write(to: URL(fileURLWithPath: store.list()[0]))
        XCTAssertEqual(store.loadLatestValid().checkpoint?.state.updateCount, 16 * 8)
        // No temporary files are left behind.
        XCTAssertFalse(try FileManager.default.contentsOfDirectory(atPath: dir).contains { $0.hasPrefix(".tmp-") })
    }

    func testSafetensorsFileReadsWithPythonLayout() throws {
        // Header layout per the format: u64 length, JSON, 8-byte aligned data; tensors in the seed's shapes.
        let c = Checkpoint(
            layers: [3, 2], parameters: NetworkLayoutValues.params, optimizerState: [],
            state: ResumeState(epochRNGState: [1, 2, 3, 4], learningRate: 0.1, workers: 1, dataHash: ""))
        let bytes = c.encode()
        let n = Int(bytes[0..<8].enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) })
        XCTAssertEqual((8 + n) % 8, 0)
        let header = try JSONSerialization.jsonObject(with: Data(bytes[8..<(8 + n)])) as! [String: Any]
        XCTAssertEqual((header["theta_1"] as! [String: Any])["shape"] as! [Int], [2, 3])
        XCTAssertEqual(try Checkpoint.decode(bytes, path: "m"), c)
    }
}

enum NetworkLayoutValues {
    static var params: [Float] {
        let l = NetworkLayout(sizes: [3, 2])
        var p = [Float](repeating: 0, count: l.parameterCount)
        for i in 0..<6 { p[l.weightOffsets[0] + i] = Float(i) }
        p[l.biasOffsets[0]] = 7
        p[l.biasOffsets[0] + 1] = 8
        return p
    }
}

/// Mutated checkpoints: decoding refuses each with a CheckpointError, never crashes and never
/// accepts altered content (the SHA-256 in the metadata covers tensors and state).
final class CheckpointFuzzTests: XCTestCase {
    func testMutatedCheckpointsAreRefused() throws {
        let layout = NetworkLayout(sizes: [20, 8, 4])
        var rng = DeterministicRNG(seed: 5)
        var params = [Float](repeating: 0, count: layout.parameterCount)  // padding between views stays zero
        for seg in layout.segments { for i in seg.start..<seg.end { params[i] = Float(rng.nextUnit()) } }
        let c = Checkpoint(
            layers: [20, 8, 4], parameters: params, optimizerState: [params],
            state: ResumeState(epochRNGState: [1, 2, 3, 4], learningRate: 0.1, workers: 2, dataHash: "x"))
        let good = c.encode()
        XCTAssertTrue(try Checkpoint.decode(good, path: "good") == c)
        let iterations = Int(ProcessInfo.processInfo.environment["NND_FUZZ_ITERATIONS"] ?? "") ?? 3000
        var accepted = 0
        for i in 0..<iterations {
            var b = good
            switch i % 4 {
            case 0: b[rng.nextIndex(below: b.count)] ^= UInt8(1 << rng.nextIndex(below: 8))
            case 1: b = Array(b.prefix(rng.nextIndex(below: b.count)))
            case 2: b[rng.nextIndex(below: min(8, b.count))] = UInt8(rng.nextIndex(below: 256))
            default: b.insert(UInt8(rng.nextIndex(below: 256)), at: rng.nextIndex(below: b.count))
            }
            if let d = try? Checkpoint.decode(b, path: "fuzz") {
                // Only a flip inside JSON padding/whitespace may still decode, and then to the same content.
                XCTAssertTrue(d == c, "a mutated checkpoint decoded to different content")
                accepted += 1
            }
        }
        XCTAssertLessThan(accepted, iterations / 20)
    }
}
