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

/// Reads presence for many users in one round trip (one pipeline: EXISTS per user, one HMGET).
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
        var commands = unique.map { ["EXISTS", keys.presenceUser($0)] }
        commands.append(["HMGET", keys.presenceLastSeen] + unique)
        let replies = try await redis.pipeline(commands)
        let lastSeen = replies.last?.array ?? []
        var result: [String: PresenceState] = [:]
        for (index, email) in unique.enumerated() {
            let seen = index < lastSeen.count ? lastSeen[index].string.flatMap(Int64.init).map { Date(timeIntervalSince1970: Double($0) / 1000) } : nil
            result[email] = PresenceState(online: replies[index].int == 1, lastSeen: seen)
        }
        return result
    }
}
