import ArgumentParser
import Glibc
import NNAPI
import NNControl

#if canImport(FoundationEssentials)
    // Foundation's essentials only (no ICU, no networking): nnctl, which links this, stays small.
    import FoundationEssentials
#else
    import Foundation
#endif

/// nnctl: the control CLI of nnd. One command per type under `Commands/`; the connection
/// options every command shares are in `Connection.swift`, the tables in `Output.swift`.
@main
struct NNCtl: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "nnctl",
        abstract: "Control nnd, the training daemon, over its Unix socket.",
        discussion: """
            Start a run from a spec and watch it to the end:

              nnctl start etc/nnd/runs/mnist-seed.yaml --wait

            See what the daemon is doing, and one run in detail:

              nnctl status
              nnctl status RUN

            Talk to the system service (as root or a member of group nnd):

              nnctl --socket /run/nnd/nnd.sock list

            The socket is --socket, else $NND_SOCKET, else your own daemon's \
            ($XDG_RUNTIME_DIR/nnd/nnd.sock or /tmp/nnd-$UID/nnd.sock) if it exists, else the \
            system service's /run/nnd/nnd.sock. --socket and --json go before or after the command.

            Exit codes: 0 ok; 1 request refused by the daemon (its message is printed); 2 usage \
            error; 3 daemon not reachable; 4 the run failed or was stopped.
            """,
        version: NNDVersion.current,
        subcommands: [
            Start.self, Status.self, List.self, Watch.self, Pause.self, Resume.self, Stop.self, Remove.self,
            Eval.self, Export.self, Report.self,
            Retrain.self, Models.self, Promote.self, Rollback.self, Predict.self,
        ])

    static func main() {
        let arguments = GlobalOptions.movedAfterCommand(Array(CommandLine.arguments.dropFirst()))
        do {
            var command = try parseAsRoot(arguments)
            try command.run()
        } catch let error as Refused {
            // With --json a script gets the daemon's error object on stdout as well.
            if arguments.contains("--json"), let apiError = error.apiError,
                let body = try? APIJSON.encoder.encode(ErrorBody(error: apiError))
            {
                print(String(decoding: body, as: UTF8.self))
            }
            fail(error.message, code: 1)
        } catch let error as RunEnded {
            fail(error.message, code: 4)
        } catch let error as UnsafeSocket {
            fail(error.message, code: 2)
        } catch let error as UsageProblem {
            fail(error.message, code: 2)
        } catch let error as UnixHTTPClient.ClientError {
            if case .unreachable(let path, let why) = error, why.contains("Permission denied") {
                // The system service's socket and its directory belong to group nnd (mode 0660/0750).
                fail(
                    "\(error)\nnnctl: only root and members of the socket's group may connect to \(path) "
                        + "(the service's group is nnd: sudo adduser $USER nnd, then log in again).", code: 3)
            }
            if case .unreachable = error {
                fail(
                    "\(error)\nnnctl: is the daemon running? Start it with `nnd serve` (or `systemctl start nnd`), "
                        + "or point --socket / NND_SOCKET at its socket.", code: 3)
            }
            fail("\(error)", code: 1)
        } catch {
            if exitCode(for: error) == .validationFailure { fail(fullMessage(for: error), code: 2, prefix: "") }
            exit(withError: error)
        }
    }

    static func fail(_ message: String, code: Int32, prefix: String = "nnctl: ") -> Never {
        standardError("\(prefix)\(message)\n")
        Glibc.exit(code)
    }
}

/// The daemon refused the request (exit 1).
struct Refused: Error {
    let message: String
    /// The daemon's error, when it sent one (its code and field; `message` is its description).
    let apiError: APIError?

    init(message: String) {
        self.message = message
        apiError = nil
    }

    init(_ error: APIError) {
        message = error.description
        apiError = error
    }
}

/// A usage error found after parsing, such as a file argument that cannot be read (exit 2,
/// without the usage text that argument-parser's `ValidationError` would add).
struct UsageProblem: Error { var message: String }

/// The socket's directory could be another user's (exit 2).
struct UnsafeSocket: Error { var message: String }

/// The run that nnctl was following ended failed or stopped (exit 4).
struct RunEnded: Error { var message: String }

/// Options every command takes, accepted before the command too (`nnctl --socket S list`):
/// swift-argument-parser reads a subcommand's options only after its name, so they are moved there.
enum GlobalOptions {
    static let withValue: Set<String> = ["--socket"]
    static let flags: Set<String> = ["--json"]

    static func movedAfterCommand(_ arguments: [String]) -> [String] {
        var leading: [String] = []
        var rest = arguments[...]
        while let first = rest.first {
            let name = String(first.split(separator: "=", maxSplits: 1).first ?? "")
            if flags.contains(first) || (withValue.contains(name) && first.contains("=")) {
                leading.append(first)
                rest = rest.dropFirst()
            } else if withValue.contains(first), rest.count >= 2 {
                leading.append(contentsOf: rest.prefix(2))
                rest = rest.dropFirst(2)
            } else {
                break
            }
        }
        guard !leading.isEmpty, let command = rest.first else { return arguments }
        return [command] + leading + rest.dropFirst()
    }
}

/// nnctl's `print`: flushed at once, so journald (`nnd-retrain.service`) and pipes get each
/// line as it is printed rather than when nnctl exits (stdout is block-buffered when it is
/// not a terminal, and Swift 6 does not let us touch C's `stdout` to make it line-buffered).
func print(_ items: Any..., separator: String = " ", terminator: String = "\n") {
    Swift.print(items.map { "\($0)" }.joined(separator: separator), terminator: terminator)
    fflush(nil)
}

/// Writes `text` to standard error (file descriptor 2), unbuffered.
func standardError(_ text: String) {
    var text = text
    text.withUTF8 { bytes in _ = write(2, bytes.baseAddress, bytes.count) }
}
