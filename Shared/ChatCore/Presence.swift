import Foundation
import RedisClient

extension RedisKeys {
    /// Sorted set of live connections, member `connection|email`, score = when it expires (ms).
    /// The presence service pops expired members atomically, so a dead gateway's users go
    /// offline exactly once, whichever presence instance sees it first.
    public var presenceExpiry: String { prefix + "presence:expiry" }
    /// Hash email → last time seen online (ms).
    public var presenceLastSeen: String { prefix + "presence:last_seen" }
    /// Sorted set of who is typing where, member `conversation|email`, score = when it stops by itself (ms).
    public var presenceTyping: String { prefix + "presence:typing" }
}

/// What gateways put on `presence:commands` (field `type`).
public enum PresenceCommandType: String, Sendable {
    /// A socket connected: fields `user`, `conn`, `gateway`.
    case connect
    /// A socket left: fields `user`, `conn`.
    case disconnect
    /// A gateway's connections are alive: field `conns`, lines of `conn user`.
    case heartbeat
    /// Fields `user`, `conversation_id` or `receiver_email`, `is_typing` (1/0).
    case typing
}

/// Presence as clients see it in lists.
public struct PresenceState: Codable, Sendable, Hashable {
    public var online: Bool
    public var lastSeen: Date?
    public init(online: Bool, lastSeen: Date?) {
        self.online = online
        self.lastSeen = lastSeen
    }
    enum CodingKeys: String, CodingKey {
        case online
        case lastSeen = "last_seen"
    }
}

/// Reads presence for many users in one round trip (one pipeline: one SMISMEMBER of
/// `presence:online` for all of them, one HMGET). A user is online there while a connection
/// is alive and during the grace after their last one closed (the presence service's
/// `PresenceTracker`); an EXISTS per user's connection set, until 2026-12-03, showed them
/// offline in that grace and made a conversation list of three groups of 200 six hundred
/// Redis commands.
public struct PresenceReader: Sendable {
    let redis: RedisClient
    let keys: RedisKeys

    public init(redis: RedisClient, keys: RedisKeys) {
        self.redis = redis
        self.keys = keys
    }

    public func states(_ emails: [String]) async throws -> [String: PresenceState] {
        let unique = Array(Set(emails.map { $0.lowercased() }))
        guard !unique.isEmpty else { return [:] }
        let replies = try await redis.pipeline([["SMISMEMBER", keys.presenceOnline] + unique, ["HMGET", keys.presenceLastSeen] + unique])
        let online = replies.first?.array ?? []
        let lastSeen = replies.last?.array ?? []
        var result: [String: PresenceState] = [:]
        for (index, email) in unique.enumerated() {
            let seen = index < lastSeen.count ? lastSeen[index].string.flatMap(Int64.init).map { Date(timeIntervalSince1970: Double($0) / 1000) } : nil
            result[email] = PresenceState(online: index < online.count && online[index].int == 1, lastSeen: seen)
        }
        return result
    }
}
