import Foundation
import NNAPI
import NNCheckpoint
import NNData
import NNEngine
import XCTest

@testable import NNTraining

/// `model.input_path`: which first layer a run trains with, why, and that a resume keeps it.
final class InputPathTests: XCTestCase {
    func spec(_ path: String, extra: [String] = []) throws -> RunSpec {
        try RunSpec.parse(
            "name: p\n",
            overrides: [
                "model.layers=[60, 24, 5]", "model.input_path=\(path)", "training.epochs=2", "training.batch_size=16",
                "checkpoint.every_seconds=0",
            ] + extra)
    }

    func data(density: Double) -> Dataset {
        Dataset.synthetic(records: 400, features: 60, classes: 5, density: density, seed: 4)
    }

    func testAutoChoosesByDensityAndTimesBothNearTheCrossover() throws {
        let sparse = try Trainer(spec: try spec("auto"), train: data(density: 0.08), test: nil, workers: 2)
        XCTAssertEqual(sparse.inputPath, .sparse)
        XCTAssertTrue(sparse.inputPathReason.contains("sparse at or below 22 %"), sparse.inputPathReason)
        XCTAssertEqual(try XCTUnwrap(sparse.inputDensity), 0.08, accuracy: 0.01)

        let dense = try Trainer(spec: try spec("auto"), train: data(density: 0.7), test: nil, workers: 2)
        XCTAssertEqual(dense.inputPath, .dense)
        XCTAssertTrue(dense.inputPathReason.contains("dense at or above 45 %"), dense.inputPathReason)

        let near = try Trainer(spec: try spec("auto"), train: data(density: 0.3), test: nil, workers: 2)
        XCTAssertTrue(near.inputPathReason.contains("near the crossover: timed"), near.inputPathReason)
        XCTAssertEqual(near.engine.inputPath, near.inputPath)
        // The trial steps leave no trace: the run starts from its seed's initialisation.
        let fresh = try Trainer(spec: try spec("dense"), train: data(density: 0.3), test: nil, workers: 2)
        XCTAssertEqual(near.engine.parameters.toArray(), fresh.engine.parameters.toArray())
        XCTAssertEqual(near.engine.updateCount, 0)

        let forced = try Trainer(spec: try spec("sparse"), train: data(density: 0.7), test: nil, workers: 2)
        XCTAssertEqual(forced.inputPath, .sparse)
        let off = try Trainer(spec: try spec("dense"), train: data(density: 0.08), test: nil, workers: 2)
        XCTAssertEqual(off.inputPath, .dense)
        XCTAssertNil(off.inputDensity)
        // Events carry the path, for status and /metrics.
        var events: [TrainingEvent] = []
        _ = try sparse.run(onEvent: { events.append($0) })
        XCTAssertEqual(events.last?.inputPath, "sparse")
        XCTAssertEqual(try XCTUnwrap(events.last?.inputDensity), 0.08, accuracy: 0.01)
    }

