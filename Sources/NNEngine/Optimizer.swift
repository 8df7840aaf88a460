import Foundation
import NNAPI
import NNNumerics

/// The update rule. `sgd` is the seed's: θ ← θ − (α/n)·Σg − (α·λ/n)·θ, b ← b − (α/n)·Σg.
/// `momentum` and `adam` apply their usual rules to the same regularised mean gradient
/// ĝ = Σg/n + (λ/n)·θ (weights) or Σg/n (biases).

public struct OptimizerConfig: Codable, Sendable, Equatable {
    public var kind: OptimizerKind
    /// momentum coefficient μ (momentum only)
    public var momentum: Float
    /// Adam β1, β2, ε
    public var beta1: Float
    public var beta2: Float
    public var epsilon: Float

    public init(
        kind: OptimizerKind = .sgd, momentum: Float = 0.9, beta1: Float = 0.9, beta2: Float = 0.999,
        epsilon: Float = 1e-8
    ) {
        self.kind = kind
        self.momentum = momentum
        self.beta1 = beta1
        self.beta2 = beta2
        self.epsilon = epsilon
    }

    /// How many parameter-sized state buffers the optimiser keeps.
    public var stateBuffers: Int {
        switch kind {
        case .sgd: 0
        case .momentum: 1
        case .adam: 2
        }
    }
}

/// Applies one update to a contiguous range of parameters, with the summed gradient of element
/// i given by `gradient(i)`. Called by each worker on its own slice after the barrier, so it
/// must touch nothing outside `start..<end`.
@inline(__always)
func update(
    config: OptimizerConfig, isWeight: Bool, params: UnsafeMutablePointer<Float>,
    state1: UnsafeMutablePointer<Float>?, state2: UnsafeMutablePointer<Float>?,
    start: Int, end: Int, learningRate: Float, lambda: Float, records: Int, adamStep: Int,
    gradient: (Int) -> Float
) {
    // n records in the step; weights decay by λ/n (biases are not regularised).
    let invN = 1 / Float(records)
    let decay = isWeight ? lambda * invN : 0
    switch config.kind {
    case .sgd:
        let a = learningRate * invN
        let ad = learningRate * decay
        for i in start..<end {
            // θ ← θ − (α/n)·Σg − (α·λ/n)·θ   (the seed's rule)
            params[i] = params[i] - a * gradient(i) - ad * params[i]
        }
    case .momentum:
        let v = state1!
        let mu = config.momentum
        for i in start..<end {
            // ĝ = Σg/n + (λ/n)·θ
            let g = gradient(i) * invN + decay * params[i]
            // v ← μ·v + ĝ
            v[i] = mu * v[i] + g
            // θ ← θ − α·v
            params[i] -= learningRate * v[i]
        }
    case .adam:
        let m = state1!
        let v = state2!
        let b1 = config.beta1
        let b2 = config.beta2
        let eps = config.epsilon
        let t = Float(adamStep)
        let c1 = 1 - Float.pow(b1, t)
        let c2 = 1 - Float.pow(b2, t)
        let stepSize = learningRate / c1
        let invC2 = 1 / c2
        for i in start..<end {
            // ĝ = Σg/n + (λ/n)·θ
            let g = gradient(i) * invN + decay * params[i]
            // m ← β₁·m + (1 − β₁)·ĝ
            m[i] = b1 * m[i] + (1 - b1) * g
            // v ← β₂·v + (1 − β₂)·ĝ²
            v[i] = b2 * v[i] + (1 - b2) * g * g
            // θ ← θ − α·m̂ / (√v̂ + ε), m̂ = m/(1 − β₁ᵗ), v̂ = v/(1 − β₂ᵗ)
            params[i] -= stepSize * m[i] / ((v[i] * invC2).squareRoot() + eps)
        }
    }
}

extension Float {
    @inline(__always) static func pow(_ x: Float, _ y: Float) -> Float { Float(Foundation.pow(Double(x), Double(y))) }
}

