import CBLAS
import CKernels
import Foundation

/// Thin, allocation-free wrappers over OpenBLAS single-precision GEMM, and over nnd's own kernel
/// for the hidden layers' small products where it is faster (`smallGEMM`).
/// All matrices are row-major.
public enum BLAS {
    /// C[m×n] = alpha · op(A) · op(B) + beta · C
    @inline(__always)
    public static func sgemm(
        transA: Bool, transB: Bool, m: Int, n: Int, k: Int,
        alpha: Float, a: UnsafePointer<Float>, lda: Int,
        b: UnsafePointer<Float>, ldb: Int,
        beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int
    ) {
        cblas_sgemm(
            CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
            Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
    }

    /// C[m×n] = A[m×k] · B[n×k]ᵀ for the small products of the hidden layers' forward pass (a
    /// shard's rows against a layer's weights), in blocks of rows where that is faster.
    /// Why: OpenBLAS 0.3.21's SkylakeX kernels run this product with their small-matrix kernel
    /// only while the output block is small; the seed's 32 × 100 output went through its
    /// general path (pack, then multiply) and took 18.6 µs, in 8-row blocks 12.4 µs (the
    /// 32 × 50 one: 5.6 against 4.0 µs; docs/performance.md). Other kernel families get one call.
    @inline(__always)
    public static func smallProductTransposed(
        m: Int, n: Int, k: Int, a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
        c: UnsafeMutablePointer<Float>, ldc: Int
    ) {
        let block = smallProductRowBlock(outputs: n)
        var row = 0
        while row < m {
            let rows = min(block, m - row)
            sgemm(
                transA: false, transB: true, m: rows, n: n, k: k, alpha: 1, a: a + row * lda, lda: lda, b: b, ldb: ldb,
                beta: 0, c: c + row * ldc, ldc: ldc)
            row += rows
        }
    }

    /// C[m×n] = alpha · op(A) · B[k×n] + beta · C, op(A) = A[m×k] or (transA) A[k×m]ᵀ: the
    /// hidden layers' deltas (a shard's rows through a layer's weights) and weight gradients
    /// (δᵀ·A over a step's records). nnd's own kernel (`nn_small_gemm`, CKernels/gemm.c) where
    /// `usesOwnSmallKernel` and k ≤ 256, else OpenBLAS.
    /// Why: OpenBLAS 0.3.21's Haswell kernels pack both operands on every call; on AMD Zen 3
    /// they ran these products at 58–77 % of a core's GEMM rate, the kernel at 79–97 %. For a
    /// long inner sum (a batch-gradient chunk of 1,024 records) OpenBLAS's blocking wins.
    @inline(__always)
    public static func smallGEMM(
        transA: Bool, m: Int, n: Int, k: Int, alpha: Float, a: UnsafePointer<Float>, lda: Int,
        b: UnsafePointer<Float>, ldb: Int, beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int
    ) {
        if usesOwnSmallKernel && k <= 256 {
            nn_small_gemm(m, n, k, alpha, a, transA ? 1 : lda, transA ? lda : 1, b, ldb, beta, c, ldc)
        } else {
            sgemm(
                transA: transA, transB: false, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda, b: b, ldb: ldb,
                beta: beta, c: c, ldc: ldc)
        }
    }

    /// Whether `smallGEMM` runs nnd's AVX2+FMA kernel: where the CPU has AVX2+FMA and OpenBLAS
    /// runs kernels narrower than its SkylakeX ones (Haswell, Zen, or older), which this kernel
    /// beats. It follows the kernel OpenBLAS loaded, not the CPU's best: an AVX-512 CPU whose
    /// environment holds OpenBLAS to Haswell kernels (`OPENBLAS_CORETYPE=Haswell`) ran these
    /// products 5–60 % faster on nnd's kernel (AMD Zen 5, docs/performance.md). With AVX-512,
    /// OpenBLAS's SkylakeX kernels have twice the vector width and stay.
    public static let usesOwnSmallKernel =
        BLASKernelSelector.currentCPUFlags().isSuperset(of: ["avx2", "fma"])
        && BLASKernelSelector.isNarrower(kernelName, than: "SkylakeX")

    /// What `smallGEMM` runs on this machine, for `nnd info` and `nnd bench`.
    public static var smallProductKernel: String {
        usesOwnSmallKernel ? "nnd AVX2+FMA (inner sums up to 256), else OpenBLAS" : "OpenBLAS"
    }

    /// Rows per call of `smallProductTransposed`: with SkylakeX kernels the largest power of two
    /// that keeps a call's output within 1,200 elements (measured fastest: 8 rows for 100 outputs,
    /// 16 for 50); otherwise all rows.
    public static func smallProductRowBlock(outputs n: Int) -> Int {
        guard usesSkylakeXKernels else { return Int.max }
        var block = 1
        while block * 2 * n <= 1200 { block *= 2 }
        return block
    }

    /// SkylakeX or a later family with the same single-precision kernels (Cooperlake, which
    /// OpenBLAS picks itself on AVX-512 CPUs with bf16, such as AMD Zen 4 and 5).
    static let usesSkylakeXKernels = BLASKernelSelector.width(ofKernel: kernelName) == 512

    /// The OpenBLAS kernel family the library chose when it loaded ("Haswell", "Prescott", ...).
    public static var kernelName: String {
        guard let p = openblas_get_corename() else { return "unknown" }
        return String(cString: p)
    }

    /// OpenBLAS's own threads are off: nnd parallelises across records itself, and
    /// each worker calls GEMM on its own shard from its own thread.
    public static func useSingleThread() { openblas_set_num_threads(1) }
}

/// Chooses the best OpenBLAS kernel for this CPU.
///
/// Why: Debian's OpenBLAS 0.3.21 does not recognise newer CPUs and silently falls back to
/// its Prescott (SSE3) kernels, about 5× slower. OpenBLAS reads `OPENBLAS_CORETYPE` only
/// when it is loaded, which happens before `main`, so the executable sets the variable
/// and re-executes itself once (`BLASKernelSelector.reexecWithBestKernelIfNeeded`).
public enum BLASKernelSelector {
    public static let environmentKey = "OPENBLAS_CORETYPE"
    /// Set on the re-executed process so it never loops.
    public static let markerKey = "NND_BLAS_SELECTED"
    public static let safeKernel = "Prescott"

