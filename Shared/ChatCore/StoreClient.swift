import DequeModule
import Foundation
import Logging
import RedisClient
import ServiceLifecycle
import Synchronization

/// The asking side of the store protocol (gateways, `chatctl`): writes go to `chat:commands`, queries are
/// published on `store:queries`, and answers come back on `gateway:{id}`, matched by request id.
///
/// Every round trip is bounded: no answer within ``timeout`` is `unavailable` (HTTP 503),
/// never a hang.
public final class StoreClient: Sendable {
    public let gatewayID: String
    public let timeout: Duration
    private let redis: RedisClient
    private let keys: RedisKeys
    private struct Waiter {
        let complete: @Sendable (Result<StoreReply, any Error>) -> Void
        /// For a write: what to do with its answer should it come after the timeout.
        var late: (@Sendable (StoreReply) -> Void)?
    }

    /// The requests waiting for an answer, and their deadlines in the order they were made
    /// (every request has the same timeout, so that is deadline order). One sweeper ends the
    /// overdue ones: a timer task per request cost about 6 % of a gateway's CPU.
    private struct Pending {
        var waiters: [String: Waiter] = [:]
        /// Answered requests stay here until their deadline passes.
        var deadlines = Deque<(request: String, deadline: ContinuousClock.Instant)>()
    }

    private let waiting = Mutex(Pending())

    /// Writes answered `unavailable` by the timeout, whose answer may still come: the store
    /// applies a command whenever it reaches it. At most `limit` are followed, each for
    /// `lifetime`. When full, new ones are not followed: the store applies commands in
    /// stream order, so the oldest are the ones whose answers come first.
    ///
    /// A write is added before its timeout is delivered and armed after: an answer that
    /// comes in between is parked until then, so the late answer always follows the timeout.
    struct LateWrites {
        struct Entry {
            var handler: @Sendable (StoreReply) -> Void
            var armed = false
            var parked: StoreReply?
        }

        var entries: [String: Entry] = [:]
        /// In the order they timed out (answered ones stay until they expire or make room).
        var order = Deque<(request: String, expires: ContinuousClock.Instant)>()

        /// Follows `request`, not armed yet; false if full.
        mutating func add(_ request: String, _ handler: @escaping @Sendable (StoreReply) -> Void, lifetime: Duration, limit: Int,
                          now: ContinuousClock.Instant = .now) -> Bool {
            while let first = order.first, first.expires <= now || order.count >= 2 * limit {
                order.removeFirst()
                entries[first.request] = nil
            }
            guard entries.count < limit else { return false }
            entries[request] = Entry(handler: handler)
            order.append((request, now + lifetime))
            return true
        }

        /// The timeout has been delivered: the handler and the answer, if one was parked.
        mutating func arm(_ request: String) -> (@Sendable (StoreReply) -> Void, StoreReply)? {
            guard var entry = entries[request] else { return nil }
            guard let parked = entry.parked else {
                entry.armed = true
                entries[request] = entry
                return nil
            }
            entries[request] = nil
            return (entry.handler, parked)
        }

        /// An answer nobody waits for: the handler to give it to, or nil (not followed, or
        /// parked until the timeout has been delivered).
        mutating func take(_ reply: StoreReply) -> (@Sendable (StoreReply) -> Void)? {
            guard var entry = entries[reply.request] else { return nil }
            guard entry.armed else {
                if entry.parked == nil { entry.parked = reply }
                entries[reply.request] = entry
                return nil
            }
            entries[reply.request] = nil
            return entry.handler
        }
    }

    private let late = Mutex(LateWrites())
    /// How many timed-out writes are followed for a late answer (a few hundred bytes each).
    public let lateLimit: Int
    static let lateLifetime: Duration = .seconds(600)

    /// Writes whose late answer is still awaited (see ``submit(_:user:payload:request:onLateReply:onReply:)``).
    public var lateWrites: Int { late.withLock { $0.entries.count } }

