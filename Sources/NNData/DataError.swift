import Foundation

/// Every way a data file can be wrong. The message always names the file and the problem.
public struct DataError: Error, CustomStringConvertible, Equatable, Sendable {
    public var file: String
    public var problem: String
    public init(file: String, _ problem: String) {
        self.file = file
        self.problem = problem
    }
    public var description: String { "\(file): \(problem)" }

    /// What went wrong, in the system's words ("Not a directory", "No space left on device") for
    /// the file errors Foundation wraps in NSCocoaErrorDomain, whose own text names neither.
    public static func reason(_ error: Error) -> String {
        let ns = error as NSError
        let posix =
            ns.domain == NSPOSIXErrorDomain ? ns : (ns.userInfo[NSUnderlyingErrorKey] as? Error).map { $0 as NSError }
        if let posix, posix.domain == NSPOSIXErrorDomain { return String(cString: strerror(Int32(posix.code))) }
        return "\(error)"
    }
}
