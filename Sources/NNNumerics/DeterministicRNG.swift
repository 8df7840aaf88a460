import Foundation

/// xoshiro256** seeded through SplitMix64: fast, good quality, and its whole state is four
/// words, so a checkpoint can store it and a resumed run draws exactly the same numbers.
public struct DeterministicRNG: RandomNumberGenerator, Sendable, Equatable {
    private var s0: UInt64, s1: UInt64, s2: UInt64, s3: UInt64
    /// The four state words, for checkpoints.
    public var state: [UInt64] { [s0, s1, s2, s3] }

    public init(seed: UInt64) {
        var s = seed
        func splitmix() -> UInt64 {
            s &+= 0x9E37_79B9_7F4A_7C15
            var z = s
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        s0 = splitmix()
        s1 = splitmix()
        s2 = splitmix()
        s3 = splitmix()
    }

    public init(state: [UInt64]) {
        precondition(state.count == 4)
        s0 = state[0]
        s1 = state[1]
        s2 = state[2]
        s3 = state[3]
    }

    @inline(__always) static func rotl(_ x: UInt64, _ k: UInt64) -> UInt64 { (x << k) | (x >> (64 - k)) }

    public mutating func next() -> UInt64 {
        let result = Self.rotl(s1 &* 5, 7) &* 9
        let t = s1 << 17
        s2 ^= s0
        s3 ^= s1
        s1 ^= s2
        s0 ^= s3
        s2 ^= t
        s3 = Self.rotl(s3, 45)
        return result
    }

    /// Uniform in [0, 1) with 53 bits.
    public mutating func nextUnit() -> Double { Double(next() >> 11) * 0x1.0p-53 }

    /// Standard normal (Box–Muller, one value per call for simplicity of state).
    public mutating func nextNormal() -> Double {
        var u1 = nextUnit()
        if u1 < 1e-300 { u1 = 1e-300 }
        let u2 = nextUnit()
        return (-2 * _log(u1)).squareRoot() * _cos(2 * Double.pi * u2)
    }

    /// Uniform integer in 0..<bound without modulo bias (Lemire).
    public mutating func nextIndex(below bound: Int) -> Int {
        precondition(bound > 0)
        var x = next()
        var m = x.multipliedFullWidth(by: UInt64(bound))
        if m.low < UInt64(bound) {
            let t = (0 &- UInt64(bound)) % UInt64(bound)
            while m.low < t {
                x = next()
                m = x.multipliedFullWidth(by: UInt64(bound))
            }
        }
        return Int(m.high)
    }

    /// Fisher–Yates shuffle in place.
    public mutating func shuffle(_ a: UnsafeMutableBufferPointer<Int32>) {
        var i = a.count - 1
        while i > 0 {
            let j = nextIndex(below: i + 1)
            a.swapAt(i, j)
            i -= 1
        }
    }
}

@inline(__always) func _log(_ x: Double) -> Double { Foundation.log(x) }
@inline(__always) func _cos(_ x: Double) -> Double { Foundation.cos(x) }
