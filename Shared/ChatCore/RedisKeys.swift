/// Every Redis key, stream, consumer group and channel name, in one place.
///
/// A prefix (`CHAT_REDIS_PREFIX`; a fresh one per test) namespaces all of them.
public struct RedisKeys: Sendable, Hashable {
    /// Prepended to every key and channel; empty in a normal deployment.
    public let prefix: String

    public init(prefix: String = "") { self.prefix = prefix }

    // MARK: Streams and their consumer groups

    /// Stream of commands for the messages service (fields `type`, `user`, `gateway`, `request`, `payload`).
    public var commands: String { prefix + "chat:commands" }
    /// Stream of what the store did (`stored`, `read`, `purged`), consumed by retention.
    public var events: String { prefix + "chat:events" }
    /// Stream of connect, disconnect, heartbeat and typing for the presence service.
    public var presenceCommands: String { prefix + "presence:commands" }

    /// The messages service's group on ``commands``.
    public static let messagesGroup = "messages"
    /// The presence service's group on ``presenceCommands``.
    public static let presenceGroup = "presence"
    /// The retention worker's group on ``events``.
    public static let retentionGroup = "retention"

    // MARK: Pub/sub channels

    /// Events for every socket of one user, on any gateway.
    public func user(_ email: String) -> String { prefix + "user:" + email }
    /// Replies to one gateway's queries.
    public func gateway(_ id: String) -> String { prefix + "gateway:" + id }

    // MARK: Keys

    /// Set of the users online now (at least one live connection); kept by the presence scripts.
    public var presenceOnline: String { prefix + "presence:online" }
    /// Exists (with a TTL) while the user has a live connection.
    public func presenceUser(_ email: String) -> String { prefix + "presence:user:" + email }
    /// Exists (with a TTL) while one connection is alive.
    public func presenceConnection(_ id: String) -> String { prefix + "presence:conn:" + id }
    /// Sorted set of message ids scored by expiry time.
    public var retentionDue: String { prefix + "retention:due" }
    /// Exists while a logged-out token id must be refused.
    public func revokedToken(_ tokenID: String) -> String { prefix + "auth:revoked:" + tokenID }
}

extension RedisKeys {
    /// Pub/sub channel of queries for the messages service (not a stream: queries are never persisted).
    public var storeQueries: String { prefix + "store:queries" }
}

extension RedisKeys {
    /// Exists while a user is disabled: their tokens are refused (set by the messages service).
    public func disabledUser(_ email: String) -> String { prefix + "auth:disabled:" + email.lowercased() }
    /// Milliseconds since 1970: the user's tokens issued before it are refused (their password
    /// was changed or reset, or all their sessions ended); set by the messages service, with
    /// the tokens' lifetime as TTL.
    public func tokensBefore(_ email: String) -> String { prefix + "auth:tokens_before:" + email.lowercased() }
    /// Exists while the user must change their password before anything else (one an admin
    /// or operator set): gateways allow their tokens only that, `/api/me` and logging out.
    public func passwordChangeRequired(_ email: String) -> String { prefix + "auth:must_change:" + email.lowercased() }
    /// Exists (no TTL) once the messages service has put the auth state (disabled users,
    /// revoked tokens, session cutoffs) into this Redis; missing: Redis lost it, restore it.
    public var authState: String { prefix + "auth:state" }
    /// Failed logins in the current minute for an account.
    public func loginFailuresByAccount(_ email: String) -> String { prefix + "auth:failures:account:" + email.lowercased() }
    /// Failed logins in the current minute from an address.
    public func loginFailuresByAddress(_ address: String) -> String { prefix + "auth:failures:address:" + address }
}

extension RedisKeys {
    /// Seconds since 1970 of the last sweep that purged anything.
    public var retentionLastSweep: String { prefix + "retention:last_sweep" }
}

extension RedisKeys {
    /// Hash with a TTL: the messages service that may apply `chat:commands` now (its
    /// instance, consumer, host, database, since); the others wait as standbys.
    public var storeWriter: String { prefix + "messages:writer" }
}
