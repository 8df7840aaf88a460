import ArgumentParser
import Foundation
import NNControl

/// Exit codes: 0 ok, 1 request refused (the daemon's message is printed), 2 usage, 3 daemon not reachable.
@main
struct NNCtl: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "nnctl",
        abstract: "Control nnd, the training daemon, over its Unix socket.",
        discussion: "Exit codes: 0 ok, 1 request refused by the daemon, 2 usage error, 3 daemon not reachable.",
        subcommands: [Start.self, Status.self, List.self, Pause.self, Resume.self, Stop.self, Watch.self, Eval.self, Export.self,
                      Retrain.self, Models.self, Promote.self, Rollback.self, Report.self])

    static func main() {
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch let e as Refused {
            FileHandle.standardError.write(Data("nnctl: \(e.message)\n".utf8)); Foundation.exit(1)
        } catch let e as UnixHTTPClient.ClientError {
            if case .unreachable(let path, _) = e {
                FileHandle.standardError.write(Data("nnctl: \(e)\nnnctl: is the daemon running? Start it with `nnd serve` (or `systemctl start nnd`), or point --socket / NND_SOCKET at its socket (tried \(path)).\n".utf8))
                Foundation.exit(3)
            }
            FileHandle.standardError.write(Data("nnctl: \(e)\n".utf8)); Foundation.exit(1)
        } catch {
            let code = exitCode(for: error)
            if code == .validationFailure {
                FileHandle.standardError.write(Data((fullMessage(for: error) + "\n").utf8)); Foundation.exit(2)
            }
            exit(withError: error)
        }
    }
}

struct Refused: Error { var message: String }

struct Connection: ParsableArguments {
    @Option(help: "Daemon socket (default: $NND_SOCKET, $XDG_RUNTIME_DIR/nnd/nnd.sock, or /tmp/nnd-$UID/nnd.sock)") var socket: String?
    @Flag(help: "Print the daemon's JSON instead of a table") var json = false

    var client: UnixHTTPClient { UnixHTTPClient(socketPath: socket ?? UnixHTTPClient.defaultSocketPath()) }

    /// Sends a request; a non-2xx answer becomes `Refused` with the daemon's message.
    func call(_ method: String, _ path: String, body: [String: Any]? = nil) throws -> [String: Any] {
        let data = try body.map { try [UInt8](JSONSerialization.data(withJSONObject: $0)) }
        let r = try client.request(method, path, json: data)
        return try check(r)
    }

    func check(_ r: UnixHTTPClient.Response) throws -> [String: Any] {
        let obj = (try? JSONSerialization.jsonObject(with: Data(r.body))) as? [String: Any]
        guard (200..<300).contains(r.status) else {
            let err = obj?["error"] as? [String: Any]
            throw Refused(message: (err?["message"] as? String).map { "\($0) (HTTP \(r.status) \(err?["code"] ?? ""))" } ?? "HTTP \(r.status): \(r.text.prefix(300))")
        }
        if json { print(r.text, terminator: r.text.hasSuffix("\n") ? "" : "\n") }
        return obj ?? [:]
    }
}

func path(_ run: String) -> String { "/v1/runs/" + (run.addingPercentEncoding(withAllowedCharacters: .alphanumerics.union(CharacterSet(charactersIn: "-_."))) ?? run) }

/// Formats a JSON value; integers print as integers unless a format is given.
func fmt(_ v: Any?, _ f: String? = nil) -> String {
    switch v {
    case let n as NSNumber where ["d", "f"].contains(String(cString: n.objCType)): return String(format: f ?? "%.4f", n.doubleValue)
    case let i as Int: return f.map { String(format: $0, Double(i)) } ?? String(i)
    case let d as Double: return String(format: f ?? "%.4f", d)
    case let s as String: return s
    default: return "-"
    }
}

