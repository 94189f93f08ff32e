/// The life of one managed connection slot, without I/O: what a caller or the connect loop should do next.
///
/// `idle` until `run()` starts; `connecting` while an attempt is under way (callers wait for it);
/// `connected`; `backingOff` after a failed attempt (callers fail fast); `shutdown` for good.
struct ConnectionStateMachine<Connection, Waiter> {
    enum State {
        case idle
        case connecting(waiters: [Waiter])
        case connected(Connection)
        case backingOff(lastError: String)
        case shutdown
    }

    enum AcquireAction {
        case use(Connection)
        case wait
        case fail(RedisConnectionError)
    }

    enum ConnectedAction {
        case resume([Waiter], with: Connection)
        case close(Connection)
    }

    enum ShutdownAction {
        case fail([Waiter])
        case close(Connection)
        case none
    }

    private(set) var state: State = .idle

    /// A caller wants the connection. `wait` means: park `waiter` with ``addWaiter(_:)``.
    mutating func acquire() -> AcquireAction {
        switch state {
        case .idle: return .fail(RedisConnectionError(.notRunning, "the client's run() is not active"))
        case .connecting: return .wait
        case .connected(let connection): return .use(connection)
        case .backingOff(let lastError): return .fail(RedisConnectionError(.connecting, "reconnecting after: \(lastError)"))
        case .shutdown: return .fail(RedisConnectionError(.shutdown))
        }
    }

    /// Parks a waiter; returns `false` (and keeps nothing) unless an attempt is under way.
    mutating func addWaiter(_ waiter: Waiter) -> Bool {
        guard case .connecting(var waiters) = state else { return false }
        waiters.append(waiter)
        state = .connecting(waiters: waiters)
        return true
    }

    /// The loop is about to connect; `false` once shut down.
    mutating func connectStarted() -> Bool {
        switch state {
        case .shutdown: return false
        case .connecting: return true
        case .idle, .backingOff, .connected: state = .connecting(waiters: []); return true
        }
    }

    mutating func connectSucceeded(_ connection: Connection) -> ConnectedAction {
        guard case .connecting(let waiters) = state else { return .close(connection) }
        state = .connected(connection)
        return .resume(waiters, with: connection)
    }

    /// The attempt failed: the waiters fail, and so does everyone else until the next attempt.
    mutating func connectFailed(_ error: String) -> [Waiter] {
        guard case .connecting(let waiters) = state else { return [] }
        state = .backingOff(lastError: error)
        return waiters
    }

    /// The live connection closed (or is being closed on purpose); callers arriving
    /// now wait for the reconnection. Returns `false` once shut down: do not reconnect.
    mutating func connectionClosed() -> Bool {
        switch state {
        case .shutdown: return false
        case .connected: state = .connecting(waiters: []); return true
        case .idle, .connecting, .backingOff: return true
        }
    }

    mutating func shutdown() -> ShutdownAction {
        let previous = state
        state = .shutdown
        switch previous {
        case .connecting(let waiters): return .fail(waiters)
        case .connected(let connection): return .close(connection)
        case .idle, .backingOff, .shutdown: return .none
        }
    }
}
