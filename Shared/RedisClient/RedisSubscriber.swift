import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import Synchronization

/// A message received on a subscribed channel.
public struct RedisPubSubMessage: Sendable, Hashable {
    /// The channel it was published to.
    public var channel: String
    /// The pattern that matched, for `PSUBSCRIBE` subscriptions.
    public var pattern: String?
    public var payload: [UInt8]

    /// The payload as UTF-8 text.
    public var text: String { String(decoding: payload, as: UTF8.self) }
}

/// A connection in pub/sub mode whose messages arrive as one `AsyncSequence` (``events``),
/// or on a handler run on the connection's event loop (``handleEvents(_:)``).
///
/// It remembers what it is subscribed to: after a reconnection (Redis restarted, the
/// connection killed) it subscribes again by itself and yields ``Event/resubscribed``,
/// because messages published while it was away are gone and listeners should resync.
public final class RedisSubscriber: Service, Sendable {
    /// What arrives on ``events``.
    public enum Event: Sendable, Hashable {
        case message(RedisPubSubMessage)
        /// The connection was lost: every message before this came from the old connection,
        /// every message after it from the new one (it may come before ``resubscribed``,
        /// as soon as the first channel is subscribed again). Yielded once per loss.
        case connectionLost
        /// The connection was lost and restored with every subscription; messages in between were missed.
        case resubscribed
    }

    private struct Subscriptions: Sendable {
        var channels: Set<String> = []
        var patterns: Set<String> = []
    }

    /// Every message and reconnection, in arrival order. Consume it from one task, and
    /// promptly: it buffers without bound rather than drop a message.
    public let events: AsyncStream<Event>
    private let continuation: AsyncStream<Event>.Continuation
    private let handler: LockedState<Handler?>
    private let subscriptions = LockedState(Subscriptions())
    private let slot: ManagedConnection
    /// How often a PING checks that the server still answers (the configuration's `keepAlive`,
    /// when it has a reply timeout to enforce it); nil: never.
    private let pingInterval: Duration?

    public init(
        configuration: RedisConfiguration,
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        logger: Logger = Logger(label: "redis.subscriber")
    ) {
        let (events, continuation) = AsyncStream<Event>.makeStream()
        self.events = events
        self.continuation = continuation
        let handler = LockedState<Handler?>(nil)
        self.handler = handler
        self.pingInterval = configuration.replyTimeout == nil ? nil : configuration.keepAlive
        let emit: @Sendable (Event) -> Void = { event in
            if let handler = handler.withLock({ $0 }) { handler.handle(event) } else { continuation.yield(event) }
        }
        let subscriptions = self.subscriptions
        let lossAnnounced = LockedState(false)
        self.slot = ManagedConnection(name: "subscriber", maximumBackoff: configuration.maximumBackoff, logger: logger) { isReconnect in
            if isReconnect, lossAnnounced.withLock({ announced in defer { announced = true }; return !announced }) {
                emit(.connectionLost)
            }
            let connection = try await RedisConnection.connect(to: configuration, on: eventLoopGroup) { push in
                if let message = Self.message(from: push) { emit(.message(message)) }
            }
            let current = subscriptions.withLock { $0 }
            do {
                if !current.channels.isEmpty {
                    _ = try await connection.send([["SUBSCRIBE"] + current.channels], expectedReplies: current.channels.count)
                }
                if !current.patterns.isEmpty {
                    _ = try await connection.send([["PSUBSCRIBE"] + current.patterns], expectedReplies: current.patterns.count)
                }
            } catch {
                connection.close()
                throw error
            }
            if isReconnect {
                lossAnnounced.withLock { $0 = false }
                emit(.resubscribed)
            }
            return connection
        }
    }

    /// Hands every event to `handler` instead of ``events`` (which then stays empty): messages
    /// on the connection's event loop as they are read, with no task switch, in order; the loss
    /// and the resubscription from the task that reconnects. Set it before subscribing; keep
    /// it short, since the connection reads nothing else meanwhile.
    public func handleEvents(_ handler: @escaping @Sendable (Event) -> Void) {
        self.handler.withLock { $0 = Handler(handle: handler) }
    }

