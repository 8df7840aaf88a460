import Foundation
import NNAPI
import Synchronization
import XCTest

@testable import NNData
@testable import NNEngine
@testable import NNNumerics

func syntheticData(records: Int, features: Int, classes: Int, seed: UInt64) -> Dataset {
    var rng = DeterministicRNG(seed: seed)
    let f = FloatBuffer(count: records * features)
    for i in 0..<f.count { f[i] = Float(rng.nextUnit()) }
    let labels = (0..<records).map { _ in Int32(rng.nextIndex(below: classes)) }
    return Dataset(features: f, labels: labels, featureCount: features, classCount: classes, sources: ["synthetic"])
}

/// A placer that records what was asked of it, on an injected topology.
struct RecordingPlacer: MemoryPlacer {
    let topology: NUMATopology
    func allocator(forNode node: Int) -> any BufferAllocator { Labelled(label: "node \(node)") }
    func sharedAllocator(nodes: [Int]) -> any BufferAllocator { Labelled(label: "shared \(Set(nodes).sorted())") }
    func allocator(bands: [MemoryBand]) -> any BufferAllocator { Labelled(label: "bands \(bands.map(\.node))") }
    func bindCurrentThread(toNode node: Int) {}
    struct Labelled: BufferAllocator {
        let label: String
        func allocate(bytes: Int) -> UnsafeMutableRawPointer { AlignedAllocator().allocate(bytes: bytes) }
        func deallocate(_ p: UnsafeMutableRawPointer, bytes: Int) { AlignedAllocator().deallocate(p, bytes: bytes) }
        var placement: String { label }
    }
}

final class EngineTests: XCTestCase {
    override class func setUp() { BLAS.useSingleThread() }

    func makeEngine(
        _ sizes: [Int], _ act: Activation, workers: Int, batch: Int, opt: OptimizerConfig = .init(),
        lambda: Float = 0.01, seed: UInt64 = 3
    ) -> DataParallelEngine {
        let e = DataParallelEngine(
            layout: NetworkLayout(sizes: sizes), activation: act, optimizer: opt, lambda: lambda, workers: workers,
            maxBatch: batch)
        var rng = DeterministicRNG(seed: seed)
        e.layout.initialise(e.parameters, scheme: act == .relu ? .he : .xavier, rng: &rng)
        return e
    }

    /// Backprop against central finite differences of the cost, for every activation.
    /// With λ = 0, SGD and lr = 1, one step changes θ by exactly the mean gradient.
    func testGradientMatchesFiniteDifferences() {
        let sizes = [6, 5, 4, 3]
        let data = syntheticData(records: 8, features: 6, classes: 3, seed: 11)
        for act in Activation.allCases {
            let engine = makeEngine(sizes, act, workers: 2, batch: 8, lambda: 0)
            // Keep ReLU units away from the kink.
            if act == .relu { for i in 0..<engine.parameters.count { engine.parameters[i] += 0.05 } }
            let before = engine.parameters.toArray()
            func cost(_ p: [Float]) -> Double {
                engine.parameters.load(p)
                let r = engine.evaluate(data)
                return r.costSum / Double(r.records)
            }
            let idx = UnsafeMutableBufferPointer<Int32>.allocate(capacity: 8)
            defer { idx.deallocate() }
            for i in 0..<8 { idx[i] = Int32(i) }
            engine.parameters.load(before)
            _ = engine.step(data: data, indices: idx.baseAddress!, count: 8, learningRate: 1)
            let after = engine.parameters.toArray()
            var checked = 0
            for seg in engine.layout.segments {
                for i in stride(from: seg.start, to: seg.end, by: max(1, (seg.end - seg.start) / 7)) {
                    let analytic = Double(before[i] - after[i])
                    let h: Float = 1e-2
                    var p = before
                    p[i] += h
                    let up = cost(p)
                    p = before
                    p[i] -= h
                    let down = cost(p)
                    let numeric = (up - down) / Double(2 * h)
                    XCTAssertEqual(analytic, numeric, accuracy: 2e-3 + 2e-2 * abs(numeric), "\(act) param \(i)")
                    checked += 1
                }
            }
            XCTAssertGreaterThan(checked, 20)
        }
    }