    /// Commands and queries sent and not yet answered (a stopping gateway waits for them).
    public var pendingRequests: Int { waiting.withLock { $0.waiters.count } }

    public init(redis: RedisClient, keys: RedisKeys, gatewayID: String, timeout: Duration = .seconds(5), lateLimit: Int = 100_000) {
        self.lateLimit = lateLimit
        self.redis = redis
        self.keys = keys
        self.gatewayID = gatewayID
        self.timeout = timeout
        // Overdue requests are ended within a tenth of a second (a quarter of the timeout if that is shorter).
        let interval = max(.milliseconds(1), min(.milliseconds(100), timeout / 4))
        Task.detached { [weak self] in
            while !Task.isCancelled {
                try? await Task.sleep(for: interval)
                guard let self else { return }
                self.expire(now: .now)
            }
        }
    }

    /// Ends every request whose deadline has passed with `unavailable`; a write's late
    /// handler is kept for its answer (see ``fail(_:_:awaitLateReply:)``).
    private func expire(now: ContinuousClock.Instant) {
        let overdue = waiting.withLock { pending -> [String] in
            var overdue: [String] = []
            while let first = pending.deadlines.first, first.deadline <= now {
                pending.deadlines.removeFirst()
                if pending.waiters[first.request] != nil { overdue.append(first.request) }
            }
            return overdue
        }
        for request in overdue {
            fail(request, ChatError(.unavailable, "the message store did not answer in time; retry (sends are safe to retry with the same client_id)"),
                 awaitLateReply: true)
        }
    }

    /// The channel to feed to ``handleReply(_:)``.
    public var replyChannel: String { keys.gateway(gatewayID) }

    /// Hands every answer on ``replyChannel`` to ``handleReply(_:)`` until `subscriber` ends.
    public func pumpReplies(from subscriber: RedisSubscriber) async {
        // Not `events.cancelOnGracefulShutdown()`: that merges the stream with the shutdown
        // signal, a task hop and a merge step for every event.
        await cancelWhenGracefulShutdown { [self] in
            for await event in subscriber.events {
                if case .message(let message) = event, message.channel == replyChannel { handleReply(message.payload) }
            }
        }
    }

    /// Hands an answer from `gateway:{id}` to whoever waits for it. An answer that comes
    /// after the timeout goes to the write's `onLateReply`, if it had one; otherwise it is dropped.
    public func handleReply(_ payload: [UInt8]) {
        // Answers to several requests of one of the store's batches come in one message.
        if let parts = PublishBatch.parts(payload) {
            for part in parts { handleReply(part) }
            return
        }
        guard let reply = Self.readReply(payload) else { return }
        guard let waiter = waiting.withLock({ $0.waiters.removeValue(forKey: reply.request) }) else {
            late.withLock { $0.take(reply) }?(reply)
            return
        }
        waiter.complete(.success(reply))
    }

    /// A store's answer as published on `gateway:{id}`, in any of its forms; nil if it is none.
    public static func readReply(_ payload: [UInt8]) -> StoreReply? {
        fastReply(payload) ?? (try? ChatJSON.makeDecoder().decode(StoreReply.self, from: Data(payload)))
    }

    /// A successful answer read with ``JSONScan`` (every send's confirmation comes this way);
    /// nil for an error or anything unusual, which the decoder then reads.
    static func fastReply(_ payload: [UInt8]) -> StoreReply? {
        guard let scan = JSONScan(payload), let request = scan.string("request") ?? scan.decodedString("request"), scan.isNull("error") else { return nil }
        // The answer to a query asked with `raw_result`: its result as it is.
        if let raw = scan.range("result_json") { return StoreReply(request: request, result: String(decoding: payload[raw], as: UTF8.self)) }
        if scan.isNull("result") { return StoreReply(request: request) }
        guard let result = scan.decodedString("result") else { return nil }
        return StoreReply(request: request, result: result)
    }

