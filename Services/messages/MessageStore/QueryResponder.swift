import ChatCore
import Foundation
import Logging
import RedisClient
import ServiceLifecycle
import Synchronization

/// Answers gateways' queries published on `store:queries`, replying on `gateway:{id}`.
///
/// Queries run on the database pool's readers, so they never wait for (or hold up)
/// the command batches, and on threads of their own (``QueryLane``), so they never take
/// the threads the command batches run on. Reads of conversations, history and search
/// are audited; the audit lines of queries answered at the same time share a transaction
/// (``AuditGroupCommit``).
public final class QueryResponder: Service, Sendable {
    private let store: MessageStore
    private let redis: RedisClient
    private let subscriber: RedisSubscriber
    private let keys: RedisKeys
    private let logger: Logger
    private let lane: QueryLane
    /// Audit lines of reads, committed before each answer, in shared transactions.
    let audit: AuditGroupCommit
    private let refusals = Mutex(LogThrottle())

    /// `width` queries run at a time, and at most `backlog` more wait; beyond that a query
    /// is answered `unavailable` at once.
    public init(store: MessageStore, redis: RedisClient, subscriber: RedisSubscriber, keys: RedisKeys, logger: Logger, width: Int = 4, backlog: Int = 1000) {
        self.store = store
        self.redis = redis
        self.subscriber = subscriber
        self.keys = keys
        self.logger = logger
        self.lane = QueryLane(width: width, backlog: backlog)
        self.audit = AuditGroupCommit(store: store)
    }

    public func run() async throws {
        try await subscriber.subscribe([keys.storeQueries])
        // Not `events.cancelOnGracefulShutdown()`: that merges the stream with the shutdown
        // signal, a task hop and a merge step for every event.
        let (subscriber, channel) = (subscriber, keys.storeQueries)
        await cancelWhenGracefulShutdown {
            await withDiscardingTaskGroup { group in
                for await event in subscriber.events {
                    guard case .message(let message) = event, message.channel == channel else { continue }
                    group.addTask { await self.answer(message.payload) }
                }
            }
        }
    }

    /// Decodes, runs and replies to one query; a query that cannot be decoded is logged and dropped.
    func answer(_ payload: [UInt8]) async {
        guard let query = try? ChatJSON.makeDecoder().decode(StoreQuery.self, from: Data(payload)), !query.gateway.isEmpty else {
            logger.warning("dropped a malformed query")
            return
        }
        let answered = await lane.run { [self] in
            do {
                return StoreReply(request: query.request, result: try result(of: query))
            } catch {
                return StoreReply(request: query.request, error: ChatError.wrap(error))
            }
        }
        let reply = answered ?? StoreReply(request: query.request, error: ChatError(.unavailable, "the store is busy; try again"))
        if answered == nil, let held = refusals.withLock({ $0.admit() }) {
            logger.warning("refused a query: the backlog is full", metadata: ["chat.backlog": "\(lane.backlog)", "chat.refusals.unlogged": "\(held)"])
        }
        do {
            let text: String
            if reply.error == nil, let result = reply.result {
                text = JSONText.storeReply(request: reply.request, result: result, raw: query.rawResult == true)
            } else {
                text = String(decoding: try ChatJSON.makeEncoder().encode(reply), as: UTF8.self)
            }
            try await redis.publish(text, to: keys.gateway(query.gateway))
        } catch {
            logger.warning("could not reply to a query", metadata: ["chat.error": "\(error)", "chat.query": "\(query.kind.rawValue)"])
        }
    }

