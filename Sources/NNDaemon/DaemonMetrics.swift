import Foundation
import Metrics
import NNAPI
import NNCheckpoint
import NNNumerics
import NNTraining
import Prometheus
import Synchronization

/// Prometheus metrics for `GET /metrics`. Values that describe runs are read from the
/// RunManager at scrape time, so nothing is updated per step; the step-duration histogram is
/// kept lock-free by each trainer and rendered here from its latest progress event.
public final class DaemonMetrics: Sendable {
    public let registry = PrometheusCollectorRegistry()
    let startedAt = Date()
    let checkpointSeconds: DurationHistogram
    let checkpointBytes: Prometheus.Counter
    let checkpointsWritten: Prometheus.Counter
    let uptime: Prometheus.Gauge

    public init(workers: Int, version: String) {
        // swift-metrics is bootstrapped with this registry, so any library instrumented with
        // swift-metrics reports here too; nnd's own metrics are made on the registry directly
        // because only that API attaches HELP text (which promtool's lint requires).
        MetricsSystem.bootstrapIfNeeded(PrometheusMetricsFactory(registry: registry))
        checkpointSeconds = registry.makeDurationHistogram(
            descriptor: Self.name(
                "nnd_checkpoint_write_seconds", "Time to write one checkpoint (encode, write, fsync, rename)"),
            buckets: [
                .milliseconds(1), .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50),
                .milliseconds(100),
                .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(2.5), .seconds(5),
            ])
        checkpointBytes = registry.makeCounter(
            descriptor: Self.name("nnd_checkpoint_written_bytes_total", "Bytes of checkpoints written"))
        checkpointsWritten = registry.makeCounter(
            descriptor: Self.name("nnd_checkpoints_written_total", "Checkpoints written"))
        uptime = registry.makeGauge(descriptor: Self.name("nnd_uptime_seconds", "Seconds since the daemon started"))
        registry.makeGauge(descriptor: Self.name("nnd_workers", "Worker threads per run")).set(to: Double(workers))
        registry.makeGauge(descriptor: Self.name("nnd_build_info", "nnd build"), labels: [("version", version)]).set(
            to: 1.0)
        // best_for_cpu: what nnd would choose; differing from kernel, an environment's
        // OPENBLAS_CORETYPE holds OpenBLAS back (an alert can compare the two labels).
        registry.makeGauge(
            descriptor: Self.name("nnd_blas_info", "OpenBLAS kernel family in use, and the best for this CPU"),
            labels: [
                ("kernel", BLAS.kernelName),
                ("best_for_cpu", BLASKernelSelector.bestKernelForThisCPU),
            ]
        ).set(to: 1.0)
        // 1 when the environment's OPENBLAS_CORETYPE holds OpenBLAS to narrower kernels than nnd
        // would choose (the alert NndBLASHeldBack; the daemon's log says which).
        registry.makeGauge(
            descriptor: Self.name(
                "nnd_blas_held_back", "1 when OPENBLAS_CORETYPE holds OpenBLAS below the kernels nnd would choose")
        ).set(to: BLASKernelSelector.currentEnvironmentWarning == nil ? 0.0 : 1.0)
    }

    /// Full metric names are spelled out where they are used; the descriptor carries the HELP text.
    static func name(_ full: String, _ help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(metricName: full, unitName: "", helpText: help)
    }

    func checkpointWritten(bytes: Int, seconds: Double) {
        checkpointSeconds.record(.nanoseconds(Int64(seconds * 1e9)))
        checkpointBytes.increment(by: Int64(bytes))
        checkpointsWritten.increment()
    }

    /// Counts a failed run by the kind of its reason (`nnd_runs_failed_total{reason}`).
    func runFailed(reason: String) {
        registry.makeCounter(
            descriptor: Self.name(
                "nnd_runs_failed_total", "Runs that failed, by kind of reason, since the daemon started"),
            labels: [("reason", Self.failureKind(reason))]
        ).increment()
    }

    /// The label of a failure reason: few fixed values, so alerts can name them.
    static func failureKind(_ reason: String) -> String {
        let text = reason.lowercased()
        if text.contains("daemon exited") { return "quarantined" }
        if text.contains("memory") { return "memory" }
        if text.contains("diverged") || text.contains("not finite") || text.contains("nan") { return "diverged" }
        if text.contains("no space") || text.contains("storage") || text.contains("cannot write") { return "storage" }
        if text.contains("data") || text.contains("idx") || text.contains("csv") || text.contains("no such file") {
            return "data"
        }
        return "other"
    }

    /// Counts a promotion gate's decision (`nnd_model_promotions_total{model,decision}`).
    func promotionDecided(_ outcome: PromotionOutcome) {
        registry.makeCounter(
            descriptor: Self.name(
                "nnd_model_promotions_total", "Promotion gate decisions since the daemon started: promoted or kept"),
            labels: [("model", outcome.model), ("decision", outcome.promoted ? "promoted" : "kept")]
        ).increment()
    }

    /// What the scrape shows of the daemon's state beyond its counters.
    struct Snapshot {
        var runs: [RunRecord]
        var counts: [RunState: Int]
        var models: [ModelInfo]
        var stateDirectoryBytes: Int
        var stateFilesystem: (available: Int, size: Int)?
        var memoryBudget: Int
        var memoryHeld: Int
        var unreadableRunRecords: Int
    }

    /// How long a finished run's series stay in /metrics (so the last value is scraped, then the
    /// series end: per-run series stay bounded however many runs the state directory keeps).
    static let finishedRunSeriesSeconds: Double = 3600

    /// The exposition text: registry metrics refreshed, then series computed from the state.
    func render(_ snapshot: Snapshot, now: Date = Date(), latest: (String) -> TrainingEvent?) -> String {
        uptime.set(to: now.timeIntervalSince(startedAt))
        for state in RunState.allCases {
            registry.makeGauge(descriptor: Self.name("nnd_runs", "Runs by state"), labels: [("state", state.rawValue)])
                .set(to: Double(snapshot.counts[state] ?? 0))
        }
        var out = Exposition()
        out.gauge(
            "nnd_state_directory_bytes", "Bytes under the state directory", [], Double(snapshot.stateDirectoryBytes))
        if let fileSystem = snapshot.stateFilesystem {
            out.gauge(
                "nnd_state_filesystem_available_bytes",
                "Bytes still available on the state directory's file system (a checkpoint that does not fit fails its run)",
                [], Double(fileSystem.available))
            out.gauge(
                "nnd_state_filesystem_size_bytes", "Size of the state directory's file system", [],
                Double(fileSystem.size))
        }
        out.gauge(
            "nnd_memory_budget_bytes", "Memory the runs may hold together (memory_budget)", [],
            Double(snapshot.memoryBudget))
        out.gauge("nnd_memory_held_bytes", "Estimated memory held by running runs", [], Double(snapshot.memoryHeld))
        out.gauge(
            "nnd_run_records_unreadable", "Run records the daemon could not read at start (GET /v1/health names them)",
            [], Double(snapshot.unreadableRunRecords))

        for model in snapshot.models {
            guard let current = model.versions.first(where: { $0.version == model.current }) else { continue }
            let labels = [("model", model.name), ("version", current.version)]
            out.gauge(
                "nnd_model_current_test_accuracy_percent", "Test accuracy of the model's current version", labels,
                current.testAccuracy)
            out.gauge(
                "nnd_model_current_created_timestamp_seconds", "When the model's current version was stored", labels,
                current.createdAt.timeIntervalSince1970)
        }
        // The newest retraining run of each model: when it finished, and whether it completed.
        var lastRetrain: [String: RunRecord] = [:]
        var lastSuccess: [String: Date] = [:]
        for run in snapshot.runs {
            guard let model = run.spec.promotion?.model, run.state.isSettled, run.state != .paused,
                let finished = run.finishedAt
            else { continue }
            if (lastRetrain[model]?.finishedAt ?? .distantPast) < finished { lastRetrain[model] = run }
            if run.state == .completed, (lastSuccess[model] ?? .distantPast) < finished {
                lastSuccess[model] = finished
            }
        }
        for (model, run) in lastRetrain.sorted(by: { $0.key < $1.key }) {
            out.gauge(
                "nnd_retrain_last_finished_timestamp_seconds", "When the model's newest retraining run ended",
                [("model", model)], run.finishedAt!.timeIntervalSince1970)
            out.gauge(
                "nnd_retrain_last_success",
                "1 if the model's newest retraining run completed, 0 if it failed or stopped",
                [("model", model)], run.state == .completed ? 1 : 0)
        }
        for (model, date) in lastSuccess.sorted(by: { $0.key < $1.key }) {
            out.gauge(
                "nnd_retrain_last_success_timestamp_seconds", "When a retraining run of the model last completed",
                [("model", model)], date.timeIntervalSince1970)
        }

        var histograms = ""
        for r in snapshot.runs {
            if r.state.isSettled, r.state != .paused,
                now.timeIntervalSince(r.finishedAt ?? r.createdAt) > Self.finishedRunSeriesSeconds
            {
                continue
            }
            let labels = [("run", r.id), ("name", r.name)]
            let e = latest(r.id) ?? r.progress
            out.gauge("nnd_run_epoch", "Current epoch of the run (1-based)", labels, e.map { Double($0.epoch) })
            out.gauge("nnd_run_step", "Steps done in the current epoch", labels, e.map { Double($0.step) })
            out.gauge("nnd_run_cost", "Cost of the last completed epoch", labels, r.history.last?.cost ?? e?.cost)
            out.gauge("nnd_run_learning_rate", "Current learning rate", labels, e.map { Double($0.learningRate) })
            out.gauge(
                "nnd_run_samples_per_second", "Training throughput of the current epoch", labels, e?.samplesPerSecond)
            out.gauge(
                "nnd_run_test_accuracy_percent", "Test accuracy of the last evaluation", labels,
                r.testAccuracy ?? r.history.last?.testAccuracy)
            out.gauge("nnd_run_running", "1 while the run trains", labels, r.state == .running ? 1 : 0)
            out.gauge(
                "nnd_run_sparse_input", "1 when the run's first layer reads the inputs' non-zeros (model.input_path)",
                labels, e?.inputPath.map { $0 == "sparse" ? 1 : 0 })
            out.gauge(
                "nnd_run_input_density", "Share of the run's training inputs that are not zero", labels,
                e?.inputDensity)
            out.gauge("nnd_run_ranks", "Processes (MPI ranks) training the run", labels, e?.ranks.map(Double.init))
            out.gauge(
                "nnd_run_step_compute_seconds", "Distributed runs: mean seconds per step computing rank 0's share",
                labels, e?.stepComputeSeconds)
            out.gauge(
                "nnd_run_step_allreduce_seconds",
                "Distributed runs: mean seconds per step in the gradient's allreduce (incl. waiting for the slowest rank)",
                labels, e?.stepAllreduceSeconds)
            if let b = e?.stepDurationBuckets, let sum = e?.stepDurationSum, b.count == StepDurations.bounds.count + 1 {
                let l = "run=\"\(Exposition.escape(r.id))\",name=\"\(Exposition.escape(r.name))\""
                for (i, bound) in StepDurations.bounds.enumerated() {
                    histograms += "nnd_step_duration_seconds_bucket{\(l),le=\"\(bound)\"} \(b[i])\n"
                }
                histograms += "nnd_step_duration_seconds_bucket{\(l),le=\"+Inf\"} \(b.last!)\n"
                histograms +=
                    "nnd_step_duration_seconds_sum{\(l)} \(sum)\nnnd_step_duration_seconds_count{\(l)} \(b.last!)\n"
            }
        }
        var text = registry.emitToString() + out.text
        if !histograms.isEmpty {
            text +=
                "# HELP nnd_step_duration_seconds Duration of one training step (forward, backward, reduction, update; "
                + "steps run in one engine call count with its mean)\n"
            text += "# TYPE nnd_step_duration_seconds histogram\n" + histograms
        }
        return text
    }

}