    /// Sends a write without waiting for its answer: `onReply` runs exactly once, with the
    /// store's answer (where ``replyChannel`` is read: the subscriber's task or event loop, so keep it short) or with
    /// `unavailable` after ``timeout``. Returns once the command is in the stream, so writes
    /// submitted one after another from one task reach the store in that order.
    ///
    /// A timed-out write is still in the stream, and the store applies it when it gets there
    /// (a backlog, a restart). Its answer then goes to `onLateReply`, at most once and only
    /// after `onReply` had the timeout: up to ``lateLimit`` such writes are followed (the
    /// oldest first), each for 10 minutes.
    public func submit<Body: Encodable & Sendable>(_ type: StoreCommandType, user: String, body: Body, request: String = TimeOrderedID.make(),
                                                   onLateReply: (@Sendable (StoreReply) -> Void)? = nil,
                                                   onReply: @escaping @Sendable (Result<StoreReply, any Error>) -> Void) async throws {
        try await submit(type, user: user, payload: String(decoding: try ChatJSON.makeEncoder().encode(body), as: UTF8.self), request: request,
                         onLateReply: onLateReply, onReply: onReply)
    }

    /// `submit` with the body already in JSON.
    public func submit(_ type: StoreCommandType, user: String, payload: String, request: String = TimeOrderedID.make(),
                       onLateReply: (@Sendable (StoreReply) -> Void)? = nil,
                       onReply: @escaping @Sendable (Result<StoreReply, any Error>) -> Void) async throws {
        let command = StoreCommand(type: type, user: user, gateway: gatewayID, request: request, payload: payload)
        register(request, onReply, late: onLateReply)
        do {
            try await redis.xadd(keys.commands, fields: command.fields)
        } catch {
            waiting.withLock { _ = $0.waiters.removeValue(forKey: request) }
            throw ChatError(.unavailable, "the message store is unreachable; retry (sends are safe to retry with the same client_id)")
        }
    }

    /// The deployment's one clock, Redis's (`TIME`): a session cutoff and the issue time of the
    /// tokens it is compared with are read from it on every gateway and in `chatctl`, so a
    /// gateway whose clock is behind another's neither refuses tokens issued after a password
    /// change nor lets through ones issued before it.
    public func sharedNow() async throws -> Date {
        do {
            return Date(timeIntervalSince1970: TimeInterval(try await redis.time()) / 1_000_000)
        } catch {
            throw ChatError(.unavailable, "Redis is unreachable; retry")
        }
    }

    /// Sends a write and waits for the store to commit it (or refuse it). `queued` runs once the
    /// command is in the stream, before the answer is awaited.
    public func command<Body: Encodable & Sendable>(_ type: StoreCommandType, user: String, body: Body, request: String = TimeOrderedID.make(),
                                                    queued: @Sendable () async throws -> Void = {}) async throws -> StoreReply {
        let slot = ReplySlot()
        try await submit(type, user: user, body: body, request: request) { slot.complete($0) }
        try await queued()
        return try await wait(for: slot, request: request)
    }

    /// Asks a query and waits for the answer.
    public func query(_ kind: StoreQuery.Kind, user: String, _ fill: (inout StoreQuery) -> Void = { _ in }) async throws -> StoreReply {
        let slot = ReplySlot()
        let request = await ask(kind, user: user, fill) { slot.complete($0) }
        return try await wait(for: slot, request: request)
    }

    private func wait(for slot: ReplySlot, request: String) async throws -> StoreReply {
        try await withTaskCancellationHandler {
            try await slot.value()
        } onCancel: {
            self.fail(request, ChatError(.unavailable, "the request was cancelled"))
        }
    }

