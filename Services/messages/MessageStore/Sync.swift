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
    /// after `after` are returned (all of them, newest `limit`, if `after` is nil).
    public func sync(for user: String, since: [String: Int64], after: Date? = nil, limit: Int = 500, now: Date = Date()) throws -> SyncResult {
        let user = user.lowercased()
        let total = max(0, min(limit, 2000))
        return try read { db in
            var remaining = total
            let conversations = try ConversationRecord.fetchAll(db, sql: """
                SELECT c.* FROM conversations c JOIN participants p ON p.conversation_id = c.id WHERE p.email = ? ORDER BY COALESCE(c.last_message_at, c.created_at) DESC, c.id
                """, arguments: [user])
            var result: [SyncedConversation] = []
            for conversation in conversations {
                let participants = try ParticipantRecord.filter(ParticipantRecord.Columns.conversationID == conversation.id).fetchAll(db)
                let receiverOf = Self.receiver(kind: conversation.kind, participants: participants.map(\.email).sorted())
                let known = since[conversation.id]
                var sql = "SELECT * FROM messages WHERE conversation_id = ? AND expires_at > ? AND seq > ?"
                var arguments: StatementArguments = [conversation.id, now.epochMilliseconds, max(0, known ?? 0)]
                if known == nil, let after {
                    sql += " AND created_at >= ?"
                    arguments += [after.epochMilliseconds]
                }
                // The newest `take + 1` (to tell whether there were more), returned oldest first.
                let take = min(remaining, 100)
                sql += " ORDER BY seq DESC LIMIT ?"
                arguments += [take + 1]
                var records = try MessageRecord.fetchAll(db, sql: sql, arguments: arguments)
                let truncated = records.count > take
                if truncated { records.removeLast() }
                remaining -= records.count
                let messages = records.reversed().map { $0.message(receiver: receiverOf($0.senderEmail)) }

                var receipts: [ReadReceipt] = []
                for reader in participants where reader.email != user && reader.readSeq > 0 {
                    let messageID = try String.fetchOne(db, sql: "SELECT id FROM messages WHERE conversation_id = ? AND seq = ? AND expires_at > ?",
                                                        arguments: [conversation.id, reader.readSeq, now.epochMilliseconds])
                    receipts.append(ReadReceipt(messageID: messageID, conversationID: conversation.id, readerEmail: reader.email,
                                                readAt: Date(milliseconds: reader.readAt ?? now.epochMilliseconds), upToSeq: reader.readSeq))
                }
                if messages.isEmpty && receipts.isEmpty && known == conversation.lastSeq { continue }
                result.append(SyncedConversation(id: conversation.id, lastSeq: conversation.lastSeq, messages: messages, receipts: receipts, truncated: truncated))
            }
            return SyncResult(conversations: result)
        }
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
