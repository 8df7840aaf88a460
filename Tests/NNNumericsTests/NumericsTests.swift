import XCTest
@testable import NNNumerics

final class NumericsTests: XCTestCase {
    func testSHA256KnownVectors() {
        XCTAssertEqual(SHA256.hex(Array("".utf8)), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        XCTAssertEqual(SHA256.hex(Array("abc".utf8)), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        XCTAssertEqual(SHA256.hex(Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8)),
                       "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
        // Incremental updates give the same digest as one update.
        var h = SHA256()
        let data = Array((0..<1000).map { UInt8($0 % 251) })
        data[0..<100].withUnsafeBytes { h.update($0) }
        data[100...].withUnsafeBytes { h.update($0) }
        XCTAssertEqual(h.finalizeHex(), SHA256.hex(data))
    }

    func testRNGIsDeterministicAndRestorable() {
        var a = DeterministicRNG(seed: 42), b = DeterministicRNG(seed: 42)
        for _ in 0..<10 { XCTAssertEqual(a.next(), b.next()) }
        let saved = a.state
        let x = (0..<5).map { _ in a.next() }
        var c = DeterministicRNG(state: saved)
        XCTAssertEqual(x, (0..<5).map { _ in c.next() })
        XCTAssertNotEqual(DeterministicRNG(seed: 1).state, DeterministicRNG(seed: 2).state)
        // Shuffle is a permutation.
        let p = UnsafeMutableBufferPointer<Int32>.allocate(capacity: 100); defer { p.deallocate() }
        for i in 0..<100 { p[i] = Int32(i) }
        a.shuffle(p)
        XCTAssertEqual(Set(p), Set(0..<100))
        XCTAssertNotEqual(Array(p), Array(0..<100))
    }

    func testKernelSelectionFromCPUFlags() {
        XCTAssertEqual(BLASKernelSelector.bestKernel(cpuFlags: ["sse3", "avx", "avx2", "fma"]), "Haswell")
        XCTAssertEqual(BLASKernelSelector.bestKernel(cpuFlags: ["avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512dq"]), "SkylakeX")
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
}
