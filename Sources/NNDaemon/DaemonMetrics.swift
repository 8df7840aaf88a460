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
        registry.makeGauge(
            descriptor: Self.name("nnd_blas_info", "OpenBLAS kernel family in use"),
            labels: [("kernel", BLAS.kernelName)]
        ).set(to: 1.0)
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

    /// The exposition text: registry metrics refreshed from `runs`, then the step histograms.
    func render(runs: [RunRecord], counts: [RunState: Int], latest: (String) -> TrainingEvent?) -> String {
        uptime.set(to: Date().timeIntervalSince(startedAt))
        for state in [RunState.queued, .running, .paused, .completed, .stopped, .failed] {
            registry.makeGauge(descriptor: Self.name("nnd_runs", "Runs by state"), labels: [("state", state.rawValue)])
                .set(to: Double(counts[state] ?? 0))
        }
        var histograms = ""
        for r in runs {
            let labels = [("run", r.id), ("name", r.name)]
            let e = latest(r.id) ?? r.progress
            func gauge(_ name: String, _ help: String, _ v: Double?) {
                guard let v, v.isFinite else { return }
                registry.makeGauge(descriptor: Self.name(name, help), labels: labels).set(to: v)
            }
            gauge("nnd_run_epoch", "Current epoch of the run (1-based)", e.map { Double($0.epoch) })
            gauge("nnd_run_step", "Steps done in the current epoch", e.map { Double($0.step) })
            gauge("nnd_run_cost", "Cost of the last completed epoch", r.history.last?.cost ?? e?.cost)
            gauge("nnd_run_learning_rate", "Current learning rate", e.map { Double($0.learningRate) })
            gauge("nnd_run_samples_per_second", "Training throughput of the current epoch", e?.samplesPerSecond)
            gauge(
                "nnd_run_test_accuracy_percent", "Test accuracy of the last evaluation",
                r.testAccuracy ?? r.history.last?.testAccuracy)
            gauge("nnd_run_running", "1 while the run trains", r.state == .running ? 1 : 0)
            if let b = e?.stepDurationBuckets, let sum = e?.stepDurationSum, b.count == StepDurations.bounds.count + 1 {
                let l = "run=\"\(escape(r.id))\",name=\"\(escape(r.name))\""
                for (i, bound) in StepDurations.bounds.enumerated() {
                    histograms += "nnd_step_duration_seconds_bucket{\(l),le=\"\(bound)\"} \(b[i])\n"
                }
                histograms += "nnd_step_duration_seconds_bucket{\(l),le=\"+Inf\"} \(b.last!)\n"
                histograms +=
                    "nnd_step_duration_seconds_sum{\(l)} \(sum)\nnnd_step_duration_seconds_count{\(l)} \(b.last!)\n"
            }
        }
        var text = registry.emitToString()
        if !histograms.isEmpty {
            text +=
                "# HELP nnd_step_duration_seconds Duration of one training step (forward, backward, reduction, update; steps run in one engine call count with its mean)\n"
            text += "# TYPE nnd_step_duration_seconds histogram\n" + histograms
        }
        return text
    }

    func escape(_ s: String) -> String {
        s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
            .replacingOccurrences(of: "\n", with: "\\n")
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
