import CMPI
import Foundation
import NNEngine

/// The engine's `GradientReducer` on Open MPI: `MPI_Allreduce` over `MPI_COMM_WORLD`.
/// One per process, made when `nnd` finds itself started by `mpirun`/`srun`; only the
/// training thread calls it (MPI_THREAD_FUNNELED). Not `Sendable`.
public final class MPIReducer: GradientReducer {
    public let rank: Int
    public let size: Int
    /// How many ranks run on this rank's host (MPI's shared-memory node).
    public let localSize: Int
    /// The host this rank runs on, as MPI names it (for error messages).
    public let host: String
    private let gathered: UnsafeMutablePointer<UInt64>

    /// Whether this process was started as one rank of an MPI job: Open MPI's `mpirun` sets
    /// `OMPI_COMM_WORLD_SIZE`, Slurm's `srun` with PMIx sets `PMIX_RANK`.
    public static func launchedByMPI(environment: [String: String] = ProcessInfo.processInfo.environment) -> Bool {
        environment["OMPI_COMM_WORLD_SIZE"] != nil || environment["PMIX_RANK"] != nil
    }

    /// Asks the kernel to send this process `SIGTERM` when its parent (mpirun) exits.
    public static func stopWithLauncher() { _ = nnd_signal_on_parent_death(SIGTERM) }

    /// Runs `command` (searched on PATH) in place of this process, tied to its parent: the kernel
    /// sends it SIGTERM when the parent thread that started it ends — also when the daemon is
    /// killed with SIGKILL — and mpirun then ends every rank. (What `setpriv --pdeathsig` does;
    /// setpriv itself fails under nnd.service's empty capability bounding set.) Returns only if
    /// the exec fails, with errno's message.
    public static func execTiedToParent(_ command: [String]) -> String {
        _ = nnd_signal_on_parent_death(SIGTERM)
        var argv: [UnsafeMutablePointer<CChar>?] = command.map { strdup($0) } + [nil]
        execvp(command[0], &argv)
        return "\(command[0]): \(String(cString: strerror(errno)))"
    }

    /// Worker threads for this process when none are asked for. When it may run on the same
    /// CPUs as the process that started it (mpirun's or orted's, with `--bind-to none`, as the
    /// daemon launches ranks; srun's; or outside MPI), those CPUs shared among the ranks on this
    /// host: `OMPI_COMM_WORLD_LOCAL_SIZE` under mpirun, else `localRanks` (a reducer's
    /// `localSize`, which MPI knows under any launcher), else 1. When its launcher bound it to
    /// fewer (mpirun's default binds each of up to 2 ranks to one core), those are its own share.
    public static func defaultWorkers(
        environment: [String: String] = ProcessInfo.processInfo.environment,
        ownCPUs: [Int] = NUMATopology.onlineCPUs(),
        launcherCPUs: [Int]? = NUMATopology.allowedCPUs(ofProcess: "\(getppid())"),
        localRanks: Int? = nil
    ) -> Int {
        if let launcherCPUs, Set(ownCPUs).isStrictSubset(of: Set(launcherCPUs)) { return Swift.max(1, ownCPUs.count) }
        let local = Int(environment["OMPI_COMM_WORLD_LOCAL_SIZE"] ?? "") ?? localRanks ?? 1
        return Swift.max(1, ownCPUs.count / Swift.max(1, local))
    }

    public init() throws {
        var provided: Int32 = 0
        let rc = nnd_mpi_init(&provided)
        guard rc == 0 else { throw DistributedError.mpi("MPI_Init_thread failed with error \(rc)") }
        guard provided >= nnd_mpi_thread_funneled() else {
            throw DistributedError.mpi("MPI granted thread level \(provided); nnd needs MPI_THREAD_FUNNELED")
        }
        rank = Int(nnd_mpi_rank())
        size = Int(nnd_mpi_size())
        localSize = Int(nnd_mpi_local_size())
        var name = [CChar](repeating: 0, count: Int(nnd_mpi_max_host_name()) + 1)
        var length: Int32 = 0
        _ = nnd_mpi_host(&name, &length)
        host = String(decoding: name.prefix(Int(length)).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        gathered = .allocate(capacity: size)
    }

    deinit { gathered.deallocate() }

    /// Ends MPI (MPI_Finalize); call once, when training is over, on every rank.
    public func finish() { _ = nnd_mpi_finalize() }

    /// Ends the whole job from one rank (MPI_Abort): the others are stuck in a collective call.
    public func abort(code: Int32) -> Never {
        _ = nnd_mpi_abort(code)
        exit(code)
    }

    public func sum(_ buffer: UnsafeMutablePointer<Float>, count: Int) {
        check(nnd_mpi_sum_floats(buffer, Int64(count)), "MPI_Allreduce(MPI_FLOAT)")
    }
    public func sum(_ buffer: UnsafeMutablePointer<Double>, count: Int) {
        check(nnd_mpi_sum_doubles(buffer, Int64(count)), "MPI_Allreduce(MPI_DOUBLE)")
    }
    public func max(_ buffer: UnsafeMutablePointer<Int64>, count: Int) {
        check(nnd_mpi_max_int64(buffer, Int64(count)), "MPI_Allreduce(MPI_MAX)")
    }
    public func gather(_ value: UInt64) -> [UInt64] {
        check(nnd_mpi_allgather_uint64(value, gathered), "MPI_Allgather")
        return Array(UnsafeBufferPointer(start: gathered, count: size))
    }
    public func gather(_ text: String) -> [String] {
        let width = RankText.maxBytes
        var mine = [UInt8](repeating: 0, count: width)
        let utf8 = Array(text.utf8.prefix(width))
        mine.replaceSubrange(0..<utf8.count, with: utf8)
        var all = [UInt8](repeating: 0, count: width * size)
        check(nnd_mpi_allgather_bytes(mine, Int32(width), &all), "MPI_Allgather(MPI_BYTE)")
        return (0..<size).map { r in
            let slot = all[(r * width)..<((r + 1) * width)]
            return String(decoding: slot.prefix { $0 != 0 }, as: UTF8.self)
        }
    }

    /// MPI's default error handler aborts the job before a call returns an error; this is for
    /// an MPI configured otherwise.
    private func check(_ rc: Int32, _ call: String) {
        if rc != 0 {
            FileHandle.standardError.write(Data("nnd: rank \(rank) on \(host): \(call) failed with error \(rc)\n".utf8))
            abort(code: 70)
        }
    }
}

public enum DistributedError: Error, CustomStringConvertible {
    case mpi(String)
    public var description: String {
        switch self {
        case .mpi(let m): m
        }
    }
}
