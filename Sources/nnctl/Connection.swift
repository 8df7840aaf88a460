import ArgumentParser
import Glibc
import NNAPI
import NNControl

#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

/// `--socket` and `--json`, and the typed requests every command makes.
struct Connection: ParsableArguments {
    @Option(
        help: ArgumentHelp(
            "The daemon's socket (default: $NND_SOCKET, else your own daemon's if it exists, else /run/nnd/nnd.sock).",
            valueName: "path"))
    var socket: String?

    @Flag(help: "Print the daemon's JSON answer instead of a table.")
    var json = false

    /// The client for the chosen socket, once its directory is found safe: nnctl sends specs and
    /// reads answers through it, so a socket another user could have placed there is refused
    /// (exit 2). The user's own default directory must be the user's; any other (the system
    /// service's `/run/nnd`, a `--socket` path) must be writable by its owner alone.
    var client: UnixHTTPClient {
        get throws {
            let path = socket ?? Self.defaultSocket()
            let directory = parentDirectory(path)
            let own = UnixHTTPClient.defaultSocketPath(environment: ProcessInfo.processInfo.environment) == path
            if FileManager.default.fileExists(atPath: directory),
                let problem = SocketDirectory.problem(directory, owner: own ? getuid() : nil)
            {
                throw UnsafeSocket(message: "refusing to connect: \(problem)")
            }
            return UnixHTTPClient(socketPath: path)
        }
    }

    /// `$NND_SOCKET`; else the user's own daemon (`nnd serve`'s default) when its socket
    /// exists; else the system service's; else the user's (named in the error).
    static func defaultSocket(environment: [String: String] = ProcessInfo.processInfo.environment) -> String {
        if let socket = environment["NND_SOCKET"], !socket.isEmpty { return socket }
        let own = UnixHTTPClient.defaultSocketPath(environment: environment)
        if FileManager.default.fileExists(atPath: own) { return own }
        // The service's directory (mode 0750, group nnd) shows the service is installed even to
        // a user who may not look inside: connecting then says why it is refused.
        if FileManager.default.fileExists(atPath: systemSocket)
            || FileManager.default.fileExists(atPath: parentDirectory(systemSocket))
        {
            return systemSocket
        }
        return own
    }

    static let systemSocket = "/run/nnd/nnd.sock"

    /// Sends a request and decodes the answer as `T`; a non-2xx answer becomes `Refused`
    /// with the daemon's message. With `--json` the answer is also printed as it came.
    func call<T: Decodable>(
        _ method: String, _ path: String, body: (any Encodable)? = nil, as type: T.Type = T.self, quiet: Bool = false
    ) throws -> T {
        let bytes = try body.map { [UInt8](try APIJSON.encoder.encode($0)) }
        return try call(method, path, raw: bytes, contentType: "application/json", as: type, quiet: quiet)
    }

    /// `call` with a body that is not JSON (e.g. packed float32 records).
    func call<T: Decodable>(
        _ method: String, _ path: String, raw bytes: [UInt8]?, contentType: String, as type: T.Type = T.self,
        quiet: Bool = false
    ) throws -> T {
        let response = try client.request(method, path, body: bytes, contentType: contentType)
        try check(response)
        if json && !quiet { print(response.text, terminator: response.text.hasSuffix("\n") ? "" : "\n") }
        do { return try APIJSON.decoder.decode(T.self, from: Data(response.body)) } catch {
            throw Refused(message: "unexpected answer to \(method) \(path): \(error)")
        }
    }

    /// Throws `Refused` for a non-2xx response.
    func check(_ response: UnixHTTPClient.Response) throws {
        guard !(200..<300).contains(response.status) else { return }
        if let body = try? APIJSON.decoder.decode(ErrorBody.self, from: Data(response.body)) {
            throw Refused(body.error)
        }
        throw Refused(message: "HTTP \(response.status): \(response.text.prefix(300))")
    }

    /// Fetches a file-like answer (export, report) and writes it to `output`.
    func download(_ path: String, to output: String) throws -> Int {
        let response = try client.request("GET", path)
        try check(response)
        try LocalFile.write(response.body, to: output)
        return response.body.count
    }
}

/// The path of a run's resource; names and ids are percent-encoded.
func runPath(_ run: String, _ tail: String = "") -> String {
    "/v1/runs/" + percentEncoded(run) + tail
}

/// `name` with every byte but ASCII letters, digits and `-_.` percent-encoded (a path segment).
func percentEncoded(_ name: String) -> String {
    var out = ""
    for byte in name.utf8 {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
            UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "."):
            out.unicodeScalars.append(Unicode.Scalar(byte))
        default:
            out += "%" + (byte < 16 ? "0" : "") + String(byte, radix: 16, uppercase: true)
        }
    }
    return out
}

/// The directory part of a path: `/run/nnd/nnd.sock` → `/run/nnd`.
func parentDirectory(_ path: String) -> String {
    guard let slash = path.lastIndex(of: "/") else { return "." }
    return slash == path.startIndex ? "/" : String(path[..<slash])
}

/// The argument naming a run, shared by every command that takes one.
struct RunArgument: ParsableArguments {
    @Argument(help: ArgumentHelp("The run's id, or its name (the newest run of that name).", valueName: "run"))
    var run: String
}

extension EvaluationData: ExpressibleByArgument {}
extension ExportFormat: ExpressibleByArgument {}
