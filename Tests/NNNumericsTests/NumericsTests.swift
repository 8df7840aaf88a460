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
        XCTAssertEqual(h.finalizeHex(), SHA256.hex(data))
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
