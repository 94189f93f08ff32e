import Logging
import NIOCore
import Synchronization

/// One connection slot that reconnects by itself with exponential backoff.
///
/// ``maintain()`` is the connect loop (run by the owning service's `run()`);
/// ``connection()`` hands the live connection to callers, or makes them wait for
/// an attempt under way, or fails fast while backing off.
final class ManagedConnection: Sendable {
    typealias Waiter = CheckedContinuation<RedisConnection, any Error>

    private let state = Mutex(ConnectionStateMachine<RedisConnection, Waiter>())
    private let connect: @Sendable (_ isReconnect: Bool) async throws -> RedisConnection
    private let maximumBackoff: Duration
    private let logger: Logger
    private let name: String

    init(name: String, maximumBackoff: Duration, logger: Logger, connect: @escaping @Sendable (_ isReconnect: Bool) async throws -> RedisConnection) {
        self.name = name
        self.maximumBackoff = maximumBackoff
        self.logger = logger
        self.connect = connect
    }

    /// The live connection, once there is one.
    func connection() async throws -> RedisConnection {
        if case .use(let connection) = state.withLock({ $0.acquire() }) { return connection }
        return try await withCheckedThrowingContinuation { (waiter: Waiter) in
            let action = state.withLock { machine -> ConnectionStateMachine<RedisConnection, Waiter>.AcquireAction in
                let action = machine.acquire()
                if case .wait = action, !machine.addWaiter(waiter) {
                    return .fail(RedisConnectionError(.connecting))
                }
                return action
            }
            switch action {
            case .use(let connection): waiter.resume(returning: connection)
            case .fail(let error): waiter.resume(throwing: error)
            case .wait: break
            }
        }
    }

    /// The live connection if there is one now; nil while connecting or backing off.
    func currentConnection() -> RedisConnection? {
        state.withLock { machine in
            if case .connected(let connection) = machine.state { return connection }
            return nil
        }
    }

    /// Closes `connection` on purpose (a cancelled blocking read); callers from now on
    /// wait for the reconnection instead of getting the closing connection.
    func discard(_ connection: RedisConnection) {
        state.withLock { machine in
            if case .connected(let current) = machine.state, current === connection {
                _ = machine.connectionClosed()
            }
        }
        connection.close()
    }

    /// For a connection whose ``maintain()`` is about to start: callers wait for it to
    /// connect instead of failing because it has not started.
    func expectMaintenance() {
        state.withLock { _ = $0.connectStarted() }
    }

    /// Connects, waits for the connection to close, reconnects; returns after ``shutdown()``.
    func maintain() async {
        var failures = 0
        var hasConnected = false
        while state.withLock({ $0.connectStarted() }) {
            do {
                let connection = try await connect(hasConnected)
                switch state.withLock({ $0.connectSucceeded(connection) }) {
                case .close(let connection):
                    connection.close()
                    return
                case .resume(let waiters, let connection):
                    for waiter in waiters { waiter.resume(returning: connection) }
                }
                if failures > 0 || hasConnected {
                    logger.info("redis reconnected", metadata: ["redis.connection": "\(name)"])
                }
                hasConnected = true
                failures = 0
                try? await connection.channel.closeFuture.get()
                guard state.withLock({ $0.connectionClosed() }) else { return }
                logger.warning("redis connection lost", metadata: ["redis.connection": "\(name)"])
            } catch {
                let waiters = state.withLock { $0.connectFailed("\(error)") }
                let failure = (error as? RedisConnectionError) ?? RedisConnectionError(.connectFailed, "\(error)")
                for waiter in waiters { waiter.resume(throwing: failure) }
                failures += 1
                if failures == 1 || failures % 20 == 0 {
                    logger.warning("redis connect failed", metadata: ["redis.connection": "\(name)", "redis.error": "\(error)", "redis.attempts": "\(failures)"])
                }
                do {
                    try await Task.sleep(for: backoff(afterFailures: failures))
                } catch {
                    _ = shutdown()
                    return
                }
            }
        }
    }

    /// 50 ms, 100 ms, 200 ms ... up to the configured maximum.
    private func backoff(afterFailures failures: Int) -> Duration {
        let exponent = min(failures - 1, 16)
        return min(.milliseconds(50 * (1 << exponent)), maximumBackoff)
    }

    /// Stops for good: waiters fail, the connection closes, ``maintain()`` returns.
    @discardableResult
    func shutdown() -> Bool {
        switch state.withLock({ $0.shutdown() }) {
        case .fail(let waiters):
            for waiter in waiters { waiter.resume(throwing: RedisConnectionError(.shutdown)) }
        case .close(let connection):
            connection.close()
        case .none:
            break
        }
        return true
    }
}
