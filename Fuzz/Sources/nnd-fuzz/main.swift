import CFuzzerDriver
import Foundation
import NNFuzzing

// libFuzzer harness for nnd's file readers. The reader under test comes from
// NND_FUZZ_TARGET (idx, gzip, csv, checkpoint); the arguments are libFuzzer's own
// (corpus directories, -max_total_time=…). NND_FUZZ_WRITE_SEEDS=DIR writes the target's seed
// inputs (made from the MNIST files in NND_FUZZ_MNIST) into DIR and exits, so no binary
// seeds live in the repository.

let env = ProcessInfo.processInfo.environment
guard let target = FuzzTarget(rawValue: env["NND_FUZZ_TARGET"] ?? "") else {
    FileHandle.standardError.write(
        Data(
            "nnd-fuzz: NND_FUZZ_TARGET must be one of \(FuzzTarget.allCases.map(\.rawValue).joined(separator: ", ")), not '\(env["NND_FUZZ_TARGET"] ?? "")'\n"
                .utf8))
    exit(2)
}

if let dir = env["NND_FUZZ_WRITE_SEEDS"] {
    do {
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        for (i, seed) in try target.seeds(mnistDirectory: env["NND_FUZZ_MNIST"] ?? "../shared/datasets/mnist")
            .enumerated()
        {
            try Data(seed).write(to: URL(fileURLWithPath: "\(dir)/seed-\(i)"))
        }
        exit(0)
    } catch {
        FileHandle.standardError.write(Data("nnd-fuzz: cannot write seeds: \(error)\n".utf8))
        exit(1)
    }
}

/// The target, for the C callback (which cannot capture).
nonisolated(unsafe) var selected = target  // written once above, before the driver starts; read-only after

var argc = CommandLine.argc
var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
exit(
    LLVMFuzzerRunDriver(&argc, &argv) { data, size in
        let input = size == 0 ? [] : Array(UnsafeBufferPointer(start: data, count: size))
        if let problem = selected.check(input) { fatalError(problem) }
        return 0
    })
