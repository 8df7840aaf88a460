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
