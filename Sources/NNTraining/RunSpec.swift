import Foundation
import NNAPI
import NNData
import NNEngine
import Yams

/// A spec problem, naming the field and the value.
public struct SpecError: Error, CustomStringConvertible, Equatable, Sendable {
    public var field: String
    public var message: String
    public init(field: String, _ message: String) {
        self.field = field
        self.message = message
    }
    public var description: String { field.isEmpty ? message : "\(field): \(message)" }
}

extension RunSpec {
    /// Every field of a spec with its default: the one place defaults live. `null` marks an
    /// optional field (absent unless given); `promotion` and `distributed` are used only when
    /// the spec has that section. The allowed keys are these keys.
    static var defaults: [String: [String: Any]] {
        [
            "model": [
                "layers": [784, 200, 100, 50, 10], "activation": "logistic", "init": "xavier", "input_path": "auto",
            ],
            "training": [
                "mode": "minibatch", "batch_size": 64, "epochs": 50, "learning_rate": 0.1, "lambda": 0.01,
                "anneal": true, "optimizer": "sgd", "momentum": 0.9, "seed": 1, "evaluate_every_epoch": true,
                "validation": 0, "early_stopping_patience": 0, "early_stopping_metric": "validation_cost",
                "average_from_epoch": 0,
            ],
            "data": [
                "dir": NSNull(), "train_csv": NSNull(), "test_csv": NSNull(), "train_limit": NSNull(),
                "test_limit": NSNull(), "feature_scale": 255,
            ],
            "checkpoint": ["every_steps": 0, "every_seconds": 60, "keep": 3],
            "promotion": ["model": NSNull(), "margin": 0.1, "warm_start": false],
            "distributed": ["ranks": 1, "hostfile": NSNull(), "launcher": "mpirun", "launcher_args": [String]()],
        ]
    }
    static let defaultName = "run"

    /// Section → its keys; "" → the top-level keys.
    static var allowedKeys: [String: Set<String>] {
        var keys = defaults.mapValues { Set($0.keys) }
        keys[""] = Set(defaults.keys).union(["name"])
        return keys
    }

    /// Parses YAML or JSON text; `overrides` are `section.field=value` pairs applied first
    /// (the value is read as a YAML scalar, so `training.epochs=3` is a number).
    public static func parse(_ text: String, overrides: [String] = [], source: String = "spec") throws -> RunSpec {
        let loaded: Any?
        do { loaded = try Yams.load(yaml: text) } catch {
            throw SpecError(field: "", "\(source): not valid YAML/JSON: \(error)")
        }
        guard var root = (loaded ?? [String: Any]()) as? [String: Any] else {
            throw SpecError(
                field: "", "\(source): the spec must be a mapping of sections (name, model, training, data, checkpoint)"
            )
        }
        for o in overrides {
            guard let eq = o.firstIndex(of: "=") else {
                throw SpecError(field: o, "override must be key=value, e.g. training.epochs=5")
            }
            let key = String(o[..<eq])
            let raw = String(o[o.index(after: eq)...])
            let path = key.split(separator: ".").map(String.init)
            let value: Any = (try? Yams.load(yaml: raw)).flatMap { $0 } ?? raw
            guard path.count == 1 || path.count == 2 else { throw SpecError(field: key, "unknown field") }
            if path.count == 1 {
                root[path[0]] = value
            } else {
                var section = root[path[0]] as? [String: Any] ?? [:]
                section[path[1]] = value
                root[path[0]] = section
            }
        }
        // Unknown keys anywhere are errors.
        for (k, v) in root {
            guard allowedKeys[""]!.contains(k) else {
                throw SpecError(
                    field: k, "unknown field (allowed: \(allowedKeys[""]!.sorted().joined(separator: ", ")))")
            }
            if let allowed = allowedKeys[k] {
                guard let section = v as? [String: Any] else {
                    throw SpecError(field: k, "must be a mapping, got '\(v)'")
                }
                for sk in section.keys where !allowed.contains(sk) {
                    throw SpecError(
                        field: "\(k).\(sk)", "unknown field (allowed: \(allowed.sorted().joined(separator: ", ")))")
                }
            }
        }
        // Fill defaults, then decode through JSON (typed, with field paths in errors).
        let optionalSections: Set = ["promotion", "distributed"]
        var merged: [String: Any] = defaults.filter { !optionalSections.contains($0.key) || root[$0.key] != nil }
        merged["name"] = defaultName
        for (k, v) in root {
            if let section = v as? [String: Any], var base = merged[k] as? [String: Any] {
                for (sk, sv) in section { base[sk] = sv }
                merged[k] = base
            } else {
                merged[k] = v
            }
        }
        let json: Data
        do { json = try JSONSerialization.data(withJSONObject: normalise(merged)) } catch {
            throw SpecError(field: "", "\(source): cannot be represented: \(error)")
        }
        let spec: RunSpec
        do { spec = try APIJSON.decoder.decode(RunSpec.self, from: json) } catch let e as DecodingError {
            throw SpecError.from(e, root: merged)
        }
        try spec.validate()
        return spec
    }

