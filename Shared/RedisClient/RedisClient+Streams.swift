/// One entry of a Redis stream.
public struct StreamEntry: Sendable, Hashable {
    /// The entry id, `<ms>-<seq>`.
    public var id: String
    /// Field → value. Our streams never repeat a field within an entry.
    public var fields: [String: String]

    public init(id: String, fields: [String: String]) {
        self.id = id
        self.fields = fields
    }
}

extension StreamEntry {
    /// The smallest stream id greater than `id` (`5-3` → `5-4`): trimming with `MINID` at it
    /// removes `id` and everything before.
    public static func id(after id: String) -> String {
        guard let (ms, seq) = parts(id) else { return id }
        return seq == UInt64.max ? "\(ms + 1)-0" : "\(ms)-\(seq + 1)"
    }

    /// Whether stream id `a` comes before `b` (`5-9` before `5-10` before `6-0`).
    public static func precedes(_ a: String, _ b: String) -> Bool {
        guard let x = parts(a), let y = parts(b) else { return a < b }
        return x < y
    }

    private static func parts(_ id: String) -> (UInt64, UInt64)? {
        let parts = id.split(separator: "-")
        guard parts.count == 2, let ms = UInt64(parts[0]), let seq = UInt64(parts[1]) else { return nil }
        return (ms, seq)
    }
}

/// How `XADD` and `XTRIM` cut old entries.
public enum StreamTrim: Sendable, Hashable {
    /// `MAXLEN ~ n` (approximate: cheap) or `MAXLEN = n` (exact).
    case maxLength(Int, approximate: Bool = true)
    /// `MINID ~ id` or `MINID = id`: drop entries older than `id`.
    case minID(String, approximate: Bool = true)

    var arguments: [String] {
        switch self {
        case .maxLength(let n, let approximate): return ["MAXLEN", approximate ? "~" : "=", String(n)]
        case .minID(let id, let approximate): return ["MINID", approximate ? "~" : "=", id]
        }
    }
}

/// What `XPENDING stream group` says in summary.
public struct StreamPendingSummary: Sendable, Hashable {
    public var count: Int
    public var smallestID: String?
    public var largestID: String?
    /// Consumer name → how many entries it holds unacknowledged.
    public var consumers: [String: Int]
}

/// One unacknowledged entry from `XPENDING stream group start end count`.
public struct StreamPendingEntry: Sendable, Hashable {
    public var id: String
    public var consumer: String
    /// Milliseconds since it was last delivered.
    public var idleMilliseconds: Int
    public var deliveries: Int
}

/// What `XAUTOCLAIM` took over.
public struct StreamClaim: Sendable, Hashable {
    /// Where the next `XAUTOCLAIM` should start (`0-0` once the whole list was scanned).
    public var nextStart: String
    public var entries: [StreamEntry]
    /// Pending ids whose entries no longer exist (trimmed or deleted); Redis dropped them from the list.
    public var deletedIDs: [String]
}

extension RedisClient {
    /// `XADD stream [MAXLEN|MINID ~ n] id field value ...`: the new entry's id.
    @discardableResult
    public func xadd(_ stream: String, id: String = "*", fields: [(String, String)], trim: StreamTrim? = nil) async throws -> String {
        let command = Self.xaddCommand(stream, id: id, fields: fields, trim: trim)
        let reply = try await send(command)
        guard let id = reply.string else { throw RedisUnexpectedReplyError(command: "XADD", reply: reply) }
        return id
    }

    /// The `XADD` command as arguments, for use in ``pipeline(_:)``.
    public static func xaddCommand(_ stream: String, id: String = "*", fields: [(String, String)], trim: StreamTrim? = nil) -> [String] {
        var command = ["XADD", stream]
        if let trim { command += trim.arguments }
        command.append(id)
        command.reserveCapacity(command.count + fields.count * 2)
        for (field, value) in fields {
            command.append(field)
            command.append(value)
        }
        return command
    }

    /// `XGROUP CREATE stream group id MKSTREAM`: `false` when the group already existed.
    @discardableResult
    public func xgroupCreate(_ stream: String, group: String, startingAt id: String = "$", makeStream: Bool = true) async throws -> Bool {
        var command = ["XGROUP", "CREATE", stream, group, id]
        if makeStream { command.append("MKSTREAM") }
        do {
            _ = try await send(command)
            return true
        } catch let error as RedisServerError where error.prefix == "BUSYGROUP" {
            return false
        }
    }

