import CExecutorHook
import Foundation
import Hummingbird
import Logging
import NIOCore
import NIOPosix
import NNAPI
import NNControl
import NNData
import NNNumerics
import ServiceLifecycle

/// `nnd serve`: the long-running process. Wires the `RunManager`, the control API on the
/// Unix socket, systemd notifications and graceful shutdown on SIGTERM/SIGINT.
public enum Daemon {
    public static let version = NNDVersion.current

    public struct StartupError: Error, CustomStringConvertible {
        public var description: String
    }

    /// The socket's directory could let another user take the socket over (exit 2: a setting
    /// or environment to fix, not a failure of the daemon).
    public struct UnsafeSocketDirectory: Error, CustomStringConvertible {
        public var description: String
    }

    /// Whether `prepareProcess` moved Swift concurrency onto NIO's event loops.
    nonisolated(unsafe) static var asyncOnEventLoops = false  // written once, before any concurrency runs

    /// Call first thing in `nnd serve`, before any Swift concurrency code has run.
    ///
    /// On Linux, Swift concurrency's threads are Dispatch's default-priority pool — the same
    /// threads `concurrentPerform` trains on — so a request handler could run on, and a lowered
    /// priority could stick to, a training worker. Installing NIO's event loops as the global
    /// executor keeps every async task (handlers, the `RunManager` actor, stream writers) on the
    /// event-loop threads, which `run` then lowers; Dispatch's pool is left to training. Also
    /// starts the `TrainingThreadLauncher` while every thread still has the process's priority.
    public static func prepareProcess() {
        _ = TrainingThreadLauncher.shared
        // NIO finds the runtime's hook with dlsym, which fails in the release binaries: their Swift
        // runtime is linked in statically and its symbols are not exported. The C shim sets the
        // same hook by a link-time reference, to the same effect.
        asyncOnEventLoops =
            NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor()
            || nn_install_global_enqueue_hook(enqueueOnEventLoop) == 1
    }

    public static func run(config: DaemonConfig) async throws {
        LoggingSystem.bootstrap { StderrLogHandler(label: $0, level: Logger.Level(rawValue: config.logLevel) ?? .info) }
        let logger: Logger = {
            var l = Logger(label: "nnd")
            l.logLevel = Logger.Level(rawValue: config.logLevel) ?? .info
            return l
        }()

        _ = TrainingThreadLauncher.shared  // normally done by `prepareProcess`; must precede any lowering

        try prepareDirectory(config.stateDirectory, mode: 0o750)
        try prepareDirectory("\(config.stateDirectory)/runs", mode: 0o750)
        // Before the socket: a second daemon on this state directory must not even replace a
        // socket file, whichever socket it was given.
        let (stateLock, lockWarning) = try StateDirectoryLock.acquire(
            stateDirectory: config.stateDirectory, socket: config.socketPath)
        defer { stateLock?.release() }
        if let lockWarning { logger.warning("\(lockWarning)") }
        let socketDir = (config.socketPath as NSString).deletingLastPathComponent
        try prepareSocketDirectory(socketDir, groupAccess: config.socketGroup != nil)
        try removeStaleSocket(config.socketPath)

        let notifier = SystemdNotifier()
        let manager = RunManager(config: config, logger: logger, notifier: notifier)
        await manager.recover()

        let api = ControlAPI(
            manager: manager, maxRequestBytes: config.maxRequestBytes,
            requestTimeout: .seconds(config.requestTimeoutSeconds), version: version)
        let socketPath = config.socketPath
        let mode = config.socketMode
        let socketGroup = config.socketGroup
        let app = Application(
            router: api.router(),
            server: .http1(
                configuration: .init(
                    additionalChannelHandlers: [MalformedRequestResponder()],
                    idleTimeout: .seconds(Int64(config.requestTimeoutSeconds)))),
            configuration: .init(address: .unixDomainSocket(path: socketPath), serverName: "nnd/\(version)"),
            onServerRunning: { _ in
                if chmod(socketPath, mode_t(mode)) != 0 {
                    logger.error(
                        "cannot set the socket's mode",
                        metadata: ["socket": "\(socketPath)", "error": "\(errnoText())"])
                }
                if let socketGroup { setGroup(of: socketPath, to: socketGroup, logger: logger) }
                logger.info(
                    "serving",
                    metadata: [
                        "socket": "\(socketPath)", "state_dir": "\(config.stateDirectory)",
                        "workers": "\(config.workers)", "max_concurrent_runs": "\(config.maxConcurrentRuns)",
                    ])
                if let warning = BLASKernelSelector.currentEnvironmentWarning { logger.warning("\(warning)") }
                notifier?.ready(status: "serving on \(socketPath)")
            },
            logger: logger
        )
        // The event loops do the control plane's socket I/O and HTTP parsing and — after
        // `prepareProcess` — run its async code: lower their priority (see `ThreadPriority`).
        var nice = Int32(config.controlNice)
        if nice > 0 && !ThreadPriority.canReturnToNormalPriority() {
            // Threads that Dispatch starts from a lowered thread would keep its nice value and
            // later train at it (and libdispatch logs errno=13 trying to undo it).
            logger.notice(
                "control_nice not applied: lowering is one-way without root or RLIMIT_NICE (LimitNICE=+0 in the unit)",
                metadata: ["control_nice": "\(nice)"])
            nice = 0
        }
        for loop in app.eventLoopGroup.makeIterator() {
            loop.execute { [nice] in ThreadPriority.lowerCurrentThread(toNice: nice) }
        }
        if !asyncOnEventLoops {
            logger.warning(
                "Swift concurrency runs on Dispatch's pool, not on the event loops: request handling competes with training at full priority"
            )
        }
        let lifecycle = ManagerService(manager: manager, notifier: notifier, logger: logger)
        // Services shut down in reverse order: the manager first (runs checkpoint and are
        // marked to resume), then the HTTP server closes the socket.
        var all: [any Service] = [app, lifecycle]
        if let (host, port) = config.metricsAddress {
            all.insert(
                Application(
                    router: ControlAPI.metricsOnlyRouter(manager: manager, version: version),
                    server: .http1(configuration: .init(additionalChannelHandlers: [MalformedRequestResponder()])),
                    configuration: .init(address: .hostname(host, port: port), serverName: "nnd/\(version)"),
                    logger: logger), at: 0)
        }
        // SIGHUP too: a daemon started by hand from a terminal gets it when the terminal closes,
        // and would otherwise die on the spot, losing its runs' steps since their last checkpoint.
        let services = ServiceGroup(
            services: all, gracefulShutdownSignals: [.sigterm, .sigint, .sighup], logger: logger)
        try await services.run()
        unlink(socketPath)
        logger.info("stopped")
    }