    public static func load(path: String, overrides: [String] = []) throws -> RunSpec {
        let text: String
        do { text = try TextFile.read(path, what: "the run spec") } catch {
            throw SpecError(field: "", error.description)
        }
        do { return try parse(text, overrides: overrides, source: path) } catch let e as SpecError {
            throw SpecError(
                field: e.field,
                specProblemMessage(e.message, field: e.field, source: path, file: path, overrides: overrides))
        }
    }

    /// Yams gives Date/NSNull etc.; JSONSerialization needs plain JSON types.

    static func normalise(_ v: Any) -> Any {
        switch v {
        case let d as [String: Any]: return d.mapValues(normalise)
        case let a as [Any]: return a.map(normalise)
        case is NSNull: return NSNull()
        case let s as String: return s
        case let b as Bool: return b
        case let i as Int: return i
        // Out-of-range numbers become text, so the typed decode fails and names the field
        // ("'1e+99' is out of range", see `SpecError.from`).
        case let d as Double: return isInRange(d) ? d : String(describing: d)
        default: return String(describing: v)
        }
    }

    /// Whether a number in a spec can be any field's value: finite and below 1e15 in magnitude
    /// (larger ones become text in `normalise`, so the typed decode refuses them as out of range).
    static func isInRange(_ d: Double) -> Bool { d.isFinite && abs(d) < 1e15 }

    public func validate() throws {
        func bad(_ f: String, _ v: Any, _ why: String) -> SpecError { SpecError(field: f, "\(v) \(why)") }
        let nameOK =
            !name.isEmpty && name.count <= 64
            && name.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" || $0 == ".") }
            && !name.hasPrefix(".")
        guard nameOK else {
            throw bad("name", "'\(name)'", "is not a valid run name (1-64 of A-Z a-z 0-9 - _ ., not starting with '.')")
        }
        guard model.layers.count >= 2 else {
            throw bad("model.layers", model.layers, "needs at least an input and an output size")
        }
        guard model.layers.allSatisfy({ $0 >= 1 && $0 <= 100_000 }) else {
            throw bad("model.layers", model.layers, "sizes must be between 1 and 100000")
        }
        guard model.layers.last! >= 2 else {
            throw bad("model.layers", model.layers, "output layer needs at least 2 classes")
        }
        guard training.epochs >= 1 && training.epochs <= 100_000 else {
            throw bad("training.epochs", training.epochs, "must be between 1 and 100000")
        }
        guard training.batchSize >= 1 && training.batchSize <= 1_000_000 else {
            throw bad("training.batch_size", training.batchSize, "must be between 1 and 1000000")
        }
        guard training.learningRate.isFinite && training.learningRate > 0 else {
            throw bad("training.learning_rate", training.learningRate, "must be a positive finite number")
        }
        guard training.lambda.isFinite && training.lambda >= 0 else {
            throw bad("training.lambda", training.lambda, "must be ≥ 0")
        }
        guard training.momentum.isFinite && training.momentum >= 0 && training.momentum < 1 else {
            throw bad("training.momentum", training.momentum, "must be in [0, 1)")
        }
        let validation = training.validation ?? 0
        guard validation.isFinite && validation >= 0 && validation <= 0.5 else {
            throw bad("training.validation", validation, "must be a share of the training records from 0 to 0.5")
        }
        let patience = training.earlyStoppingPatience ?? 0
        guard patience >= 0 && patience <= 10_000 else {
            throw bad("training.early_stopping_patience", patience, "must be between 0 (off) and 10000 epochs")
        }
        guard patience == 0 || validation > 0 else {
            throw bad(
                "training.early_stopping_patience", patience,
                "needs validation records: set training.validation, e.g. 0.1 (the test set never chooses weights)")
        }
        let averageFrom = training.averageFromEpoch ?? 0
        guard averageFrom >= 0 && averageFrom <= training.epochs else {
            throw bad(
                "training.average_from_epoch", averageFrom,
                "must be between 0 (off) and training.epochs (\(training.epochs))")
        }
        guard averageFrom == 0 || validation == 0 else {
            throw bad(
                "training.average_from_epoch", averageFrom,
                "and training.validation choose the kept weights in two ways; set one of them to 0")
        }
        if let l = data.trainLimit, l < 1 { throw bad("data.train_limit", l, "must be ≥ 1") }
        if let scale = data.featureScale, !(scale.isFinite && scale > 0) {
            throw bad(
                "data.feature_scale", scale, "must be a positive finite number (255: pixels 0-255; 1: already scaled)")
        }
        if let l = data.testLimit, l < 1 { throw bad("data.test_limit", l, "must be ≥ 1") }
        if (data.trainCSV == nil) != (data.testCSV == nil) {
            throw SpecError(field: "data.train_csv", "train_csv and test_csv go together")
        }
        guard checkpoint.everySteps >= 0 else {
            throw bad("checkpoint.every_steps", checkpoint.everySteps, "must be ≥ 0")
        }
        guard checkpoint.everySeconds.isFinite && checkpoint.everySeconds >= 0 else {
            throw bad("checkpoint.every_seconds", checkpoint.everySeconds, "must be ≥ 0")
        }
        if let p = promotion {
            guard !p.model.isEmpty, p.model.count <= 64, !p.model.hasPrefix("."),
                p.model.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" || $0 == ".") }
                )
            else {
                throw bad("promotion.model", "'\(p.model)'", "is not a valid model name (1-64 of A-Z a-z 0-9 - _ .)")
            }
            guard p.margin.isFinite && p.margin >= 0 && p.margin <= 100 else {
                throw bad("promotion.margin", p.margin, "must be between 0 and 100 (percentage points)")
            }
        }
        if let d = distributed {
            guard d.ranks >= 1 && d.ranks <= 4096 else {
                throw bad("distributed.ranks", d.ranks, "must be between 1 and 4096")
            }
            if d.hostfile != nil && d.launcher == .srun {
                throw bad(
                    "distributed.hostfile", "'\(d.hostfile!)'",
                    "is for mpirun; srun takes its hosts from the Slurm allocation (leave hostfile null)")
            }
        }
        guard checkpoint.keep >= 1 && checkpoint.keep <= 1000 else {
            throw bad("checkpoint.keep", checkpoint.keep, "must be between 1 and 1000")
        }
    }
}

