import ChatCore
import Foundation
import RedisClient

/// The presence state in Redis, changed only through Lua scripts so every transition
/// (first connection of a user, last one gone) is decided atomically, once, even with
/// several presence instances.
///
/// - `presence:conn:{id}` = email, with the TTL (what a gateway keeps alive),
/// - `presence:user:{email}` = set of live connection ids (no TTL: it changes only through
///   these scripts, so a presence service that was down longer than the TTL finds it intact),
/// - `presence:online` = set of the emails with at least one live connection, or whose last
///   one closed less than the grace ago,
/// - `presence:leaving` = emails scored by when their last connection closed (ms), popped
///   once the grace is over if none is back (a connection back within it removes the email
///   and announces nothing),
/// - `presence:expiry` = `conn|email` scored by expiry (ms), popped when overdue,
/// - `presence:last_seen` = hash email → ms,
/// - `presence:typing` = `conversation|email` scored by when typing stops by itself.
public struct PresenceTracker: Sendable {
    let redis: RedisClient
    let keys: RedisKeys
    public let ttl: Duration
    /// How long after a user's last connection closed they go offline (``leave(limit:)``);
    /// zero: at once, in ``disconnect(conn:user:)``.
    public let grace: Duration

    public init(redis: RedisClient, keys: RedisKeys, ttl: Duration, grace: Duration = .zero) {
        self.redis = redis
        self.keys = keys
        self.ttl = ttl
        self.grace = grace
    }

    /// Adds a connection (or refreshes it); returns true when the user was offline before.
    static let connectScript = RedisScript("""
        local p, ttl, now = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
        local came = {}
        for i = 4, #ARGV, 2 do
          local conn, user = ARGV[i], ARGV[i + 1]
          local userKey = p .. 'presence:user:' .. user
          local before = redis.call('SCARD', userKey)
          redis.call('SADD', userKey, conn)
          redis.call('SET', p .. 'presence:conn:' .. conn, user, 'PX', ttl)
          redis.call('ZADD', p .. 'presence:expiry', now + ttl, conn .. '|' .. user)
          -- Back within the grace after the last socket closed: never announced offline.
          if before == 0 and redis.call('ZREM', p .. 'presence:leaving', user) == 0 then
            redis.call('SADD', p .. 'presence:online', user)
            table.insert(came, user)
          end
        end
        return came
        """)

    /// Removes a connection; returns the user's last-seen time (ms) when it was their last one.
    static let disconnectScript = RedisScript("""
        local p, conn, user, now, grace = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5] or '0')
        local userKey = p .. 'presence:user:' .. user
        local removed = redis.call('ZREM', p .. 'presence:expiry', conn .. '|' .. user)
        redis.call('DEL', p .. 'presence:conn:' .. conn)
        redis.call('SREM', userKey, conn)
        if removed == 1 and redis.call('SCARD', userKey) == 0 then
          redis.call('DEL', userKey)
          if grace > 0 then
            -- Still online until the grace is over (``leaveScript``), unless a socket is back.
            redis.call('ZADD', p .. 'presence:leaving', now, user)
            return false
          end
          redis.call('SREM', p .. 'presence:online', user)
          redis.call('HSET', p .. 'presence:last_seen', user, now)
          return now
        end
        return false
        """)

    /// Pops the users whose last socket closed at or before `cutoff` (now minus the grace) and
    /// who have none again; returns `email|lastSeenMs` (when it closed) for each.
    static let leaveScript = RedisScript("""
        local p, cutoff, limit = ARGV[1], ARGV[2], tonumber(ARGV[3])
        local gone = {}
        local due = redis.call('ZRANGEBYSCORE', p .. 'presence:leaving', '-inf', cutoff, 'WITHSCORES', 'LIMIT', 0, limit)
        for i = 1, #due, 2 do
          local user, since = due[i], due[i + 1]
          if redis.call('ZREM', p .. 'presence:leaving', user) == 1 and redis.call('SCARD', p .. 'presence:user:' .. user) == 0 then
            redis.call('SREM', p .. 'presence:online', user)
            redis.call('HSET', p .. 'presence:last_seen', user, since)
            table.insert(gone, user .. '|' .. since)
          end
        end
        return gone
        """)

    /// Pops overdue connections; returns `email|lastSeenMs` for each user left with none.
    static let expireScript = RedisScript("""
        local p, now, ttl, limit = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
        local gone = {}
        local due = redis.call('ZRANGEBYSCORE', p .. 'presence:expiry', '-inf', now, 'WITHSCORES', 'LIMIT', 0, limit)
        for i = 1, #due, 2 do
          local member, score = due[i], tonumber(due[i + 1])
          if redis.call('ZREM', p .. 'presence:expiry', member) == 1 then
            local bar = string.find(member, '|', 1, true)
            local conn, user = string.sub(member, 1, bar - 1), string.sub(member, bar + 1)
            local userKey = p .. 'presence:user:' .. user
            redis.call('SREM', userKey, conn)
            redis.call('DEL', p .. 'presence:conn:' .. conn)
            if redis.call('SCARD', userKey) == 0 then
              redis.call('DEL', userKey)
              redis.call('SREM', p .. 'presence:online', user)
              local seen = score - ttl
              redis.call('HSET', p .. 'presence:last_seen', user, seen)
              table.insert(gone, user .. '|' .. seen)
            end
          end
        end
        return gone
        """)

