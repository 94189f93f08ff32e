import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import Synchronization

/// An async Redis client: one pipelined connection for ordinary commands, and one more per
/// blocking read in progress.
///
/// Any number of tasks may call it at once; their commands share one connection and
/// one write per event-loop turn, and each gets its own reply. Blocking commands
/// (`XREADGROUP ... BLOCK`) go to connections of their own so they never hold up the rest,
/// nor each other: two stream consumers in one service each get a connection.
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
    /// Connections for blocking commands: one per caller blocked at the same time, kept for reuse.
    private let blocking: Mutex<BlockingConnections>
    private let makeBlocking: @Sendable (Int) -> ManagedConnection
    /// New blocking connections for ``run()`` to keep up.
    private let startBlocking: AsyncStream<ManagedConnection>.Continuation
    private let blockingToStart: AsyncStream<ManagedConnection>

    private struct BlockingConnections {
        var idle: [ManagedConnection] = []
        var all: [ManagedConnection] = []
        var shutdown = false
        /// ``run()`` is active: a new connection is started at once, so its callers wait for it.
        var running = false
    }

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
        self.makeBlocking = { number in
            ManagedConnection(name: number == 1 ? "blocking" : "blocking-\(number)", maximumBackoff: configuration.maximumBackoff, logger: logger) { _ in
                try await RedisConnection.connect(to: configuration, on: eventLoopGroup)
            }
        }
        (self.blockingToStart, self.startBlocking) = AsyncStream.makeStream()
        self.blocking = Mutex(BlockingConnections())
        // The first one connects with the client, as the main connection does.
        returnBlocking(takeBlocking())
    }

    /// Keeps both connections up until graceful shutdown or cancellation.
    public func run() async throws {
        await withTaskCancellationHandler {
            await withGracefulShutdownHandler {
                blocking.withLock { $0.running = true }
                await withDiscardingTaskGroup { group in
                    group.addTask { await self.main.maintain() }
                    for await connection in self.blockingToStart { group.addTask { await connection.maintain() } }
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
        let connections = blocking.withLock { state in
            state.shutdown = true
            return state.all
        }
        for connection in connections { connection.shutdown() }
        startBlocking.finish()
    }

    /// An idle blocking connection, or a new one (kept up by ``run()`` from now on).
    private func takeBlocking() -> ManagedConnection {
        let (connection, isNew, isShutdown) = blocking.withLock { state -> (ManagedConnection, Bool, Bool) in
            if let idle = state.idle.popLast() { return (idle, false, state.shutdown) }
            let connection = makeBlocking(state.all.count + 1)
            if state.running { connection.expectMaintenance() }
            state.all.append(connection)
            return (connection, true, state.shutdown)
        }
        if isShutdown {
            connection.shutdown()
        } else if isNew {
            startBlocking.yield(connection)
        }
        return connection
    }

    private func returnBlocking(_ connection: ManagedConnection) {
        blocking.withLock { $0.idle.append(connection) }
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
    /// `blocksFor`: how long the server may hold it (the reply timeout counts from then), nil
    /// for as long as it takes (`BLOCK 0`). Callers blocked at the same time each have a
    /// connection (made when first needed), so one consumer's `BLOCK` never delays another's
    /// read. Cancelling the calling task closes that connection (it reconnects) so the caller
    /// returns at once.
    @discardableResult
    public func sendBlocking(_ command: [String], blocksFor: Duration?) async throws -> RESPValue {
        let slot = takeBlocking()
        defer { returnBlocking(slot) }
        let connection = try await slot.connection()
        let reply = try await withTaskCancellationHandler {
            try await connection.send([command], expectedReplies: 1, allowance: blocksFor.map(TimeAmount.init))[0]
        } onCancel: {
            slot.discard(connection)
        }
        if case .error(let message) = reply { throw RedisServerError(message: message) }
        return reply
    }

    /// How long a `BLOCK` of `block` may hold the server's reply: nil for `BLOCK 0`, which waits for ever.
    static func blockingTime(_ block: Duration) -> Duration? {
        block.milliseconds == 0 ? nil : block
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