    /// Across processes every rank must take the same path (they sum the same buffers in every
    /// step): near the crossover each times both on its share, and the ranks agree on dense if
    /// any of them found dense faster. Ranks with different worker counts each split their share
    /// among their own workers (the gradients they sum are laid out alike whatever the split).
    /// The other rank is a stand-in: its worker counts (`[most, −fewest]`), then its vote (1: dense).
    func testRanksAgreeOnThePath() throws {
        func trainer(density: Double, otherRank: [[Int64]]) throws -> Trainer {
            try Trainer(
                spec: try spec("auto"), train: data(density: density), test: nil, workers: 2,
                reducer: StandInReducer(otherRank: otherRank))
        }
        let outvoted = try trainer(density: 0.3, otherRank: [[2, -2], [1]])
        XCTAssertEqual(outvoted.inputPath, .dense)
        XCTAssertEqual(outvoted.engine.inputPath, .dense)
        XCTAssertTrue(outvoted.inputPathReason.hasSuffix("on rank 0; dense on every rank"), outvoted.inputPathReason)
        let own = try trainer(density: 0.3, otherRank: [[2, -2], [0]])
        XCTAssertTrue(own.inputPathReason.hasSuffix("; \(own.inputPath) on every rank"), own.inputPathReason)
        XCTAssertEqual(own.engine.inputPath, own.inputPath)
        // Far from the crossover no rank times anything: MNIST-like data takes the sparse path…
        let sparse = try trainer(density: 0.08, otherRank: [[2, -2]])
        XCTAssertEqual(sparse.inputPath, .sparse)
        XCTAssertEqual(sparse.engine.workerCount, 2)
        // Another rank runs more workers: this one still runs its own 2, and sparse data takes
        // the sparse path without timing, as on one process.
        let uneven = try trainer(density: 0.08, otherRank: [[4, -2]])
        XCTAssertEqual(uneven.engine.workerCount, 2)
        XCTAssertEqual(uneven.rankWorkerCounts, 2...4)
        XCTAssertEqual(uneven.inputPath, .sparse)
        XCTAssertEqual(uneven.engine.inputPath, .sparse)
        XCTAssertTrue(
            uneven.inputPathReason.hasPrefix("auto: inputs 8.3 % non-zero (sparse at or below "), uneven.inputPathReason
        )
        // Asked for, the sparse path is taken without timing.
        let asked = try Trainer(
            spec: try spec("sparse"), train: data(density: 0.08), test: nil, workers: 2,
            reducer: StandInReducer(otherRank: [[4, -2]]))
        XCTAssertEqual(asked.engine.inputPath, .sparse)
        XCTAssertEqual(asked.engine.workerCount, 2)
    }

    /// A run keeps the path it started with when it resumes (auto does not decide again), and
    /// the resumed run ends bitwise where an uninterrupted one does.
    func testResumeKeepsThePathAndTheResult() throws {
        let train = data(density: 0.08)
        let whole = try Trainer(spec: try spec("auto"), train: train, test: nil, workers: 2)
        _ = try whole.run()
        var saved: Checkpoint?
        let first = try Trainer(spec: try spec("auto"), train: train, test: nil, workers: 2)
        first.stepsPerCall = 16  // pauses mid-run
        XCTAssertEqual(try first.run(control: PauseAfter(2), checkpointSink: { c, _ in saved = c }), .paused)
        let checkpoint = try XCTUnwrap(saved)
        XCTAssertEqual(checkpoint.state.inputPath, "sparse")
        let resumed = try Trainer(spec: try spec("auto"), train: train, test: nil, workers: 2, resume: checkpoint)
        XCTAssertEqual(resumed.inputPath, .sparse)
        XCTAssertTrue(resumed.inputPathReason.contains("as the run chose when it started"), resumed.inputPathReason)
        _ = try resumed.run()
        XCTAssertEqual(resumed.engine.parameters.toArray(), whole.engine.parameters.toArray())
    }
}

/// One process standing in for a job: sums are its own values (size 1), and its k-th `max`
/// also takes `otherRank[k]`, as if another rank had passed those values (none: its own).
final class StandInReducer: GradientReducer {
    var otherRank: [[Int64]]
    init(otherRank: [[Int64]]) { self.otherRank = otherRank }
    var rank: Int { 0 }
    var size: Int { 1 }
    var host: String { "here" }
    func sum(_ buffer: UnsafeMutablePointer<Float>, count: Int) {}
    func sum(_ buffer: UnsafeMutablePointer<Double>, count: Int) {}
    func max(_ buffer: UnsafeMutablePointer<Int64>, count: Int) {
        guard !otherRank.isEmpty else { return }
        let other = otherRank.removeFirst()
        for i in 0..<count { buffer[i] = Swift.max(buffer[i], other[i]) }
    }
    func gather(_ value: UInt64) -> [UInt64] { [value] }
    func gather(_ text: String) -> [String] { [text] }
}
