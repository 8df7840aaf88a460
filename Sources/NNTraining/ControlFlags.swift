import Dispatch
import Foundation
import Synchronization

/// A pause/stop request shared between a controller thread (signal handler, HTTP handler)
/// and the training thread, which polls it between steps. Lock-free.
public final class ControlFlag: TrainingControl, Sendable {
    private let value = Atomic<Int>(0)
    public init() {}
    public func request(_ d: ControlDecision) {
        value.store(d == .proceed ? 0 : d == .pause ? 1 : 2, ordering: .releasing)
    }
    public func decision() -> ControlDecision {
        switch value.load(ordering: .acquiring) {
        case 1: .pause
        case 2: .stop
        default: .proceed
        }
    }
}

extension ControlFlag {
    /// Requests `decision` when the process receives the signal paired with it (the signal's
    /// default action is turned off). Keep the returned sources for as long as they should act.
    public func request(on signals: [(Int32, ControlDecision)]) -> [DispatchSourceSignal] {
        signals.map { sig, decision in
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler { self.request(decision) }
            source.resume()
            return source
        }
    }
}
