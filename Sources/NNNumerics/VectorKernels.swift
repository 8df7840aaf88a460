import CKernels

/// The element-wise parts of the training step that libm would do one element at a time:
/// the logistic and the softmax call `exp` for every activation, which cost as much as a
/// sixth of a step before they were vectorised (`perf` on `nnd bench`). The C kernels use one
/// polynomial `exp` (relative error ≈ 1e-7, like `expf`) and let NaN through.
public enum VectorKernels {
    /// z[r][j] = 1 / (1 + exp(−(z[r][j] + bias[j])))
    @inline(__always)
    public static func logistic(_ z: UnsafeMutablePointer<Float>, bias: UnsafePointer<Float>, rows: Int, cols: Int) {
        nn_logistic_bias(z, bias, rows, cols)
    }

    /// Each row of z becomes softmax(row + bias).
    @inline(__always)
    public static func softmax(_ z: UnsafeMutablePointer<Float>, bias: UnsafePointer<Float>, rows: Int, cols: Int) {
        nn_softmax_bias(z, bias, rows, cols)
    }

    /// d[i] *= a[i]·(1 − a[i])
    @inline(__always)
    public static func logisticBackward(_ d: UnsafeMutablePointer<Float>, output a: UnsafePointer<Float>, count: Int) {
        nn_logistic_backward(d, a, count)
    }

    /// z[r][j] = max(0, z[r][j] + bias[j]); a NaN stays NaN.
    @inline(__always)
    public static func relu(_ z: UnsafeMutablePointer<Float>, bias: UnsafePointer<Float>, rows: Int, cols: Int) {
        nn_relu_bias(z, bias, rows, cols)
    }

    /// d[i] = 0 where a[i] ≤ 0
    @inline(__always)
    public static func reluBackward(_ d: UnsafeMutablePointer<Float>, output a: UnsafePointer<Float>, count: Int) {
        nn_relu_backward(d, a, count)
    }

    /// Runs `body` with denormal floats flushed to zero on this thread (see `nn_flush_denormals`),
    /// then restores the thread's mode: each engine worker's part of a call runs in it, and the
    /// threads it borrows (GCD's, the daemon's) get their mode back.
    @inline(__always)
    public static func withDenormalsFlushed<T>(_ body: () throws -> T) rethrows -> T {
        let mode = nn_flush_denormals()
        defer { nn_restore_float_mode(mode) }
        return try body()
    }

    /// The instruction set the kernels run with on this CPU, for `nnd info` and the benchmark.
    public static var instructionSet: String { String(cString: nn_kernels_isa()) }
}
