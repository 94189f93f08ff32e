import ChatCore
import Foundation
import Logging
import Prometheus
import RedisClient
import ServiceLifecycle
import Synchronization

/// The presence service: consumes `presence:commands` (group `presence`) and the `stored`
/// events of `chat:events` (group `presence`, to stop typing on send), keeps the
/// `presence:*` keys through ``PresenceTracker``, and publishes `user_online`,
/// `user_offline` and `user_typing` to the users concerned.
///
/// Offline detection does not depend on gateways saying goodbye: every connection has an
/// expiry in `presence:expiry`, pushed forward by the gateways' heartbeats; a check every
/// second pops what is overdue, atomically, so a dead gateway's users go offline within
/// the TTL plus one check, once.
public struct PresenceService: Service {
    public struct Settings: Sendable {
        /// How long typing lasts without a refresh.
        public var typingExpiry: Duration = .seconds(3)
        /// How often overdue connections and typing are looked for.
        public var checkInterval: Duration = .seconds(1)
        /// How long a conversation's participants are remembered for typing.
        public var participantsCache: Duration = .seconds(60)
        public init() {}
    }

    private let runtime: ChatRuntime
    private let subscriber: RedisSubscriber
    private let settings: Settings

    public init(runtime: ChatRuntime, subscriber: RedisSubscriber, settings: Settings = Settings()) {
        self.runtime = runtime
        self.subscriber = subscriber
        self.settings = settings
    }

    public func run() async throws {
        let keys = runtime.keys
        guard try await ServiceStartup.prepare(runtime, groups: [(keys.presenceCommands, RedisKeys.presenceGroup), (keys.events, RedisKeys.presenceGroup)]) else {
            return
        }
        let configuration = runtime.configuration
        let instance = "presence-\(ProcessInfo.processInfo.hostName)-\(ProcessInfo.processInfo.processIdentifier)"
        let store = StoreClient(redis: runtime.redis, keys: keys, gatewayID: instance, timeout: .seconds(5))
        try await subscriber.subscribe([store.replyChannel])
        let metrics = PresenceMetrics(runtime: runtime)
        let engine = PresenceEngine(redis: runtime.redis, keys: keys, store: store,
                                    tracker: PresenceTracker(redis: runtime.redis, keys: keys, ttl: configuration.presenceTTL, grace: configuration.presenceGrace),
                                    settings: settings, logger: runtime.logger, metrics: metrics)
        StreamMetrics.register(runtime, stream: keys.presenceCommands, group: RedisKeys.presenceGroup)
        let consumerName = configuration.consumerName.replacingOccurrences(of: "messages-", with: "presence-")
        runtime.logger.info("ready", metadata: ["redis.stream": "\(keys.presenceCommands)", "redis.group": "\(RedisKeys.presenceGroup)",
                                                "chat.presence.ttl": "\(DurationParser.format(configuration.presenceTTL))",
                                                "chat.presence.grace": "\(DurationParser.format(configuration.presenceGrace))"])
        runtime.health.markReady()
        try await withThrowingDiscardingTaskGroup { group in
            group.addTask { await store.pumpReplies(from: subscriber) }
            group.addTask {
                await StreamConsumer(stream: keys.presenceCommands, group: RedisKeys.presenceGroup, consumer: consumerName)
                    .run(redis: runtime.redis, logger: runtime.logger) { try await engine.apply($0) }
            }
            group.addTask {
                var events = StreamConsumer(stream: keys.events, group: RedisKeys.presenceGroup, consumer: consumerName)
                // Retention owns the trimming of chat:events.
                events.trim = .never
                // Stored messages end their senders' typing; 50 ms later is not seen, and under
                // load it reads many at a time (clients also clear typing when a message arrives).
                events.linger = .milliseconds(50)
                await events.run(redis: runtime.redis, logger: runtime.logger) { try await engine.applyEvents($0) }
            }
            group.addTask {
                try? await cancelWhenGracefulShutdown {
                    // After a restart, heartbeats that queued up while the service was away are applied
                    // before connections are looked at: no live connection is taken for dead because its
                    // refresh waited in the stream. Typing expires from the start.
                    let connectionsFrom = ContinuousClock.now + configuration.presenceTTL
                    while true {
                        try await Task.sleep(for: settings.checkInterval)
                        do {
                            try await engine.check(connections: ContinuousClock.now >= connectionsFrom)
                        } catch {
                            runtime.logger.warning("presence check failed", metadata: ["chat.error": "\(error)"])
                        }
                    }
                }
            }
        }
    }
}

