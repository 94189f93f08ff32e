import ChatCore
import Foundation
import GRDB

/// What a purge deleted, and who held copies (kept as JSON with its applied entry, so a
/// purge read again after a crash is announced again).
public struct PurgeResult: Sendable, Hashable, Codable {
    /// Deleted message ids by conversation.
    public var deleted: [String: [String]]
    /// Participants of each conversation that lost messages.
    public var participants: [String: [String]]
    /// Ids not deleted because their conversation is on legal hold.
    public var held: [String]

    public var count: Int { deleted.values.reduce(0) { $0 + $1.count } }

    /// Adds what an earlier step of the same purge deleted and held.
    mutating func merge(_ earlier: PurgeResult) {
        for (conversation, ids) in earlier.deleted { deleted[conversation] = ids + (deleted[conversation] ?? []) }
        participants.merge(earlier.participants) { current, _ in current }
        // Every step, and the command's own transaction, looks at its ids again (a purge run
        // again after a crash looks at all of them): a held id is counted once.
        var seen = Set<String>()
        held = (earlier.held + held).filter { seen.insert($0).inserted }
    }
}

extension MessageStore {
    /// Messages whose expiry is before `cutoff` (held conversations included when `includeHeld`),
    /// in expiry order, `limit` at most, after the message `afterID` of the same expiry.
    public func dueMessages(before cutoff: Date, limit: Int = 1000, after: (expiresAt: Date, id: String)? = nil, includeHeld: Bool = false) throws -> [DueMessage] {
        try read { db in
            let rows = try Row.fetchAll(db, sql: """
                SELECT m.id, m.conversation_id, m.expires_at FROM messages m JOIN conversations c ON c.id = m.conversation_id
                WHERE m.expires_at < ? AND (m.expires_at, m.id) > (?, ?) AND (? OR c.legal_hold = 0)
                ORDER BY m.expires_at, m.id LIMIT ?
                """, arguments: [cutoff.epochMilliseconds, after?.expiresAt.epochMilliseconds ?? Int64.min, after?.id ?? "", includeHeld, max(1, min(limit, 10_000))])
            return rows.map { DueMessage(id: $0["id"], conversationID: $0["conversation_id"], expiresAt: Date(milliseconds: $0["expires_at"])) }
        }
    }

    /// One step of a large purge, in a transaction of its own, ahead of the purge command
    /// of stream entry `entry` (see ``CommandProcessor/Configuration/purgeStep``): deletes
    /// what of `ids` is due and not on legal hold, and records what it did under `entry` in
    /// the same transaction. The command's own transaction then finds these ids gone, and
    /// adds up the recorded steps for its outcome, announcement and audit line
    /// (``apply(_:now:)``), even if the service was killed and started again in between.
    ///
    /// A step commits without syncing the WAL (`synchronous = NORMAL` for its transaction
    /// only). Nothing is announced or acknowledged on a step's account: the purge's own
    /// transaction, and every send, commit with a sync, which makes the steps before them
    /// durable too (the WAL is replayed in order). A power cut can only undo the last steps
    /// of a purge still pending in the stream, which is then given again. Should raising the
    /// level again fail, the next write raises it before its transaction
    /// (``restoreFullSync(_:)``). With a sync per step, a purge of 100,000 took a quarter
    /// longer (BENCHMARKS.md, eighth round).
    @discardableResult
    public func purgeStep(ids: [String], entry: String, now: Date = Date()) throws -> PurgeResult {
        try writer.writeWithoutTransaction { db in
            writerSync.lowered(true)
            try db.execute(sql: "PRAGMA synchronous = NORMAL")
            let step = Result { () throws -> PurgeResult in
                var result = PurgeResult(deleted: [:], participants: [:], held: [])
                try db.inTransaction {
                    result = try self.purge(db, ids: ids, now: now)
                    if result.count + result.held.count > 0 {
                        let encoder = JSONEncoder()
                        try db.execute(sql: "INSERT INTO purge_steps (entry_id, recorded_at, deleted, held) VALUES (?, ?, ?, ?)", arguments: [
                            entry, now.epochMilliseconds, String(decoding: try encoder.encode(result.deleted), as: UTF8.self),
                            String(decoding: try encoder.encode(result.held), as: UTF8.self)])
                    }
                    return .commit
                }
                return result
            }
            try self.restoreFullSync(db)
            return try step.get()
        }
    }