    /// `XREADGROUP GROUP group consumer [COUNT n] [BLOCK ms] [NOACK] STREAMS key... id...`.
    ///
    /// Use `">"` as the id for new entries, `"0"` for this consumer's own pending ones.
    /// With `block`, the command runs on a blocking connection of its own; it returns `[:]` on timeout.
    public func xreadgroup(
        group: String,
        consumer: String,
        streams: [(key: String, id: String)],
        count: Int? = nil,
        block: Duration? = nil,
        noAck: Bool = false
    ) async throws -> [String: [StreamEntry]] {
        var command = ["XREADGROUP", "GROUP", group, consumer]
        if let count { command += ["COUNT", String(count)] }
        if let block { command += ["BLOCK", String(block.milliseconds)] }
        if noAck { command.append("NOACK") }
        command.append("STREAMS")
        command += streams.map(\.key)
        command += streams.map(\.id)
        let reply: RESPValue
        if let block {
            reply = try await sendBlocking(command, blocksFor: Self.blockingTime(block))
        } else {
            reply = try await send(command)
        }
        return try Self.streamsReply(reply, command: "XREADGROUP")
    }

    /// `XACK stream group id...`: how many were acknowledged.
    @discardableResult
    public func xack(_ stream: String, group: String, ids: [String]) async throws -> Int {
        guard !ids.isEmpty else { return 0 }
        return try await integer(["XACK", stream, group] + ids)
    }

    /// Acknowledges `ids` for `group` and trims the stream below what the group still needs:
    /// its oldest pending entry, or else the entry after the last it was given (so entries a
    /// consumer read after `ids` and acknowledged itself, the store's between a purge's
    /// steps, go too). With `otherGroups`, below what any group of the stream still needs,
    /// for a stream several groups read (`chat:events`): one group's trimming never takes
    /// entries another has not read. Without it, a group an operator left on a stream
    /// cannot keep message text in Redis.
    public func acknowledgeAndTrim(_ stream: String, group: String, ids: [String], otherGroups: Bool = false) async throws {
        guard !ids.isEmpty else { return }
        // The own group's oldest pending entry comes in the same round trip, so a consumer
        // that reads its stream alone pays one round trip and the XTRIM, as before.
        let replies = try await pipeline([["XACK", stream, group] + ids, ["XINFO", "GROUPS", stream], ["XPENDING", stream, group]])
        for reply in replies { if case .error(let message) = reply { throw RedisServerError(message: message) } }
        var bounds: [String] = []
        var othersPending: [String] = []
        for info in try (replies[1].array ?? []).map(Self.infoDictionary) {
            guard let name = info["name"]?.string, otherGroups || name == group else { continue }
            if (info["pending"]?.int ?? 0) > 0 {
                if name != group { othersPending.append(name) }
            } else if let last = info["last-delivered-id"]?.string {
                bounds.append(StreamEntry.id(after: last))
            }
        }
        func smallestPending(_ reply: RESPValue) throws -> String? {
            guard let summary = reply.array, summary.count == 4 else { throw RedisUnexpectedReplyError(command: "XPENDING", reply: reply) }
            return summary[1].string
        }
        // The own group with nothing pending has its bound from XINFO above.
        if let smallest = try smallestPending(replies[2]) { bounds.append(smallest) }
        if !othersPending.isEmpty {
            for reply in try await pipeline(othersPending.map { ["XPENDING", stream, $0] }) {
                // Acknowledged meanwhile: trim nothing now; the next batch trims it.
                bounds.append(try smallestPending(reply) ?? "0-0")
            }
        }
        guard let bound = bounds.min(by: StreamEntry.precedes) else { return }
        try await xtrim(stream, .minID(bound, approximate: false))
    }

    /// `XAUTOCLAIM stream group consumer min-idle start [COUNT n]`: takes over entries idle for `minIdle`.
    public func xautoclaim(_ stream: String, group: String, consumer: String, minIdle: Duration, start: String = "0-0", count: Int? = nil) async throws -> StreamClaim {
        var command = ["XAUTOCLAIM", stream, group, consumer, String(minIdle.milliseconds), start]
        if let count { command += ["COUNT", String(count)] }
        let reply = try await send(command)
        guard let parts = reply.array, parts.count >= 2, let next = parts[0].string, let raw = parts[1].array else {
            throw RedisUnexpectedReplyError(command: "XAUTOCLAIM", reply: reply)
        }
        let deleted = parts.count > 2 ? (parts[2].array ?? []).compactMap(\.string) : []
        return StreamClaim(nextStart: next, entries: try Self.entries(raw, command: "XAUTOCLAIM"), deletedIDs: deleted)
    }

    /// `XPENDING stream group`: the summary.
    public func xpending(_ stream: String, group: String) async throws -> StreamPendingSummary {
        let reply = try await send(["XPENDING", stream, group])
        guard let parts = reply.array, parts.count == 4, let count = parts[0].int else {
            throw RedisUnexpectedReplyError(command: "XPENDING", reply: reply)
        }
        var consumers: [String: Int] = [:]
        for consumer in parts[3].array ?? [] {
            if let pair = consumer.array, pair.count == 2, let name = pair[0].string, let n = pair[1].int { consumers[name] = n }
        }
        return StreamPendingSummary(count: count, smallestID: parts[1].string, largestID: parts[2].string, consumers: consumers)
    }