    func runOneStep(workers: Int, opt: OptimizerConfig = .init(), sizes: [Int] = [20, 16, 8, 4]) -> [Float] {
        let data = syntheticData(records: 64, features: 20, classes: 4, seed: 5)
        let engine = makeEngine(sizes, .logistic, workers: workers, batch: 64, opt: opt)
        let idx = UnsafeMutableBufferPointer<Int32>.allocate(capacity: 64)
        defer { idx.deallocate() }
        for i in 0..<64 { idx[i] = Int32((i * 37) % 64) }
        for _ in 0..<3 { _ = engine.step(data: data, indices: idx.baseAddress!, count: 61, learningRate: 0.5) }
        return engine.parameters.toArray()
    }

    func testShardInvarianceAcrossWorkerCounts() {
        for opt in [OptimizerConfig(kind: .sgd), OptimizerConfig(kind: .momentum), OptimizerConfig(kind: .adam)] {
            let one = runOneStep(workers: 1, opt: opt)
            for w in [2, 3, 7] {
                let other = runOneStep(workers: w, opt: opt)
                let maxDiff = zip(one, other).map { abs($0 - $1) }.max()!
                XCTAssertLessThan(maxDiff, 1e-5, "\(opt.kind) with \(w) workers")
            }
            // Same seed, same worker count: bitwise identical.
            XCTAssertEqual(runOneStep(workers: 3, opt: opt), runOneStep(workers: 3, opt: opt))
        }
        // A wider first layer (split by units into the workers' blocks), and a network without
        // hidden layers, whose softmax first layer the shards run.
        for sizes in [[20, 40, 8, 4], [20, 4]] {
            let one = runOneStep(workers: 1, sizes: sizes)
            for w in [2, 3, 7] {
                let maxDiff = zip(one, runOneStep(workers: w, sizes: sizes)).map { abs($0 - $1) }.max()!
                XCTAssertLessThan(maxDiff, 1e-5, "\(sizes) with \(w) workers")
            }
            XCTAssertEqual(runOneStep(workers: 2, sizes: sizes), runOneStep(workers: 2, sizes: sizes))
        }
    }

    /// The phase clock `nnd bench` reports: every shard and the reduction get time, and
    /// recording changes nothing in the arithmetic.
    func testPhaseTimesCoverEveryShardWithoutChangingResults() {
        let data = syntheticData(records: 64, features: 20, classes: 4, seed: 5)
        let idx = UnsafeMutableBufferPointer<Int32>.allocate(capacity: 64)
        defer { idx.deallocate() }
        for i in 0..<64 { idx[i] = Int32(63 - i) }
        func engine(_ timed: Bool) -> DataParallelEngine {
            let e = DataParallelEngine(
                layout: NetworkLayout(sizes: [20, 16, 4]), activation: .logistic, optimizer: .init(), lambda: 0.01,
                workers: 3, maxBatch: 64, recordPhaseTimes: timed)
            var rng = DeterministicRNG(seed: 1)
            e.layout.initialise(e.parameters, scheme: .xavier, rng: &rng)
            for _ in 0..<5 { _ = e.step(data: data, indices: idx.baseAddress!, count: 64, learningRate: 0.1) }
            return e
        }
        let timed = engine(true)
        let plain = engine(false)
        XCTAssertEqual(timed.parameters.toArray(), plain.parameters.toArray())
        let m = timed.phaseTimes.takeMeans()
        XCTAssertEqual(m.shards.count, 3)
        XCTAssertTrue(m.shards.allSatisfy { $0 > 0 }, "\(m.shards)")
        XCTAssertGreaterThan(m.gradient, 0)
        XCTAssertGreaterThan(m.input, 0)
        XCTAssertEqual(timed.phaseTimes.takeMeans().shards, [0, 0, 0], "takeMeans starts over")
        XCTAssertEqual(plain.phaseTimes.takeMeans().shards, [0, 0, 0], "off by default")
    }

