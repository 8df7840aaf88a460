import Glibc

#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

/// Whether a directory is safe to hold nnd's control socket: the daemon refuses to serve from
/// an unsafe one and nnctl refuses to connect through it.
public enum SocketDirectory {
    /// Why `path` is unsafe for a socket, or nil when it is safe: it must be a real directory
    /// (not a symlink), owned by `owner` (when given; nnctl accepts the system service's
    /// `/run/nnd`, owned by nnd), and writable by nobody but its owner.
    public static func problem(_ path: String, owner: uid_t?) -> String? {
        var info = stat()
        guard lstat(path, &info) == 0 else {
            return "cannot inspect the socket directory \(path): \(String(cString: strerror(errno)))"
        }
        if (info.st_mode & S_IFMT) != S_IFDIR {
            return "the socket directory \(path) is not a directory (a symlink or file someone else may control)"
        }
        if let owner, info.st_uid != owner {
            let name = getpwuid(info.st_uid).map { String(cString: $0.pointee.pw_name) } ?? "uid \(info.st_uid)"
            return "the socket directory \(path) belongs to \(name), not to uid \(owner): "
                + "another user could take the socket over; remove it or choose another socket"
        }
        if info.st_mode & (S_IWGRP | S_IWOTH) != 0 {
            return
                "the socket directory \(path) is writable by others (mode \(String(info.st_mode & 0o777, radix: 8))): "
                + "another user could replace the socket; chmod go-w it or choose another socket"
        }
        return nil
    }
}