    /// The vector width in bits of an OpenBLAS x86-64 kernel family's single-precision kernels,
    /// nil for a name nnd does not know (then it says nothing about it).
    public static func width(ofKernel name: String) -> Int? {
        switch name.lowercased() {
        case "skylakex", "cooperlake", "sapphirerapids": return 512
        case "haswell", "zen", "excavator", "sandybridge", "bulldozer", "piledriver", "steamroller": return 256
        case "prescott", "core2", "penryn", "dunnington", "nehalem", "atom", "opteron", "opteron_sse3", "barcelona",
            "bobcat", "katmai", "coppermine", "northwood", "banias":
            return 128
        default: return nil
        }
    }

    /// A warning when the environment holds OpenBLAS to a kernel narrower than this CPU's best
    /// (`OPENBLAS_CORETYPE` set by the user, not by nnd's own re-exec), else nil.
    /// Why: nnd honours a kernel the user names, but a variable set for the whole machine (a
    /// workaround for some other program) silently halved nnd's GEMM rate on an AVX-512 CPU
    /// (AMD Zen 5: 107 against 209 GFLOP/s on one core, `nnd bench`; docs/performance.md).
    public static func environmentWarning(environment: [String: String], cpuFlags: Set<String>) -> String? {
        guard environment[markerKey] == nil, let chosen = environment[environmentKey], !chosen.isEmpty else {
            return nil
        }
        let best = bestKernel(cpuFlags: cpuFlags)
        guard isNarrower(chosen, than: best), let chosenWidth = width(ofKernel: chosen),
            let bestWidth = width(ofKernel: best)
        else { return nil }
        return
            "\(environmentKey)=\(chosen) in the environment holds OpenBLAS to its \(chosenWidth)-bit \(chosen) kernels; "
            + "this CPU runs its \(bestWidth)-bit \(best) kernels, which nnd chooses when the variable is unset "
            + "(compare: env -u \(environmentKey) nnd bench)"
    }

    /// Whether kernel family `kernel` runs narrower vectors than `other`; false when either
    /// name is unknown (Cooperlake is not narrower than SkylakeX: the same kernels).
    public static func isNarrower(_ kernel: String, than other: String) -> Bool {
        guard let a = width(ofKernel: kernel), let b = width(ofKernel: other) else { return false }
        return a < b
    }

    /// The kernel nnd chooses for this machine's CPU (read once from /proc/cpuinfo).
    public static let bestKernelForThisCPU = bestKernel(cpuFlags: currentCPUFlags())

    /// `environmentWarning` for this process and CPU (computed once: neither changes).
    public static let currentEnvironmentWarning: String? = environmentWarning(
        environment: ProcessInfo.processInfo.environment, cpuFlags: currentCPUFlags())

    /// The kernel for a set of /proc/cpuinfo flags, best first.
    public static func bestKernel(cpuFlags: Set<String>) -> String {
        if ["avx512f", "avx512bw", "avx512vl", "avx512dq"].allSatisfy(cpuFlags.contains) { return "SkylakeX" }
        if cpuFlags.contains("avx2") && cpuFlags.contains("fma") { return "Haswell" }
        if cpuFlags.contains("avx") { return "Sandybridge" }
        return safeKernel
    }

