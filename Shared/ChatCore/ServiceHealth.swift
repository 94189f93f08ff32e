import Synchronization

/// Whether a service should receive work: what `/readyz` reports.
///
/// A service starts `starting`, becomes `ready` once it has reached Redis and begun its
/// work, and turns `draining` when it is asked to stop, so that a load balancer or
/// Kubernetes takes it out of rotation before it closes. `/healthz` (the process answers)
/// does not depend on it.
public final class ServiceHealth: Sendable {
    public enum Phase: String, Sendable {
        case starting, ready, draining
    }

    private let state = Mutex(Phase.starting)
    private let waiting = Mutex<String?>(nil)

    public init() {}

    public var phase: Phase { state.withLock { $0 } }

    /// What a starting service waits for (a standby messages service: the writer lease and
    /// its holder), shown by `/readyz`; nil when it waits for nothing in particular.
    public var waitingFor: String? { waiting.withLock { $0 } }

    /// Sets (or clears, with nil) what the service waits for while starting.
    public func wait(for reason: String?) {
        waiting.withLock { $0 = reason }
    }

    /// Start-up is over; ignored once draining (a stop outranks a late start).
    public func markReady() {
        state.withLock { if $0 == .starting { $0 = .ready } }
    }

    /// The service is stopping: `/readyz` answers 503 from now on.
    public func startDraining() {
        state.withLock { $0 = .draining }
    }
}

/// Work a `/metrics` request does first: gauges that are cheaper to read when asked
/// (a SCARD, an XINFO) than to keep current on every change.
public final class ScrapeHooks: Sendable {
    public typealias Hook = @Sendable () async -> Void
    private let hooks = Mutex<[Hook]>([])

    public init() {}

    public func add(_ hook: @escaping Hook) { hooks.withLock { $0.append(hook) } }

    public func run() async {
        for hook in hooks.withLock({ $0 }) { await hook() }
    }
}