    /// Adds the recorded steps of the purge of entry `entry` to `result` (the purge's own
    /// transaction), and forgets them.
    func mergePurgeSteps(_ db: Database, entry: String, into result: inout PurgeResult) throws {
        let decoder = JSONDecoder()
        let rows = try Row.fetchAll(db.cachedStatement(sql: "SELECT deleted, held FROM purge_steps WHERE entry_id = ? ORDER BY step"), arguments: [entry])
        guard !rows.isEmpty else { return }
        var steps = PurgeResult(deleted: [:], participants: [:], held: [])
        for row in rows {
            var step = PurgeResult(deleted: try decoder.decode([String: [String]].self, from: Data((row["deleted"] as String).utf8)), participants: [:],
                                   held: try decoder.decode([String].self, from: Data((row["held"] as String).utf8)))
            step.merge(steps)
            steps = step
        }
        result.merge(steps)
        for conversation in result.deleted.keys where result.participants[conversation] == nil {
            result.participants[conversation] = try participants(db, conversation)
        }
        try forgetPurgeSteps(db, entry: entry)
    }

    func forgetPurgeSteps(_ db: Database, entry: String) throws {
        try db.cachedStatement(sql: "DELETE FROM purge_steps WHERE entry_id = ?").execute(arguments: [entry])
    }

    func purge(_ db: Database, ids: [String], now: Date) throws -> PurgeResult {
        var result = PurgeResult(deleted: [:], participants: [:], held: [])
        for chunk in stride(from: 0, to: ids.count, by: 500).map({ Array(ids[$0..<min($0 + 500, ids.count)]) }) {
            let placeholders = Array(repeating: "?", count: chunk.count).joined(separator: ",")
            let rows = try Row.fetchAll(db, sql: """
                SELECT m.id, m.conversation_id, c.legal_hold FROM messages m JOIN conversations c ON c.id = m.conversation_id
                WHERE m.id IN (\(placeholders)) AND m.expires_at <= ?
                """, arguments: StatementArguments(chunk + [String(now.epochMilliseconds)]))
            var doomed: [String] = []
            for row in rows {
                let id: String = row["id"]
                if row["legal_hold"] as Bool { result.held.append(id); continue }
                doomed.append(id)
                result.deleted[row["conversation_id"], default: []].append(id)
            }
            guard !doomed.isEmpty else { continue }
            // The FTS delete trigger removes each message's words from the search index.
            try db.execute(sql: "DELETE FROM messages WHERE id IN (\(Array(repeating: "?", count: doomed.count).joined(separator: ",")))",
                           arguments: StatementArguments(doomed))
        }
        for conversation in result.deleted.keys { result.participants[conversation] = try participants(db, conversation) }
        return result
    }

    /// After a purge: merge the search index (so no segment keeps deleted words) and
    /// checkpoint the WAL (so no old page image keeps deleted text). `secure_delete`
    /// has already zeroed the freed pages. Returns false if the WAL could not be emptied
    /// (a reader kept an old snapshot for longer than the checkpointer waits, 250 ms, or
    /// another process was checkpointing); ``checkpoint()`` then retries it, after 1 s, 2 s,
    /// 4 s ... up to a minute apart.
    @discardableResult
    public func compactAfterPurge() throws -> Bool {
        try write { db in try db.execute(sql: "INSERT INTO messages_fts(messages_fts) VALUES ('optimize')") }
        guard writer is DatabasePool else { return true }
        // On the checkpointer's connection, in turn with the periodic checkpoint: SQLite answers
        // a checkpoint that finds another one running "busy" at once, without waiting, and the
        // WAL kept the deleted text (a test caught it about once in four runs).
        let busy = try (checkpointer ?? writer).writeWithoutTransaction { db in
            try Row.fetchOne(db, sql: "PRAGMA wal_checkpoint(TRUNCATE)")?[0] as Int? ?? 0
        }
        walTruncation.attempted(succeeded: busy == 0)
        return busy == 0
    }

    /// Deletes audit entries older than `retention` (the audit log's own, longer retention).
    @discardableResult
    public func purgeAuditLog(olderThan retention: Duration, now: Date = Date()) throws -> Int {
        try write { db in
            try db.execute(sql: "DELETE FROM audit_log WHERE at < ?", arguments: [now.epochMilliseconds - retention.milliseconds])
            return db.changesCount
        }
    }

    func setLegalHold(_ db: Database, conversationID: String, held: Bool) throws -> ConversationRecord {
        guard var record = try ConversationRecord.fetchOne(db, key: conversationID) else { throw ChatError(.notFound, "conversation not found") }
        record.legalHold = held
        try record.update(db)
        return record
    }
}
