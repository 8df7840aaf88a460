import Foundation
import NNAPI
import NNTraining
import Synchronization

/// Fans a run's events out to any number of watchers. Called from the training thread
/// (at most every 0.2 s and once per epoch, never per step), so a mutex is fine here.
public final class EventHub: Sendable {
    private struct Subscribers { var byRun: [String: [UUID: AsyncStream<StreamLine>.Continuation]] = [:] }
    private let subscribers = Mutex(Subscribers())
    private let latest = Mutex([String: TrainingEvent]())

    public init() {}

    public func subscribe(run: String) -> (UUID, AsyncStream<StreamLine>) {
        let id = UUID()
        let (stream, continuation) = AsyncStream<StreamLine>.makeStream(bufferingPolicy: .bufferingNewest(256))
        subscribers.withLock { $0.byRun[run, default: [:]][id] = continuation }
        continuation.onTermination = { [weak self] _ in self?.unsubscribe(run: run, id: id) }
        return (id, stream)
    }

    public func unsubscribe(run: String, id: UUID) {
        _ = subscribers.withLock { $0.byRun[run]?.removeValue(forKey: id) }
    }

    /// Drops what the hub keeps of a removed run.
    public func forget(run: String) {
        _ = latest.withLock { $0.removeValue(forKey: run) }
    }

    public func publish(run: String, event: TrainingEvent) {
        latest.withLock { $0[run] = event }
        let line = StreamLine(type: .progress, run: run, event: event)
        for c in subscribers.withLock({ Array(($0.byRun[run] ?? [:]).values) }) { c.yield(line) }
    }

    /// A state change; `final` closes the watchers' streams (the run left `running`).
    public func publish(run: String, state: RunState, reason: String?, closeStreams: Bool) {
        let line = StreamLine(type: .state, run: run, state: state, reason: reason)
        let cs = subscribers.withLock { s -> [AsyncStream<StreamLine>.Continuation] in
            let all = Array((s.byRun[run] ?? [:]).values)
            if closeStreams { s.byRun[run] = nil }
            return all
        }
        for c in cs {
            c.yield(line)
            if closeStreams { c.finish() }
        }
    }

    /// Ends every watcher's stream (the daemon is stopping): an open `/events` response of a
    /// queued run would otherwise hold the HTTP server's graceful shutdown until systemd's
    /// TimeoutStopSec= kills the daemon. Watchers see the stream end and reconnect.
    public func closeAll() {
        let all = subscribers.withLock { s -> [AsyncStream<StreamLine>.Continuation] in
            let all = s.byRun.values.flatMap(\.values)
            s.byRun = [:]
            return all
        }
        for c in all { c.finish() }
    }

    public func latestEvent(run: String) -> TrainingEvent? { latest.withLock { $0[run] } }
}
