import ChatCore
import Foundation
import Logging
import RedisClient
import ServiceLifecycle
import Synchronization

/// Settings of the Socket.IO layer.
public struct RealtimeConfiguration: Sendable {
    public var gatewayID: String
    public var messageRate: Double = 20
    public var messageBurst: Double = 40
    public var typingRate: Double = 5
    public var typingBurst: Double = 10
    /// Other events (read marks, sync, user_joined) per second per user.
    public var otherRate: Double = 50
    public var otherBurst: Double = 100
    /// Messages one `sync` replays at most (kept well under the outbound queue).
    public var syncLimit = 500
    /// A socket's CONNECT attempts refused before its connection is closed.
    public var maximumFailedConnects = 5
    /// Presence: connections are kept alive with a heartbeat every third of this.
    public var presenceTTL: Duration = .seconds(30)
    /// CONNECTs the gateway works on at once; the others wait their turn (``AdmissionGate``),
    /// so a herd of sockets coming back does not stall everyone's sends.
    public var admissionLimit = 16
    /// After at least this many CONNECTs waited their turn, once none waits, the memory
    /// their tasks used is given back to the system (``MemoryRelease``), and again each
    /// time this many sockets have left; 0: never.
    public var releaseMemoryAfter = 256

    public init(gatewayID: String) { self.gatewayID = gatewayID }

    public init(_ configuration: ChatConfiguration) {
        gatewayID = configuration.gatewayID
        messageRate = configuration.messageRate
        messageBurst = configuration.messageBurst
        typingRate = configuration.typingRate
        typingBurst = configuration.typingBurst
        presenceTTL = configuration.presenceTTL
        admissionLimit = configuration.admissionLimit
        releaseMemoryAfter = configuration.releaseMemoryAfter
    }
}

/// The Socket.IO v5 server on the default namespace: authenticates sockets, turns client
/// events into store commands and queries, and fans out what Redis publishes on
/// `user:{email}` to that user's sockets on this gateway.
///
/// One subscription per user per gateway, shared by all of their sockets here, made
/// before the CONNECT is answered and dropped when their last socket leaves.
public final class RealtimeServer: EngineDelegate, Service, Sendable {
    let configuration: RealtimeConfiguration
    let engineConfiguration: EngineConfiguration
    let store: StoreClient
    let tokens: TokenService
    let redis: RedisClient
    let keys: RedisKeys
    let subscriber: RedisSubscriber
    let logger: Logger
    let metrics: GatewayMetrics
    /// CONNECTs worked on at once (`configuration.admissionLimit`).
    let admission: AdmissionGate
    /// Gives memory back after a burst of CONNECTs (the gate calls it) or of disconnects.
    private let memoryRelease: MemoryRelease
    /// Sockets detached so far: every `releaseMemoryAfter` of them asks for a release.
    private let detachedCount = Atomic(0)

    struct UserSockets {
        var sockets: [String: ClientConnection] = [:]
        var waiters: [CheckedContinuation<Void, Never>] = []
        var send: TokenBucket
        var typing: TokenBucket
        var other: TokenBucket
    }

    enum Limit: String {
        case send, typing, other
        var name: String { rawValue }
    }

    private let users = Mutex<[String: UserSockets]>([:])
    private let draining = Mutex(false)
    private let pendingSubscriptions = Mutex<Set<String>>([])
    private let subscribed = Mutex<Set<String>>([])
    private let lastPrepared = Mutex<Prepared?>(nil)
    private let lastBatch = Mutex<(payload: [UInt8], events: [Prepared])?>(nil)
    private let wake: AsyncStream<Void>
    private let wakeContinuation: AsyncStream<Void>.Continuation

