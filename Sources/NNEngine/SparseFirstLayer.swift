import CKernels
import Dispatch
import Foundation
import NNData
import NNNumerics

// The sparse-aware first layer. MNIST's inputs are 81 % zeros, and the first layer is 86 % of
// the seed network's multiply-adds: its forward (Z₁ = X·W₁ᵀ) and weight gradient (δ₁ᵀ·X) are
// computed from the non-zeros of the batch instead of dense GEMMs over the zeros.
//
// For that, W₁ is kept transposed, Wᵀ: n_0 × ldw (ldw = n_1 rounded up to 16, the extra columns
// zero), so one input's weights for all the units are one contiguous row the kernels keep in
// registers; and its optimiser state in the same layout. The work is split between the workers
// by inputs: worker slice w owns Wᵀ's rows `inputRanges[w]` (the same share of the data's
// non-zeros each). In the forward it adds, for every record of the batch, the non-zeros among
// its inputs into a partial sum of all the record's units, which the shards add up; in the
// weight gradient it sums over the batch's non-zeros among its inputs and updates its rows. So
// no record's non-zero is visited by two workers, no worker's share is padded, and no weight
// row and no index entry changes cores (docs/performance.md, "Twenty-third session"). The flat
// `parameters` (and state) stay the one truth outside a training call: Wᵀ is loaded from them
// when a call starts and written back when it ends, so evaluation, checkpoints, exports and
// everything else see the usual layout.

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

/// The transposed first-layer weights, gradient, optimiser state and the batch's column index
/// by worker slice; allocated once, when the engine is made (the records' bounds when it is
/// given the data, before any step).
///
/// `@unchecked Sendable`: inside a training call slice w's rows and index pieces are used only
/// by the iteration that claimed slice w (as the flat buffers' slices are, see
/// `DataParallelEngine`); `rows`, `inputRanges` and `recordBounds` are set between calls.
final class SparseFirstLayer: @unchecked Sendable {
    let inputs: Int
    let units: Int
    /// Wᵀ's row stride: the first layer's units rounded up to 16.
    let ldw: Int
    /// Wᵀ, n_0 × ldw.
    let weights: FloatBuffer
    /// ∂J/∂Wᵀ summed over the step's records, n_0 × ldw.
    let gradient: FloatBuffer
    /// states[i]: optimiser state buffer i, transposed like the weights.
    let states: [FloatBuffer]
    /// inputRanges[w]: the inputs (Wᵀ's rows) worker slice w owns; contiguous, in order,
    /// covering all inputs. Set from the data's non-zeros by `useSparseInput`.
    var inputRanges: [Range<Int>]
    /// Per set and piece ([set · pieces + piece]): the batch's non-zeros among the inputs
    /// `inputRanges[piece]`, grouped by input (see `nn_sparse_batch_column_range`), built by
    /// piece's gather and read by the same slice's weight gradient after the barrier. Two sets,
    /// used by alternate steps: a thread that is done with step r's gradient builds step r + 1's
    /// index in the other set while step r's slices still read theirs. A set's entries are one
    /// array of room for every input of every record (maxBatch · n_0), piece p's from
    /// maxBatch · inputRanges[p].lowerBound on (`placeIndexPieces`), so the ranges can follow
    /// the data without more memory.
    let columnStart: [UnsafeMutablePointer<Int>]
    let cursor: [UnsafeMutablePointer<Int>]
    let entryRow: [UnsafeMutablePointer<Int32>]
    let entryValue: [UnsafeMutablePointer<Float>]
    let maxBatch: Int
    /// Each piece's index, as the C arrays of pointers the gradient kernel takes.
    let columnStarts: UnsafeMutablePointer<UnsafePointer<Int>?>
    let entryRows: UnsafeMutablePointer<UnsafeMutablePointer<Int32>?>
    let entryValues: UnsafeMutablePointer<UnsafeMutablePointer<Float>?>
    /// Per slice: each batch record's position in its non-zeros during the blocked forward.
    let forwardCursor: [UnsafeMutablePointer<Int>]
    /// The index of the data set the steps train on (set by the trainer).
    var rows: SparseRows?
    /// With more than one piece, recordBounds[p][2·rec], [2·rec + 1]: record rec's first non-zero
    /// at input `inputRanges[p].lowerBound` or above and one past its last below the range's end,
    /// side by side so that one cache line gives the kernels both (set with `rows` by
    /// `useSparseInput`). Without them every piece but the first found its start by a binary
    /// search over the record's columns in each pass (docs/performance.md, "Twenty-fourth session").
    var recordBounds: [UnsafeMutablePointer<Int>] = []
    /// δ₁ again, in rows of ldw floats (the padding lanes never written, so zero), for the
    /// weight gradient: δ₁'s own rows are 200 floats for the seed, so every odd row began inside
    /// a 64-byte line and each of the kernel's loads straddled two lines. The AVX2 gradient
    /// kernel reads and sums the padding lanes in whole registers into Wᵀ's padding columns,
    /// which must stay zero (nn_kernels.h).
    let deltaBlock: FloatBuffer