func table(_ rows: [[String]]) {
    guard let first = rows.first else { return }
    let widths = (0..<first.count).map { c in rows.map { $0[c].count }.max() ?? 0 }
    for r in rows { print(zip(r, widths).map { $0.padding(toLength: $1, withPad: " ", startingAt: 0) }.joined(separator: "  ").trimmingCharacters(in: .whitespaces)) }
}

func printRun(_ r: [String: Any]) {
    let spec = r["spec"] as? [String: Any] ?? [:]
    let model = spec["model"] as? [String: Any] ?? [:], training = spec["training"] as? [String: Any] ?? [:]
    let p = r["progress"] as? [String: Any]
    var rows: [[String]] = [["run", fmt(r["id"])], ["name", fmt(r["name"])], ["state", fmt(r["state"])]]
    if let reason = r["reason"] as? String { rows.append(["reason", reason]) }
    rows.append(["model", ((model["layers"] as? [Int]) ?? []).map(String.init).joined(separator: "-") + " " + fmt(model["activation"])])
    rows.append(["training", "\(fmt(training["mode"])) batch \(fmt(training["batch_size"])), \(fmt(training["optimizer"])) lr \(fmt(training["learning_rate"], "%g")), \(fmt(training["epochs"])) epochs"])
    if let p {
        rows.append(["progress", "epoch \(fmt(p["epoch"]))/\(fmt(p["epochs"])), step \(fmt(p["step"]))/\(fmt(p["steps_per_epoch"])), \(fmt(p["samples_per_second"], "%.0f")) samples/s"])
        if let eta = p["eta_seconds"] as? Double { rows.append(["eta", duration(eta)]) }
    }
    if let h = (r["history"] as? [[String: Any]])?.last {
        rows.append(["last epoch", "cost \(fmt(h["cost"])), lr \(fmt(h["learning_rate"], "%g")), train \(fmt(h["train_accuracy"], "%.2f"))%, test \(fmt(h["test_accuracy"], "%.2f"))%"])
    }
    if let a = r["train_accuracy"] as? Double { rows.append(["train accuracy", String(format: "%.2f%%", a)]) }
    if let a = r["test_accuracy"] as? Double { rows.append(["test accuracy", String(format: "%.2f%%", a)]) }
    rows.append(["checkpoints", "\(fmt(r["checkpoints_written"])) written" + ((r["last_checkpoint"] as? String).map { ", last \(($0 as NSString).lastPathComponent)" } ?? "")])
    for n in (r["notes"] as? [String]) ?? [] { rows.append(["note", n]) }
    table(rows)
}

func duration(_ s: Double) -> String {
    guard s.isFinite, s >= 0 else { return "-" }
    let t = Int(s.rounded())
    return t >= 3600 ? "\(t / 3600)h\(t % 3600 / 60)m" : t >= 60 ? "\(t / 60)m\(t % 60)s" : "\(t)s"
}

struct Start: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Create a run from a spec file; it starts when a slot is free.")
    @Argument(help: "Run spec (YAML)") var spec: String
    @Option(help: "Run name (default: the spec's name)") var name: String?
    @Option(name: .customLong("set"), help: "Override a spec field: --set training.epochs=5 (repeatable)") var overrides: [String] = []
    @Flag(help: "Watch the run until it ends; exit 0 only if it completed") var wait = false
    @OptionGroup var connection: Connection
    func run() throws {
        guard let data = FileManager.default.contents(atPath: spec), let text = String(data: data, encoding: .utf8) else {
            throw ValidationError("cannot read run spec '\(spec)'")
        }
        var body: [String: Any] = ["spec_yaml": text, "overrides": overrides]
        if let name { body["name"] = name }
        let r = try connection.call("POST", "/v1/runs", body: body)
        if !connection.json { print("started \(fmt(r["id"])) (\(fmt(r["state"])))") }
        if wait { try watch(run: fmt(r["id"]), connection: connection) }
    }
}