    public init(configuration: RealtimeConfiguration, engineConfiguration: EngineConfiguration, store: StoreClient, tokens: TokenService,
                redis: RedisClient, keys: RedisKeys, subscriber: RedisSubscriber, logger: Logger, metrics: GatewayMetrics = GatewayMetrics()) {
        self.metrics = metrics
        self.configuration = configuration
        self.engineConfiguration = engineConfiguration
        let release = MemoryRelease(released: { released in
            metrics.memoryReleases.increment()
            metrics.memoryReleased.increment(by: Int64(released.bytes))
            logger.notice("gave memory back to the system after a burst of CONNECTs or of sockets leaving",
                          metadata: ["chat.bytes": "\(released.bytes)", "chat.ms": "\(released.took.milliseconds)"])
        })
        self.memoryRelease = release
        self.admission = AdmissionGate(limit: max(1, configuration.admissionLimit),
                                       burst: configuration.releaseMemoryAfter > 0 ? configuration.releaseMemoryAfter : .max) { _ in release.request() }
        self.store = store
        self.tokens = tokens
        self.redis = redis
        self.keys = keys
        self.subscriber = subscriber
        self.logger = logger
        (wake, wakeContinuation) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    /// Keeps subscriptions in step with connected users, and ends sockets whose token expired.
    public func run() async throws {
        await cancelWhenGracefulShutdown {
            await withDiscardingTaskGroup { group in
                group.addTask { await self.reconcileSubscriptions() }
                group.addTask {
                    while (try? await Task.sleep(for: self.configuration.presenceTTL / 3)) != nil { await self.heartbeat() }
                }
                group.addTask {
                    while (try? await Task.sleep(for: .seconds(1))) != nil {
                        let now = Int64(Date().timeIntervalSince1970)
                        for connection in self.allConnections() where (connection.claims?.exp ?? .max) <= now {
                            connection.endSession(ChatError(.unauthorized, "the access token has expired; log in again"))
                        }
                    }
                }
            }
        }
    }

    // MARK: Presence

    /// Tells the presence service a socket connected or left.
    func presence(_ type: PresenceCommandType, conn: String, user: String) async {
        do {
            try await redis.xadd(keys.presenceCommands, fields: [("type", type.rawValue), ("user", user), ("conn", conn), ("gateway", configuration.gatewayID)],
                                 trim: .maxLength(100_000))
        } catch {
            // The heartbeat (connect) or the expiry (disconnect) puts it right.
            logger.warning("could not report presence", metadata: ["chat.error": "\(error)"])
        }
    }

    /// Every connected socket here is alive: one pipeline of heartbeat entries (500 connections each).
    func heartbeat() async {
        let live = allConnections().compactMap { connection in connection.claims.map { "\(connection.socketID) \($0.sub)" } }
        guard !live.isEmpty else { return }
        let commands = stride(from: 0, to: live.count, by: 500).map { start in
            RedisClient.xaddCommand(keys.presenceCommands, fields: [("type", PresenceCommandType.heartbeat.rawValue), ("gateway", configuration.gatewayID),
                                                                   ("conns", live[start..<min(live.count, start + 500)].joined(separator: "\n"))],
                                    trim: .maxLength(100_000))
        }
        do { _ = try await redis.pipeline(commands) } catch { logger.warning("could not send the presence heartbeat", metadata: ["chat.error": "\(error)"]) }
    }

    /// Distinct users with a socket here.
    public var userCount: Int { users.withLock { $0.values.count { !$0.sockets.isEmpty } } }

    /// The gateway is stopping: events that would start new work are refused (with a
    /// reason that tells the client to reconnect), while answers already owed still arrive.
    public var isDraining: Bool { draining.withLock { $0 } }

    public func startDraining() { draining.withLock { $0 = true } }

    /// Sockets connected as `email` on this gateway (tests).
    public func socketCount(of email: String) -> Int { users.withLock { $0[email.lowercased()]?.sockets.count ?? 0 } }

    func allConnections() -> [ClientConnection] { users.withLock { $0.values.flatMap { $0.sockets.values } } }

    // MARK: Engine delegate

    public func opened(_ session: EngineSession) {
        let connection = ClientConnection(session: session, server: self)
        // The engine's heartbeat closes a session that has not connected in time (no task per socket for it).
        session.consume({ await connection.handle($0) }, finished: { connection.disconnected() })
    }

    // MARK: Users and subscriptions

    /// Registers a connected socket and returns once its user's channel is subscribed.
    func attach(_ connection: ClientConnection, email: String) async {
        users.withLock { users in
            users[email, default: UserSockets(
                send: TokenBucket(rate: configuration.messageRate, burst: configuration.messageBurst),
                typing: TokenBucket(rate: configuration.typingRate, burst: configuration.typingBurst),
                other: TokenBucket(rate: configuration.otherRate, burst: configuration.otherBurst))].sockets[connection.socketID] = connection
        }
        metrics.connections.increment()
        await withCheckedContinuation { continuation in
            users.withLock { $0[email]?.waiters.append(continuation) }
            requestReconcile(email)
        }
    }

    func detach(_ connection: ClientConnection, email: String) {
        if users.withLock({ $0[email]?.sockets.removeValue(forKey: connection.socketID) }) != nil {
            metrics.connections.decrement()
            // Thousands of sockets leaving at once (a network blip, clients going away) free
            // what they held, and the allocator keeps it: every `releaseMemoryAfter` of them
            // asks for a release (at most one every 10 s, and one more after the last ask).
            let after = configuration.releaseMemoryAfter
            if after > 0, detachedCount.add(1, ordering: .relaxed).newValue % after == 0 { memoryRelease.request() }
        }
        requestReconcile(email)
    }

    /// Seconds to wait when `email` is over the limit, or nil.
    func throttle(_ email: String, _ limit: Limit) -> Double? {
        users.withLock { users in
            switch limit {
            case .send: return users[email]?.send.take()
            case .typing: return users[email]?.typing.take()
            case .other: return users[email]?.other.take()
            }
        }
    }

    private func requestReconcile(_ email: String) {
        pendingSubscriptions.withLock { _ = $0.insert(email) }
        wakeContinuation.yield()
    }

    /// The one task that (un)subscribes: it compares who is connected with what is
    /// subscribed, so racing connects and disconnects of one user always end right.
    private func reconcileSubscriptions() async {
        for await _ in wake {
            let emails = pendingSubscriptions.withLock { pending in
                defer { pending = [] }
                return pending
            }
            let wanted = users.withLock { users in Set(emails.filter { !(users[$0]?.sockets.isEmpty ?? true) }) }
            let current = subscribed.withLock { $0 }
            let add = wanted.subtracting(current)
            let drop = emails.subtracting(wanted).intersection(current)
            do {
                if !add.isEmpty {
                    try await subscriber.subscribe(add.map(keys.user))
                    subscribed.withLock { $0.formUnion(add) }
                }
                if !drop.isEmpty {
                    try await subscriber.unsubscribe(drop.map(keys.user))
                    subscribed.withLock { $0.subtract(drop) }
                }
            } catch {
                logger.warning("could not change subscriptions", metadata: ["chat.error": "\(error)"])
            }
            let nowSubscribed = subscribed.withLock { $0 }
            let waiters = users.withLock { users -> [CheckedContinuation<Void, Never>] in
                var waiters: [CheckedContinuation<Void, Never>] = []
                for email in emails {
                    waiters += users[email]?.waiters ?? []
                    users[email]?.waiters = []
                    if users[email]?.sockets.isEmpty == true, !nowSubscribed.contains(email) { users[email] = nil }
                }
                return waiters
            }
            for waiter in waiters { waiter.resume() }
        }
    }

    // MARK: Fan-out

    /// What the store and presence publish on `user:{email}`.
    struct Envelope: Decodable {
        var event: String
        var data: JSONValue
        var gateway: String?
        var request: String?
    }

    /// Events only gateways read.
    static let revokeEvent = "session_revoked"

    /// Hands a message from `user:{email}` to that user's sockets here: the event's `data`
    /// is forwarded as published, reading only the fields needed (see ``JSONScan``). A group
    /// message reaches every member's channel with the same bytes, so the last event read is
    /// kept and the next identical one goes straight to the sockets.
    ///
    /// Several events of one of the store's batches come in one message (``PublishBatch``),
    /// and a group's members get the same batch: the last batch read is kept the same way.
    public func deliver(email: String, payload: [UInt8]) {
        if let parts = PublishBatch.parts(payload) { return deliver(email: email, batch: payload, parts: parts) }
        if let prepared = lastPrepared.withLock({ last in last?.payload == payload ? last : nil }) {
            return fanOut(email: email, prepared)
        }
        guard let prepared = Self.prepare(payload) else { return deliverDecoded(email: email, payload: payload) }
        lastPrepared.withLock { $0 = prepared }
        fanOut(email: email, prepared)
    }

    private func deliver(email: String, batch: [UInt8], parts: [[UInt8]]) {
        if let prepared = lastBatch.withLock({ last in last?.payload == batch ? last?.events : nil }) {
            for event in prepared { fanOut(email: email, event) }
            return
        }
        var prepared: [Prepared] = []
        var complete = true
        for part in parts {
            if let event = Self.prepare(part) {
                fanOut(email: email, event)
                prepared.append(event)
            } else {
                // Read the slow way, in its place; a batch with such an event is not kept.
                deliverDecoded(email: email, payload: part)
                complete = false
            }
        }
        if complete { lastBatch.withLock { $0 = (batch, prepared) } }
    }

    /// An event read with ``JSONScan`` and ready for the sockets; nil for what the fast path
    /// does not read (escaped fields, session revocations), which ``deliverDecoded`` handles.
    static func prepare(_ payload: [UInt8]) -> Prepared? {
        guard let envelope = JSONScan(payload), let event = envelope.string("event"), event != Self.revokeEvent, let data = envelope.range("data"),
              envelope.isNull("gateway") || envelope.string("gateway") != nil, envelope.isNull("request") || envelope.string("request") != nil,
              let fields = payload[data.lowerBound] == UInt8(ascii: "{") ? JSONScan(payload, in: data) : JSONScan([UInt8]("{}".utf8)) else {
            return nil
        }
        var delivered: Delivered?
        if event == ServerEventName.receiveMessage.rawValue || event == ServerEventName.messageSentConfirmed.rawValue {
            guard let conversation = fields.string("conversation_id"), let seq = fields.integer("seq") else { return nil }
            delivered = Delivered(conversationID: conversation, seq: seq)
        }
        return Prepared(
            payload: payload, event: event, text: SocketPacket.eventText(event, json: String(decoding: payload[data], as: UTF8.self)),
            gateway: envelope.string("gateway"), request: envelope.string("request"), delivered: delivered,
            sentAt: event == ServerEventName.receiveMessage.rawValue ? fields.time("timestamp") : nil)
    }

    /// A user event read and ready for the sockets, with the bytes it was read from.
    struct Prepared: Sendable {
        var payload: [UInt8]
        var event: String
        var text: String
        var gateway: String?
        var request: String?
        var delivered: Delivered?
        /// A message's own time, for the delivery latency.
        var sentAt: Date?
    }

    /// The slow path: the whole envelope decoded (escaped fields, session revocations).
    func deliverDecoded(email: String, payload: [UInt8]) {
        guard let envelope = try? JSONDecoder().decode(Envelope.self, from: Data(payload)) else {
            logger.warning("dropped an unreadable user event", metadata: ["chat.user": "\(email)"])
            return
        }
        let connections = users.withLock { users in users[email].map { Array($0.sockets.values) } ?? [] }
        if envelope.event == Self.revokeEvent {
            // One token's sockets (a logout), those of tokens issued before a password change or
            // a log-out everywhere, or every socket of the user (disabled).
            let tokenID = envelope.data["jti"]?.stringValue
            if case .number(let before)? = envelope.data["issued_before"] {
                for connection in connections where (connection.claims?.issuedAtMilliseconds).map({ Double($0) < before }) ?? false {
                    connection.endSession(ChatError(.unauthorized, "this session was ended (the account's password was changed, or it was logged out everywhere); log in again"))
                }
                return
            }
            for connection in connections where tokenID == nil || connection.claims?.jti == tokenID {
                connection.endSession(ChatError(.unauthorized, "this session was ended (logged out or account disabled); log in again"))
            }
            return
        }
        fanOut(email: email, Prepared(
            payload: payload, event: envelope.event, text: SocketPacket.eventText(envelope.event, json: envelope.data.text),
            gateway: envelope.gateway, request: envelope.request, delivered: Self.delivered(envelope.event, envelope.data),
            sentAt: envelope.event == ServerEventName.receiveMessage.rawValue ? envelope.data["timestamp"]?.stringValue.flatMap(ChatJSON.parseTimestamp) : nil))
    }

    private static let droppableEvents: Set<String> = [ServerEventName.userTyping.rawValue, ServerEventName.userOnline.rawValue, ServerEventName.userOffline.rawValue]

    private func fanOut(email: String, _ prepared: Prepared) {
        let connections = users.withLock { users in users[email].map { Array($0.sockets.values) } ?? [] }
        let priority: OutboundQueue.Priority = Self.droppableEvents.contains(prepared.event) ? .droppable : .essential
        var pushed = 0
        for connection in connections {
            // The socket that asked gets its own answer through its request, exactly once.
            if prepared.gateway == configuration.gatewayID, let request = prepared.request, request.hasPrefix(connection.socketID + ":") { continue }
            if connection.push(prepared.text, priority, delivered: prepared.delivered) { pushed += 1 }
        }
        guard pushed > 0 else { return }
        metrics.eventOut(prepared.event).increment(by: Int64(pushed))
        if let sentAt = prepared.sentAt { metrics.delivered(sentAt: sentAt) }
    }

    /// A message a socket was given: its conversation and its seq there (which name it: see ``GivenMessages``).
    struct Delivered: Sendable, Equatable {
        var conversationID: String
        var seq: Int64
    }

    /// For a message event, the message it carries (sockets remember what they have).
    static func delivered(_ event: String, _ data: JSONValue) -> Delivered? {
        guard event == ServerEventName.receiveMessage.rawValue || event == ServerEventName.messageSentConfirmed.rawValue,
              let conversation = data["conversation_id"]?.stringValue, case .number(let seq)? = data["seq"] else { return nil }
        return Delivered(conversationID: conversation, seq: Int64(seq))
    }

    /// Redis dropped the subscriber's connection (it is reconnecting): each socket notes what
    /// it had been given so far, where its replay will start. The subscriber calls it after
    /// the last message of the old connection and before the first of the new one, so
    /// nothing that arrives on the new connection moves that point.
    public func subscriptionLost() {
        for connection in allConnections() { connection.subscriptionLost() }
    }

    /// The subscriber is back: what was published meanwhile is lost, so every socket here
    /// replays what it missed from the store.
    public func resynchronize() {
        let connections = allConnections()
        logger.notice("resynchronizing sockets after a lost subscription", metadata: ["chat.sockets": "\(connections.count)"])
        for connection in connections { Task { await connection.resynchronize() } }
    }
}
