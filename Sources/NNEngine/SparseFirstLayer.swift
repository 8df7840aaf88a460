import CKernels
import Dispatch
import Foundation
import NNData
import NNNumerics

// The sparse-aware first layer. MNIST's inputs are 81 % zeros, and the first layer is 86 % of
// the seed network's multiply-adds: its forward (Z₁ = X·W₁ᵀ) and weight gradient (δ₁ᵀ·X) are
// computed from the non-zeros of the batch instead of dense GEMMs over the zeros.
//
// For that, worker slice w keeps its rows of W₁ transposed, Wᵀ_w: n_0 × ldw (ldw = its unit
// count rounded up to 16, the extra columns zero), so one input's weights for all the slice's
// units are one contiguous run the kernels keep in registers; and its optimiser state in the
// same layout. The flat `parameters` (and state) stay the one truth outside a training call:
// the slices are loaded from them when a call starts and written back when it ends, so
// evaluation, checkpoints, exports and everything else see the usual layout.

/// An optimiser update the sparse first layer's gradient kernel applies as it goes, for a step
/// whose records are all in one round (the gradient is then never written).
enum FusedUpdate {
    /// The seed's SGD with learning rate α.
    case sgd(Float)
    /// Momentum with learning rate α (μ from the optimiser's configuration).
    case momentum(Float)
}

/// The choice of input path a run trains with, and why.
public enum InputPathChoice: Sendable, Equatable {
    case dense
    case sparse
}

/// Worker slices' transposed first-layer weights, gradients, optimiser state and batch column
/// index; allocated once, when the engine is made.
///
/// `@unchecked Sendable`: inside a training call slice w's buffers are used only by the
/// iteration that claimed slice w (as the flat buffers' slices are, see `DataParallelEngine`);
/// `rows` is set between calls.
final class SparseFirstLayer: @unchecked Sendable {
    let inputs: Int
    /// ldw[w]: worker slice w's row stride in the transposed buffers (units rounded up to 16).
    let ldw: [Int]
    /// weights[w]: Wᵀ_w, n_0 × ldw[w].
    let weights: [FloatBuffer]
    /// gradients[w]: ∂J/∂Wᵀ_w summed over the step's records, n_0 × ldw[w].
    let gradients: [FloatBuffer]
    /// states[w][i]: optimiser state buffer i of slice w, transposed like the weights.
    let states: [[FloatBuffer]]
    /// Per set and piece ([set · pieces + piece]): non-zeros of the batch grouped by input (see
    /// `nn_sparse_batch_column_range`), one piece per worker, built in the gather phase; every
    /// slice's weight gradient reads them all after the barrier. On up to 2 workers piece p is
    /// shard p's records over all inputs; on more, it is all the batch's records over the
    /// inputs `inputRanges[p]` (`indexByInputRange`). A slice's gradient loops over the inputs
    /// once per shard's index, and with 8 shards a narrow slice took 4× as long; but a piece by
    /// inputs reads every record of the batch, and on 2 workers that cost the gather more than
    /// it saved the gradient (docs/performance.md, "Fifteenth session"). Two sets, used by
    /// alternate steps: a thread that is done with step r's gradient builds step r + 1's index
    /// in the other set while step r's slices still read theirs.
    let columnStart: [UnsafeMutablePointer<Int>]
    let cursor: [UnsafeMutablePointer<Int>]
    /// inputRanges[p]: the inputs index piece p covers (all of them when split by records).
    let inputRanges: [Range<Int>]
    /// Whether the index pieces split the inputs (more than 2 workers) or the batch's records.
    var indexByInputRange: Bool { inputRanges.count > Self.mostPiecesByRecords }
    /// Per slice: each batch record's position in its non-zeros during the blocked forward.
    let forwardCursor: [UnsafeMutablePointer<Int>]
    let entryRow: [UnsafeMutablePointer<Int32>]
    let entryValue: [UnsafeMutablePointer<Float>]
    /// The same, as the C arrays of pointers the gradient kernel takes.
    let columnStarts: UnsafeMutablePointer<UnsafePointer<Int>?>
    let entryRows: UnsafeMutablePointer<UnsafePointer<Int32>?>
    let entryValues: UnsafeMutablePointer<UnsafePointer<Float>?>
    /// The index of the data set the steps train on (set by the trainer).
    var rows: SparseRows?
    /// δ₁ again, slice by slice, for the weight gradient: row r (of `deltaStride` floats) holds
    /// slice w's units from `deltaOffset[w]` on, padded to ldw[w]. δ₁'s own rows are 200 floats
    /// for the seed, so slice 1's units (from 100 on) and every odd row began inside a 64-byte
    /// line, and each of the kernel's loads straddled two lines: slice 1's gradient ran ~10 %
    /// slower than slice 0's and the other thread waited. Here every slice's row is line-aligned.
    /// Its padding lanes are never written, so they stay zero: the AVX2 gradient kernel reads and
    /// sums them in whole registers into W₁ᵀ's padding columns, which must stay zero (nn_kernels.h).
    let deltaBlock: FloatBuffer
    let deltaOffset: [Int]
    let deltaStride: Int