    /// Gives the socket to `group` (its members may connect). Nothing to do when it already
    /// has it — under systemd the daemon's own group, where a chown could only fail (EPERM with
    /// PrivateUsers=); a failure is logged with its reason, never ignored.
    static func setGroup(of path: String, to group: String, logger: Logger) {
        guard let entry = getgrnam(group) else {
            logger.error("socket_group does not exist", metadata: ["socket_group": "\(group)"])
            return
        }
        var info = stat()
        if stat(path, &info) == 0, info.st_gid == entry.pointee.gr_gid { return }
        if chown(path, getuid(), entry.pointee.gr_gid) != 0 {
            logger.error(
                "cannot give the socket to its group",
                metadata: ["socket": "\(path)", "socket_group": "\(group)", "error": "\(errnoText())"])
        }
    }

    static func prepareDirectory(_ path: String, mode: mode_t) throws {
        var isDir: ObjCBool = false
        if !FileManager.default.fileExists(atPath: path, isDirectory: &isDir) {
            do {
                try FileManager.default.createDirectory(
                    atPath: path, withIntermediateDirectories: true, attributes: [.posixPermissions: Int(mode)])
            } catch {
                throw StartupError(description: "cannot create directory \(path): \(DataError.reason(error))")
            }
        } else if !isDir.boolValue {
            throw StartupError(description: "\(path) exists and is not a directory")
        }
    }

    /// The socket's directory, created 0700 (0750 when a `socket_group` may connect), and
    /// refused when another user owns it or others may write to it: whoever can write there can
    /// replace the socket with their own and read every nnctl request (`/tmp/nnd-$UID` is a
    /// predictable name anyone can create first). Like tmux and ssh-agent.
    static func prepareSocketDirectory(_ path: String, groupAccess: Bool) throws {
        try prepareDirectory(path, mode: groupAccess ? 0o750 : 0o700)
        if let problem = SocketDirectory.problem(path, owner: geteuid()) {
            throw UnsafeSocketDirectory(description: problem)
        }
    }

    /// A socket file left by a crashed daemon is removed; a live daemon on it is an error.
    static func removeStaleSocket(_ path: String) throws {
        guard FileManager.default.fileExists(atPath: path) else { return }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            for (i, b) in bytes.enumerated() where i < raw.count - 1 { raw[i] = b }
        }
        let connected =
            withUnsafePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
                }
            } == 0
        if connected { throw StartupError(description: "another nnd is already serving on \(path)") }
        unlink(path)
    }
}

/// Ties the RunManager into service-lifecycle: keeps the systemd watchdog fed while running,
/// and on graceful shutdown checkpoints the running runs before the server closes.
struct ManagerService: Service {
    let manager: RunManager
    let notifier: SystemdNotifier?
    let logger: Logger

    /// How often retention runs after the one at start.
    static let retentionInterval: Duration = .seconds(3600)

    func run() async throws {
        await manager.applyRetention()
        await withGracefulShutdownHandler {
            await withTaskGroup(of: Void.self) { group in
                group.addTask {
                    // Every sleep ends when shutdown begins: `systemctl stop` must not wait for
                    // the next tick (half of WatchdogSec) before runs are checkpointed.
                    while !Task.isShuttingDownGracefully && !Task.isCancelled {
                        try? await cancelWhenGracefulShutdown { try await Task.sleep(for: Self.retentionInterval) }
                        guard !Task.isShuttingDownGracefully else { break }
                        await manager.applyRetention()
                    }
                }
                group.addTask {
                    if let interval = notifier?.watchdogInterval {
                        while !Task.isShuttingDownGracefully && !Task.isCancelled {
                            notifier?.watchdog()
                            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: interval) }
                        }
                    } else {
                        try? await gracefulShutdown()
                    }
                }
            }
        } onGracefulShutdown: {
            notifier?.stopping()
        }
        logger.info("shutting down: checkpointing running runs")
        await manager.shutdown()
    }
}

/// The current `errno` as text, e.g. "Operation not permitted (errno 1)".
func errnoText() -> String {
    let code = errno
    return "\(String(cString: strerror(code))) (errno \(code))"
}

/// Swift concurrency's global jobs onto NIO's event loops (the hook `prepareProcess` installs
/// through the C shim): `any()` keeps a job on the loop it was enqueued from, as NIO's own hook.
private func enqueueOnEventLoop(_ job: UnsafeMutableRawPointer?) {
    // The runtime hands over its Job pointer, which is what an UnownedJob holds.
    let unownedJob = unsafeBitCast(job, to: UnownedJob.self)
    MultiThreadedEventLoopGroup.singleton.any().executor.enqueue(ExecutorJob(unownedJob))
}