/// What the presence service does with each command and check.
final class PresenceEngine: Sendable {
    let redis: RedisClient
    let keys: RedisKeys
    let store: StoreClient
    let tracker: PresenceTracker
    let settings: PresenceService.Settings
    let logger: Logger
    let metrics: PresenceMetrics?
    private let participantsCache = Mutex<[String: (ParticipantsResult, ContinuousClock.Instant)]>([:])

    init(redis: RedisClient, keys: RedisKeys, store: StoreClient, tracker: PresenceTracker, settings: PresenceService.Settings, logger: Logger,
         metrics: PresenceMetrics? = nil) {
        self.metrics = metrics
        self.redis = redis
        self.keys = keys
        self.store = store
        self.tracker = tracker
        self.settings = settings
        self.logger = logger
    }

    func apply(_ entries: [StreamEntry]) async throws {
        // Runs of connects and heartbeats go to Redis in one script call; order is kept otherwise.
        var alive: [(conn: String, user: String)] = []
        var cameOnline: [String] = []
        func flush() async throws {
            guard !alive.isEmpty else { return }
            cameOnline += try await tracker.connect(alive)
            alive = []
        }
        for entry in entries {
            let fields = entry.fields
            let user = (fields["user"] ?? "").lowercased()
            switch fields["type"].flatMap(PresenceCommandType.init(rawValue:)) {
            case .connect:
                guard let conn = fields["conn"], !user.isEmpty else { continue }
                alive.append((conn, user))
            case .heartbeat:
                // Connections that had expired meanwhile (a stalled gateway) come back online here.
                alive += (fields["conns"] ?? "").split(separator: "\n").compactMap { line -> (conn: String, user: String)? in
                    let parts = line.split(separator: " ", maxSplits: 1)
                    return parts.count == 2 ? (String(parts[0]), String(parts[1]).lowercased()) : nil
                }
            case .disconnect:
                guard let conn = fields["conn"], !user.isEmpty else { continue }
                try await flush()
                if let lastSeen = try await tracker.disconnect(conn: conn, user: user) {
                    // Online and offline in one batch: announce in order.
                    await announce(online: cameOnline)
                    cameOnline = []
                    await announceOffline(user, lastSeen: lastSeen)
                }
            case .typing:
                try await typing(user: user, fields: fields)
            case nil:
                logger.warning("dropped an unknown presence command", metadata: ["redis.id": "\(entry.id)"])
            }
        }
        try await flush()
        await announce(online: cameOnline)
    }

    private func announce(online users: [String]) async {
        await withDiscardingTaskGroup { group in
            for user in users { group.addTask { await self.announceOnline(user) } }
        }
    }

    /// `stored` events: a send stops its sender's typing. `members` events: a group's members
    /// changed, so the participants kept for typing are read again (all of them: it is rare).
    func applyEvents(_ entries: [StreamEntry]) async throws {
        if entries.contains(where: { $0.fields["type"] == "members" }) {
            participantsCache.withLock { $0.removeAll() }
        }
        // A stored message ends its sender's typing there: the batch's senders in one script call.
        let senders = entries.compactMap { entry -> (conversation: String, user: String)? in
            guard entry.fields["type"] == "stored", let conversation = entry.fields["conversation_id"], let sender = entry.fields["sender"] else { return nil }
            return (conversation, sender)
        }
        for (conversation, user) in try await tracker.stopTyping(senders) {
            await announceTyping(conversation: conversation, user: user, isTyping: false)
        }
    }

    /// Overdue connections, users whose grace is over, and typing.
    func check(connections: Bool = true) async throws {
        if connections {
            for (user, lastSeen) in try await tracker.expire() { await announceOffline(user, lastSeen: lastSeen) }
        }
        // Closed by their gateway, not expired: no heartbeat to wait for after a restart.
        for (user, lastSeen) in try await tracker.leave() { await announceOffline(user, lastSeen: lastSeen) }
        for (conversation, user) in try await tracker.expireTyping() { await announceTyping(conversation: conversation, user: user, isTyping: false) }
    }

