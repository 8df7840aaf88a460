import Foundation
import NNAPI
import NNData
import NNNumerics

// The layer math of a step, top to bottom: gather the inputs, forward each layer, loss and
// output delta, backward deltas, weight and bias gradients. Notation (row-major, one row per
// record): B = rows of the step (the batch), n_l = units of layer l (n_0 = inputs),
// A_l: B × n_l activations (A_0 = X, the inputs), Z_l = A_{l-1}·W_lᵀ + b_l, W_l: n_l × n_{l-1},
// b_l: n_l, δ_l: B × n_l = ∂J/∂Z_l. Everything lives in preallocated buffers (`BatchBuffers`,
// the flat `parameters` and `gradient`): no function here allocates.

extension DataParallelEngine {
    /// X[row..<row+rows, :] = features[indices[row..<row+rows], :]   (rows × n_0)
    /// Copies the inputs of the shard's records into its rows of the batch's input matrix
    /// (run by the shard that owns the rows, so the copy lands on its node).
    @inline(__always)
    func gatherInputs(data: Dataset, indices: UnsafeMutablePointer<Int32>, row: Int, rows: Int) {
        let inSize = layout.inputSize
        let features = data.features.pointer
        let input = batch.activations[0]
        for r in row..<(row + rows) {
            memcpy(input + r * inSize, features + Int(indices[r]) * inSize, inSize * MemoryLayout<Float>.stride)
        }
    }

    /// Forward from layer `fromLayer` on, loss and backward (deltas only) of the batch rows
    /// `row..<row + rows` (records indices[row...]), on behalf of worker `shard`; the layers
    /// below `fromLayer` are already computed for these rows. Returns the rows' cost and accuracy.
    @inline(__always)
    func runShard(
        _ shard: Int, data: Dataset, indices: UnsafeMutablePointer<Int32>, row: Int, rows: Int, fromLayer: Int
    ) -> PassResult {
        if rows == 0 { return .zero }
        placer.bindCurrentThread(toNode: placements[shard].node)
        if fromLayer == 2 && inputPath == .sparse { sumFirstLayerParts(row: row, rows: rows) }
        let inSize = layout.sizes[fromLayer - 1]
        forward(from: fromLayer, input: batch.activations[fromLayer - 1] + row * inSize, row: row, rows: rows)
        let (cost, correct) = data.labels.withUnsafeBufferPointer { labels in
            lossAndOutputDelta(row: row, rows: rows) { labels[Int(indices[row + $0])] }
        }
        backwardDeltas(row: row, rows: rows)
        if inputPath == .sparse { copyDeltasToBlock(row: row, rows: rows) }
        return PassResult(costSum: cost, correct: correct, records: rows)
    }

    /// A_l[row..<row+rows, :] for l = from … L−1, from `input` = A_{from−1} of those records
    /// (rows × n_{from−1}); each layer's output goes into batch rows `row…` of A_l.
    @inline(__always)
    func forward(from: Int = 1, input: UnsafePointer<Float>, row: Int, rows: Int) {
        let sizes = layout.sizes
        var a = input
        for l in from..<sizes.count {
            forwardLayer(l, input: a, row: row, rows: rows)
            a = UnsafePointer(batch.activations[l] + row * sizes[l])
        }
    }

    /// Dense:  A_1[:, units] = g(X · W_1[units, :]ᵀ + b_1[units])   (B × u) = (B × n_0)·(n_0 × u)
    /// Sparse: P_w = X[:, inputs_w] · Wᵀ[inputs_w, :]   (B × n_1) = (B × |inputs_w|)·(|inputs_w| × n_1)
    /// The first layer's piece w for the whole batch. Sparse: slice w's part of every record's
    /// outputs from its inputs' non-zeros, which the shards add up (SparseFirstLayer.swift).
    /// Dense: slice w's units, computed in worker w's own block (B × u) and then copied into
    /// those columns of A_1 (B × n_1). The slices meet inside rows of activations[1] (unit 100
    /// is byte 400 of a row, inside a 64-byte line): written by the GEMM in place, that line of
    /// every row passed between the cores on each of the GEMM's passes; copied, once per step.
    @inline(__always)
    func firstLayerSlice(_ w: Int, indices: UnsafeMutablePointer<Int32>, rows: Int) {
        let z = batch.firstLayerBlocks[w]
        if inputPath == .sparse {
            sparseFirstLayerForward(w, indices: indices, rows: rows, into: z)
            return
        }
        let units = firstLayerUnits[w]
        let nIn = layout.sizes[0]
        let nOut = layout.sizes[1]
        let lo = units.lowerBound
        if units.isEmpty { return }
        let u = units.count
        BLAS.sgemm(
            transA: false, transB: true, m: rows, n: u, k: nIn, alpha: 1, a: batch.activations[0], lda: nIn,
            b: parameters.pointer + layout.weightOffsets[0] + lo * nIn, ldb: nIn, beta: 0, c: z, ldc: u)
        activate(z, bias: parameters.pointer + layout.biasOffsets[0] + lo, rows: rows, cols: u)
        let a1 = batch.activations[1]
        for r in 0..<rows { memcpy(a1 + r * nOut + lo, z + r * u, u * MemoryLayout<Float>.stride) }
    }

