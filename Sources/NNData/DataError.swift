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

/// Text files a person writes (run specs, daemon settings), read whole.
public enum TextFile {
    /// The file's text, or a `DataError` naming the file and why, in terms of `what` it is:
    /// "cannot read the run spec: No such file or directory", "the run spec is not UTF-8 text".
    public static func read(_ path: String, what: String) throws(DataError) -> String {
        let data: Data
        do { data = try Data(contentsOf: URL(fileURLWithPath: path)) } catch {
            throw DataError(file: path, "cannot read \(what): \(DataError.reason(error))")
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw DataError(file: path, "\(what) is not UTF-8 text")
        }
        return text
    }
}