    init(inputs: Int, units: [Range<Int>], stateBuffers: Int, maxBatch: Int) {
        self.inputs = inputs
        ldw = units.map { Self.paddedWidth($0.count) }
        weights = ldw.map { FloatBuffer(count: inputs * $0) }
        gradients = ldw.map { FloatBuffer(count: inputs * $0) }
        states = ldw.map { l in (0..<stateBuffers).map { _ in FloatBuffer(count: inputs * l) } }
        // Piece p: a shard of at most ⌈maxBatch / pieces⌉ records over all inputs, or up to
        // maxBatch records over its share of the inputs.
        let pieces = units.count
        let byInputs = pieces > Self.mostPiecesByRecords
        let ranges = (0..<pieces).map { byInputs ? (inputs * $0 / pieces)..<(inputs * ($0 + 1) / pieces) : 0..<inputs }
        inputRanges = ranges
        let recordsPerPiece = byInputs ? maxBatch : (maxBatch + pieces - 1) / pieces
        let indexes = Self.columnSets * pieces
        let pieceInputs = (0..<indexes).map { ranges[$0 % pieces].count }
        columnStart = pieceInputs.map { .allocate(capacity: $0 + 1) }
        cursor = pieceInputs.map { .allocate(capacity: max(1, $0)) }
        forwardCursor = units.map { _ in .allocate(capacity: maxBatch) }
        entryRow = pieceInputs.map { .allocate(capacity: max(1, recordsPerPiece * $0)) }
        entryValue = pieceInputs.map { .allocate(capacity: max(1, recordsPerPiece * $0)) }
        let widths = units.map { Self.paddedWidth($0.count) }
        deltaOffset = widths.indices.map { w in widths[..<w].reduce(0, +) }
        deltaStride = widths.reduce(0, +)
        deltaBlock = FloatBuffer(count: maxBatch * deltaStride)
        columnStarts = .allocate(capacity: indexes)
        entryRows = .allocate(capacity: indexes)
        entryValues = .allocate(capacity: indexes)
        for i in 0..<indexes {
            columnStarts[i] = UnsafePointer(columnStart[i])
            entryRows[i] = UnsafePointer(entryRow[i])
            entryValues[i] = UnsafePointer(entryValue[i])
        }
    }

    /// The most workers whose index pieces split the batch's records (see `columnStart`).
    static let mostPiecesByRecords = 2

    /// Column-index sets: step r uses set r mod 2 (see `columnStart`).
    static let columnSets = 2

    /// A slice's row stride in the transposed buffers: its unit count rounded up to 16 floats.
    static func paddedWidth(_ units: Int) -> Int { max(16, (units + 15) / 16 * 16) }

    deinit {
        for p in columnStart { p.deallocate() }
        for p in cursor { p.deallocate() }
        for p in forwardCursor { p.deallocate() }
        for p in entryRow { p.deallocate() }
        for p in entryValue { p.deallocate() }
        columnStarts.deallocate()
        entryRows.deallocate()
        entryValues.deallocate()
    }
}

extension DataParallelEngine {
    /// Which implementation of the sparse kernels this CPU runs (AVX-512, AVX2+FMA, portable C).
    public static var sparseKernels: String { String(cString: nn_sparse_isa()) }