    /// Asks a query without waiting: `onReply` runs exactly once, like ``submit(_:user:body:request:onReply:)``.
    /// Returns the request id.
    @discardableResult
    public func ask(_ kind: StoreQuery.Kind, user: String, _ fill: (inout StoreQuery) -> Void = { _ in },
                    onReply: @escaping @Sendable (Result<StoreReply, any Error>) -> Void) async -> String {
        var query = StoreQuery(kind: kind, user: user, gateway: gatewayID, request: TimeOrderedID.make())
        query.rawResult = true
        fill(&query)
        let request = query.request
        register(request, onReply)
        do {
            let text = String(decoding: try ChatJSON.makeEncoder().encode(query), as: UTF8.self)
            guard try await redis.publish(text, to: keys.storeQueries) > 0 else { throw ChatError(.unavailable, "the message store is not running") }
        } catch {
            fail(request, (error as? ChatError) ?? ChatError(.unavailable, "the message store is unreachable"))
        }
        return request
    }

    private func register(_ request: String, _ complete: @escaping @Sendable (Result<StoreReply, any Error>) -> Void,
                          late: (@Sendable (StoreReply) -> Void)? = nil) {
        let deadline = ContinuousClock.now + timeout
        waiting.withLock { pending in
            pending.waiters[request] = Waiter(complete: complete, late: late)
            pending.deadlines.append((request, deadline))
        }
    }

    /// Sends a write nobody waits for (audit lines); it still names this gateway for the audit log.
    public func fireAndForget<Body: Encodable & Sendable>(_ type: StoreCommandType, user: String, body: Body, request: String? = nil) async {
        guard let command = try? StoreCommand(type: type, user: user, gateway: gatewayID, request: request, body: body) else { return }
        _ = try? await redis.xadd(keys.commands, fields: command.fields)
    }

    /// The answer's result decoded as `T`, or its error thrown.
    public func result<T: Decodable>(_ reply: StoreReply, as type: T.Type = T.self) throws -> T {
        if let error = reply.error { throw error }
        guard let result = reply.result else { throw ChatError(.internal, "the store sent an empty answer") }
        return try ChatJSON.makeDecoder().decode(T.self, from: Data(result.utf8))
    }

    /// Ends a request with `error`. After a timeout (`awaitLateReply`), a write's late
    /// handler is kept for its answer. It is added before the waiter goes, so an answer
    /// racing the timeout reaches one of the two, and armed once the timeout is delivered,
    /// so the late answer never comes before it.
    private func fail(_ request: String, _ error: ChatError, awaitLateReply: Bool = false) {
        guard let (waiter, followed) = waiting.withLock({ pending -> (Waiter, Bool)? in
            guard let waiter = pending.waiters.removeValue(forKey: request) else { return nil }
            guard awaitLateReply, let handler = waiter.late else { return (waiter, false) }
            return (waiter, late.withLock { $0.add(request, handler, lifetime: Self.lateLifetime, limit: lateLimit) })
        }) else { return }
        waiter.complete(.failure(error))
        if followed, let (handler, reply) = late.withLock({ $0.arm(request) }) { handler(reply) }
    }
}

/// One answer that may come before or after someone waits for it.
private final class ReplySlot: Sendable {
    private struct State {
        var result: Result<StoreReply, any Error>?
        var waiter: CheckedContinuation<StoreReply, any Error>?
    }

    private let state = Mutex(State())

    func complete(_ result: Result<StoreReply, any Error>) {
        let waiter = state.withLock { s -> CheckedContinuation<StoreReply, any Error>? in
            guard s.result == nil else { return nil }
            s.result = result
            defer { s.waiter = nil }
            return s.waiter
        }
        waiter?.resume(with: result)
    }

    func value() async throws -> StoreReply {
        try await withCheckedThrowingContinuation { continuation in
            let ready = state.withLock { s -> Result<StoreReply, any Error>? in
                if let result = s.result { return result }
                s.waiter = continuation
                return nil
            }
            if let ready { continuation.resume(with: ready) }
        }
    }
}