    /// `XPENDING stream group [IDLE ms] start end count [consumer]`: the entries themselves.
    public func xpending(_ stream: String, group: String, start: String = "-", end: String = "+", count: Int, consumer: String? = nil, minIdle: Duration? = nil) async throws -> [StreamPendingEntry] {
        var command = ["XPENDING", stream, group]
        if let minIdle { command += ["IDLE", String(minIdle.milliseconds)] }
        command += [start, end, String(count)]
        if let consumer { command.append(consumer) }
        let reply = try await send(command)
        guard let rows = reply.array else { throw RedisUnexpectedReplyError(command: "XPENDING", reply: reply) }
        return try rows.map { row in
            guard let f = row.array, f.count == 4, let id = f[0].string, let c = f[1].string, let idle = f[2].int, let n = f[3].int else {
                throw RedisUnexpectedReplyError(command: "XPENDING", reply: reply)
            }
            return StreamPendingEntry(id: id, consumer: c, idleMilliseconds: idle, deliveries: n)
        }
    }

    /// `XTRIM stream MAXLEN|MINID ...`: how many entries were removed.
    @discardableResult
    public func xtrim(_ stream: String, _ trim: StreamTrim) async throws -> Int {
        try await integer(["XTRIM", stream] + trim.arguments)
    }

    /// `XDEL stream id...`: how many entries were removed.
    @discardableResult
    public func xdel(_ stream: String, ids: [String]) async throws -> Int {
        guard !ids.isEmpty else { return 0 }
        return try await integer(["XDEL", stream] + ids)
    }

    /// `XLEN stream`.
    public func xlen(_ stream: String) async throws -> Int {
        try await integer(["XLEN", stream])
    }

    /// `XRANGE stream start end [COUNT n]`.
    public func xrange(_ stream: String, start: String = "-", end: String = "+", count: Int? = nil) async throws -> [StreamEntry] {
        var command = ["XRANGE", stream, start, end]
        if let count { command += ["COUNT", String(count)] }
        let reply = try await send(command)
        guard let raw = reply.array else { throw RedisUnexpectedReplyError(command: "XRANGE", reply: reply) }
        return try Self.entries(raw, command: "XRANGE")
    }

    /// `XINFO GROUPS stream`: one dictionary per group (`name`, `consumers`, `pending`, `last-delivered-id`, `lag`...).
    public func xinfoGroups(_ stream: String) async throws -> [[String: RESPValue]] {
        let reply = try await send(["XINFO", "GROUPS", stream])
        guard let groups = reply.array else { throw RedisUnexpectedReplyError(command: "XINFO", reply: reply) }
        return try groups.map { try Self.infoDictionary($0) }
    }

    /// `XINFO STREAM stream`: `length`, `last-generated-id`, `groups`, first and last entries...
    public func xinfoStream(_ stream: String) async throws -> [String: RESPValue] {
        try Self.infoDictionary(try await send(["XINFO", "STREAM", stream]))
    }

    // MARK: Reply shapes

    static func infoDictionary(_ reply: RESPValue) throws -> [String: RESPValue] {
        guard let flat = reply.array, flat.count % 2 == 0 else { throw RedisUnexpectedReplyError(command: "XINFO", reply: reply) }
        var result: [String: RESPValue] = [:]
        for i in stride(from: 0, to: flat.count, by: 2) {
            if let key = flat[i].string { result[key] = flat[i + 1] }
        }
        return result
    }

    static func streamsReply(_ reply: RESPValue, command: String) throws -> [String: [StreamEntry]] {
        if reply.isNull { return [:] }
        guard let streams = reply.array else { throw RedisUnexpectedReplyError(command: command, reply: reply) }
        var result: [String: [StreamEntry]] = [:]
        for stream in streams {
            guard let pair = stream.array, pair.count == 2, let key = pair[0].string, let raw = pair[1].array else {
                throw RedisUnexpectedReplyError(command: command, reply: reply)
            }
            result[key] = try entries(raw, command: command)
        }
        return result
    }

    /// Entries as `[[id, [field, value, ...]], ...]`; an entry whose body is nil (deleted) is skipped.
    static func entries(_ raw: [RESPValue], command: String) throws -> [StreamEntry] {
        var entries: [StreamEntry] = []
        entries.reserveCapacity(raw.count)
        for item in raw {
            guard let pair = item.array, pair.count == 2, let id = pair[0].string else {
                throw RedisUnexpectedReplyError(command: command, reply: item)
            }
            guard let flat = pair[1].array else { continue }
            var fields: [String: String] = [:]
            for i in stride(from: 0, to: flat.count - 1, by: 2) {
                if let k = flat[i].string, let v = flat[i + 1].string { fields[k] = v }
            }
            entries.append(StreamEntry(id: id, fields: fields))
        }
        return entries
    }
}

extension Duration {
    /// Whole milliseconds, rounded down.
    public var milliseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1000 + attoseconds / 1_000_000_000_000_000
    }
}