    /// A_l = g(A_{l−1} · W_lᵀ + b_l) for batch rows `row..<row+rows`, `input` = A_{l−1} of those
    /// rows (rows × n_{l−1}); g is the hidden activation, softmax on the output layer.
    @inline(__always)
    func forwardLayer(_ l: Int, input: UnsafePointer<Float>, row: Int, rows: Int) {
        let nIn = layout.sizes[l - 1]
        let nOut = layout.sizes[l]
        let z = batch.activations[l] + row * nOut
        let w = UnsafePointer(parameters.pointer + layout.weightOffsets[l - 1])
        let b = UnsafePointer(parameters.pointer + layout.biasOffsets[l - 1])
        // Z_l (rows × n_l) = A_{l−1} (rows × n_{l−1}) · W_lᵀ (n_{l−1} × n_l)
        if l >= 2 {
            BLAS.smallProductTransposed(m: rows, n: nOut, k: nIn, a: input, lda: nIn, b: w, ldb: nIn, c: z, ldc: nOut)
        } else {
            // the first layer (784 inputs: OpenBLAS's packing pays off)
            BLAS.sgemm(
                transA: false, transB: true, m: rows, n: nOut, k: nIn, alpha: 1, a: input, lda: nIn,
                b: w, ldb: nIn, beta: 0, c: z, ldc: nOut)
        }
        if l == layout.sizes.count - 1 {
            VectorKernels.softmax(z, bias: b, rows: rows, cols: nOut)
        } else {
            activate(z, bias: b, rows: rows, cols: nOut)
        }
    }

    @inline(__always)
    func activate(_ z: UnsafeMutablePointer<Float>, bias: UnsafePointer<Float>, rows: Int, cols: Int) {
        switch activation {
        case .logistic:
            VectorKernels.logistic(z, bias: bias, rows: rows, cols: cols)
        case .tanh:
            for r in 0..<rows {
                let row = z + r * cols
                for j in 0..<cols { row[j] = tanhf(row[j] + bias[j]) }
            }
        case .relu:
            VectorKernels.relu(z, bias: bias, rows: rows, cols: cols)
        }
    }

    /// δ_L = Ŷ − Y   (rows × n_L), and J = −Σ log ŷ[y] with the seed's clipping (eps 1e-10)
    /// Softmax + cross-entropy's delta is the probabilities minus the one-hot labels; also counts
    /// the records whose largest probability is their label.
    @inline(__always)
    func lossAndOutputDelta(row: Int, rows: Int, label: (Int) -> Int32) -> (cost: Double, correct: Int) {
        let L = layout.sizes.count
        let k = layout.outputSize
        let yhat = batch.activations[L - 1] + row * k
        let delta = batch.deltas[L - 1] + row * k
        var cost = 0.0
        var correct = 0
        for r in 0..<rows {
            let y = Int(label(r))
            let p = yhat + r * k
            let d = delta + r * k
            var best = 0
            for j in 0..<k {
                d[j] = p[j]
                if p[j] > p[best] { best = j }
            }
            d[y] -= 1
            if best == y { correct += 1 }
            // The seed clips ŷ to [eps, 1-eps]; a NaN must not be clipped away, or divergence would go unnoticed.
            let py = Double(p[y])
            let clipped = py.isNaN ? py : min(max(py, 1e-10), 1 - 1e-10)
            cost -= Foundation.log(clipped)
        }
        return (cost, correct)
    }

