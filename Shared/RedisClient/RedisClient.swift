import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle

/// An async Redis client: one pipelined connection for ordinary commands and one for blocking reads.
///
/// Any number of tasks may call it at once; their commands share one connection and
/// one write per event-loop turn, and each gets its own reply. Blocking commands
/// (`XREADGROUP ... BLOCK`) go to a second connection so they never hold up the rest.
///
/// The client is a `Service`: it works only while ``run()`` is active, reconnects
/// by itself with backoff, and stops on graceful shutdown or cancellation. Commands
/// in flight when a connection drops fail with ``RedisConnectionError``; commands
/// sent while a reconnection is under way wait for it.
public final class RedisClient: Service, Sendable {
    /// Where this client connects.
    public let configuration: RedisConfiguration
    let logger: Logger
    private let main: ManagedConnection
    private let blocking: ManagedConnection

    /// Creates a client; nothing connects until ``run()``.
    public init(
        configuration: RedisConfiguration,
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        logger: Logger = Logger(label: "redis")
    ) {
        self.configuration = configuration
        self.logger = logger
        self.main = ManagedConnection(name: "main", maximumBackoff: configuration.maximumBackoff, logger: logger) { _ in
            try await RedisConnection.connect(to: configuration, on: eventLoopGroup)
        }
        self.blocking = ManagedConnection(name: "blocking", maximumBackoff: configuration.maximumBackoff, logger: logger) { _ in
            try await RedisConnection.connect(to: configuration, on: eventLoopGroup)
        }
    }

    /// Keeps both connections up until graceful shutdown or cancellation.
    public func run() async throws {
        await withTaskCancellationHandler {
            await withGracefulShutdownHandler {
                await withDiscardingTaskGroup { group in
                    group.addTask { await self.main.maintain() }
                    group.addTask { await self.blocking.maintain() }
                }
            } onGracefulShutdown: {
                self.shutdown()
            }
        } onCancel: {
            self.shutdown()
        }
    }

    /// Closes both connections; everything waiting fails with ``RedisConnectionError/Code/shutdown``.
    public func shutdown() {
        main.shutdown()
        blocking.shutdown()
    }

    /// Sends one command; an error reply throws ``RedisServerError``.
    @discardableResult
    public func send(_ command: [String]) async throws -> RESPValue {
        let reply = try await main.connection().send([command], expectedReplies: 1)[0]
        if case .error(let message) = reply { throw RedisServerError(message: message) }
        return reply
    }

    /// Sends several commands in one write and returns their replies in order.
    ///
    /// Error replies come back as ``RESPValue/error(_:)`` values so one refused
    /// command does not hide the others' results.
    public func pipeline(_ commands: [[String]]) async throws -> [RESPValue] {
        try await main.connection().send(commands, expectedReplies: commands.count)
    }

    /// Sends a command that may block on the server (`BLOCK`, `BLPOP`) on the blocking connection.
    ///
    /// Blocking commands from several callers run one after another. Cancelling the
    /// calling task closes that connection (it reconnects) so the caller returns at once.
    @discardableResult
    public func sendBlocking(_ command: [String]) async throws -> RESPValue {
        let connection = try await blocking.connection()
        let reply = try await withTaskCancellationHandler {
            try await connection.send([command], expectedReplies: 1)[0]
        } onCancel: {
            self.blocking.discard(connection)
        }
        if case .error(let message) = reply { throw RedisServerError(message: message) }
        return reply
    }

    /// Waits until a `PING` succeeds, retrying through connection errors and `-LOADING`
    /// (Redis replaying its append-only file after a restart); throws after `timeout`.
    public func waitUntilReady(timeout: Duration = .seconds(30)) async throws {
        let deadline = ContinuousClock.now + timeout
        while true {
            do {
                try await ping()
                return
            } catch let error as RedisConnectionError where error.code != .shutdown {
                if ContinuousClock.now >= deadline { throw error }
            } catch let error as RedisServerError where error.prefix == "LOADING" {
                if ContinuousClock.now >= deadline { throw error }
            }
            try await Task.sleep(for: .milliseconds(20))
        }
    }
}