    /// Whether steps use the sparse first layer (`useSparseInput` was given the data's index).
    public var inputPath: InputPathChoice { sparse?.rows == nil ? .dense : .sparse }

    /// Trains the first layer from the non-zeros of `rows`' data set from now on (nil: dense
    /// again). Only for an engine made with `sparseFirstLayer: true`.
    public func useSparseInput(_ rows: SparseRows?) {
        precondition(rows == nil || sparse != nil, "engine made without the sparse first layer")
        sparse?.rows = rows
    }

    /// The transposed slices from the flat buffers (`toSlices`) or back (`!toSlices`):
    /// W₁[units_w, :] (u × n_0) ↔ Wᵀ_w (n_0 × ldw), and each optimiser state alike. One slice
    /// per worker; when a training call starts and ends.
    func transposeSlices(toSlices: Bool) {
        guard let sp = sparse else { return }
        let nIn = layout.inputSize
        let base = layout.weightOffsets[0]
        onWorkers { w in
            let units = firstLayerUnits[w]
            let ld = sp.ldw[w]
            // The weights, then each optimiser state buffer.
            for i in 0...optimizerState.count {
                let flat = i == 0 ? parameters : optimizerState[i - 1]
                let slice = i == 0 ? sp.weights[w] : sp.states[w][i - 1]
                let rows = flat.pointer + base + units.lowerBound * nIn
                if toSlices {
                    // Wᵀ_w[k, j] = W₁[units_w.lowerBound + j, k]
                    nn_transpose(units.count, nIn, rows, nIn, slice.pointer, ld)
                } else {
                    nn_transpose(nIn, units.count, slice.pointer, ld, rows, nIn)
                }
            }
        }
    }

    /// Z₁[:, units_w] = X · W₁[units_w]ᵀ from the non-zeros of the batch's records:
    /// z (rows × ldw, the columns past u zero) with z[r, j] = Σ_{k: x_rk ≠ 0} x_rk · Wᵀ_w[k, j].
    /// Record by record, each record's block of outputs in registers across its non-zeros.
    @inline(__always)
    func sparseFirstLayerForward(
        _ w: Int, indices: UnsafeMutablePointer<Int32>, rows: Int, into z: UnsafeMutablePointer<Float>
    ) {
        let sp = sparse!
        let csr = sp.rows!
        nn_sparse_forward(
            indices, rows, csr.offsets.baseAddress, csr.columns.baseAddress, csr.values.baseAddress,
            sp.weights[w].pointer, sp.ldw[w], firstLayerUnits[w].count, sp.inputs, z, sp.ldw[w], sp.forwardCursor[w])
    }

    /// ∂J/∂Wᵀ_w[k, j] (+)= Σ_{r: x_rk ≠ 0} x_rk · δ₁[r, units_w[j]]   (n_0 × u)
    /// The slice's transposed weight gradient over the batch's first `rows` records (from the
    /// batch's column index pieces, built in the gather phase, and the slice's part of `deltaBlock`),
    /// or, with `fused`, the update straight from it, the gradient never written: the seed's SGD
    /// (as `sgdUpdateFromBatch` does for the dense layers), Wᵀ ← (1 − α·λ/n)·Wᵀ − (α/n)·∂J/∂Wᵀ,
    /// or momentum (Optimizer.swift's rule).
    @inline(__always)
    func sparseWeightGradient(_ w: Int, columnSet: Int, rows: Int, accumulate: Bool, fused: FusedUpdate? = nil) {
        let sp = sparse!
        let units = firstLayerUnits[w]
        let delta = sp.deltaBlock.pointer + sp.deltaOffset[w]
        let n = Float(rows)
        // The store, and what it writes: the slice's gradient, or (fused) its weights.
        let (store, target): (nn_sparse_store, FloatBuffer)
        switch fused {
        case nil:
            store = nn_sparse_store(mode: accumulate ? 1 : 0, decay: 1, scale: 1, momentum: 0, rate: 0, velocity: nil)
            target = sp.gradients[w]
        case .sgd(let lr):
            store = nn_sparse_store(
                mode: 2, decay: 1 - lr / n * lambda, scale: -lr / n, momentum: 0, rate: 0, velocity: nil)
            target = sp.weights[w]
        case .momentum(let lr):
            store = nn_sparse_store(
                mode: 3, decay: lambda * (1 / n), scale: 1 / n, momentum: optimizer.momentum, rate: lr,
                velocity: sp.states[w][0].pointer)
            target = sp.weights[w]
        }
        // Pieces by records: one call over every input, the pieces as its shards. Pieces by input
        // range: one call per range, over its one piece. Either way the same sums, input by input.
        let set = columnSet * workerCount
        let ld = sp.ldw[w]
        let calls = sp.indexByInputRange ? workerCount : 1
        let shards = workerCount / calls
        for c in 0..<calls where !sp.inputRanges[c].isEmpty {
            let first = sp.inputRanges[c].lowerBound
            var callStore = store
            callStore.velocity = store.velocity.map { $0 + first * ld }
            nn_sparse_weight_gradient(
                sp.columnStarts + set + c, sp.entryRows + set + c, sp.entryValues + set + c, shards,
                sp.inputRanges[c].count, delta, sp.deltaStride, units.count, target.pointer + first * ld, ld, callStore)
        }
    }

