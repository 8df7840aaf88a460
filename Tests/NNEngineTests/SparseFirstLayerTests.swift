import CKernels
import Foundation
import NNAPI
import XCTest

@testable import NNData
@testable import NNEngine
@testable import NNNumerics

/// Records whose inputs are mostly zeros, like MNIST's (81 %).
func sparseSyntheticData(records: Int, features: Int, classes: Int, density: Double, seed: UInt64) -> Dataset {
    Dataset.synthetic(records: records, features: features, classes: classes, density: density, seed: seed)
}

final class SparseFirstLayerTests: XCTestCase {
    override class func setUp() { BLAS.useSingleThread() }

    func engine(
        _ sizes: [Int], _ act: Activation, workers: Int, maxBatch: Int, opt: OptimizerConfig, sparse: Bool
    ) -> DataParallelEngine {
        let e = DataParallelEngine(
            layout: NetworkLayout(sizes: sizes), activation: act, optimizer: opt, lambda: 0.01, workers: workers,
            maxBatch: maxBatch, sparseFirstLayer: sparse)
        var rng = DeterministicRNG(seed: 5)
        e.layout.initialise(e.parameters, scheme: act == .relu ? .he : .xavier, rng: &rng)
        return e
    }

    /// Trains `steps` steps of `stepSize` records (a whole epoch's shuffle of 240 records) the
    /// way the trainer hands them over: groups of steps that fit the buffers, or one chunked
    /// step when a step is larger than them (batch mode).
    func train(_ e: DataParallelEngine, _ data: Dataset, stepSize: Int, steps: Int, lr: Float = 0.05) -> [PassResult] {
        let order = UnsafeMutableBufferPointer<Int32>.allocate(capacity: data.count)
        defer { order.deallocate() }
        for i in 0..<data.count { order[i] = Int32((i * 97) % data.count) }
        let results = UnsafeMutableBufferPointer<PassResult>.allocate(capacity: DataParallelEngine.maxStepsPerCall)
        defer { results.deallocate() }
        var out: [PassResult] = []
        var done = 0
        while done < steps {
            let lo = (done * stepSize) % data.count
            if stepSize > e.maxBatch {
                out.append(e.step(data: data, indices: order.baseAddress! + lo, count: stepSize, learningRate: lr))
                done += 1
            } else {
                let k = min(DataParallelEngine.maxStepsPerCall, steps - done, (data.count - lo) / stepSize)
                let n = e.steps(
                    data: data, indices: order.baseAddress! + lo, stepSize: stepSize, records: k * stepSize,
                    learningRate: lr, results: results)
                out += results.prefix(n)
                done += n
            }
        }
        return out
    }

    /// The agreement: the sparse and dense first layers train the same network to
    /// 1e-5 — every activation, 1/2/3/7 workers, SGD/momentum/Adam, stochastic, mini-batch and
    /// batch (larger than the buffers, in accumulated chunks) — and the sparse path is bitwise
    /// reproducible. Parameters, optimiser state, costs and accuracy counts are compared.
    func testSparseAndDenseFirstLayersAgree() {
        let data = sparseSyntheticData(records: 240, features: 100, classes: 5, density: 0.19, seed: 21)
        let sizes = [100, 40, 12, 5]
        let modes: [(name: String, stepSize: Int, maxBatch: Int, steps: Int)] = [
            ("stochastic", 1, 16, 40), ("minibatch", 16, 16, 30), ("batch", 240, 64, 4),
        ]
        var checked = 0
        for act in Activation.allCases {
            for workers in [1, 2, 3, 7] {
                for kind in OptimizerKind.allCases {
                    for mode in modes {
                        let opt = OptimizerConfig(kind: kind)
                        let dense = engine(
                            sizes, act, workers: workers, maxBatch: mode.maxBatch, opt: opt, sparse: false)
                        let sparse = engine(
                            sizes, act, workers: workers, maxBatch: mode.maxBatch, opt: opt, sparse: true)
                        let again = engine(
                            sizes, act, workers: workers, maxBatch: mode.maxBatch, opt: opt, sparse: true)
                        let rows = SparseRows(data)
                        sparse.useSparseInput(rows)
                        again.useSparseInput(rows)
                        XCTAssertEqual(sparse.inputPath, .sparse)
                        let label = "\(act) \(workers) workers \(kind) \(mode.name)"
                        // Adam at its usual step size (0.001); SGD and momentum at the seed's scale.
                        let lr: Float = kind == .adam ? 0.001 : 0.05
                        let rd = train(dense, data, stepSize: mode.stepSize, steps: mode.steps, lr: lr)
                        let rs = train(sparse, data, stepSize: mode.stepSize, steps: mode.steps, lr: lr)
                        let ra = train(again, data, stepSize: mode.stepSize, steps: mode.steps, lr: lr)
                        let pd = dense.parameters.toArray()
                        let ps = sparse.parameters.toArray()
                        let maxDiff = zip(pd, ps).map { abs($0 - $1) }.max()!
                        XCTAssertLessThanOrEqual(maxDiff, 1e-5, label)
                        for (sd, ss) in zip(dense.optimizerState, sparse.optimizerState) {
                            XCTAssertLessThanOrEqual(
                                zip(sd.toArray(), ss.toArray()).map { abs($0 - $1) }.max()!, 1e-5, "\(label) state")
                        }
                        XCTAssertEqual(rd.map(\.correct), rs.map(\.correct), label)
                        for (a, b) in zip(rd, rs) { XCTAssertEqual(a.costSum, b.costSum, accuracy: 1e-4, label) }
                        XCTAssertEqual(again.parameters.toArray(), ps, "\(label): sparse not reproducible")
                        XCTAssertEqual(ra, rs, label)
                        XCTAssertEqual(dense.updateCount, sparse.updateCount)
                        // Evaluation reads the flat parameters the sparse slices were written back to.
                        XCTAssertEqual(dense.evaluate(data).correct, sparse.evaluate(data).correct, label)
                        checked += 1
                    }
                }
            }
        }
        XCTAssertEqual(checked, 3 * 4 * 3 * 3)
    }

