import DequeModule
import Synchronization

/// At most `limit` holders at a time; the others wait their turn, in the order they came.
///
/// A gateway passes the work of every CONNECT through one (the replay it may ask for is
/// sent after its turn, and answered whenever the store answers): when thousands of sockets come back at once (their
/// gateway went away), their work queues here instead of on the event loops, where each
/// connected socket's sends would wait behind all of it. A holder must not wait on
/// anything that can take long (the store), or everyone behind it waits too.
///
/// Once nobody waits after at least `burst` have waited (since the last time), it calls
/// `afterBurst` with their number: the gateway then gives the memory their suspended
/// tasks used back to the system (``MemoryRelease``).
final class AdmissionGate: Sendable {
    private struct State {
        var free: Int
        var waiting = Deque<CheckedContinuation<Void, Never>>()
        /// The most holders there have been at once.
        var peak = 0
        /// Holders that waited their turn since `afterBurst` was last called.
        var waited = 0
        let limit: Int

        mutating func take() {
            free -= 1
            peak = max(peak, limit - free)
        }
    }

    private let state: Mutex<State>
    private let burst: Int
    private let afterBurst: @Sendable (Int) -> Void

    init(limit: Int, burst: Int = .max, afterBurst: @escaping @Sendable (Int) -> Void = { _ in }) {
        precondition(limit > 0, "an admission gate lets at least one in")
        state = Mutex(State(free: limit, limit: limit))
        self.burst = max(1, burst)
        self.afterBurst = afterBurst
    }

    /// Runs `body` once it is let in; the next in line goes in when it ends.
    func pass<T>(_ body: () async throws -> T) async rethrows -> T {
        await enter()
        defer { leave() }
        return try await body()
    }

    private func enter() async {
        let entered = state.withLock { s -> Bool in
            guard s.free > 0 else { return false }
            s.take()
            return true
        }
        if entered { return }
        await withCheckedContinuation { (turn: CheckedContinuation<Void, Never>) in
            let now = state.withLock { s -> Bool in
                // A place may have come free in between.
                if s.free > 0 {
                    s.take()
                    return true
                }
                s.waiting.append(turn)
                s.waited += 1
                return false
            }
            if now { turn.resume() }
        }
    }

    private func leave() {
        let (next, burstEnded) = state.withLock { s -> (CheckedContinuation<Void, Never>?, Int?) in
            if let next = s.waiting.popFirst() { return (next, nil) }
            s.free += 1
            guard s.waited >= burst else { return (nil, nil) }
            defer { s.waited = 0 }
            return (nil, s.waited)
        }
        next?.resume()
        if let burstEnded { afterBurst(burstEnded) }
    }

    /// Those waiting their turn.
    var waitingCount: Int { state.withLock { $0.waiting.count } }

    /// The most holders there have been at once.
    var peak: Int { state.withLock { $0.peak } }
}
