/// Typed commands for keys, strings, hashes, sets and sorted sets.
extension RedisClient {
    /// How long `SET` keeps a value.
    public enum Expiration: Sendable, Hashable {
        case seconds(Int)
        case milliseconds(Int)
    }

    /// When `SET` writes.
    public enum SetCondition: Sendable, Hashable {
        case always, ifNotExists, ifExists
    }

    /// `PING` → `PONG`.
    public func ping() async throws {
        _ = try await send(["PING"])
    }

    /// `TIME`: the Redis server's clock, in microseconds since 1970. Processes on different
    /// hosts that compare times (a token's issue time with a password change's) read this
    /// one clock, so the skew between their own clocks does not shift the comparison.
    public func time() async throws -> Int64 {
        let reply = try await send(["TIME"])
        guard let parts = reply.array, parts.count == 2, let seconds = parts[0].string.flatMap(Int64.init),
              let microseconds = parts[1].string.flatMap(Int64.init) else { throw RedisUnexpectedReplyError(command: "TIME", reply: reply) }
        return seconds * 1_000_000 + microseconds
    }

    /// `GET key`: the value, or `nil` when the key does not exist.
    public func get(_ key: String) async throws -> String? {
        try await send(["GET", key]).string
    }

    /// `SET key value [EX|PX n] [NX|XX]`: `false` when the condition stopped the write.
    @discardableResult
    public func set(_ key: String, to value: String, expiration: Expiration? = nil, condition: SetCondition = .always) async throws -> Bool {
        var command = ["SET", key, value]
        switch expiration {
        case .seconds(let s): command += ["EX", String(s)]
        case .milliseconds(let ms): command += ["PX", String(ms)]
        case nil: break
        }
        switch condition {
        case .always: break
        case .ifNotExists: command.append("NX")
        case .ifExists: command.append("XX")
        }
        return try await !send(command).isNull
    }

    /// `DEL key...`: how many keys were removed.
    @discardableResult
    public func delete(_ keys: [String]) async throws -> Int {
        try await integer(["DEL"] + keys)
    }

    /// `EXISTS key...`: how many of the keys exist.
    public func exists(_ keys: [String]) async throws -> Int {
        try await integer(["EXISTS"] + keys)
    }

    /// `EXPIRE key seconds`: `false` when the key does not exist.
    @discardableResult
    public func expire(_ key: String, seconds: Int) async throws -> Bool {
        try await integer(["EXPIRE", key, String(seconds)]) == 1
    }

    /// `PEXPIRE key milliseconds`: `false` when the key does not exist.
    @discardableResult
    public func pexpire(_ key: String, milliseconds: Int) async throws -> Bool {
        try await integer(["PEXPIRE", key, String(milliseconds)]) == 1
    }

    /// `TTL key`: seconds left, -1 without expiry, -2 when the key does not exist.
    public func ttl(_ key: String) async throws -> Int {
        try await integer(["TTL", key])
    }

    /// `INCR key`: the new value.
    @discardableResult
    public func increment(_ key: String) async throws -> Int {
        try await integer(["INCR", key])
    }

    // MARK: Hashes

    /// `HSET key field value ...`: how many fields were new.
    @discardableResult
    public func hset(_ key: String, _ fields: KeyValuePairs<String, String>) async throws -> Int {
        try await hset(key, fields.map { ($0.key, $0.value) })
    }

    /// `HSET key field value ...`: how many fields were new.
    @discardableResult
    public func hset(_ key: String, _ fields: [(String, String)]) async throws -> Int {
        try await integer(["HSET", key] + fields.flatMap { [$0.0, $0.1] })
    }

    /// `HGET key field`.
    public func hget(_ key: String, _ field: String) async throws -> String? {
        try await send(["HGET", key, field]).string
    }

    /// `HGETALL key`: every field and value (empty when the key does not exist).
    public func hgetall(_ key: String) async throws -> [String: String] {
        let reply = try await send(["HGETALL", key])
        return try pairs(reply, command: "HGETALL")
    }

    /// `HDEL key field...`: how many fields were removed.
    @discardableResult
    public func hdel(_ key: String, _ fields: [String]) async throws -> Int {
        try await integer(["HDEL", key] + fields)
    }

