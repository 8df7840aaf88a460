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

    public init(kind: OptimizerKind = .sgd, momentum: Float = 0.9, beta1: Float = 0.9, beta2: Float = 0.999, epsilon: Float = 1e-8) {
        self.kind = kind; self.momentum = momentum; self.beta1 = beta1; self.beta2 = beta2; self.epsilon = epsilon
    }

    /// How many parameter-sized state buffers the optimiser keeps.
    public var stateBuffers: Int {
        switch kind { case .sgd: 0; case .momentum: 1; case .adam: 2 }
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
    let invN = 1 / Float(records)
    let decay = isWeight ? lambda * invN : 0
    switch config.kind {
    case .sgd:
        let a = learningRate * invN, ad = learningRate * decay
        for i in start..<end { params[i] = params[i] - a * gradient(i) - ad * params[i] }
    case .momentum:
        let v = state1!, mu = config.momentum
        for i in start..<end {
            let g = gradient(i) * invN + decay * params[i]
            v[i] = mu * v[i] + g
            params[i] -= learningRate * v[i]
        }
    case .adam:
        let m = state1!, v = state2!, b1 = config.beta1, b2 = config.beta2, eps = config.epsilon
        let t = Float(adamStep)
        let c1 = 1 - Float.pow(b1, t), c2 = 1 - Float.pow(b2, t)
        let stepSize = learningRate / c1, invC2 = 1 / c2
        for i in start..<end {
            let g = gradient(i) * invN + decay * params[i]
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            params[i] -= stepSize * m[i] / ((v[i] * invC2).squareRoot() + eps)
        }
    }
}

extension Float {
    @inline(__always) static func pow(_ x: Float, _ y: Float) -> Float { Float(Foundation.pow(Double(x), Double(y))) }
}
import Foundation
