import ChatCore
import Foundation
import GRDB

/// A message its sender took back (``MessageStore/retractMessage(_:by:now:)``).
public struct Retraction: Sendable, Hashable {
    public var messageID: String
    public var conversationID: String
    /// Who is told to drop it (`messages_purged`).
    public var participants: [String]
    /// The conversation is on legal hold: the message is kept, invisible, until the hold is
    /// released and the next sweep deletes it.
    public var held: Bool
}

extension MessageStore {
    /// The sender takes a message back (sent to the wrong person, or with the wrong
    /// patient's details): from this commit it is invisible everywhere, as an expired
    /// message is (history, search, previews, unread counts, replays), and deleted at once
    /// (row and search index) unless the conversation is on legal hold. Only its sender;
    /// anyone else in the conversation gets `forbidden`, outsiders and a message already
    /// gone `not_found`.
    public func retractMessage(_ id: String, by actor: String, now: Date = Date()) throws -> Retraction {
        try write { db in try self.retract(db, id, by: actor, now: now) }
    }

    func retract(_ db: Database, _ id: String, by actor: String, now: Date) throws -> Retraction {
        let actor = actor.lowercased()
        guard let row = try Row.fetchOne(db.cachedStatement(sql: """
            SELECT m.conversation_id, m.sender_email, m.expires_at FROM messages m
            JOIN participants p ON p.conversation_id = m.conversation_id AND p.email = ? WHERE m.id = ?
            """), arguments: [actor, id]), (row["expires_at"] as Int64) > now.epochMilliseconds else {
            throw ChatError(.notFound, "message not found")
        }
        guard (row["sender_email"] as String) == actor else { throw ChatError(.forbidden, "only its sender retracts a message") }
        let conversationID: String = row["conversation_id"]
        // Expired as of now (what every read filters on), then purged as retention would.
        try db.cachedStatement(sql: "UPDATE messages SET expires_at = ? WHERE id = ?").execute(arguments: [now.epochMilliseconds, id])
        let purged = try purge(db, ids: [id], now: now)
        return Retraction(messageID: id, conversationID: conversationID, participants: try participants(db, conversationID), held: !purged.held.isEmpty)
    }

    /// A retraction read again: its message is gone (or held), so its participants are told again.
    func replayedRetraction(_ db: Database, messageID: String, conversationID: String) throws -> Retraction {
        let held = try Bool.fetchOne(db.cachedStatement(sql: "SELECT 1 FROM messages WHERE id = ?"), arguments: [messageID]) ?? false
        return Retraction(messageID: messageID, conversationID: conversationID, participants: try participants(db, conversationID), held: held)
    }
}