struct Status: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show one run, or the daemon and all runs.")
    @Argument(help: ArgumentHelp("Run id or name", valueName: "run")) var target: String?
    @OptionGroup var connection: Connection
    func run() throws {
        if let target {
            let r = try connection.call("GET", path(target))
            if !connection.json { printRun(r) }
        } else {
            let h = try connection.call("GET", "/v1/health")
            if !connection.json {
                print("nnd \(fmt(h["version"])): up \(duration(h["uptime_seconds"] as? Double ?? 0)), runs: " +
                      ((h["runs"] as? [String: Int]) ?? [:]).sorted { $0.key < $1.key }.map { "\($0.value) \($0.key)" }.joined(separator: ", "))
                try List(connection: connection).run()
            }
        }
    }
}

struct List: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List runs.")
    @OptionGroup var connection: Connection
    init() {}
    init(connection: Connection) { self.connection = connection }
    func run() throws {
        let r = try connection.call("GET", "/v1/runs")
        guard !connection.json else { return }
        let runs = (r["runs"] as? [[String: Any]]) ?? []
        if runs.isEmpty { print("no runs"); return }
        table([["ID", "NAME", "STATE", "EPOCH", "COST", "TEST %", "CREATED"]] + runs.map {
            [fmt($0["id"]), fmt($0["name"]), fmt($0["state"]), "\(fmt($0["epoch"]))/\(fmt($0["epochs"]))", fmt($0["cost"]), fmt($0["test_accuracy"], "%.2f"), fmt($0["created_at"])]
        })
    }
}

/// The run argument and connection shared by pause, resume and stop.
struct RunTransition: ParsableArguments {
    @Argument(help: ArgumentHelp("Run id or name", valueName: "run")) var target: String
    @OptionGroup var connection: Connection

    func perform(_ action: String) throws {
        let r = try connection.call("POST", path(target) + "/" + action)
        if !connection.json { print("\(fmt(r["id"])): \(action) → \(fmt(r["state"]))") }
    }
}

struct Pause: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Pause a run at its next step (it checkpoints).")
    @OptionGroup var args: RunTransition
    func run() throws { try args.perform("pause") }
}

struct Resume: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Resume a paused, stopped or failed run from its last checkpoint.")
    @OptionGroup var args: RunTransition
    func run() throws { try args.perform("resume") }
}

struct Stop: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Stop a run at its next step (it checkpoints; `resume` continues it).")
    @OptionGroup var args: RunTransition
    func run() throws { try args.perform("stop") }
}

struct Watch: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Follow a run's progress until it leaves running; exit 0 if it completed.")
    @Argument(help: ArgumentHelp("Run id or name", valueName: "run")) var target: String
    @OptionGroup var connection: Connection
    func run() throws { try watch(run: target, connection: connection) }
}

