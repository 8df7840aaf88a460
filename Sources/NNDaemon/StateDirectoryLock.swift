import Foundation

/// One daemon per state directory. Two daemons on the same directory (a hand-started
/// `nnd serve` next to the service, or two with different sockets) would both resume the same
/// runs, write the same checkpoints, apply retention to each other's runs and move the same
/// model pointers. The first daemon holds an exclusive `flock` on `<state_dir>/nnd.lock` for
/// its lifetime; the kernel drops it when the process ends in any way (`kill -9` included), so
/// a crash never leaves a stale lock behind. The file holds the holder's pid and socket, for
/// the refusal's message.
struct StateDirectoryLock {
    static let fileName = "nnd.lock"

    /// The lock's descriptor, open until `release` or the process's end (close-on-exec, so
    /// processes the daemon starts — `mpirun` for a distributed run — do not hold it).
    let descriptor: Int32

    /// Once the daemon has stopped: every run is checkpointed and the socket removed.
    func release() { close(descriptor) }

    /// Takes the lock, or throws naming the daemon that holds it. A file system that cannot lock
    /// (an NFS mount without a lock manager: ENOLCK) gives no lock and a `warning` for the log:
    /// such a state directory must not keep the daemon from starting.
    static func acquire(stateDirectory: String, socket: String) throws -> (lock: StateDirectoryLock?, warning: String?)
    {
        let path = "\(stateDirectory)/\(fileName)"
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o640)
        guard fd >= 0 else {
            throw Daemon.StartupError(description: "cannot open \(path): \(errnoText())")
        }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            let code = errno
            let holder = Self.holder(fd)
            close(fd)
            guard code == EWOULDBLOCK else {
                return (
                    nil,
                    "cannot lock \(path) (\(String(cString: strerror(code)))): a second nnd on this state "
                        + "directory would not be refused"
                )
            }
            throw Daemon.StartupError(
                description:
                    "state directory \(stateDirectory) is in use by another nnd\(holder.map { " (\($0))" } ?? ""); "
                    + "stop it, or give this one its own --state-dir")
        }
        // Best effort: the lock is what counts, the text only names its holder.
        let text = "pid \(getpid()), serving on \(socket)\n"
        _ = ftruncate(fd, 0)
        _ = text.withCString { pwrite(fd, $0, strlen($0), 0) }
        return (StateDirectoryLock(descriptor: fd), nil)
    }

    /// What the holder wrote: "pid N, serving on PATH".
    private static func holder(_ fd: Int32) -> String? {
        var buffer = [UInt8](repeating: 0, count: 512)
        let n = pread(fd, &buffer, buffer.count, 0)
        guard n > 0 else { return nil }
        let text = String(decoding: buffer[0..<n], as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        return text.isEmpty ? nil : text
    }
}
