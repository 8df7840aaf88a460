import NNAPI
import NNNumerics

/// Where each layer's weights and biases live inside the one flat parameter buffer
/// (and, identically, inside every flat gradient buffer). Layer `l` (1...L-1) maps
/// `sizes[l-1]` inputs to `sizes[l]` outputs; its weights are row-major `[out][in]`,
/// the seed's `theta_l` shape. Every view starts on a 64-byte boundary.
public struct NetworkLayout: Sendable, Equatable {
    public let sizes: [Int]
    public let weightOffsets: [Int]
    public let biasOffsets: [Int]
    public let parameterCount: Int

    public struct Segment: Sendable, Equatable {
        public var start: Int, end: Int, isWeight: Bool
    }
    /// Weight and bias ranges in buffer order (padding excluded).
    public let segments: [Segment]

    public init(sizes: [Int]) {
        precondition(sizes.count >= 2 && sizes.allSatisfy { $0 > 0 })
        self.sizes = sizes
        var off = 0
        var w: [Int] = []
        var b: [Int] = []
        var segs: [Segment] = []
        func align(_ x: Int) -> Int { (x + 15) / 16 * 16 }
        for l in 1..<sizes.count {
            w.append(off)
            segs.append(Segment(start: off, end: off + sizes[l] * sizes[l - 1], isWeight: true))
            off = align(off + sizes[l] * sizes[l - 1])
            b.append(off)
            segs.append(Segment(start: off, end: off + sizes[l], isWeight: false))
            off = align(off + sizes[l])
        }
        weightOffsets = w
        biasOffsets = b
        parameterCount = off
        segments = segs
    }

    public var layerCount: Int { sizes.count }
    public var inputSize: Int { sizes[0] }
    public var outputSize: Int { sizes[sizes.count - 1] }
    /// Weights and biases, excluding padding.
    public var trainableCount: Int { segments.reduce(0) { $0 + $1.end - $1.start } }

    /// Multiply-adds ×2 for one record's forward + backward (no input-layer delta).
    public var trainingFlopsPerRecord: Double {
        var f = 0.0
        for l in 1..<sizes.count {
            let mac = Double(sizes[l] * sizes[l - 1])
            // forward, weight gradient, and (below the first layer) the delta: 2 FLOPs per multiply-add each
            f += 2 * mac + 2 * mac + (l > 1 ? 2 * mac : 0)
        }
        return f
    }

    /// Fills the parameters with the seed's initialisation; biases zero.
    public func initialise(_ params: FloatBuffer, scheme: Initialisation, rng: inout DeterministicRNG) {
        params.zero()
        for l in 1..<sizes.count {
            let nIn = Double(sizes[l - 1])
            let nOut = Double(sizes[l])
            let w = params.pointer + weightOffsets[l - 1]
            for i in 0..<(sizes[l] * sizes[l - 1]) {
                switch scheme {
                case .xavier:
                    // The seed draws (rand - 0.5) * sqrt(6/(n_in+n_out)); the issue asks for the
                    // textbook ±sqrt(6/(n_in+n_out)), i.e. (2·rand - 1)·limit.
                    let limit = (6 / (nIn + nOut)).squareRoot()
                    w[i] = Float((2 * rng.nextUnit() - 1) * limit)
                case .he:
                    w[i] = Float(rng.nextNormal() * (2 / nIn).squareRoot())
                }
            }
        }
    }

    /// Σθ² over weights only (the seed's regularisation cost), in Float64.
    public func sumSquaredWeights(_ params: FloatBuffer) -> Double {
        var s = 0.0
        for seg in segments where seg.isWeight {
            for i in seg.start..<seg.end {
                let v = Double(params.pointer[i])
                s += v * v
            }
        }
        return s
    }
}
