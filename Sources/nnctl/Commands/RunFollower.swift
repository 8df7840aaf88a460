import ArgumentParser
import Glibc
import NNAPI
import NNControl

#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

struct FollowOptions: ParsableArguments {
    /// Seconds an event stream may carry nothing before the daemon counts as stopped or hung
    /// (its socket still accepts): two heartbeats missed.
    static let silenceSeconds = 2 * StreamLine.heartbeatSeconds + 5

    @Option(
        help: ArgumentHelp(
            "While following a run, how long to keep reconnecting to a daemon that went away or stopped "
                + "answering (no heartbeat for \(silenceSeconds) s), in seconds.",
            valueName: "seconds"))
    var reconnectTimeout: Double = 600
}

/// Follows a run's event stream to its end, printing a line per epoch (and a progress bar on
/// a terminal). A daemon that goes away (crash, restart, upgrade) is reconnected to with
/// backoff for up to `reconnectTimeout` seconds; the daemon resumes the run and the stream
/// picks it up where it is.
struct RunFollower {
    let connection: Connection
    let options: FollowOptions

    /// Returns when the run completed; throws `RunEnded` when it failed, stopped or paused.
    @discardableResult
    func follow(_ run: String) throws -> RunRecord {
        var printer = ProgressPrinter(json: connection.json)
        var lostSince: Date?
        var backoff = 0.25
        while true {
            do {
                let state = try stream(run, printer: &printer)
                lostSince = nil
                backoff = 0.25
                if let state, state.isSettled { break }
                // The stream ended with the run still queued or running: the daemon is shutting down.
                lostSince = Date()
                standardError("nnctl: the daemon closed the stream; reconnecting\n")
            } catch let error as UnixHTTPClient.ClientError {
                let since = lostSince ?? Date()
                if lostSince == nil {
                    standardError(
                        "nnctl: lost the daemon (\(error)); reconnecting for up to \(Int(options.reconnectTimeout)) s\n"
                    )
                }
                lostSince = since
                guard Date().timeIntervalSince(since) < options.reconnectTimeout else {
                    throw UnixHTTPClient.ClientError.unreachable(
                        (try? connection.client.socketPath) ?? "the socket",
                        "gave up after \(Int(options.reconnectTimeout)) s of reconnecting"
                    )
                }
            }
            usleep(UInt32(backoff * 1_000_000))
            backoff = min(backoff * 2, 5)
        }
        let record = try connection.call("GET", runPath(run), as: RunRecord.self, quiet: true)
        switch record.state {
        case .completed:
            if !connection.json {
                print(
                    "train accuracy \(Output.percent(record.trainAccuracy))%  "
                        + "test accuracy \(Output.percent(record.testAccuracy))%")
            }
            return record
        default:
            throw RunEnded(
                message: "run \(record.id) ended \(record.state.rawValue)" + (record.reason.map { ": \($0)" } ?? ""))
        }
    }

    /// One connection's worth of the event stream; the last state it reported.
    private func stream(_ run: String, printer: inout ProgressPrinter) throws -> RunState? {
        var last: RunState?
        var failure: String?
        // A silent stream is followed like a daemon that went away.
        let status = try connection.client.stream(
            runPath(run, "/events"), silenceLimit: FollowOptions.silenceSeconds
        ) { text in
            if connection.json { print(text) }
            if let body = try? APIJSON.decoder.decode(ErrorBody.self, from: Data(text.utf8)) {
                failure = body.error.description
                return
            }
            guard let line = try? APIJSON.decoder.decode(StreamLine.self, from: Data(text.utf8)) else { return }
            if line.type == .state { last = line.state }
            printer.show(line)
        }
        if let failure { throw Refused(message: failure) }
        guard (200..<300).contains(status) else { throw Refused(message: "HTTP \(status) following \(run)") }
        return last
    }
}

/// Epoch lines, state changes and (on a terminal) a progress bar.
struct ProgressPrinter {
    let json: Bool
    let terminal = isatty(STDOUT_FILENO) == 1
    var lastEpochPrinted = -1

    init(json: Bool) { self.json = json }

    mutating func show(_ line: StreamLine) {
        guard !json else { return }
        let clear = terminal ? "\r\u{1B}[K" : ""
        switch line.type {
        case .heartbeat: return
        case .state:
            print(clear + "state: \(line.state?.rawValue ?? "-")" + (line.reason.map { " (\($0))" } ?? ""))
        case .progress:
            guard let event = line.event else { return }
            if event.kind == .epoch {
                guard event.epoch != lastEpochPrinted else { return }
                lastEpochPrinted = event.epoch
                print(
                    clear + "epoch \(event.epoch)/\(event.epochs)  cost \(Output.number(event.cost))  "
                        + "lr \(Output.number(Double(event.learningRate), "%g"))  \(Output.number(event.seconds, "%.2f"))s  "
                        + "test \(Output.percent(event.testAccuracy))%"
                        + (event.validationAccuracy.map { "  validation \(Output.percent($0))%" } ?? ""))
            } else if terminal {
                let steps = max(event.stepsPerEpoch, 1)
                let done = (Double(event.epoch - 1) + Double(event.step) / Double(steps)) / Double(max(event.epochs, 1))
                let width = 24
                let filled = min(width, max(0, Int(done * Double(width))))
                let bar = String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled)
                print(
                    clear + "epoch \(event.epoch)/\(event.epochs) [\(bar)] step \(event.step)/\(steps)  "
                        + "cost \(Output.number(event.cost))  \(Output.number(event.samplesPerSecond, "%.0f")) samples/s  "
                        + "ETA \(Output.duration(event.etaSeconds))", terminator: "")
                fflush(nil)
            }
        }
    }
}