    private func typing(user: String, fields: [String: String]) async throws {
        let conversationField = fields["conversation_id"].flatMap { $0.isEmpty ? nil : $0 }
        let receiver = fields["receiver_email"].flatMap { $0.isEmpty ? nil : $0 }
        guard let target = await participants(user: user, conversationID: conversationField, receiver: receiver) else { return }
        let conversation = target.conversationID
        if fields["is_typing"] == "1" {
            try await tracker.startTyping(conversation: conversation, user: user, expiry: settings.typingExpiry)
            await announceTyping(conversation: conversation, user: user, isTyping: true, participants: target.participants)
        } else if try await tracker.stopTyping(conversation: conversation, user: user) {
            await announceTyping(conversation: conversation, user: user, isTyping: false, participants: target.participants)
        }
    }

    // MARK: Store lookups

    private func participants(user: String, conversationID: String?, receiver: String?) async -> ParticipantsResult? {
        let key = user + "|" + (conversationID ?? "@" + (receiver ?? ""))
        if let (cached, at) = participantsCache.withLock({ $0[key] }), ContinuousClock.now - at < settings.participantsCache { return cached }
        do {
            let result: ParticipantsResult = try store.result(await store.query(.participants, user: user) {
                $0.conversationID = conversationID
                $0.query = receiver
            })
            participantsCache.withLock { cache in
                if cache.count > 10_000 { cache.removeAll() }
                cache[key] = (result, .now)
                cache[user + "|" + result.conversationID] = (result, .now)
            }
            return result
        } catch {
            // Not a participant, no such conversation, or the store is away: typing is dropped, never stored.
            logger.debug("typing dropped", metadata: ["chat.user": "\(user)", "chat.error": "\(error)"])
            return nil
        }
    }

    private func partners(of user: String) async -> PartnersResult? {
        do {
            return try store.result(await store.query(.partners, user: user))
        } catch {
            logger.warning("could not look up who to tell about a presence change", metadata: ["chat.user": "\(user)", "chat.error": "\(error)"])
            return nil
        }
    }

    // MARK: Announcements

    private func announceOnline(_ user: String) async {
        metrics?.cameOnline.increment()
        guard let found = await partners(of: user) else { return }
        await publish(UserEvent(event: .userOnline, data: UserOnlineEvent(email: user, name: found.name)), to: found.partners)
    }

    private func announceOffline(_ user: String, lastSeen: Date) async {
        metrics?.wentOffline.increment()
        guard let found = await partners(of: user) else { return }
        await publish(UserEvent(event: .userOffline, data: UserOfflineEvent(email: user, lastSeen: lastSeen)), to: found.partners)
    }

    private func announceTyping(conversation: String, user: String, isTyping: Bool, participants known: [String]? = nil) async {
        var everyone = known
        if everyone == nil { everyone = await participants(user: user, conversationID: conversation, receiver: nil)?.participants }
        let event = UserEvent(event: .userTyping, data: TypingEvent(senderEmail: user, conversationID: conversation, isTyping: isTyping))
        await publish(event, to: (everyone ?? []).filter { $0 != user })
    }

    private func publish<T: Codable & Sendable>(_ event: UserEvent<T>, to users: [String]) async {
        guard !users.isEmpty else { return }
        let text = ChatJSON.text(event)
        do {
            _ = try await redis.pipeline(users.map { ["PUBLISH", keys.user($0), text] })
        } catch {
            logger.warning("could not publish a presence event", metadata: ["chat.error": "\(error)"])
        }
    }
}

/// The presence service's metrics: users and connections online (read from Redis on each
/// scrape, so every instance reports the same truth) and the transitions this instance announced.
struct PresenceMetrics: Sendable {
    let cameOnline: Counter
    let wentOffline: Counter

    init(runtime: ChatRuntime) {
        let registry = runtime.metrics
        let help = "Presence transitions announced by this instance."
        cameOnline = registry.counter("chat_presence_transitions_total", help: help, labels: [("to", "online")])
        wentOffline = registry.counter("chat_presence_transitions_total", help: help, labels: [("to", "offline")])
        let users = registry.gauge("chat_presence_online_users", help: "Users with at least one live connection.")
        let connections = registry.gauge("chat_presence_connections", help: "Live connections on all gateways.")
        let typing = registry.gauge("chat_presence_typing", help: "Users typing now.")
        let redis = runtime.redis
        let keys = runtime.keys
        runtime.scrape.add {
            guard let replies = try? await redis.pipeline([["SCARD", keys.presenceOnline], ["ZCARD", keys.presenceExpiry], ["ZCARD", keys.presenceTyping]]),
                  replies.count == 3 else { return }
            users.set(Double(replies[0].int ?? 0))
            connections.set(Double(replies[1].int ?? 0))
            typing.set(Double(replies[2].int ?? 0))
        }
    }
}