    func testBatchLargerThanEngineBufferAccumulates() {
        // A 100-record step through an engine that holds 32 at a time equals one through an engine that holds all 100.
        let data = syntheticData(records: 100, features: 10, classes: 3, seed: 9)
        let small = makeEngine([10, 8, 3], .tanh, workers: 2, batch: 32)
        let big = makeEngine([10, 8, 3], .tanh, workers: 2, batch: 100)
        let idx = UnsafeMutableBufferPointer<Int32>.allocate(capacity: 100)
        defer { idx.deallocate() }
        for i in 0..<100 { idx[i] = Int32(i) }
        let a = small.step(data: data, indices: idx.baseAddress!, count: 100, learningRate: 0.3)
        let b = big.step(data: data, indices: idx.baseAddress!, count: 100, learningRate: 0.3)
        XCTAssertEqual(a.records, 100)
        XCTAssertEqual(a.costSum, b.costSum, accuracy: 1e-3)
        XCTAssertLessThan(zip(small.parameters.toArray(), big.parameters.toArray()).map { abs($0 - $1) }.max()!, 1e-5)
    }

    func testPlacementOnFakeTwoNodeTopology() {
        let topo = NUMATopology(nodes: [.init(id: 0, cpus: [0, 1]), .init(id: 1, cpus: [2, 3])], numaAvailable: true)
        let placer = RecordingPlacer(topology: topo)
        XCTAssertEqual(placer.plan(workers: 4).map(\.node), [0, 0, 1, 1])
        XCTAssertEqual(placer.plan(workers: 6).map(\.cpu), [0, 1, 2, 3, 0, 1])
        let engine = DataParallelEngine(
            layout: NetworkLayout(sizes: [8, 4, 2]), activation: .logistic, optimizer: .init(), lambda: 0,
            workers: 4, maxBatch: 16, placer: placer)
        XCTAssertEqual(engine.batchBufferPlacement, "bands [0, 0, 1, 1]")
        XCTAssertEqual(engine.parameterPlacement, "shared [0, 1]")
        // Worker w's band is rows [w·maxRows, (w+1)·maxRows) of every activation and delta matrix.
        let plan = BatchBuffers.plan(sizes: [8, 4, 2], workers: 4, maxRows: 4, blockFloats: 16)
        XCTAssertEqual(plan.bands.count, 4)
        XCTAssertEqual(plan.bands[2].count, 7)
        // ... and its first-layer block.
        XCTAssertEqual(plan.bands[1][6], .init(byteOffset: plan.blockOffsets[1] * 4, byteCount: 16 * 4))
        XCTAssertEqual(plan.blockOffsets[1] - plan.blockOffsets[0], 16)
        XCTAssertLessThanOrEqual(plan.blockOffsets[3] + 16, plan.total)
        XCTAssertEqual(plan.bands[2][0], .init(byteOffset: 2 * 4 * 8 * 4, byteCount: 4 * 8 * 4))
        XCTAssertEqual(plan.bands[3][1], .init(byteOffset: (plan.offsets[1] + 3 * 4 * 4) * 4, byteCount: 4 * 4 * 4))
        for m in 0..<6 {
            for w in 0..<3 {
                XCTAssertEqual(
                    plan.bands[w][m].byteOffset + plan.bands[w][m].byteCount, plan.bands[w + 1][m].byteOffset)
            }
        }
        // The real libnuma placer on a fake topology: interleaved shared memory over both nodes,
        // worker buffers bound per node; a single-node topology uses plain aligned memory.
        let real = LibNUMAPlacer(topology: topo)
        XCTAssertEqual(real.allocator(forNode: 1).placement, "numa node 1")
        XCTAssertEqual(real.sharedAllocator(nodes: [0, 1, 1]).placement, "interleaved over nodes 0,1")
        XCTAssertEqual(
            real.allocator(bands: [.init(node: 0, ranges: []), .init(node: 1, ranges: [])]).placement,
            "bands on nodes 0,1")
        XCTAssertEqual(
            real.allocator(bands: [.init(node: 1, ranges: []), .init(node: 1, ranges: [])]).placement, "numa node 1")
        let single = LibNUMAPlacer(topology: NUMATopology(nodes: [.init(id: 0, cpus: [0, 1])], numaAvailable: true))
        XCTAssertEqual(single.sharedAllocator(nodes: [0, 0]).placement, "aligned")
        let none = LibNUMAPlacer(topology: NUMATopology(nodes: [.init(id: 0, cpus: [0])], numaAvailable: false))
        XCTAssertEqual(none.allocator(forNode: 0).placement, "aligned")
        XCTAssertEqual(none.allocator(bands: [.init(node: 0, ranges: [])]).placement, "aligned")
        // Real topology of this machine: every CPU we may run on belongs to a node.
        let detected = NUMATopology.detect()
        XCTAssertFalse(detected.cpus.isEmpty)
        XCTAssertEqual(NUMATopology.parseCPUList("0-2,5,7-8"), [0, 1, 2, 5, 7, 8])
        XCTAssertNil(NUMATopology.parseCPUList("3-1"))
    }