    /// A parameter change between training calls (a checkpoint restored, weights loaded) is
    /// what the next sparse call trains from.
    func testSparseStepsStartFromTheFlatParametersEachCall() {
        let data = sparseSyntheticData(records: 64, features: 50, classes: 4, density: 0.2, seed: 3)
        let a = engine([50, 20, 4], .relu, workers: 2, maxBatch: 16, opt: .init(kind: .momentum), sparse: true)
        let b = engine([50, 20, 4], .relu, workers: 2, maxBatch: 16, opt: .init(kind: .momentum), sparse: false)
        a.useSparseInput(SparseRows(data))
        _ = train(a, data, stepSize: 16, steps: 2)
        // Load b's (untrained) parameters and state into a, as a restore would, and train both.
        a.parameters.copy(from: b.parameters)
        for (s, t) in zip(a.optimizerState, b.optimizerState) { s.copy(from: t) }
        _ = train(a, data, stepSize: 16, steps: 3)
        _ = train(b, data, stepSize: 16, steps: 3)
        XCTAssertLessThanOrEqual(zip(a.parameters.toArray(), b.parameters.toArray()).map { abs($0 - $1) }.max()!, 1e-5)
    }

    /// Every implementation of the sparse kernels this CPU can run (AVX-512, AVX2+FMA, portable
    /// C) trains the dense path's network to 1e-5, including slices whose width is not a
    /// multiple of the vector (7 workers: 5–6 units each; 40 units in one slice), and the seed's
    /// 200 units (AVX2: passes of 13 and 12 registers on one worker, 13 with a partial one on two).
    func testEveryKernelImplementationAgreesWithDense() {
        let data = sparseSyntheticData(records: 96, features: 70, classes: 4, density: 0.2, seed: 8)
        defer { nn_sparse_limit_isa(2) }
        var seen: Set<String> = []
        for cap in [2, 1, 0] {
            nn_sparse_limit_isa(Int32(cap))
            seen.insert(DataParallelEngine.sparseKernels)
            for (hidden, workers) in [(40, 1), (40, 2), (40, 7), (200, 1), (200, 2)] {
                // SGD and momentum run fused into the gradient kernel, Adam from the written gradient.
                for kind in [OptimizerKind.sgd, .momentum, .adam] {
                    let opt = OptimizerConfig(kind: kind)
                    let lr: Float = kind == .adam ? 0.001 : 0.05
                    let layers = [70, hidden, 10, 4]
                    let dense = engine(layers, .tanh, workers: workers, maxBatch: 16, opt: opt, sparse: false)
                    let sparse = engine(layers, .tanh, workers: workers, maxBatch: 16, opt: opt, sparse: true)
                    sparse.useSparseInput(SparseRows(data))
                    _ = train(dense, data, stepSize: 16, steps: 12, lr: lr)
                    _ = train(sparse, data, stepSize: 16, steps: 12, lr: lr)
                    let d = zip(dense.parameters.toArray(), sparse.parameters.toArray()).map { abs($0 - $1) }.max()!
                    XCTAssertLessThanOrEqual(
                        d, 1e-5, "\(DataParallelEngine.sparseKernels), \(hidden) units, \(workers) workers, \(kind)")
                }
            }
            // A narrow slice over many inputs: the forward's blocks of inputs grow as the slice
            // narrows (sparse.c), here 1,101 inputs in several blocks of ~256 rows; and its gradient
            // takes two inputs at a time, the odd one last.
            let wide = sparseSyntheticData(records: 48, features: 1101, classes: 4, density: 0.1, seed: 10)
            let layers = [1101, 20, 4]
            let dense = engine(layers, .logistic, workers: 1, maxBatch: 16, opt: OptimizerConfig(), sparse: false)
            let sparse = engine(layers, .logistic, workers: 1, maxBatch: 16, opt: OptimizerConfig(), sparse: true)
            sparse.useSparseInput(SparseRows(wide))
            _ = train(dense, wide, stepSize: 16, steps: 6, lr: 0.05)
            _ = train(sparse, wide, stepSize: 16, steps: 6, lr: 0.05)
            let d = zip(dense.parameters.toArray(), sparse.parameters.toArray()).map { abs($0 - $1) }.max()!
            XCTAssertLessThanOrEqual(d, 1e-5, "\(DataParallelEngine.sparseKernels), 1,101 inputs, 20 units")
        }
        XCTAssertTrue(seen.contains("portable C"), "\(seen)")
    }

