import Foundation
import NNFuzzing
import XCTest

/// Every input the libFuzzer harness (`make fuzz`) ever crashed on is kept in
/// `Fuzz/regressions/<target>/` and replayed here through the same checks, so a fixed bug
/// stays fixed; the generated seed inputs must pass too.
final class FuzzRegressionTests: XCTestCase {
    let regressions = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Fuzz/regressions").path

    func testKeptCrashInputsNoLongerCrash() throws {
        var replayed = 0
        for target in FuzzTarget.allCases {
            let dir = "\(regressions)/\(target.rawValue)"
            for name in ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).sorted() {
                let input = [UInt8](try Data(contentsOf: URL(fileURLWithPath: "\(dir)/\(name)")))
                XCTAssertNil(target.check(input), "\(target.rawValue)/\(name)")
                replayed += 1
            }
        }
        XCTAssertGreaterThan(replayed, 0, "no kept inputs found under \(regressions)")
    }

    func testSeedInputsAreAcceptedByTheirReaders() throws {
        for target in FuzzTarget.allCases {
            let seeds = try target.seeds(mnistDirectory: mnistDir)
            XCTAssertFalse(seeds.isEmpty)
            for seed in seeds { XCTAssertNil(target.check(seed), target.rawValue) }
        }
    }
}