    init(inputs: Int, units: Int, pieces: Int, stateBuffers: Int, maxBatch: Int) {
        self.inputs = inputs
        self.units = units
        let ldw = Self.paddedWidth(units)
        self.ldw = ldw
        weights = FloatBuffer(count: inputs * ldw)
        gradient = FloatBuffer(count: inputs * ldw)
        states = (0..<stateBuffers).map { _ in FloatBuffer(count: inputs * ldw) }
        self.maxBatch = maxBatch
        inputRanges = (0..<pieces).map { (inputs * $0 / pieces)..<(inputs * ($0 + 1) / pieces) }
        let indexes = Self.columnSets * pieces
        columnStart = (0..<indexes).map { _ in .allocate(capacity: inputs + 1) }
        cursor = (0..<indexes).map { _ in .allocate(capacity: max(1, inputs)) }
        entryRow = (0..<Self.columnSets).map { _ in .allocate(capacity: max(1, maxBatch * inputs)) }
        entryValue = (0..<Self.columnSets).map { _ in .allocate(capacity: max(1, maxBatch * inputs)) }
        forwardCursor = (0..<pieces).map { _ in .allocate(capacity: maxBatch) }
        deltaBlock = FloatBuffer(count: maxBatch * ldw)
        columnStarts = .allocate(capacity: indexes)
        entryRows = .allocate(capacity: indexes)
        entryValues = .allocate(capacity: indexes)
        for i in 0..<indexes { columnStarts[i] = UnsafePointer(columnStart[i]) }
        placeIndexPieces()
    }

    /// Points each piece's index at its place in its set's entries (after `inputRanges` change).
    func placeIndexPieces() {
        let pieces = inputRanges.count
        for set in 0..<Self.columnSets {
            for p in 0..<pieces {
                let offset = maxBatch * inputRanges[p].lowerBound
                entryRows[set * pieces + p] = entryRow[set] + offset
                entryValues[set * pieces + p] = entryValue[set] + offset
            }
        }
    }

    /// Column-index sets: step r uses set r mod 2 (see `columnStart`).
    static let columnSets = 2

    /// A row stride in the transposed buffers: the units rounded up to 16 floats.
    static func paddedWidth(_ units: Int) -> Int { max(16, (units + 15) / 16 * 16) }