    /// δ_{l−1} = (δ_l · W_l) ⊙ g′(A_{l−1})   (rows × n_{l−1}) = (rows × n_l)·(n_l × n_{l−1}), l = L … 2
    /// Backpropagates the output delta through the hidden layers of batch rows `row…`. Per
    /// record, so it runs shard by shard before the barrier; g′ is taken from the activation
    /// (σ′ = a(1 − a), tanh′ = 1 − a², relu′ = [a > 0]).
    @inline(__always)
    func backwardDeltas(row: Int, rows: Int) {
        let sizes = layout.sizes
        var l = sizes.count - 1
        while l > 1 {
            let nIn = sizes[l - 1]
            let nOut = sizes[l]
            let delta = UnsafePointer(batch.deltas[l] + row * nOut)
            let a = UnsafePointer(batch.activations[l - 1] + row * nIn)
            let w = UnsafePointer(parameters.pointer + layout.weightOffsets[l - 1])
            let dPrev = batch.deltas[l - 1] + row * nIn
            BLAS.smallGEMM(
                transA: false, m: rows, n: nIn, k: nOut, alpha: 1, a: delta, lda: nOut, b: w, ldb: nIn, beta: 0,
                c: dPrev, ldc: nIn)
            let count = rows * nIn
            switch activation {
            case .logistic: VectorKernels.logisticBackward(dPrev, output: a, count: count)
            case .tanh: for i in 0..<count { dPrev[i] *= 1 - a[i] * a[i] }
            case .relu: VectorKernels.reluBackward(dPrev, output: a, count: count)
            }
            l -= 1
        }
    }

    /// ∂J/∂W_l[units, :] = δ_l[:, units]ᵀ · A_{l−1}   (u × n_{l−1}) = (u × B)·(B × n_{l−1})
    /// ∂J/∂b_l[units] = Σ_rows δ_l[:, units]
    /// Slice `slice` of the gradient of every layer, summed over the batch's first `rows` rows —
    /// every shard's records: the reduction over workers is this GEMM's inner sum. Written
    /// (or, with `accumulate`, added) into `gradient`; the sparse first layer's into its
    /// transposed slice, or with `fusedFirstLayer` straight into its weights (SparseFirstLayer.swift).
    @inline(__always)
    func weightGradient(
        slice: Int, columnSet: Int, rows: Int, accumulate: Bool, fusedFirstLayer: FusedUpdate? = nil
    ) {
        for s in gradientSlices[slice] {
            if s.layer == 1 && inputPath == .sparse {
                sparseWeightGradient(
                    slice, columnSet: columnSet, rows: rows, accumulate: accumulate, fused: fusedFirstLayer)
            } else {
                sliceGEMM(s, rows: rows, alpha: 1, beta: accumulate ? 1 : 0, into: gradient.pointer)
            }
            biasGradient(s, rows: rows, accumulate: accumulate)
        }
    }

    /// C[units, :] = alpha · δ_l[:, units]ᵀ · A_{l−1} + beta · C   (u × n_{l−1})
    /// C is the slice's weight rows in a buffer laid out like the parameters: the gradient, or
    /// the parameters themselves (fused SGD, Optimizer.swift).
    @inline(__always)
    func sliceGEMM(_ s: GradientSlice, rows: Int, alpha: Float, beta: Float, into base: UnsafeMutablePointer<Float>) {
        let nIn = layout.sizes[s.layer - 1]
        let nOut = layout.sizes[s.layer]
        let lo = s.rows.lowerBound
        BLAS.smallGEMM(
            transA: true, m: s.rows.count, n: nIn, k: rows, alpha: alpha,
            a: UnsafePointer(batch.deltas[s.layer] + lo), lda: nOut,
            b: UnsafePointer(batch.activations[s.layer - 1]), ldb: nIn,
            beta: beta, c: base + layout.weightOffsets[s.layer - 1] + lo * nIn, ldc: nIn)
    }

    /// ∂J/∂b_l[units] = Σ over the batch's rows of δ_l[:, units] (in row order, so reproducible),
    /// into `gradient`. The sparse first layer's sums read δ₁ from `deltaBlock`, whose rows the
    /// slice's weight gradient has just brought into this core's cache: reading δ₁ itself fetched
    /// the other shards' rows from the cores that wrote them a second time.
    @inline(__always)
    func biasGradient(_ s: GradientSlice, rows: Int, accumulate: Bool) {
        let nOut = layout.sizes[s.layer]
        var delta = UnsafePointer(batch.deltas[s.layer]) + s.rows.lowerBound
        var stride = nOut
        if s.layer == 1, inputPath == .sparse, let sp = sparse {
            delta = UnsafePointer(sp.deltaBlock.pointer) + s.rows.lowerBound
            stride = sp.ldw
        }
        let gb = gradient.pointer + layout.biasOffsets[s.layer - 1] + s.rows.lowerBound
        let units = s.rows.count
        if !accumulate { for j in 0..<units { gb[j] = 0 } }
        for r in 0..<rows {
            let d = delta + r * stride
            for j in 0..<units { gb[j] += d[j] }
        }
    }
}
