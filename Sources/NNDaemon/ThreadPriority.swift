import Foundation
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// CPU priority of the daemon's threads.
///
/// Why: on a server whose cores all train, every millisecond a client's request takes on a core
/// preempts a training worker — and, because a step waits for its slowest shard, idles the
/// other workers at the barrier too. So the control plane (NIO's event loops, which also run
/// every async task, see `Daemon.prepareProcess`) runs at a higher nice value than training
/// (`control_nice`, default 10): the scheduler then serves requests mostly in the moments
/// training leaves a core idle, and requests still get through when it does not (nice lowers a
/// thread's share, it never starves it).
///
/// Linux lets an unprivileged thread raise its nice value but never lower it again, and a new
/// thread inherits its creator's. So training threads must never be created by a control-plane
/// thread: `TrainingThreadLauncher` creates them from a thread started before any was lowered.
public enum ThreadPriority {
    // `who` 0 means the calling thread: on Linux the nice value is per thread, and
    // PRIO_PROCESS with 0 addresses the caller's own task (setpriority(2), BUGS).

    /// The calling thread's nice value.
    public static func currentNice() -> Int32 {
        errno = 0
        return getpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0)
    }

    /// Whether a thread may set its nice value back to 0 once raised: as root (CAP_SYS_NICE) or
    /// when RLIMIT_NICE allows it (systemd's `LimitNICE=+0`, which the shipped unit sets).
    /// Without it a raised control plane would leak its priority into the threads it starts.
    public static func canReturnToNormalPriority() -> Bool {
        if geteuid() == 0 { return true }
        var limit = rlimit()
        // RLIMIT_NICE is 13 on Linux (not exported to Swift by Glibc's module map).
        guard getrlimit(__rlimit_resource_t(13), &limit) == 0 else { return false }
        // The lowest nice value allowed is 20 − rlim_cur.
        return limit.rlim_cur >= 20  // RLIM_INFINITY is the largest value
    }

    /// Raises the calling thread's nice value to `nice` (never lowers it).
    public static func lowerCurrentThread(toNice nice: Int32) {
        guard nice > 0, currentNice() < nice else { return }
        _ = setpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0, nice)
    }
}

/// Starts training threads from one long-lived thread that the daemon creates at start-up,
/// before any thread's priority is lowered — so every training thread, and the Dispatch pool
/// threads its `concurrentPerform` creates, keeps the process's own priority whichever
/// (possibly lowered) thread asked for it.
public final class TrainingThreadLauncher: Sendable {
    public static let shared = TrainingThreadLauncher()

    private struct Job {
        var name: String
        var stackSize: Int
        var body: @Sendable () -> Void
    }
    private let jobs = Mutex<[Job]>([])
    private let pending = DispatchSemaphore(value: 0)

    private init() {
        let launcher = Thread { [self] in self.launchForever() }
        launcher.name = "nnd-launcher"
        launcher.start()
    }

    private func launchForever() -> Never {
        while true {
            pending.wait()
            guard let job = jobs.withLock({ $0.isEmpty ? nil : $0.removeFirst() }) else { continue }
            let thread = Thread(block: job.body)
            thread.name = job.name
            thread.stackSize = job.stackSize
            thread.start()
        }
    }

    /// Runs `body` on a new thread with the launcher's (the process's own) priority.
    public func launch(name: String, stackSize: Int, _ body: @escaping @Sendable () -> Void) {
        jobs.withLock { $0.append(Job(name: name, stackSize: stackSize, body: body)) }
        pending.signal()
    }
}