    public static func cpuFlags(cpuinfo: String) -> Set<String> {
        for line in cpuinfo.split(separator: "\n") where line.hasPrefix("flags") {
            if let colon = line.firstIndex(of: ":") {
                return Set(line[line.index(after: colon)...].split(separator: " ").map(String.init))
            }
        }
        return []
    }

    public static func currentCPUFlags() -> Set<String> {
        guard let text = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8) else { return [] }
        return cpuFlags(cpuinfo: text)
    }

    /// Call first thing in `main`. If the user did not choose a kernel, pick the best one and
    /// re-execute this binary with it. Returns normally when no re-exec is needed.
    public static func reexecWithBestKernelIfNeeded() {
        let env = ProcessInfo.processInfo.environment
        if env[environmentKey] != nil || env[markerKey] != nil { return }
        let kernel = bestKernel(cpuFlags: currentCPUFlags())
        reexec(with: kernel, reason: "auto")
    }

    /// Re-executes the running binary with `OPENBLAS_CORETYPE=kernel`. Returns only if exec fails.
    public static func reexec(with kernel: String, reason: String) {
        setenv(environmentKey, kernel, 1)
        setenv(markerKey, reason, 1)
        let args = CommandLine.arguments
        var cargs: [UnsafeMutablePointer<CChar>?] = args.map { strdup($0) }
        cargs.append(nil)
        execv("/proc/self/exe", &cargs)
        // exec failed (no /proc?): continue with whatever kernel is loaded.
        unsetenv(environmentKey)
    }

    /// After loading: if GEMM is wrong with the chosen kernel, go back to the safe one.
    /// Returns the self-check result for reporting.
    @discardableResult
    public static func verifyOrFallBack(shapes: [(m: Int, n: Int, k: Int)]) -> GEMMSelfCheck.Result {
        let result = GEMMSelfCheck.run(shapes: shapes)
        if !result.passed && BLAS.kernelName.lowercased() != safeKernel.lowercased()
            && ProcessInfo.processInfo.environment[markerKey] != "fallback"
        {
            FileHandle.standardError.write(
                Data(
                    "nnd: GEMM self-check failed with kernel \(BLAS.kernelName) (\(result.detail)); falling back to \(safeKernel)\n"
                        .utf8))
            reexec(with: safeKernel, reason: "fallback")
        }
        return result
    }
}

/// Compares OpenBLAS against a plain triple loop (in Float64) for the shapes the network uses,
/// in all four transpose combinations the engine calls.
public enum GEMMSelfCheck {
    public struct Result: Sendable {
        public var passed: Bool
        public var maxRelativeError: Double
        public var detail: String
    }

    public static func run(shapes: [(m: Int, n: Int, k: Int)], tolerance: Double = 1e-4) -> Result {
        var rng = DeterministicRNG(seed: 12345)
        var worst = 0.0
        for s in shapes {
            for (ta, tb) in [(false, true), (true, false), (false, false)] {
                let a = (0..<(s.m * s.k)).map { _ in Float(rng.nextUnit() - 0.5) }
                let b = (0..<(s.k * s.n)).map { _ in Float(rng.nextUnit() - 0.5) }
                var c = [Float](repeating: 0, count: s.m * s.n)
                let lda = ta ? s.m : s.k
                let ldb = tb ? s.k : s.n
                a.withUnsafeBufferPointer { ap in
                    b.withUnsafeBufferPointer { bp in
                        c.withUnsafeMutableBufferPointer { cp in
                            BLAS.sgemm(
                                transA: ta, transB: tb, m: s.m, n: s.n, k: s.k, alpha: 1, a: ap.baseAddress!, lda: lda,
                                b: bp.baseAddress!, ldb: ldb, beta: 0, c: cp.baseAddress!, ldc: s.n)
                        }
                    }
                }
                for i in 0..<s.m {
                    for j in 0..<s.n {
                        var ref = 0.0
                        var mag = 0.0
                        for p in 0..<s.k {
                            let av = Double(ta ? a[p * lda + i] : a[i * lda + p])
                            let bv = Double(tb ? b[j * ldb + p] : b[p * ldb + j])
                            ref += av * bv
                            mag += abs(av * bv)
                        }
                        let err = abs(Double(c[i * s.n + j]) - ref) / max(mag, 1e-6)
                        if !(err <= tolerance) {
                            return Result(
                                passed: false, maxRelativeError: err.isNaN ? .infinity : err,
                                detail:
                                    "shape \(s.m)x\(s.n)x\(s.k) transA=\(ta) transB=\(tb) at (\(i),\(j)): got \(c[i * s.n + j]), want \(ref)"
                            )
                        }
                        worst = max(worst, err)
                    }
                }
            }
        }
        return Result(passed: true, maxRelativeError: worst, detail: "ok")
    }
}