func watch(run: String, connection: Connection) throws {
    let tty = isatty(STDOUT_FILENO) == 1 && !connection.json
    var finalState = "", reason: String?
    var lastEpochPrinted = -1
    let status = try connection.client.stream(path(run) + "/events") { line in
        if connection.json { print(line); fflush(nil) }
        guard let obj = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else { return }
        if let err = obj["error"] as? [String: Any] { throw Refused(message: fmt(err["message"])) }
        if obj["type"] as? String == "state" {
            finalState = fmt(obj["state"]); reason = obj["reason"] as? String
            if !connection.json { if tty { print("\r\u{1B}[K", terminator: "") }; print("state: \(finalState)" + (reason.map { " (\($0))" } ?? "")) }
            return
        }
        guard !connection.json, let e = obj["event"] as? [String: Any] else { return }
        let epoch = e["epoch"] as? Int ?? 0, epochs = e["epochs"] as? Int ?? 0
        let step = e["step"] as? Int ?? 0, steps = max(e["steps_per_epoch"] as? Int ?? 1, 1)
        let done = (Double(epoch - 1) + Double(step) / Double(steps)) / Double(max(epochs, 1))
        let width = 24, filled = min(width, max(0, Int(done * Double(width))))
        let bar = String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled)
        let text = "epoch \(epoch)/\(epochs) [\(bar)] step \(step)/\(steps)  cost \(fmt(e["cost"]))  \(fmt(e["samples_per_second"], "%.0f")) samples/s  ETA \(duration(e["eta_seconds"] as? Double ?? .nan))"
        if e["kind"] as? String == "epoch" {
            if tty { print("\r\u{1B}[K", terminator: "") }
            if epoch != lastEpochPrinted {
                print("epoch \(epoch)/\(epochs)  cost \(fmt(e["cost"]))  lr \(fmt(e["learning_rate"], "%g"))  \(fmt(e["seconds"], "%.2f"))s  test \(fmt(e["test_accuracy"], "%.2f"))%")
                lastEpochPrinted = epoch
            }
        } else if tty {
            print("\r\u{1B}[K" + text, terminator: ""); fflush(nil)
        }
    }
    guard (200..<300).contains(status) else { throw Refused(message: "HTTP \(status) watching \(run)") }
    if finalState == "completed" {
        if !connection.json, let r = try? connection.client.request("GET", path(run)),
           let obj = try? JSONSerialization.jsonObject(with: Data(r.body)) as? [String: Any] {
            print("train accuracy \(fmt(obj["train_accuracy"], "%.2f"))%  test accuracy \(fmt(obj["test_accuracy"], "%.2f"))%")
        }
        return
    }
    throw Refused(message: "run \(run) ended \(finalState.isEmpty ? "without a final state" : finalState)" + (reason.map { ": \($0)" } ?? ""))
}

struct Eval: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Evaluate a run's latest checkpoint.")
    @Argument(help: ArgumentHelp("Run id or name", valueName: "run")) var target: String
    @Option(help: "test or train") var data: String = "test"
    @OptionGroup var connection: Connection
    func validate() throws { guard data == "test" || data == "train" else { throw ValidationError("--data must be test or train, got '\(data)'") } }
    func run() throws {
        let r = try connection.call("POST", path(target) + "/eval", body: ["data": data])
        if !connection.json { print("\(fmt(r["run"])): \(fmt(r["data"])) accuracy \(fmt(r["accuracy"], "%.2f"))% (\(fmt(r["records"])) records, cost \(fmt(r["cost"])), after epoch \(fmt(r["epoch"])))") }
    }
}

struct Export: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Export a run's latest weights (the client writes the file).")
    @Argument(help: ArgumentHelp("Run id or name", valueName: "run")) var target: String
    @Option(help: "safetensors or npz (the seed's loadWeights layout)") var format: String = "safetensors"
    @Option(name: .shortAndLong, help: "Output file") var output: String
    @OptionGroup var connection: Connection
    func validate() throws { guard ["safetensors", "npz"].contains(format) else { throw ValidationError("--format must be safetensors or npz, got '\(format)'") } }
    func run() throws {
        let r = try connection.client.request("GET", path(target) + "/export?format=\(format)")
        guard (200..<300).contains(r.status) else { _ = try connection.check(r); return }
        guard FileManager.default.createFile(atPath: output, contents: Data(r.body)) else { throw Refused(message: "cannot write \(output)") }
        print("wrote \(output) (\(r.body.count) bytes, \(format))")
    }
}