    /// The handler in a struct, not as a bare closure in the lock: a closure read through the
    /// generic lock's `inout` is re-abstracted on the way out and again on the way back, so
    /// every read wrapped the stored closure in two more thunks. After n events a call went
    /// through 2n of them (the gateway fell to 143 deliveries/s at a full core). A struct's
    /// closure field keeps one representation.
    private struct Handler: Sendable {
        let handle: @Sendable (Event) -> Void
    }

    /// Keeps the connection and its subscriptions up until graceful shutdown or cancellation; then ends ``events``.
    ///
    /// A subscribed connection only receives, so a server that vanished behind something that
    /// still answers TCP (a proxy, a load balancer), or one that hangs, would leave it silent
    /// for good: it sends a PING every ``RedisConfiguration/keepAlive``, and a PING not
    /// answered within the reply timeout closes the connection, which reconnects, subscribes
    /// again and yields ``Event/connectionLost`` and ``Event/resubscribed``.
    public func run() async throws {
        await withTaskCancellationHandler {
            await withGracefulShutdownHandler {
                await withDiscardingTaskGroup { group in
                    if let pingInterval {
                        group.addTask { [slot] in
                            while !Task.isCancelled {
                                try? await Task.sleep(for: pingInterval)
                                // Not connected: the connection's own loop is reconnecting; nothing to check.
                                guard !Task.isCancelled, let connection = slot.currentConnection() else { continue }
                                _ = try? await connection.send([["PING"]], expectedReplies: 1)
                            }
                        }
                    }
                    await slot.maintain()
                    group.cancelAll()
                }
            } onGracefulShutdown: {
                self.slot.shutdown()
            }
        } onCancel: {
            self.slot.shutdown()
        }
        continuation.finish()
    }

    /// Subscribes to `channels` and returns once Redis confirmed them. Before `run()` or
    /// while reconnecting it waits for the connection (cancel the task to stop waiting);
    /// the subscription is recorded either way and made again after every reconnect.
    public func subscribe(_ channels: [String]) async throws {
        try await change(channels, command: "SUBSCRIBE") { s, name in s.channels.insert(name).inserted }
    }

    /// Stops receiving `channels`.
    public func unsubscribe(_ channels: [String]) async throws {
        try await change(channels, command: "UNSUBSCRIBE") { s, name in s.channels.remove(name) != nil }
    }

    /// Subscribes to channel patterns (`user:*`).
    public func psubscribe(_ patterns: [String]) async throws {
        try await change(patterns, command: "PSUBSCRIBE") { s, name in s.patterns.insert(name).inserted }
    }

    /// Stops receiving `patterns`.
    public func punsubscribe(_ patterns: [String]) async throws {
        try await change(patterns, command: "PUNSUBSCRIBE") { s, name in s.patterns.remove(name) != nil }
    }

    /// Records the change, then sends `command` for the names it really changed; Redis confirms each name.
    /// (If a reconnect made the subscription meanwhile, Redis confirms it again: harmless.)
    private func change(_ names: [String], command: String, _ apply: @escaping (inout Subscriptions, String) -> Bool) async throws {
        let changed = subscriptions.withLock { s in names.filter { apply(&s, $0) } }
        guard !changed.isEmpty else { return }
        while true {
            do {
                _ = try await slot.connection().send([[command] + changed], expectedReplies: changed.count)
                return
            } catch let error as RedisConnectionError where error.code != .shutdown {
                try await Task.sleep(for: .milliseconds(20))
            }
        }
    }

    /// The channels this subscriber wants, whether or not the connection is up right now.
    public var channels: Set<String> { subscriptions.withLock { $0.channels } }

    private static func message(from push: RESPValue) -> RedisPubSubMessage? {
        guard let parts = push.array, let kind = parts.first?.string else { return nil }
        switch kind {
        case "message":
            guard let channel = parts[1].string, case .bulkString(let payload) = parts[2] else { return nil }
            return RedisPubSubMessage(channel: channel, pattern: nil, payload: payload)
        case "pmessage":
            guard let pattern = parts[1].string, let channel = parts[2].string, case .bulkString(let payload) = parts[3] else { return nil }
            return RedisPubSubMessage(channel: channel, pattern: pattern, payload: payload)
        default:
            return nil
        }
    }
}