    /// The banded allocator on this machine's real libnuma: every page of both bands is resident
    /// on the node it was bound to (node 0 here, the only one).
    func testBandedAllocatorPlacesPagesOnTheirNodes() throws {
        guard NUMATopology.detect().numaAvailable else { throw XCTSkip("libnuma unavailable here") }
        let page = 4096
        let allocator = BandedAllocator(bands: [
            .init(node: 0, ranges: [.init(byteOffset: 0, byteCount: 2 * page + 100)]),
            .init(node: 0, ranges: [.init(byteOffset: 2 * page + 100, byteCount: 3 * page)]),
        ])
        let p = allocator.allocate(bytes: 5 * page + 100)
        defer { allocator.deallocate(p, bytes: 5 * page + 100) }
        XCTAssertEqual(p.load(fromByteOffset: 3 * page, as: UInt32.self), 0, "zeroed")
        XCTAssertEqual(BandedAllocator.nodesOfPages(p, bytes: 5 * page + 100), [0, 0, 0, 0, 0, 0])
    }

    func testGradientSlicesCoverEveryParameterOnce() {
        for (w, sizes) in [1, 2, 3, 7, 16].map({ ($0, [9, 7, 5, 3]) }) + [(2, [9, 200, 5, 3]), (3, [9, 100, 5, 3])] {
            let e = makeEngine(sizes, .logistic, workers: w, batch: 8)
            var seen = [Int](repeating: 0, count: e.layout.parameterCount)
            for slice in e.gradientSlices {
                for g in slice {
                    let (w, b) = e.segments(of: g)
                    for s in [w, b] { for i in s.start..<s.end { seen[i] += 1 } }
                }
            }
            for seg in e.layout.segments { for i in seg.start..<seg.end { XCTAssertEqual(seen[i], 1) } }
            XCTAssertEqual(seen.reduce(0, +), e.layout.trainableCount)
        }
    }

    /// A phase's wait spins for a while and then sleeps on a futex until the last piece is
    /// finished: a waiter that slept must still return, and see every piece's writes. Here one
    /// thread of three holds its piece for up to 3 ms (far past the spin), round after round.
    func testBarrierWaitersThatSleepStillSeeEveryPiece() {
        let pieces = 2
        let rounds = 60
        let queue = WorkQueue(pieces: pieces)
        let written = UnsafeMutablePointer<Int>.allocate(capacity: rounds * pieces)
        written.initialize(repeating: -1, count: rounds * pieces)
        defer { written.deallocate() }
        let shared = SharedPointer(written)
        let missing = Atomic<Int>(0)
        DispatchQueue.concurrentPerform(iterations: 3) { thread in
            var rng = DeterministicRNG(seed: UInt64(thread))
            for r in 0..<rounds {
                while let p = queue.claim(round: r, preferring: thread) {
                    if p == r % pieces { usleep(UInt32(rng.next() % 3000)) }
                    shared.pointer[r * pieces + p] = r
                    queue.finish()
                }
                queue.waitForAll(round: r)
                for p in 0..<pieces where shared.pointer[r * pieces + p] != r {
                    missing.wrappingAdd(1, ordering: .relaxed)
                }
            }
        }
        XCTAssertEqual(missing.load(ordering: .relaxed), 0, "a waiter returned before a piece's write was visible")
        XCTAssertGreaterThan(
            queue.sleeps.load(ordering: .relaxed), 0, "no wait outlasted the spin: the futex path never ran")
    }