struct Retrain: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train a spec, evaluate it on the held-out set and promote it to current unless it is worse than the current model by more than the margin.",
        discussion: "Exit 0 when the run completed (promoted or not; the decision is printed and kept in the run's record), 1 when it failed.")
    @Argument(help: "Run spec (YAML); its promotion section names the model") var spec: String
    @Option(help: "Model name (default: the spec's promotion.model, else the spec's name)") var model: String?
    @Option(help: "Allowed drop in test accuracy, percentage points (default: the spec's, else 0.1)") var margin: Double?
    @Flag(help: "Start from the current model's weights") var warmStart = false
    @Option(name: .customLong("set"), help: "Override a spec field (repeatable)") var overrides: [String] = []
    @OptionGroup var connection: Connection
    func run() throws {
        guard let data = FileManager.default.contents(atPath: spec), let text = String(data: data, encoding: .utf8) else {
            throw ValidationError("cannot read run spec '\(spec)'")
        }
        var ov = overrides
        let hasPromotion = text.split(separator: "\n").contains { $0.hasPrefix("promotion:") }
        if let model { ov.append("promotion.model=\(model)") }
        else if !hasPromotion { ov.append("promotion.model=\(Yamlish.value(of: "name", in: text) ?? "model")") }
        if let margin { ov.append("promotion.margin=\(margin)") }
        if warmStart { ov.append("promotion.warm_start=true") }
        let r = try connection.call("POST", "/v1/runs", body: ["spec_yaml": text, "overrides": ov])
        let id = fmt(r["id"])
        if !connection.json { print("retraining: run \(id)") }
        try watch(run: id, connection: connection)
        let done = try connection.call("GET", path(id))
        if let p = done["promotion"] as? [String: Any] { if !connection.json { print(fmt(p["message"])) } }
    }
}

/// Just enough reading of the spec text to default the model name; the daemon validates the spec.
enum Yamlish {
    static func value(of key: String, in text: String) -> String? {
        for line in text.split(separator: "\n") where line.hasPrefix("\(key):") {
            let v = (line.dropFirst(key.count + 1).split(separator: "#").first ?? "").trimmingCharacters(in: .whitespaces)
            return v.isEmpty ? nil : v
        }
        return nil
    }
}

struct Models: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List models with their versions, accuracies and dates; * marks current.")
    @OptionGroup var connection: Connection
    func run() throws {
        let r = try connection.call("GET", "/v1/models")
        guard !connection.json else { return }
        let models = (r["models"] as? [[String: Any]]) ?? []
        if models.isEmpty { print("no models"); return }
        var rows = [["MODEL", "VERSION", "", "TEST %", "TRAIN %", "RUN", "CREATED"]]
        for m in models {
            for v in (m["versions"] as? [[String: Any]]) ?? [] {
                rows.append([fmt(m["name"]), fmt(v["version"]), fmt(v["version"]) == fmt(m["current"]) ? "*" : "",
                             fmt(v["testAccuracy"], "%.2f"), fmt(v["trainAccuracy"], "%.2f"), fmt(v["run"]), fmt(v["createdAt"])])
            }
        }
        table(rows)
    }
}

struct Promote: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Make a model version current.")
    @Argument(help: "Model name") var model: String
    @Argument(help: "Version (see nnctl models)") var version: String
    @OptionGroup var connection: Connection
    func run() throws {
        let r = try connection.call("POST", "/v1/models/\(model)/promote", body: ["version": version])
        if !connection.json { print("\(fmt(r["model"])): current is now \(fmt(r["current"]))") }
    }
}

struct Rollback: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Make the previously current version of a model current again.")
    @Argument(help: "Model name") var model: String
    @OptionGroup var connection: Connection
    func run() throws {
        let r = try connection.call("POST", "/v1/models/\(model)/rollback")
        if !connection.json { print("\(fmt(r["model"])): rolled back, current is now \(fmt(r["current"]))") }
    }
}

struct Report: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Write a self-contained HTML training report (curves, confusion matrix, digits, network, timings).")
    @Argument(help: ArgumentHelp("Run id or name", valueName: "run")) var target: String
    @Option(name: .shortAndLong, help: "Output file, e.g. report.html") var output: String
    @OptionGroup var connection: Connection
    func run() throws {
        let r = try connection.client.request("GET", path(target) + "/report")
        guard (200..<300).contains(r.status) else { _ = try connection.check(r); return }
        guard FileManager.default.createFile(atPath: output, contents: Data(r.body)) else { throw Refused(message: "cannot write \(output)") }
        print("wrote \(output) (\(r.body.count) bytes)")
    }
}
