import CKernels
import Foundation
import XCTest

@testable import NNNumerics

final class NumericsTests: XCTestCase {
    func testSHA256KnownVectors() {
        XCTAssertEqual(SHA256.hex(Array("".utf8)), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        XCTAssertEqual(
            SHA256.hex(Array("abc".utf8)), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        XCTAssertEqual(
            SHA256.hex(Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8)),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
        // Incremental updates give the same digest as one update.
        var h = SHA256()
        let data = Array((0..<1000).map { UInt8($0 % 251) })
        data[0..<100].withUnsafeBytes { h.update($0) }
        data[100...].withUnsafeBytes { h.update($0) }
        let streamed = h.finalizeHex()
        XCTAssertEqual(streamed, SHA256.hex(data))
    }

    func testRNGIsDeterministicAndRestorable() {
        var a = DeterministicRNG(seed: 42)
        var b = DeterministicRNG(seed: 42)
        for _ in 0..<10 { XCTAssertEqual(a.next(), b.next()) }
        let saved = a.state
        let x = (0..<5).map { _ in a.next() }
        var c = DeterministicRNG(state: saved)
        XCTAssertEqual(x, (0..<5).map { _ in c.next() })
        XCTAssertNotEqual(DeterministicRNG(seed: 1).state, DeterministicRNG(seed: 2).state)
        // Shuffle is a permutation.
        let p = UnsafeMutableBufferPointer<Int32>.allocate(capacity: 100)
        defer { p.deallocate() }
        for i in 0..<100 { p[i] = Int32(i) }
        a.shuffle(p)
        XCTAssertEqual(Set(p), Set(0..<100))
        XCTAssertNotEqual(Array(p), Array(0..<100))
    }

    func testKernelSelectionFromCPUFlags() {
        XCTAssertEqual(BLASKernelSelector.bestKernel(cpuFlags: ["sse3", "avx", "avx2", "fma"]), "Haswell")
        XCTAssertEqual(
            BLASKernelSelector.bestKernel(cpuFlags: [
                "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512dq",
            ]), "SkylakeX")
        XCTAssertEqual(BLASKernelSelector.bestKernel(cpuFlags: ["sse3", "avx"]), "Sandybridge")
        XCTAssertEqual(BLASKernelSelector.bestKernel(cpuFlags: ["sse3"]), "Prescott")
        let flags = BLASKernelSelector.cpuFlags(cpuinfo: "processor\t: 0\nflags\t\t: fpu sse3 avx2 fma\nbugs\t: x\n")
        XCTAssertEqual(flags, ["fpu", "sse3", "avx2", "fma"])
    }

    /// A kernel named in the environment stays, but one narrower than the CPU's best is said;
    /// nnd's own re-exec (the marker set), an equal or unknown kernel, or an empty value is not.
    func testEnvironmentHoldingOpenBLASBackIsNamed() throws {
        let avx512: Set<String> = ["avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512dq"]
        let warning = try XCTUnwrap(
            BLASKernelSelector.environmentWarning(environment: ["OPENBLAS_CORETYPE": "Haswell"], cpuFlags: avx512))
        XCTAssertEqual(
            warning,
            "OPENBLAS_CORETYPE=Haswell in the environment holds OpenBLAS to its 256-bit Haswell kernels; this CPU runs "
                + "its 512-bit SkylakeX kernels, which nnd chooses when the variable is unset "
                + "(compare: env -u OPENBLAS_CORETYPE nnd bench)")
        XCTAssertNotNil(
            BLASKernelSelector.environmentWarning(
                environment: ["OPENBLAS_CORETYPE": "prescott"], cpuFlags: ["avx", "avx2", "fma"]))
        for (environment, flags) in [
            (["OPENBLAS_CORETYPE": "Haswell"], ["avx", "avx2", "fma"]),  // the CPU's best already
            (["OPENBLAS_CORETYPE": "Cooperlake"], avx512),  // as wide as SkylakeX
            (["OPENBLAS_CORETYPE": "Haswell", "NND_BLAS_SELECTED": "auto"], avx512),  // set by nnd itself
            (["OPENBLAS_CORETYPE": ""], avx512),  // OpenBLAS chooses
            (["OPENBLAS_CORETYPE": "Armv8"], avx512),  // a name nnd does not know
            ([:], avx512),
        ] as [([String: String], Set<String>)] {
            XCTAssertNil(
                BLASKernelSelector.environmentWarning(environment: environment, cpuFlags: flags), "\(environment)")
        }
        XCTAssertEqual(BLASKernelSelector.width(ofKernel: "Zen"), 256)
        XCTAssertEqual(BLASKernelSelector.width(ofKernel: "COOPERLAKE"), 512)
        XCTAssertTrue(BLASKernelSelector.isNarrower("Haswell", than: "SkylakeX"))
        XCTAssertFalse(BLASKernelSelector.isNarrower("Cooperlake", than: "SkylakeX"))
        XCTAssertFalse(BLASKernelSelector.isNarrower("Armv8", than: "SkylakeX"))
    }

    func testGEMMSelfCheckPassesForNetworkShapes() {
        BLAS.useSingleThread()
        let r = GEMMSelfCheck.run(shapes: [(m: 7, n: 20, k: 33), (m: 32, n: 10, k: 50)])
        XCTAssertTrue(r.passed, r.detail)
        XCTAssertLessThan(r.maxRelativeError, 1e-5)
        XCTAssertFalse(BLAS.kernelName.isEmpty)
    }

    func testFloatBufferIsAlignedAndZeroed() {
        let b = FloatBuffer(count: 1001)
        XCTAssertEqual(Int(bitPattern: b.pointer) % 64, 0)
        XCTAssertTrue(b.buffer.allSatisfy { $0 == 0 })
    }

    /// The vectorised logistic and softmax agree with a Float64 reference to float precision
    /// over the whole input range, saturate without inf or NaN, and let a NaN through (the
    /// trainer's divergence check depends on that).
    func testVectorKernelsMatchFloat64ReferenceAndPropagateNaN() {
        let n = 4001
        var z = (0..<n).map { Float(-100 + 200 * Double($0) / Double(n - 1)) }
        let x = z
        let zeroBias = [Float](repeating: 0, count: n)
        VectorKernels.logistic(&z, bias: zeroBias, rows: 1, cols: n)
        var worst = 0.0
        for i in 0..<n {
            let ref = 1 / (1 + Foundation.exp(-Double(x[i])))
            XCTAssertTrue(z[i].isFinite && z[i] >= 0 && z[i] <= 1, "logistic(\(x[i])) = \(z[i])")
            if ref > 1e-30 { worst = max(worst, abs(Double(z[i]) - ref) / ref) }
        }
        XCTAssertLessThan(worst, 1e-6, "logistic relative error")

        // Bias is added per column, rows are independent.
        var rows: [Float] = [0, 1, -2, 3, 0.5, -0.5]
        VectorKernels.logistic(&rows, bias: [1, -1, 0], rows: 2, cols: 3)
        for (i, v) in [Float(1), 0, -2, 4, -0.5, -0.5].enumerated() {
            XCTAssertEqual(rows[i], Float(1 / (1 + Foundation.exp(-Double(v)))), accuracy: 1e-6)
        }

        var logits: [Float] = [1, 2, 3, 4, 1000, -1000, 0.5, 20]
        VectorKernels.softmax(&logits, bias: [0.5, 0, 0, -0.5], rows: 2, cols: 4)
        let e = [1.5, 2, 3, 3.5].map { Foundation.exp($0 - 3.5) }
        let s = e.reduce(0, +)
        for j in 0..<4 { XCTAssertEqual(logits[j], Float(e[j] / s), accuracy: 1e-6) }
        XCTAssertEqual(logits[4], 1, accuracy: 1e-6)  // 1000 dominates without overflow
        XCTAssertEqual(logits[5], 0, accuracy: 1e-30)
        XCTAssertEqual(logits[4..<8].reduce(0, +), 1, accuracy: 1e-6)

        var bad: [Float] = [0.3, .nan, 2, 0, 0, 0]
        VectorKernels.logistic(&bad, bias: [0, 0, 0, 0, 0, 0], rows: 1, cols: 6)
        XCTAssertTrue(bad[1].isNaN)
        var badRow: [Float] = [1, .nan, 2]
        VectorKernels.softmax(&badRow, bias: [0, 0, 0], rows: 1, cols: 3)
        XCTAssertTrue(badRow.allSatisfy(\.isNaN), "a NaN logit must make the row NaN, not a valid distribution")
        var r: [Float] = [-1, 0.5, .nan, 2]
        VectorKernels.relu(&r, bias: [0.5, -1, 0, 0], rows: 1, cols: 4)
        XCTAssertEqual(r[0], 0)
        XCTAssertEqual(r[1], 0)
        XCTAssertTrue(r[2].isNaN)
        XCTAssertEqual(r[3], 2)
        var d: [Float] = [1, 2, 3]
        VectorKernels.reluBackward(&d, output: [0, 0.1, -1], count: 3)
        XCTAssertEqual(d, [0, 2, 0])
        XCTAssertFalse(VectorKernels.instructionSet.isEmpty)
    }

    /// The hidden layers' small products (`BLAS.smallGEMM`, CKernels/gemm.c): A or Aᵀ, β = 0, 1
    /// and the fused update's decay, shapes around every edge of the 6 × 16 register block.
    /// Each agrees with a Float64 reference; the AVX2 kernel gives the portable one's bits (the
    /// same FMAs in the same order); nothing past n in a row of C is written, and with β = 0
    /// nothing in C is read (a NaN there stays out of the result); and the rows computed in two
    /// calls are the bits of one call, so the shards' and slices' split cannot change a result.
    func testSmallProductsMatchFloat64AndDoNotDependOnTheRowSplit() {
        var rng = DeterministicRNG(seed: 7)
        func values(_ count: Int) -> [Float] { (0..<count).map { _ in Float(rng.nextUnit() * 2 - 1) } }
        for (m, n, k) in [
            (1, 1, 1), (5, 7, 10), (6, 8, 3), (7, 9, 64), (13, 16, 50), (32, 17, 100), (25, 100, 64), (64, 50, 10),
        ] {
            for transA in [false, true] {
                for (alpha, beta) in [(Float(1), Float(0)), (-0.01, 1), (-0.0015625, 0.99984375)] {
                    let lda = transA ? m + 2 : k + 1  // A is m × k, or k × m for Aᵀ
                    let a = values((transA ? k : m) * lda)
                    let ldb = n + 5
                    let b = values(k * ldb)
                    let ldc = n + 3
                    let start = values(m * ldc)
                    // The columns of C past n hold NaN: they must stay untouched.
                    var c0 = start
                    for i in 0..<m { for j in n..<ldc { c0[i * ldc + j] = .nan } }
                    if beta == 0 { for i in 0..<m { c0[i * ldc] = .nan } }  // not read when β = 0
                    var viaBLAS = c0
                    var avx = c0
                    var portable = c0
                    var split = c0
                    BLAS.smallGEMM(
                        transA: transA, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda, b: b, ldb: ldb, beta: beta,
                        c: &viaBLAS, ldc: ldc)
                    let (ars, acs) = transA ? (1, lda) : (lda, 1)
                    nn_small_gemm(m, n, k, alpha, a, ars, acs, b, ldb, beta, &avx, ldc)
                    nn_small_gemm_portable(m, n, k, alpha, a, ars, acs, b, ldb, beta, &portable, ldc)
                    let cut = m / 2 + 1
                    a.withUnsafeBufferPointer { a in
                        split.withUnsafeMutableBufferPointer { c in
                            nn_small_gemm(cut, n, k, alpha, a.baseAddress, ars, acs, b, ldb, beta, c.baseAddress, ldc)
                            if cut < m {
                                nn_small_gemm(
                                    m - cut, n, k, alpha, a.baseAddress! + cut * ars, ars, acs, b, ldb, beta,
                                    c.baseAddress! + cut * ldc, ldc)
                            }
                        }
                    }
                    let shape = "m \(m) n \(n) k \(k) transA \(transA) alpha \(alpha) beta \(beta)"
                    for i in 0..<m {
                        for j in 0..<ldc {
                            let at = i * ldc + j
                            if j >= n {
                                for c in [viaBLAS, avx, portable, split] {
                                    XCTAssertTrue(c[at].isNaN, "wrote past n: \(shape)")
                                }
                                continue
                            }
                            var sum = 0.0
                            var size = 0.0
                            for p in 0..<k {
                                let x = Double(transA ? a[p * lda + i] : a[i * lda + p]) * Double(b[p * ldb + j])
                                sum += x
                                size += abs(x)
                            }
                            let old = beta == 0 ? 0 : Double(start[at])
                            let expected = Double(alpha) * sum + Double(beta) * old
                            let tolerance = 1e-6 * (abs(Double(alpha)) * size + abs(Double(beta) * old)) + 1e-30
                            XCTAssertEqual(Double(viaBLAS[at]), expected, accuracy: tolerance, shape)
                            XCTAssertEqual(Double(avx[at]), expected, accuracy: tolerance, shape)
                            XCTAssertEqual(avx[at].bitPattern, portable[at].bitPattern, "AVX2 ≠ portable: \(shape)")
                            XCTAssertEqual(split[at].bitPattern, avx[at].bitPattern, "row split changed bits: \(shape)")
                        }
                    }
                }
            }
        }
        #if arch(x86_64)
            let flags = BLASKernelSelector.currentCPUFlags()
            XCTAssertEqual(
                String(cString: nn_small_gemm_isa()), flags.isSuperset(of: ["avx2", "fma"]) ? "AVX2+FMA" : "portable C")
            // nnd's kernel wherever OpenBLAS runs kernels narrower than its AVX-512 ones, whatever
            // the CPU's best: an environment may hold OpenBLAS to Haswell on an AVX-512 CPU.
            XCTAssertEqual(
                BLAS.usesOwnSmallKernel,
                flags.isSuperset(of: ["avx2", "fma"]) && !["SkylakeX", "Cooperlake"].contains(BLAS.kernelName),
                BLAS.kernelName)
        #endif
    }

    /// The element-wise kernels run the clone for the CPU at hand (the tests above then check
    /// that clone against Float64): AVX-512 where the CPU has it, AVX2+FMA where it has that.
    func testKernelClonePickedForThisCPU() throws {
        #if arch(x86_64)
            let cpuinfo = try String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)
            let flagsLine = try XCTUnwrap(cpuinfo.split(separator: "\n").first { $0.hasPrefix("flags") })
            let flags = Set(flagsLine.split(separator: " ").map(String.init))
            let set = VectorKernels.instructionSet
            if flags.isSuperset(of: ["avx512f", "avx512bw", "avx512dq", "avx512vl", "avx2", "fma"]) {
                XCTAssertTrue(set.hasPrefix("x86-64-v4"), set)
            } else if flags.isSuperset(of: ["avx2", "fma", "bmi2"]) {
                XCTAssertTrue(set.hasPrefix("x86-64-v3"), set)
            } else {
                XCTAssertTrue(set.hasPrefix("x86-64 baseline"), set)
            }
        #endif
    }

    /// Engine workers run with denormals flushed to zero (they made Adam's late epochs 4× slower),
    /// and the thread gets its own mode back afterwards.
    func testDenormalsAreFlushedInsideTheEngineScopeOnly() {
        #if arch(x86_64) || arch(arm64)
            // Through an array, so the compiler cannot fold the products at compile time.
            let operands: [Float] = [Float.leastNormalMagnitude, 0.25]
            XCTAssertGreaterThan(operands[0] * operands[1], 0, "a denormal product outside")
            let inside = VectorKernels.withDenormalsFlushed { operands[0] * operands[1] }
            XCTAssertEqual(inside, 0, "flushed to zero inside")
            XCTAssertGreaterThan(operands[0] * operands[1], 0, "the mode is restored afterwards")
        #endif
    }
}
