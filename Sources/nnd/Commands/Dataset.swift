import ArgumentParser
import Foundation
import NNData
import NNTraining

struct DatasetCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dataset", abstract: "Fetch and verify datasets.", subcommands: [Fetch.self])
    struct Fetch: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Fetch MNIST, verifying its content against pinned SHA-256s.")
        @Argument(help: "Dataset name (mnist)") var name: String
        @Option(help: "Destination directory (default ~/.local/share/nnd/datasets/mnist)") var into: String?
        @Option(help: "Take the files from this directory first (also NND_DATASET_MIRROR)") var from: String?
        func run() throws {
            guard name == "mnist" else {
                stderrLine("nnd: unknown dataset '\(name)' (known: mnist)")
                throw ExitCode(2)
            }
            let dest = into ?? DataLoading.defaultFetchDirectory()
            do {
                let src = try MNIST.fetch(into: dest, from: from) { stderrLine("nnd: \($0)") }
                print("mnist: ready in \(dest) (from \(src))")
            } catch {
                stderrLine("nnd: \(error)")
                throw ExitCode(1)
            }
        }
    }
}