    /// Pops typing that ran out; returns the `conversation|email` members.
    static let expireTypingScript = RedisScript("""
        local key, now = KEYS[1], ARGV[1]
        local due = redis.call('ZRANGEBYSCORE', key, '-inf', now, 'LIMIT', 0, 500)
        local popped = {}
        for _, member in ipairs(due) do
          if redis.call('ZREM', key, member) == 1 then table.insert(popped, member) end
        end
        return popped
        """)

    static let stopTypingScript = RedisScript("""
        local stopped = {}
        for _, member in ipairs(ARGV) do
          if redis.call('ZREM', KEYS[1], member) == 1 then table.insert(stopped, member) end
        end
        return stopped
        """)

    private var nowMs: Int64 { Date().epochMilliseconds }

    /// Connects (or keeps alive) `(connection, email)` pairs; returns the users that came online.
    public func connect(_ connections: [(conn: String, user: String)]) async throws -> [String] {
        guard !connections.isEmpty else { return [] }
        let arguments = [keys.prefix, String(ttl.milliseconds), String(nowMs)] + connections.flatMap { [$0.conn, $0.user] }
        return try await redis.run(Self.connectScript, arguments: arguments).array?.compactMap(\.string) ?? []
    }

    /// Disconnects; the user's last-seen time if that was their last connection.
    public func disconnect(conn: String, user: String) async throws -> Date? {
        let reply = try await redis.run(Self.disconnectScript, arguments: [keys.prefix, conn, user, String(nowMs), String(grace.milliseconds)])
        return reply.int.map { Date(timeIntervalSince1970: Double($0) / 1000) } ?? reply.string.flatMap(Int64.init).map { Date(timeIntervalSince1970: Double($0) / 1000) }
    }

    /// Users whose last socket closed more than the grace ago and none is back, with when it
    /// closed: they are offline now.
    public func leave(limit: Int = 1000) async throws -> [(user: String, lastSeen: Date)] {
        let reply = try await redis.run(Self.leaveScript, arguments: [keys.prefix, String(nowMs - grace.milliseconds), String(limit)])
        return Self.departures(reply)
    }

    /// Users whose last connection expired, with when they were last seen.
    public func expire(limit: Int = 1000) async throws -> [(user: String, lastSeen: Date)] {
        let reply = try await redis.run(Self.expireScript, arguments: [keys.prefix, String(nowMs), String(ttl.milliseconds), String(limit)])
        return Self.departures(reply)
    }

    /// `email|lastSeenMs` items as users and dates.
    private static func departures(_ reply: RESPValue) -> [(user: String, lastSeen: Date)] {
        (reply.array ?? []).compactMap { item in
            guard let text = item.string, let bar = text.lastIndex(of: "|"), let ms = Double(text[text.index(after: bar)...]) else { return nil }
            return (String(text[..<bar]), Date(timeIntervalSince1970: ms / 1000))
        }
    }

    /// Typing started (or refreshed): stops by itself after `expiry`.
    public func startTyping(conversation: String, user: String, expiry: Duration) async throws {
        _ = try await redis.zadd(keys.presenceTyping, [(Double(nowMs + expiry.milliseconds), conversation + "|" + user)])
    }

    /// Typing stopped; true if it was on (so the stop is announced once).
    public func stopTyping(conversation: String, user: String) async throws -> Bool {
        try await redis.send(["ZREM", keys.presenceTyping, conversation + "|" + user]).int == 1
    }

    /// Typing stopped for each pair, in one script call: the pairs whose typing was on, once each, in order.
    public func stopTyping(_ pairs: [(conversation: String, user: String)]) async throws -> [(conversation: String, user: String)] {
        guard !pairs.isEmpty else { return [] }
        let reply = try await redis.run(Self.stopTypingScript, keys: [keys.presenceTyping], arguments: pairs.map { $0.conversation + "|" + $0.user })
        return Self.pairs(reply)
    }

    /// Typing that ran out: `(conversation, user)`.
    public func expireTyping() async throws -> [(conversation: String, user: String)] {
        Self.pairs(try await redis.run(Self.expireTypingScript, keys: [keys.presenceTyping], arguments: [String(nowMs)]))
    }

    /// `conversation|user` members as pairs (conversation ids hold no `|`).
    private static func pairs(_ reply: RESPValue) -> [(conversation: String, user: String)] {
        (reply.array ?? []).compactMap { item in
            guard let text = item.string, let bar = text.firstIndex(of: "|") else { return nil }
            return (String(text[..<bar]), String(text[text.index(after: bar)...]))
        }
    }
}