extension MetricsSystem {
    private static let bootstrapped = Mutex(false)
    static func bootstrapIfNeeded(_ factory: MetricsFactory) {
        bootstrapped.withLock { done in
            if !done {
                MetricsSystem.bootstrap(factory)
                done = true
            }
        }
    }
}

/// Gauges written as exposition text, each metric's HELP and TYPE once before its samples.
struct Exposition {
    private var samples: [String: [String]] = [:]
    private var help: [String: String] = [:]
    private var order: [String] = []

    mutating func gauge(_ name: String, _ helpText: String, _ labels: [(String, String)], _ value: Double?) {
        guard let value, value.isFinite else { return }
        if help[name] == nil {
            help[name] = helpText
            order.append(name)
        }
        let rendered = labels.map { "\($0.0)=\"\(Self.escape($0.1))\"" }.joined(separator: ",")
        samples[name, default: []].append(labels.isEmpty ? "\(name) \(value)" : "\(name){\(rendered)} \(value)")
    }

    var text: String {
        order.map { name in
            "# HELP \(name) \(help[name]!)\n# TYPE \(name) gauge\n" + samples[name]!.joined(separator: "\n") + "\n"
        }.joined()
    }

    /// A label value as the exposition format writes it (backslash, quote and newline escaped).
    static func escape(_ s: String) -> String {
        s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
            .replacingOccurrences(of: "\n", with: "\\n")
    }
}