    /// `pieces` contiguous ranges of the inputs with as even a share of `rows`' non-zeros as
    /// input boundaries allow (MNIST's are in the middle of the image: equal counts of inputs
    /// would give the middle ranges most of the work).
    static func inputRanges(of rows: SparseRows, pieces: Int) -> [Range<Int>] {
        var perInput = [Int](repeating: 0, count: rows.features)
        for p in 0..<rows.nonZeros { perInput[Int(rows.columns[p])] += 1 }
        var bounds = [0]
        var sum = 0
        var k = 0
        for piece in 1..<max(1, pieces) {
            // the first input at which the running count reaches piece/pieces of the non-zeros,
            // leaving at least one input to each later piece where there are enough
            let target = rows.nonZeros * piece / pieces
            while k < rows.features - (pieces - piece) && sum + perInput[k] <= target {
                sum += perInput[k]
                k += 1
            }
            bounds.append(max(k, bounds.last!))
        }
        bounds.append(rows.features)
        return (0..<pieces).map { bounds[$0]..<bounds[$0 + 1] }
    }

    /// Sets `recordBounds` for `rows` and the current `inputRanges` (none for one piece: the
    /// offsets are its bounds). Between training calls.
    func placeRecordBounds() {
        for b in recordBounds { b.deallocate() }
        recordBounds = []
        guard let rows, inputRanges.count > 1 else { return }
        let (offsets, columns) = (rows.offsets, rows.columns)
        recordBounds = inputRanges.map { _ in .allocate(capacity: 2 * max(1, rows.records)) }
        // One walk over each record's columns, in input order, past each range's end in turn.
        for rec in 0..<rows.records {
            var p = offsets[rec]
            let end = offsets[rec + 1]
            for (piece, range) in inputRanges.enumerated() {
                recordBounds[piece][2 * rec] = p
                while p < end && Int(columns[p]) < range.upperBound { p += 1 }
                recordBounds[piece][2 * rec + 1] = p
            }
        }
    }

    /// Piece p's bounds and their stride, as the kernels take them (`nn_sparse_forward_range`).
    @inline(__always)
    func bounds(ofPiece p: Int) -> (UnsafePointer<Int>, Int) {
        recordBounds.isEmpty ? (UnsafePointer(rows!.offsets.baseAddress!), 1) : (UnsafePointer(recordBounds[p]), 2)
    }

