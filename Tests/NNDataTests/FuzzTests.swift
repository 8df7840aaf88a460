import Foundation
import XCTest

@testable import NNData
@testable import NNNumerics

/// Mutated real files through the readers: every input either loads or is refused with a
/// DataError — never a crash, never a silent partial load.
final class ReaderFuzzTests: XCTestCase {
    var iterations: Int { Int(ProcessInfo.processInfo.environment["NND_FUZZ_ITERATIONS"] ?? "") ?? 3000 }

    func mutate(_ input: [UInt8], _ rng: inout DeterministicRNG) -> [UInt8] {
        var b = input
        switch rng.nextIndex(below: 6) {
        case 0:
            for _ in 0..<(1 + rng.nextIndex(below: 8)) where !b.isEmpty {
                b[rng.nextIndex(below: b.count)] ^= UInt8(1 << rng.nextIndex(below: 8))
            }
        case 1: b = Array(b.prefix(rng.nextIndex(below: b.count + 1)))
        case 2:
            b.insert(
                contentsOf: (0..<rng.nextIndex(below: 64)).map { _ in UInt8(rng.nextIndex(below: 256)) },
                at: rng.nextIndex(below: b.count + 1))
        case 3 where b.count > 16:  // header fields
            for i in 4..<min(16, b.count) { b[i] = UInt8(rng.nextIndex(below: 256)) }
        case 4 where !b.isEmpty: b[rng.nextIndex(below: min(4, b.count))] = UInt8(rng.nextIndex(below: 256))  // magic
        default: b += b.prefix(rng.nextIndex(below: 100))
        }
        return b
    }

    func testMutatedIDXFilesNeverCrash() throws {
        let labels = try IDXReader.readFile("\(mnistDir)/t10k-labels-idx1-ubyte.gz")
        let images = try IDXReader.readFile("\(mnistDir)/t10k-images-idx3-ubyte.gz")
        // A small valid image file (first 50 images) keeps each iteration cheap.
        var small = Array(images[0..<16])
        small[4...7] = [0, 0, 0, 50]
        small += images[16..<(16 + 50 * 784)]
        var rng = DeterministicRNG(seed: 2024)
        var refused = 0
        var loaded = 0
        for _ in 0..<iterations {
            for (input, dims) in [(Array(labels), 1), (small, 3)] {
                do {
                    _ = try IDXReader.parse(mutate(input, &rng), file: "fuzz", expectedDims: dims)
                    loaded += 1
                } catch is DataError { refused += 1 }
            }
        }
        XCTAssertGreaterThan(refused, iterations / 2)
        print("idx fuzz: \(2 * iterations) inputs, \(refused) refused with DataError, \(loaded) loaded, 0 crashes")
    }

    func testMutatedGzipStreamsNeverCrash() throws {
        let gz = [UInt8](try Data(contentsOf: URL(fileURLWithPath: "\(mnistDir)/t10k-labels-idx1-ubyte.gz")))
        var rng = DeterministicRNG(seed: 7)
        var refused = 0
        for _ in 0..<(iterations / 3) {
            var m = mutate(gz, &rng)
            if m.count >= 2 {
                m[0] = 0x1f
                m[1] = 0x8b
            }
            do { _ = try Gzip.decompress(m, file: "fuzz.gz") } catch is DataError { refused += 1 }
        }
        XCTAssertGreaterThan(refused, 0)
    }

    func testMutatedCSVNeverCrashes() throws {
        let row = (["3"] + (0..<16).map { String($0 * 15) }).joined(separator: ",")
        let csv = Array((Array(repeating: row, count: 20).joined(separator: "\n") + "\n").utf8)
        let path = NSTemporaryDirectory() + "nnd-fuzz-\(UUID().uuidString).csv"
        defer { try? FileManager.default.removeItem(atPath: path) }
        var rng = DeterministicRNG(seed: 99)
        for _ in 0..<(iterations / 3) {
            try Data(mutate(csv, &rng)).write(to: URL(fileURLWithPath: path))
            do {
                let d = try CSVReader.load(path, featureCount: 16)
                XCTAssertEqual(d.features.count, d.count * 16)
            } catch is DataError {}
        }
    }
}
