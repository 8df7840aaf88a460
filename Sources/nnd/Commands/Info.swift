import ArgumentParser
import Foundation
import NNEngine
import NNNumerics

struct Info: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show the BLAS kernel, NUMA topology and workers nnd would use.")
    func run() throws {
        let topo = NUMATopology.detect()
        print("blas kernel: \(BLAS.kernelName)")
        print("element-wise kernels: \(VectorKernels.instructionSet)")
        print("numa: \(topo.numaAvailable ? "available" : "unavailable"); \(topo)")
        print("default workers: \(topo.cpus.count)")
    }
}