// MARK: - The engine's update of its gradient slices

extension DataParallelEngine {
    /// The seed's SGD update of slice `slice` straight from the batch, for a step that fits the
    /// buffers: θ ← (1 − α·λ/n)·θ − (α/n)·δᵀ·A_prev is one GEMM with β = 1 − α·λ/n and α' = −α/n
    /// writing the parameters, and b ← b − (α/n)·Σδ. Same rule as `update` (to float rounding);
    /// it saves writing the slice's gradient and reading it back — per step, for the first
    /// layer, more bytes than the GEMM's own inputs.
    @inline(__always)
    func sgdUpdateFromBatch(slice: Int, columnSet: Int, rows: Int, learningRate: Float) {
        let scale = learningRate / Float(rows)
        for s in gradientSlices[slice] {
            if s.layer == 1 && inputPath == .sparse {
                sparseWeightGradient(
                    slice, columnSet: columnSet, rows: rows, accumulate: false, fused: .sgd(learningRate))
            } else {
                sliceGEMM(s, rows: rows, alpha: -scale, beta: 1 - scale * lambda, into: parameters.pointer)
            }
            biasGradient(s, rows: rows, accumulate: false)
            let b = parameters.pointer + layout.biasOffsets[s.layer - 1]
            let gb = gradient.pointer + layout.biasOffsets[s.layer - 1]
            for j in s.rows { b[j] -= scale * gb[j] }
        }
    }

    /// Momentum for a whole step (one round): the sparse first layer's weights updated inside
    /// its gradient kernel (the gradient never written, then read back: the first layer is 86 %
    /// of the seed network's weights), everything else from the summed gradient as usual.
    @inline(__always)
    func momentumUpdateFromBatch(slice: Int, columnSet: Int, rows: Int, learningRate: Float) {
        weightGradient(
            slice: slice, columnSet: columnSet, rows: rows, accumulate: false,
            fusedFirstLayer: .momentum(learningRate))
        applyUpdate(slice: slice, records: rows, learningRate: learningRate, adamStep: 0, firstLayerWeightsDone: true)
    }

    /// The optimiser update of slice `slice`'s parameters from their summed gradient (but the
    /// sparse first layer's weights when `firstLayerWeightsDone`: a fused kernel updated them).
    @inline(__always)
    func applyUpdate(
        slice: Int, records: Int, learningRate: Float, adamStep: Int, firstLayerWeightsDone: Bool = false
    ) {
        let g = gradient.pointer
        let s1 = optimizerState.first?.pointer
        let s2 = optimizerState.count > 1 ? optimizerState[1].pointer : nil
        func apply(_ seg: NetworkLayout.Segment) {
            update(
                config: optimizer, isWeight: seg.isWeight, params: parameters.pointer, state1: s1, state2: s2,
                start: seg.start, end: seg.end, learningRate: learningRate, lambda: lambda, records: records,
                adamStep: adamStep
            ) { g[$0] }
        }
        for s in gradientSlices[slice] {
            let (weights, biases) = segments(of: s)
            if s.layer == 1 && inputPath == .sparse {
                if !firstLayerWeightsDone {
                    sparseUpdate(slice, records: records, learningRate: learningRate, adamStep: adamStep)
                }
            } else {
                apply(weights)
            }
            apply(biases)
        }
    }

    /// The slice's weight rows and biases as ranges of the flat buffers.
    func segments(of s: GradientSlice) -> (weights: NetworkLayout.Segment, biases: NetworkLayout.Segment) {
        let nIn = layout.sizes[s.layer - 1]
        let w = layout.weightOffsets[s.layer - 1]
        let b = layout.biasOffsets[s.layer - 1]
        return (
            .init(start: w + s.rows.lowerBound * nIn, end: w + s.rows.upperBound * nIn, isWeight: true),
            .init(start: b + s.rows.lowerBound, end: b + s.rows.upperBound, isWeight: false)
        )
    }
}