extension SpecError {
    static func from(_ e: DecodingError, root: [String: Any]) -> SpecError {
        func path(_ ctx: DecodingError.Context) -> String {
            ctx.codingPath.map { $0.intValue.map { "[\($0)]" } ?? APIJSON.snakeCase($0.stringValue) }.joined(
                separator: "."
            ).replacingOccurrences(of: ".[", with: "[")
        }
        // The value at the error's path in the spec as written (before `normalise`).
        func raw(_ ctx: DecodingError.Context) -> Any? {
            var cur: Any? = root
            for k in ctx.codingPath {
                if let i = k.intValue {
                    cur = (cur as? [Any]).flatMap { i < $0.count ? $0[i] : nil }
                } else {
                    cur = (cur as? [String: Any])?[APIJSON.snakeCase(k.stringValue)]
                }
            }
            return cur
        }
        func value(_ ctx: DecodingError.Context) -> String {
            if ctx.codingPath.isEmpty { return "the spec" }
            return raw(ctx).map { "'\($0)'" } ?? "missing"
        }
        switch e {
        case .typeMismatch(let t, let ctx):
            // A number `normalise` turned into text: '1e+30' is a number, just not one for this field.
            if let d = raw(ctx) as? Double, !RunSpec.isInRange(d) {
                return SpecError(
                    field: path(ctx), "\(value(ctx)) is out of range (numbers in a run spec must be below 1e15)")
            }
            return SpecError(field: path(ctx), "\(value(ctx)) is not a valid \(t)")
        case .valueNotFound(let t, let ctx): return SpecError(field: path(ctx), "missing value, expected \(t)")
        case .keyNotFound(let k, let ctx):
            return SpecError(
                field: (path(ctx).isEmpty ? "" : path(ctx) + ".") + APIJSON.snakeCase(k.stringValue), "is required")
        case .dataCorrupted(let ctx):
            return SpecError(field: path(ctx), "\(value(ctx)) is not valid: \(ctx.debugDescription)")
        @unknown default: return SpecError(field: "", "\(e)")
        }
    }
}