    // MARK: Sets

    /// `SADD key member...`: how many were added.
    @discardableResult
    public func sadd(_ key: String, _ members: [String]) async throws -> Int {
        try await integer(["SADD", key] + members)
    }

    /// `SREM key member...`: how many were removed.
    @discardableResult
    public func srem(_ key: String, _ members: [String]) async throws -> Int {
        try await integer(["SREM", key] + members)
    }

    /// `SMEMBERS key`.
    public func smembers(_ key: String) async throws -> Set<String> {
        try await Set(strings(["SMEMBERS", key]))
    }

    /// `SCARD key`.
    public func scard(_ key: String) async throws -> Int {
        try await integer(["SCARD", key])
    }

    // MARK: Sorted sets

    /// `ZADD key score member ...`: how many members were new.
    @discardableResult
    public func zadd(_ key: String, _ members: [(score: Double, member: String)]) async throws -> Int {
        try await integer(["ZADD", key] + members.flatMap { [Self.format($0.score), $0.member] })
    }

    /// `ZRANGEBYSCORE key min max [LIMIT 0 n]`: members in score order.
    ///
    /// `min` and `max` are Redis score bounds: numbers, `-inf`, `+inf`, or `(` for exclusive.
    public func zrangeByScore(_ key: String, min: String, max: String, limit: Int? = nil) async throws -> [String] {
        var command = ["ZRANGEBYSCORE", key, min, max]
        if let limit { command += ["LIMIT", "0", String(limit)] }
        return try await strings(command)
    }

    /// `ZRANGEBYSCORE key min max WITHSCORES [LIMIT 0 n]`.
    public func zrangeByScoreWithScores(_ key: String, min: String, max: String, limit: Int? = nil) async throws -> [(member: String, score: Double)] {
        var command = ["ZRANGEBYSCORE", key, min, max, "WITHSCORES"]
        if let limit { command += ["LIMIT", "0", String(limit)] }
        let flat = try await strings(command)
        return stride(from: 0, to: flat.count - 1, by: 2).map { (flat[$0], Double(flat[$0 + 1]) ?? 0) }
    }

    /// `ZREM key member...`: how many were removed.
    @discardableResult
    public func zrem(_ key: String, _ members: [String]) async throws -> Int {
        try await integer(["ZREM", key] + members)
    }

    /// `ZCARD key`.
    public func zcard(_ key: String) async throws -> Int {
        try await integer(["ZCARD", key])
    }

    // MARK: Pub/sub and server

    /// `PUBLISH channel message`: how many subscribers received it.
    @discardableResult
    public func publish(_ message: String, to channel: String) async throws -> Int {
        try await integer(["PUBLISH", channel, message])
    }

    /// `CONFIG SET parameter value`.
    public func configSet(_ parameter: String, _ value: String) async throws {
        _ = try await send(["CONFIG", "SET", parameter, value])
    }

    // MARK: Reply helpers

    func integer(_ command: [String]) async throws -> Int {
        let reply = try await send(command)
        guard let value = reply.int else { throw RedisUnexpectedReplyError(command: command[0], reply: reply) }
        return value
    }

    func strings(_ command: [String]) async throws -> [String] {
        let reply = try await send(command)
        guard let values = reply.array else { throw RedisUnexpectedReplyError(command: command[0], reply: reply) }
        return values.compactMap(\.string)
    }

    func pairs(_ reply: RESPValue, command: String) throws -> [String: String] {
        guard let flat = reply.array, flat.count % 2 == 0 else { throw RedisUnexpectedReplyError(command: command, reply: reply) }
        var result: [String: String] = [:]
        result.reserveCapacity(flat.count / 2)
        for i in stride(from: 0, to: flat.count, by: 2) {
            guard let key = flat[i].string else { throw RedisUnexpectedReplyError(command: command, reply: reply) }
            result[key] = flat[i + 1].string
        }
        return result
    }

    static func format(_ score: Double) -> String {
        if score.isInfinite { return score > 0 ? "+inf" : "-inf" }
        if score == score.rounded(), abs(score) < 1e15 { return String(Int64(score)) }
        return String(score)
    }
}
