import ArgumentParser
import Dispatch
import Foundation
import NNAPI
import NNDaemon
import NNData
import NNDistributed
import NNEngine
import NNNumerics
import NNTraining

@main
struct NND: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "nnd",
        abstract: "nnd — a training daemon for fully connected MNIST classifiers.",
        version: NNDVersion.current,
        subcommands: [Serve.self, Train.self, Bench.self, DatasetCommand.self, Info.self, Settings.self, Rank.self])

    static func main() async {
        // `nnd exec-tied -- PROGRAM ARGS…`: how the daemon starts a distributed run's launcher
        // (DistributedLaunch.command); before anything else, since it becomes that program.
        if CommandLine.arguments.dropFirst().first == "exec-tied" {
            let command = Array(CommandLine.arguments.dropFirst(2).drop { $0 == "--" })
            guard !command.isEmpty else {
                stderrLine("nnd exec-tied: usage: nnd exec-tied -- PROGRAM [ARGS…]")
                Glibc.exit(2)
            }
            stderrLine("nnd exec-tied: \(MPIReducer.execTiedToParent(command))")
            Glibc.exit(127)
        }
        if CommandLine.arguments.dropFirst().first == "serve" { Daemon.prepareProcess() }
        // Must run before anything calls into OpenBLAS: choose its kernel and re-exec if needed.
        BLASKernelSelector.reexecWithBestKernelIfNeeded()
        BLAS.useSingleThread()
        BLASKernelSelector.verifyOrFallBack(shapes: [(32, 200, 784), (32, 100, 200), (32, 10, 50), (200, 784, 32)])
        do {
            var command = try parseAsRoot()
            if var asyncCommand = command as? AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch {
            exit(withError: error)
        }
    }
}

func stderrLine(_ s: String) { FileHandle.standardError.write(Data((s + "\n").utf8)) }

/// A kernel the user named in `OPENBLAS_CORETYPE` stays, but one slower than this CPU runs is
/// said on stderr when the work it slows starts (`nnd train`, `nnd bench`; the daemon logs it),
/// not before a command's own error about its arguments.
func warnIfOpenBLASIsHeldBack() {
    if let warning = BLASKernelSelector.currentEnvironmentWarning { stderrLine("nnd: warning: \(warning)") }
}

func jsonLine<T: Encodable>(_ value: T) -> String {
    String(decoding: try! APIJSON.encoder.encode(value), as: UTF8.self)
}