    /// With more workers than cores the waits yield (a partner often waits for the waiter's
    /// core); otherwise they spin and then sleep.
    func testBarrierWaitsYieldOnlyWithMoreWorkersThanCores() {
        let spin = StepSchedule.spinWhenEveryWorkerHasACore
        XCTAssertNil(StepSchedule(workers: 7, cores: 2).shards.spinNanoseconds)
        XCTAssertEqual(StepSchedule(workers: 2, cores: 2).shards.spinNanoseconds, spin)
        XCTAssertEqual(StepSchedule(workers: 1, cores: 8).slices.spinNanoseconds, spin)
        XCTAssertGreaterThan(spin, 0)
    }

    /// `steps` runs several steps in one `concurrentPerform`; the trainer relies on that giving
    /// exactly what the same steps one by one give (a resumed run regroups its steps).
    func testStepGroupsEqualSingleStepsBitwise() {
        let data = syntheticData(records: 200, features: 20, classes: 4, seed: 11)
        let idx = UnsafeMutableBufferPointer<Int32>.allocate(capacity: 200)
        defer { idx.deallocate() }
        for i in 0..<200 { idx[i] = Int32((i * 73) % 200) }
        let results = UnsafeMutableBufferPointer<PassResult>.allocate(capacity: DataParallelEngine.maxStepsPerCall)
        defer { results.deallocate() }
        for (w, opt) in [(1, OptimizerConfig(kind: .sgd)), (2, .init(kind: .sgd)), (3, .init(kind: .adam))] {
            let single = makeEngine([20, 40, 8, 4], .logistic, workers: w, batch: 16, opt: opt)
            let grouped = makeEngine([20, 40, 8, 4], .logistic, workers: w, batch: 16, opt: opt)
            var singleResults: [PassResult] = []
            for k in 0..<13 {  // 12 full steps of 16 and one of 8
                singleResults.append(
                    single.step(
                        data: data, indices: idx.baseAddress! + 16 * k, count: min(16, 200 - 16 * k), learningRate: 0.3)
                )
            }
            // 5 + 8 steps: groups need not start at the epoch's start.
            XCTAssertEqual(
                grouped.steps(
                    data: data, indices: idx.baseAddress!, stepSize: 16, records: 80, learningRate: 0.3,
                    results: results), 5)
            var groupedResults = Array(results.prefix(5))
            XCTAssertEqual(
                grouped.steps(
                    data: data, indices: idx.baseAddress! + 80, stepSize: 16, records: 120, learningRate: 0.3,
                    results: results), 8)
            groupedResults += results.prefix(8)
            XCTAssertEqual(grouped.parameters.toArray(), single.parameters.toArray(), "\(w) workers, \(opt.kind)")
            XCTAssertEqual(groupedResults, singleResults)
            XCTAssertEqual(grouped.updateCount, 13)
        }
    }

    /// A group stops after the first step whose cost is not finite, and says how many ran.
    func testStepGroupStopsAtFirstNonFiniteCost() {
        let data = syntheticData(records: 64, features: 20, classes: 4, seed: 12)
        data.features[20 * 37 + 3] = .nan  // record 37 is in step 3 (records 32..<48)
        let idx = UnsafeMutableBufferPointer<Int32>.allocate(capacity: 64)
        defer { idx.deallocate() }
        for i in 0..<64 { idx[i] = Int32(i) }
        let results = UnsafeMutableBufferPointer<PassResult>.allocate(capacity: DataParallelEngine.maxStepsPerCall)
        defer { results.deallocate() }
        let e = makeEngine([20, 40, 8, 4], .logistic, workers: 2, batch: 16)
        XCTAssertEqual(
            e.steps(
                data: data, indices: idx.baseAddress!, stepSize: 16, records: 64, learningRate: 0.1, results: results),
            3)
        XCTAssertTrue(results[0].costSum.isFinite && results[1].costSum.isFinite)
        XCTAssertTrue(results[2].costSum.isNaN)
        XCTAssertEqual(e.updateCount, 3)
    }
}
