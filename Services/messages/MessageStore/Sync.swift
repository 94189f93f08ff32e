import ChatCore
import Foundation
import GRDB

extension MessageStore {
    /// What a reconnecting client missed, for every conversation of `user`: visible messages
    /// after `since[conversation]` in seq order (the newest 100 of each at most, `limit` in
    /// all, the most recently active conversations first; `truncated` says a conversation
    /// had more), and where the other participants have read up to.
    ///
    /// A conversation missing from `since` is new to the client: its messages stored at or
    /// after `after` are returned (all of them, newest `limit`, if `after` is nil), and all of
    /// its receipts. For the conversations in `since`, `receiptsAfter` (the answer's
    /// `receiptsCursor` of an earlier sync, or the highest `readVersion` of a conversation
    /// list) leaves out the markers that have not moved since; nil replays them all.
    ///
    /// Messages and receipts together are at most `limit`: receipts take what the messages
    /// leave, the earliest moves first; `receiptsTruncated` says some were left out (the
    /// answer's `receiptsCursor` is then the last one replayed).
    ///
    /// The same three statements whatever the number of conversations (the cursor, the
    /// conversations, the receipts that moved in all of them), then per conversation with
    /// anything after the client's seq its messages (and a 1:1's participants, for the
    /// receiver), and with `receiptsAfter`, per conversation new to the client its older
    /// receipts.
    public func sync(for user: String, since: [String: Int64], after: Date? = nil, receiptsAfter: Int64? = nil,
                     limit: Int = 500, now: Date = Date()) throws -> SyncResult {
        let user = user.lowercased()
        let total = max(0, min(limit, 2000))
        let nowMS = now.epochMilliseconds
        return try read { db in
            var remaining = total
            let cursor = try self.readVersion(db)
            let conversations = try ConversationRecord.fetchAll(db.cachedStatement(sql: """
                SELECT c.* FROM conversations c JOIN participants p ON p.conversation_id = c.id WHERE p.email = ? ORDER BY COALESCE(c.last_message_at, c.created_at) DESC, c.id
                """), arguments: [user])
            // Every other participant's marker that moved after `receiptsAfter` (all that
            // moved at all without it), with the id of the message it names while visible,
            // in the order they moved. Filtered in SQL and read by column position: a user in
            // three groups of 200 has 597 other markers, which were all read by name (GRDB
            // lowercases each column name) and filtered afterwards, 2 ms of CPU for a sync
            // that replays nothing; 2,000 reconnecting sockets held the command batches back
            // (BENCHMARKS.md, seventeenth round).
            var moved = try Self.markers(db.cachedStatement(sql: """
                SELECT \(Self.markerColumns) FROM participants mine
                JOIN participants p ON p.conversation_id = mine.conversation_id AND p.email != mine.email \(Self.markerMessage)
                WHERE mine.email = ? AND p.read_seq > 0 AND p.read_version > ?
                """), arguments: [nowMS, user, receiptsAfter ?? -1])
            // A conversation new to the client gets every marker, those at or before the version too.
            if let receiptsAfter {
                let older = try db.cachedStatement(sql: """
                    SELECT \(Self.markerColumns) FROM participants p \(Self.markerMessage)
                    WHERE p.conversation_id = ? AND p.email != ? AND p.read_seq > 0 AND p.read_version <= ?
                    """)
                for conversation in conversations where since[conversation.id] == nil {
                    moved += try Self.markers(older, arguments: [nowMS, conversation.id, user, receiptsAfter])
                }
            }
            moved.sort { ($0.readVersion, $0.conversationID, $0.email) < ($1.readVersion, $1.conversationID, $1.email) }
            let newer = try db.cachedStatement(sql: """
                SELECT * FROM messages WHERE conversation_id = ? AND expires_at > ? AND seq > ? AND created_at >= ? ORDER BY seq DESC LIMIT ?
                """)
            var result: [SyncedConversation] = []
            for conversation in conversations {
                let known = since[conversation.id]
                var messages: [Message] = []
                var truncated = false
                // Nothing after the client's seq, no query (`last_seq` is the newest seq, expired
                // messages included). Past the budget (`take` 0) one row still says `truncated`.
                if (known ?? 0) < conversation.lastSeq {
                    // The newest `take + 1` (to tell whether there were more), returned oldest first.
                    let take = min(remaining, 100)
                    let from = known == nil ? after?.epochMilliseconds ?? 0 : 0
                    var records = try MessageRecord.fetchAll(newer, arguments: [conversation.id, nowMS, max(0, known ?? 0), from, take + 1])
                    truncated = records.count > take
                    if truncated { records.removeLast() }
                    remaining -= records.count
                    if !records.isEmpty {
                        let receiverOf = Self.receiver(kind: conversation.kind, participants: conversation.kind == Conversation.Kind.direct.rawValue
                                                       ? try self.participants(db, conversation.id) : [])
                        messages = records.reversed().map { $0.message(receiver: receiverOf($0.senderEmail)) }
                    }
                }
                result.append(SyncedConversation(id: conversation.id, lastSeq: conversation.lastSeq, messages: messages, receipts: [], truncated: truncated))
            }
            // Receipts take what the messages left of `limit` (a replay must fit in half a
            // socket's queue), the earliest moves first. Left out: `receiptsTruncated`, and the
            // cursor is the last move replayed (versions are unique), so a sync after it
            // (naming the conversations) goes on from there.
            let included = min(moved.count, remaining)
            var receiptsOf: [String: [ReadReceipt]] = [:]
            for reader in moved.prefix(included) {
                receiptsOf[reader.conversationID, default: []].append(ReadReceipt(
                    messageID: reader.messageID, conversationID: reader.conversationID, readerEmail: reader.email,
                    readAt: Date(milliseconds: reader.readAt ?? nowMS), upToSeq: reader.readSeq))
            }
            let receiptsTruncated = included < moved.count
            result = result.compactMap { conversation in
                var conversation = conversation
                conversation.receipts = (receiptsOf[conversation.id] ?? []).sorted { $0.readerEmail < $1.readerEmail }
                let nothing = conversation.messages.isEmpty && conversation.receipts.isEmpty && !conversation.truncated
                return nothing && since[conversation.id] == conversation.lastSeq ? nil : conversation
            }
            let last = !receiptsTruncated ? cursor : included > 0 ? moved[included - 1].readVersion : receiptsAfter ?? 0
            return SyncResult(conversations: result, receiptsCursor: last, receiptsTruncated: receiptsTruncated ? true : nil)
        }
    }
}