    /// δ₁ of batch rows `row ..< row + rows`, copied slice by slice into the line-aligned
    /// `deltaBlock` the weight gradient reads (by the shard that computed those rows).
    @inline(__always)
    func copyDeltasToSlices(row: Int, rows: Int) {
        let sp = sparse!
        let n1 = layout.sizes[1]
        let d1 = batch.deltas[1]
        for r in row..<(row + rows) {
            for (w, units) in firstLayerUnits.enumerated() {
                memcpy(
                    sp.deltaBlock.pointer + r * sp.deltaStride + sp.deltaOffset[w], d1 + r * n1 + units.lowerBound,
                    units.count * MemoryLayout<Float>.stride)
            }
        }
    }

    /// Index piece p in set `columnSet` for a step of `rows` records: the non-zeros of shard p's
    /// records, or of all the records among inputs `inputRanges[p]`, grouped by input.
    @inline(__always)
    func sparseBatchColumns(_ p: Int, columnSet: Int, indices: UnsafeMutablePointer<Int32>, rows: Int) {
        let sp = sparse!
        let csr = sp.rows!
        let i = columnSet * workerCount + p
        let range = sp.inputRanges[p]
        let band = sp.indexByInputRange ? 0..<rows : Self.evenSlice(of: rows, workers: workerCount, slice: p)
        nn_sparse_batch_column_range(
            indices + band.lowerBound, band.count, band.lowerBound, csr.offsets.baseAddress, csr.columns.baseAddress,
            csr.values.baseAddress, range.lowerBound, range.upperBound, sp.columnStart[i], sp.cursor[i],
            sp.entryRow[i], sp.entryValue[i])
    }

    /// Asks for the non-zeros of shard s of a later step (batch rows `row ..< row + rows` of
    /// `indices`), so that its gather finds them in cache instead of waiting on memory.
    func prefetchShardRecords(indices: UnsafeMutablePointer<Int32>, row: Int, rows: Int) {
        let csr = sparse!.rows!
        nn_sparse_prefetch_records(
            indices + row, rows, csr.offsets.baseAddress, csr.columns.baseAddress, csr.values.baseAddress)
    }

    /// The optimiser update of slice w's transposed first-layer weights from their gradient:
    /// the same rule as every other weight (Optimizer.swift), element by element.
    @inline(__always)
    func sparseUpdate(_ w: Int, records: Int, learningRate: Float, adamStep: Int) {
        let sp = sparse!
        let g = sp.gradients[w].pointer
        let s = sp.states[w]
        update(
            config: optimizer, isWeight: true, params: sp.weights[w].pointer, state1: s.first?.pointer,
            state2: s.count > 1 ? s[1].pointer : nil, start: 0, end: sp.inputs * sp.ldw[w],
            learningRate: learningRate, lambda: lambda, records: records, adamStep: adamStep
        ) { g[$0] }
    }
}