    deinit {
        for b in recordBounds { b.deallocate() }
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
    /// again), the workers' input ranges cut at even shares of its non-zeros. Only for an
    /// engine made with `sparseFirstLayer: true`; between training calls.
    public func useSparseInput(_ rows: SparseRows?) {
        precondition(rows == nil || sparse != nil, "engine made without the sparse first layer")
        guard let sp = sparse else { return }
        sp.rows = rows
        if let rows {
            sp.inputRanges = SparseFirstLayer.inputRanges(of: rows, pieces: workerCount)
            sp.placeIndexPieces()
        }
        sp.placeRecordBounds()
    }

    /// Wᵀ from the flat buffers (`toSlices`) or back (`!toSlices`): W₁ (n_1 × n_0) ↔ Wᵀ
    /// (n_0 × ldw), and each optimiser state alike, each worker its own rows of Wᵀ (the columns
    /// `inputRanges[w]` of W₁); when a training call starts and ends.
    func transposeSlices(toSlices: Bool) {
        guard let sp = sparse else { return }
        let nIn = layout.inputSize
        let base = layout.weightOffsets[0]
        let (n1, ld) = (sp.units, sp.ldw)
        onWorkers { w in
            let inputs = sp.inputRanges[w]
            // The weights, then each optimiser state buffer.
            for i in 0...optimizerState.count {
                let flat = i == 0 ? parameters : optimizerState[i - 1]
                let transposed = i == 0 ? sp.weights : sp.states[i - 1]
                let columns = flat.pointer + base + inputs.lowerBound
                let rows = transposed.pointer + inputs.lowerBound * ld
                if toSlices {
                    // Wᵀ[k, j] = W₁[j, k] for the inputs k of slice w
                    nn_transpose(n1, inputs.count, columns, nIn, rows, ld)
                } else {
                    nn_transpose(inputs.count, n1, rows, ld, columns, nIn)
                }
            }
        }
    }

    /// P_w[r, :] = Σ_{k ∈ inputs_w, x_rk ≠ 0} x_rk · Wᵀ[k, :]   (rows × ldw, the columns past n_1 zero)
    /// Slice w's part of every batch record's Z₁ = X·W₁ᵀ: the sum over the record's non-zeros
    /// among the slice's inputs, record by record, a block of its outputs in registers across
    /// them. The shards add the slices' parts (`sumFirstLayerParts`).
    @inline(__always)
    func sparseFirstLayerForward(
        _ w: Int, indices: UnsafeMutablePointer<Int32>, rows: Int, into z: UnsafeMutablePointer<Float>
    ) {
        let sp = sparse!
        let csr = sp.rows!
        let inputs = sp.inputRanges[w]
        let (bounds, stride) = sp.bounds(ofPiece: w)
        nn_sparse_forward_range(
            indices, rows, csr.offsets.baseAddress, bounds, stride, csr.columns.baseAddress, csr.values.baseAddress,
            sp.weights.pointer + inputs.lowerBound * sp.ldw, sp.ldw, sp.units, inputs.lowerBound, inputs.upperBound,
            z, sp.ldw, sp.forwardCursor[w])
    }

    /// A_1[r, :] = g(Σ_w P_w[r, :] + b_1)   (rows × n_1), for batch rows `row ..< row + rows`
    /// The first layer's outputs of a shard's records from the slices' parts, added in slice
    /// order (so reproducible for a given worker count) straight into A_1: the parts' rows are
    /// only read here, so the next step's forward, on the core that owns them, finds them in its
    /// cache instead of fetching them back from the core that would have written them.
    @inline(__always)
    func sumFirstLayerParts(row: Int, rows: Int) {
        let sp = sparse!
        let (n1, ld) = (sp.units, sp.ldw)
        let a1 = batch.activations[1]
        let bias = parameters.pointer + layout.biasOffsets[0]
        for r in row..<(row + rows) {
            let a = a1 + r * n1
            memcpy(a, batch.firstLayerBlocks[0] + r * ld, n1 * MemoryLayout<Float>.stride)
            for w in 1..<workerCount {
                let part = batch.firstLayerBlocks[w] + r * ld
                for j in 0..<n1 { a[j] += part[j] }
            }
            activate(a, bias: bias, rows: 1, cols: n1)
        }
    }

    /// ∂J/∂Wᵀ[k, :] (+)= Σ_{r: x_rk ≠ 0} x_rk · δ₁[r, :]   (n_0 × n_1), for the inputs k of slice w
    /// Slice w's rows of the transposed weight gradient over the batch's first `rows` records
    /// (from its piece of the batch's column index, built in the gather phase, and `deltaBlock`),
    /// or, with `fused`, the update straight from it, the gradient never written: the seed's SGD
    /// (as `sgdUpdateFromBatch` does for the dense layers), Wᵀ ← (1 − α·λ/n)·Wᵀ − (α/n)·∂J/∂Wᵀ,
    /// or momentum (Optimizer.swift's rule).
    @inline(__always)
    func sparseWeightGradient(_ w: Int, columnSet: Int, rows: Int, accumulate: Bool, fused: FusedUpdate? = nil) {
        let sp = sparse!
        let inputs = sp.inputRanges[w]
        if inputs.isEmpty { return }
        let n = Float(rows)
        let first = inputs.lowerBound * sp.ldw
        // The store, and what it writes: the gradient, or (fused) the weights.
        let (store, target): (nn_sparse_store, FloatBuffer)
        switch fused {
        case nil:
            store = nn_sparse_store(mode: accumulate ? 1 : 0, decay: 1, scale: 1, momentum: 0, rate: 0, velocity: nil)
            target = sp.gradient
        case .sgd(let lr):
            store = nn_sparse_store(
                mode: 2, decay: 1 - lr / n * lambda, scale: -lr / n, momentum: 0, rate: 0, velocity: nil)
            target = sp.weights
        case .momentum(let lr):
            store = nn_sparse_store(
                mode: 3, decay: lambda * (1 / n), scale: 1 / n, momentum: optimizer.momentum, rate: lr,
                velocity: sp.states[0].pointer + first)
            target = sp.weights
        }
        let piece = columnSet * workerCount + w
        var entryRows: UnsafePointer<Int32>? = UnsafePointer(sp.entryRows[piece])
        var entryValues: UnsafePointer<Float>? = UnsafePointer(sp.entryValues[piece])
        nn_sparse_weight_gradient(
            sp.columnStarts + piece, &entryRows, &entryValues, 1, inputs.count,
            sp.deltaBlock.pointer, sp.ldw, sp.units, target.pointer + first, sp.ldw, store)
    }

    /// δ₁ of batch rows `row ..< row + rows`, copied into the line-aligned `deltaBlock` the
    /// weight gradient reads (by the shard that computed those rows).
    @inline(__always)
    func copyDeltasToBlock(row: Int, rows: Int) {
        let sp = sparse!
        let n1 = sp.units
        let d1 = batch.deltas[1]
        for r in row..<(row + rows) {
            memcpy(sp.deltaBlock.pointer + r * sp.ldw, d1 + r * n1, n1 * MemoryLayout<Float>.stride)
        }
    }

    /// Index piece p in set `columnSet` for a step of `rows` records: the non-zeros of all the
    /// batch's records among inputs `inputRanges[p]`, grouped by input.
    @inline(__always)
    func sparseBatchColumns(_ p: Int, columnSet: Int, indices: UnsafeMutablePointer<Int32>, rows: Int) {
        let sp = sparse!
        let csr = sp.rows!
        let i = columnSet * workerCount + p
        let range = sp.inputRanges[p]
        let (bounds, stride) = sp.bounds(ofPiece: p)
        nn_sparse_batch_column_range(
            indices, rows, 0, csr.offsets.baseAddress, bounds, stride, csr.columns.baseAddress,
            csr.values.baseAddress, range.lowerBound, range.upperBound, sp.columnStart[i], sp.cursor[i],
            sp.entryRows[i], sp.entryValues[i])
    }

    /// Asks for the non-zeros among piece p's inputs of a later step's records (`rows` of
    /// `indices`) — what piece p's index and forward read — so that they find them in cache
    /// instead of waiting on memory or on the other core. (Before each record's bounds were
    /// kept, finding them by a search cost more than the prefetch gave: docs/performance.md,
    /// "Twenty-third session".)
    func prefetchRecords(ofPiece p: Int, indices: UnsafeMutablePointer<Int32>, rows: Int) {
        let sp = sparse!
        let csr = sp.rows!
        let (bounds, stride) = sp.bounds(ofPiece: p)
        nn_sparse_prefetch_records(
            indices, rows, csr.offsets.baseAddress, bounds, stride, csr.columns.baseAddress, csr.values.baseAddress)
    }

    /// The optimiser update of slice w's rows of the transposed first-layer weights from their
    /// gradient: the same rule as every other weight (Optimizer.swift), element by element.
    @inline(__always)
    func sparseUpdate(_ w: Int, records: Int, learningRate: Float, adamStep: Int) {
        let sp = sparse!
        let g = sp.gradient.pointer
        let inputs = sp.inputRanges[w]
        update(
            config: optimizer, isWeight: true, params: sp.weights.pointer, state1: sp.states.first?.pointer,
            state2: sp.states.count > 1 ? sp.states[1].pointer : nil, start: inputs.lowerBound * sp.ldw,
            end: inputs.upperBound * sp.ldw, learningRate: learningRate, lambda: lambda, records: records,
            adamStep: adamStep
        ) { g[$0] }
    }
}