extension MessageStore {
    /// Another participant's read marker, for `sync`'s receipts.
    struct Marker {
        var conversationID: String
        var email: String
        var readSeq: Int64
        var readAt: Int64?
        var readVersion: Int64
        /// The message at `readSeq` while it is visible.
        var messageID: String?
    }

    /// What ``markers(_:arguments:)`` reads, by position, from participants `p` joined with
    /// ``markerMessage`` (whose expiry is the statement's first argument).
    static let markerColumns = "p.conversation_id, p.email, p.read_seq, p.read_at, p.read_version, m.id"
    /// The message a marker names, while it is visible.
    static let markerMessage = "LEFT JOIN messages m ON m.conversation_id = p.conversation_id AND m.seq = p.read_seq AND m.expires_at > ?"

    /// Markers from a statement selecting ``markerColumns``, read by position.
    static func markers(_ statement: Statement, arguments: StatementArguments) throws -> [Marker] {
        var markers: [Marker] = []
        let rows = try Row.fetchCursor(statement, arguments: arguments)
        while let row = try rows.next() {
            markers.append(Marker(conversationID: row[0], email: row[1], readSeq: row[2], readAt: row[3], readVersion: row[4], messageID: row[5]))
        }
        return markers
    }
}

extension MessageStore {
    /// The user's name and everyone who shares a conversation with them (presence fan-out).
    public func partners(of user: String) throws -> PartnersResult {
        let user = user.lowercased()
        return try read { db in
            let name = try String.fetchOne(db, sql: "SELECT name FROM users WHERE email = ?", arguments: [user]) ?? user
            let partners = try String.fetchAll(db, sql: """
                SELECT DISTINCT other.email FROM participants mine JOIN participants other ON other.conversation_id = mine.conversation_id
                WHERE mine.email = ? AND other.email != ? ORDER BY other.email
                """, arguments: [user, user])
            return PartnersResult(name: name, partners: partners)
        }
    }

    /// A conversation's participants for typing: by id, or the 1:1 between `user` and `receiver`.
    public func participants(of user: String, conversationID: String?, receiver: String?) throws -> ParticipantsResult {
        let user = user.lowercased()
        return try read { db in
            var id = conversationID
            if id == nil, let receiver {
                id = try String.fetchOne(db, sql: """
                    SELECT c.id FROM conversations c JOIN participants a ON a.conversation_id = c.id JOIN participants b ON b.conversation_id = c.id
                    WHERE c.kind = 'direct' AND a.email = ? AND b.email = ?
                    """, arguments: [user, receiver.lowercased()])
            }
            guard let id else { throw ChatError(.notFound, "conversation not found") }
            _ = try self.requireParticipant(db, id, user)
            return ParticipantsResult(conversationID: id, participants: try self.participants(db, id))
        }
    }
}