    /// The workers' input ranges (the first layer split by inputs): contiguous, in order, all
    /// inputs covered, each piece within one input's count of an even share of the non-zeros
    /// (MNIST-like data: the non-zeros in the middle inputs). With more workers than inputs some
    /// ranges are empty, and the network still trains as the dense path does.
    func testInputRangesShareTheNonZerosEvenly() {
        // Inputs 20 ..< 60 of 80 carry the non-zeros, as MNIST's middle pixels do.
        let base = sparseSyntheticData(records: 64, features: 80, classes: 3, density: 0.5, seed: 12)
        let x = FloatBuffer(count: 64 * 80)
        for r in 0..<64 { for k in 20..<60 { x[r * 80 + k] = base.features[r * 80 + k] } }
        let data = Dataset(features: x, labels: base.labels, featureCount: 80, classCount: 3, sources: ["middle"])
        let rows = SparseRows(data)
        var perInput = [Int](repeating: 0, count: 80)
        for p in 0..<rows.nonZeros { perInput[Int(rows.columns[p])] += 1 }
        for pieces in [1, 2, 3, 7] {
            let ranges = SparseFirstLayer.inputRanges(of: rows, pieces: pieces)
            XCTAssertEqual(ranges.count, pieces)
            XCTAssertEqual(ranges.first?.lowerBound, 0)
            XCTAssertEqual(ranges.last?.upperBound, 80)
            for (a, b) in zip(ranges, ranges.dropFirst()) { XCTAssertEqual(a.upperBound, b.lowerBound) }
            for r in ranges {
                let share = r.reduce(0) { $0 + perInput[$1] }
                XCTAssertLessThanOrEqual(
                    abs(share - rows.nonZeros / pieces), perInput.max()!, "\(pieces) pieces: \(ranges)")
            }
        }
        // 4 inputs, 7 workers: three ranges at least are empty.
        let tiny = sparseSyntheticData(records: 48, features: 4, classes: 3, density: 0.5, seed: 13)
        let tinyRanges = SparseFirstLayer.inputRanges(of: SparseRows(tiny), pieces: 7)
        XCTAssertGreaterThanOrEqual(tinyRanges.filter(\.isEmpty).count, 3, "\(tinyRanges)")
        let layers = [4, 9, 3]
        let dense = engine(layers, .logistic, workers: 7, maxBatch: 16, opt: OptimizerConfig(), sparse: false)
        let sparse = engine(layers, .logistic, workers: 7, maxBatch: 16, opt: OptimizerConfig(), sparse: true)
        sparse.useSparseInput(SparseRows(tiny))
        _ = train(dense, tiny, stepSize: 16, steps: 6)
        _ = train(sparse, tiny, stepSize: 16, steps: 6)
        let d = zip(dense.parameters.toArray(), sparse.parameters.toArray()).map { abs($0 - $1) }.max()!
        XCTAssertLessThanOrEqual(d, 1e-5)
    }

