import ArgumentParser
import CBuildInfo
import Foundation
import NNAPI
import NNEngine
import NNNumerics

struct Info: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract:
            "Show the build (version, git commit), the kernels picked for this CPU, and the NUMA topology and workers nnd would use."
    )
    func run() throws {
        let topo = NUMATopology.detect()
        print("nnd \(NNDVersion.current) (commit \(String(cString: nnd_git_commit())))")
        let heldBack = BLASKernelSelector.currentEnvironmentWarning.map { " (warning: \($0))" } ?? ""
        print("blas kernel: \(BLAS.kernelName)\(heldBack)")
        print("element-wise kernels: \(VectorKernels.instructionSet)")
        print("hidden-layer products: \(BLAS.smallProductKernel)")
        print("sparse first-layer kernels: \(DataParallelEngine.sparseKernels)")
        print("numa: \(topo.numaAvailable ? "available" : "unavailable"); \(topo)")
        print("default workers: \(topo.cpus.count)")
    }
}