    /// The query's answer as JSON.
    func result(of query: StoreQuery) throws -> String {
        let encoder = ChatJSON.makeEncoder()
        func json<T: Encodable>(_ value: T) throws -> String { String(decoding: try encoder.encode(value), as: UTF8.self) }
        // Operators' tools (`chatctl`) ask as no user: the audit log's system actor.
        let context = RequestContext(actor: query.user.isEmpty ? nil : query.user, gateway: query.gateway, requestID: query.request)
        let now = Date()

        switch query.kind {
        case .ping:
            return "{}"
        case .login, .checkPassword:
            let user = try store.authenticate(email: query.user, password: query.password ?? "")
            let action = query.kind == .login ? (user == nil ? "login_failed" : "login") : "password_check"
            try audit.record([AuditEntry(at: now, context: context, action: action, target: query.user.lowercased(), outcome: user == nil ? "denied" : "ok")])
            guard let user else { throw ChatError(.unauthorized, "wrong email or password") }
            return try json(user)
        case .me:
            guard let user = try store.user(query.user), !user.disabled else { throw ChatError(.unauthorized, "this account is disabled") }
            return try json(user)
        case .conversations:
            return try store.conversations(for: query.user, now: now).jsonText
        case .conversation:
            return try audited(context, "conversation", target: query.conversationID) {
                try store.conversation(try required(query.conversationID, "conversation_id"), for: query.user, now: now).jsonText
            }
        case .history:
            return try audited(context, "history", target: query.conversationID) {
                try store.history(for: query.user, conversationID: try required(query.conversationID, "conversation_id"),
                                  limit: query.limit ?? 30, before: query.before, skip: query.skip ?? 0, now: now).jsonText
            }
        case .unreadCount:
            let counts = try store.unreadCounts(for: query.user, now: now)
            return try json(UnreadCount(total: counts.total, conversations: counts.byConversation))
        case .searchUsers:
            return try json(store.searchUsers(query.query ?? "", role: query.role, excluding: query.user, limit: query.limit ?? 20))
        case .searchMessages:
            return try audited(context, "search", target: nil) {
                try store.searchMessages(for: query.user, query: query.query ?? "", limit: query.limit ?? 50, now: now).jsonText
            }
        case .listUsers:
            try requireAdmin(query.user)
            return try json(store.users())
        case .dueMessages:
            try requireAdmin(query.user)
            var after: (Date, String)?
            if let cursor = query.query, let colon = cursor.firstIndex(of: ":"), let ms = Int64(cursor[..<colon]) {
                after = (Date(milliseconds: ms), String(cursor[cursor.index(after: colon)...]))
            }
            return try json(store.dueMessages(before: query.before.map(Date.init(milliseconds:)) ?? .distantFuture, limit: query.limit ?? 1000, after: after))
        case .sync:
            return try audited(context, "sync", target: nil) {
                try store.sync(for: query.user, since: query.since ?? [:], after: query.after.map(Date.init(milliseconds:)),
                               receiptsAfter: query.receiptsAfter, limit: query.limit ?? 200, now: now).jsonText
            }
        case .partners:
            return try json(store.partners(of: query.user))
        case .participants:
            return try json(store.participants(of: query.user, conversationID: query.conversationID, receiver: query.query))
        case .adminConversations:
            try requireAdmin(query.user)
            guard query.query != nil || query.held == true else { throw ChatError(.badRequest, "name a participant, or ask for the conversations on legal hold") }
            return try audited(context, "admin.list_conversations", target: query.query?.lowercased() ?? "legal_hold") {
                try json(store.adminConversations(participant: query.query, heldOnly: query.held == true, limit: query.limit ?? 100, now: now))
            }
        case .auditLog:
            try requireAdmin(query.user)
            try audit.record([AuditEntry(at: now, context: context, action: "admin.audit_log", target: nil, outcome: "ok")])
            return try json(store.auditLog(limit: query.limit ?? 100, beforeID: query.before))
        }
    }

    /// Runs a read and writes its audit line, whether it succeeded or was refused.
    private func audited(_ context: RequestContext, _ action: String, target: String?, _ body: () throws -> String) throws -> String {
        do {
            let result = try body()
            try audit.record([AuditEntry(at: Date(), context: context, action: action, target: target, outcome: "ok")])
            return result
        } catch let error as ChatError {
            try audit.record([AuditEntry(at: Date(), context: context, action: action, target: target, outcome: error.code.rawValue)])
            throw error
        }
    }

    /// Admins, or operators' tools (`chatctl`, which send no user).
    private func requireAdmin(_ email: String) throws {
        if email.isEmpty { return }
        guard let user = try store.user(email), user.role == .admin, !user.disabled else { throw ChatError(.forbidden, "only admins may do this") }
    }

    private func required<T>(_ value: T?, _ name: String) throws -> T {
        guard let value else { throw ChatError(.badRequest, "\(name) is required") }
        return value
    }
}
