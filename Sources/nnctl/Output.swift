import Glibc
import NNAPI
import NNControl

#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

/// Human-readable output: aligned tables and the formats of numbers, times and durations.
enum Output {
    /// Columns padded to their widest cell, two spaces apart.
    static func table(_ rows: [[String]]) {
        guard let first = rows.first else { return }
        let widths = first.indices.map { column in rows.map { $0[column].count }.max() ?? 0 }
        for row in rows {
            let cells = zip(row, widths).map { $0 + String(repeating: " ", count: max(0, $1 - $0.count)) }
            print(cells.joined(separator: "  ").trimmedWhitespace)
        }
    }

    /// `12.3456`, or `-` when absent.
    static func number(_ value: Double?, _ format: String = "%.4f") -> String {
        value.map { printf(format, $0) } ?? "-"
    }

    /// C's printf formatting of one value (`%.4f`, `%g`, …), as `String(format:)` gives it
    /// without linking the whole of Foundation into nnctl.
    static func printf(_ format: String, _ value: any CVarArg) -> String {
        var buffer = [CChar](repeating: 0, count: 64)
        let needed = withVaList([value]) { vsnprintf(&buffer, buffer.count, format, $0) }
        if needed >= buffer.count {
            buffer = [CChar](repeating: 0, count: Int(needed) + 1)
            _ = withVaList([value]) { vsnprintf(&buffer, buffer.count, format, $0) }
        }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    static func percent(_ value: Double?) -> String { number(value, "%.2f") }

    /// A byte count for people: `812 B`, `3.4 KiB`, `1.2 MiB`, `73.4 GiB`, `1.5 TiB`.
    static func bytes(_ count: Int) -> String {
        var value = Double(count)
        for unit in ["B", "KiB", "MiB", "GiB"] {
            if value < 1024 { return unit == "B" ? "\(count) B" : printf("%.1f", value) + " " + unit }
            value /= 1024
        }
        return printf("%.1f", value) + " TiB"
    }

    /// A date as the API sends it (UTC, ISO 8601, to the second).
    static func date(_ value: Date?) -> String {
        value.map { $0.formatted(Date.ISO8601FormatStyle()) } ?? "-"
    }

    /// `45s`, `3m20s`, `2h5m`.
    static func duration(_ seconds: Double?) -> String {
        guard let seconds, seconds.isFinite, seconds >= 0 else { return "-" }
        let total = Int(seconds.rounded())
        if total >= 3600 { return "\(total / 3600)h\(total % 3600 / 60)m" }
        if total >= 60 { return "\(total / 60)m\(total % 60)s" }
        return "\(total)s"
    }

    /// `nnctl status RUN`: one run in detail.
    static func run(_ run: RunRecord) {
        let spec = run.spec
        var rows: [[String]] = [["run", run.id], ["name", run.name], ["state", run.state.rawValue]]
        if let reason = run.reason { rows.append(["reason", reason]) }
        rows.append([
            "model", spec.model.layers.map(String.init).joined(separator: "-") + " " + spec.model.activation.rawValue,
        ])
        rows.append([
            "training",
            "\(spec.training.mode.rawValue) batch \(spec.training.batchSize), \(spec.training.optimizer.rawValue) "
                + "lr \(number(spec.training.learningRate, "%g")), \(spec.training.epochs) epochs",
        ])
        if let path = run.progress?.inputPath {
            rows.append([
                "first layer",
                path + (run.progress?.inputDensity.map { ", inputs \(number($0 * 100, "%.1f")) % non-zero" } ?? ""),
            ])
        }
        if let d = spec.distributed, d.ranks > 1 {
            var text = "\(d.ranks) ranks via \(d.launcher.rawValue)" + (d.hostfile.map { ", hosts from \($0)" } ?? "")
            if let placements = run.progress?.rankPlacements {
                text +=
                    "; "
                    + placements.enumerated().map { r, p in
                        "rank \(r) on \(p.host) (\(p.workers) worker\(p.workers == 1 ? "" : "s"))"
                    }.joined(separator: ", ")
            }
            if let p = run.progress, let compute = p.stepComputeSeconds, let allreduce = p.stepAllreduceSeconds {
                text +=
                    "; per step: compute \(number(compute * 1000, "%.3f")) ms, allreduce \(number(allreduce * 1000, "%.3f")) ms"
            }
            rows.append(["distributed", text])
        }
        if let progress = run.progress {
            rows.append([
                "progress",
                "epoch \(progress.epoch)/\(progress.epochs), step \(progress.step)/\(progress.stepsPerEpoch), "
                    + "\(number(progress.samplesPerSecond, "%.0f")) samples/s",
            ])
            if let eta = progress.etaSeconds, run.state == .running { rows.append(["eta", duration(eta)]) }
        }
        if let last = run.history.last {
            rows.append([
                "last epoch",
                "cost \(number(last.cost)), lr \(number(Double(last.learningRate), "%g")), "
                    + "train \(percent(last.trainAccuracy))%, test \(percent(last.testAccuracy))%",
            ])
        }
        if let records = run.trainRecords {
            rows.append(["data", "\(records) training records, fingerprint \(run.dataFingerprint?.prefix(12) ?? "-")"])
        }
        if let accuracy = run.trainAccuracy { rows.append(["train accuracy", "\(percent(accuracy))%"]) }
        if let accuracy = run.testAccuracy { rows.append(["test accuracy", "\(percent(accuracy))%"]) }
        let last = run.lastCheckpoint.map { ", last \($0.split(separator: "/").last ?? "")" } ?? ""
        rows.append(["checkpoints", "\(run.checkpointsWritten) written\(last)"])
        if let promotion = run.promotion { rows.append(["promotion", promotion.message]) }
        for note in run.notes { rows.append(["note", note]) }
        table(rows)
    }

    /// `nnctl list`.
    static func runs(_ runs: [RunSummary]) {
        guard !runs.isEmpty else { return print("no runs") }
        table(
            [["ID", "NAME", "STATE", "EPOCH", "COST", "TEST %", "CREATED"]]
                + runs.map { run in
                    [
                        run.id, run.name, run.state.rawValue, "\(run.epoch.map(String.init) ?? "-")/\(run.epochs)",
                        number(run.cost), percent(run.testAccuracy), date(run.createdAt),
                    ]
                })
    }

    /// `nnctl models`: every version, `*` marking the current one.
    static func models(_ models: [ModelInfo]) {
        guard !models.isEmpty else { return print("no models") }
        var rows = [["MODEL", "VERSION", "", "TEST %", "TRAIN %", "RECORDS", "DATA", "RUN", "CREATED"]]
        for model in models {
            for version in model.versions {
                rows.append([
                    model.name, version.version, version.version == model.current ? "*" : "",
                    percent(version.testAccuracy), percent(version.trainAccuracy),
                    version.trainRecords.map(String.init) ?? "-",
                    version.dataFingerprint.map { String($0.prefix(12)) } ?? "-",
                    version.run, date(version.createdAt),
                ])
            }
        }
        table(rows)
    }

    /// `nnctl eval`.
    static func evaluation(_ evaluation: Evaluation) {
        print(
            "\(evaluation.run): \(evaluation.data.rawValue) accuracy \(percent(evaluation.accuracy))% "
                + "(\(evaluation.records) records, cost \(number(evaluation.cost)), after epoch \(evaluation.epoch))")
    }

    /// `nnctl status` without a run: the daemon in one line.
    static func health(_ health: Health) {
        let runs = health.runs.sorted { $0.key < $1.key }.map { "\($0.value) \($0.key)" }.joined(separator: ", ")
        print("nnd \(health.version): up \(duration(health.uptimeSeconds)), runs: \(runs.isEmpty ? "none" : runs)")
        var state = "state directory: \(bytes(health.stateDirectoryBytes))"
        if let available = health.stateFilesystemAvailableBytes, let size = health.stateFilesystemSizeBytes, size > 0 {
            let free = Double(available) / Double(size) * 100
            state += "; its file system \(bytes(available)) free of \(bytes(size)) (\(printf("%.0f", free)) %)"
            if free < 10 { state += ": low, checkpoints that no longer fit fail their runs" }
        }
        print(state)
        for record in health.unreadableRunRecords ?? [] {
            print("unreadable run record (the run is left out, its files kept): \(record)")
        }
    }

    /// A file nnctl wrote: `wrote FILE (BYTES bytes[, FORMAT])`, or with --json one object.
    static func written(_ file: String, bytes: Int, format: String? = nil, json: Bool) {
        struct Written: Encodable {
            let output: String
            let bytes: Int
            let format: String?
        }
        if json, let encoded = try? APIJSON.encoder.encode(Written(output: file, bytes: bytes, format: format)) {
            print(String(decoding: encoded, as: UTF8.self))
        } else {
            print("wrote \(file) (\(bytes) bytes\(format.map { ", \($0)" } ?? ""))")
        }
    }
}