    /// The forward over a range of inputs (`nn_sparse_forward_range`, which
    /// scripts/bench-first-layer-split.c times as a split of the first layer by inputs): the
    /// whole range is the whole forward bit for bit, and the ranges' partial sums add up to it,
    /// in every implementation, for a slice wider than one pass (200 units) and a narrow one;
    /// each range's records found by a binary search or given as bounds, the same bits.
    func testForwardOverInputRangesAddsUpToTheWhole() {
        let inputs = 300
        let data = sparseSyntheticData(records: 24, features: inputs, classes: 3, density: 0.2, seed: 11)
        let csr = SparseRows(data)
        let records = (0..<24).map { Int32(($0 * 7) % 24) }
        defer { nn_sparse_limit_isa(2) }
        for cap in [2, 1, 0] {
            nn_sparse_limit_isa(Int32(cap))
            for units in [200, 40] {
                let ld = SparseFirstLayer.paddedWidth(units)
                // Wᵀ (inputs × ld), the padding columns zero as nnd keeps them
                var wt = [Float](repeating: 0, count: inputs * ld)
                for k in 0..<inputs { for j in 0..<units { wt[k * ld + j] = Float((k * 13 + j * 7) % 29 - 14) / 50 } }
                var cursor = [Int](repeating: 0, count: records.count)
                func forward(_ lo: Int, _ hi: Int) -> [Float] {
                    // each record's non-zeros among inputs lo ..< hi, as (first, one past the last)
                    var bounds: [Int] = []
                    for rec in 0..<csr.records {
                        let cols = (csr.offsets[rec]..<csr.offsets[rec + 1]).filter { Int(csr.columns[$0]) < lo }
                        let first = csr.offsets[rec] + cols.count
                        let past = (first..<csr.offsets[rec + 1]).prefix { Int(csr.columns[$0]) < hi }.count
                        bounds += [first, first + past]
                    }
                    var z = [Float](repeating: .nan, count: records.count * ld)
                    var zBounds = z
                    nn_sparse_forward_range(
                        records, records.count, csr.offsets.baseAddress, nil, 0, csr.columns.baseAddress,
                        csr.values.baseAddress, Array(wt[(lo * ld)...]), ld, units, lo, hi, &z, ld, &cursor)
                    nn_sparse_forward_range(
                        records, records.count, csr.offsets.baseAddress, bounds, 2, csr.columns.baseAddress,
                        csr.values.baseAddress, Array(wt[(lo * ld)...]), ld, units, lo, hi, &zBounds, ld, &cursor)
                    for r in 0..<records.count {
                        let units = (r * ld)..<(r * ld + units)
                        XCTAssertEqual(zBounds[units], z[units], "\(lo)..<\(hi): bounds against the search")
                    }
                    return z
                }
                var whole = [Float](repeating: .nan, count: records.count * ld)
                nn_sparse_forward(
                    records, records.count, csr.offsets.baseAddress, csr.columns.baseAddress, csr.values.baseAddress,
                    wt, ld, units, inputs, &whole, ld, &cursor)
                let all = forward(0, inputs)
                let (low, high, empty) = (forward(0, 137), forward(137, inputs), forward(5, 5))
                let isa = DataParallelEngine.sparseKernels
                for r in 0..<records.count {
                    for j in 0..<units {
                        let i = r * ld + j
                        XCTAssertEqual(all[i], whole[i], "\(isa), \(units) units, record \(r), unit \(j)")
                        XCTAssertEqual(low[i] + high[i], whole[i], accuracy: 1e-5, "\(isa), \(units) units")
                        XCTAssertEqual(empty[i], 0, "\(isa): an empty range")
                    }
                }
                XCTAssertTrue(whole.prefix(units).contains { $0 != 0 }, "the records have non-zeros")
            }
        }
    }

    func testIndexOfNonZeros() {
        let data = sparseSyntheticData(records: 30, features: 40, classes: 3, density: 0.25, seed: 9)
        let rows = SparseRows(data)
        var nonZeros = 0
        for r in 0..<30 {
            var expected: [(Int32, Float)] = []
            for k in 0..<40 where data.features[r * 40 + k] != 0 {
                expected.append((Int32(k), data.features[r * 40 + k]))
            }
            let got = (rows.offsets[r]..<rows.offsets[r + 1]).map { (rows.columns[$0], rows.values[$0]) }
            XCTAssertEqual(got.map(\.0), expected.map(\.0))
            XCTAssertEqual(got.map(\.1), expected.map(\.1))
            nonZeros += expected.count
        }
        XCTAssertEqual(rows.nonZeros, nonZeros)
        XCTAssertEqual(rows.density, Double(nonZeros) / 1200, accuracy: 1e-12)
        XCTAssertEqual(SparseRows.density(of: data), rows.density, accuracy: 1e-12)
    }
}
