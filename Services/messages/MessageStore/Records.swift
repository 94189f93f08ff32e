import ChatCore
import Foundation
import GRDB

/// A row of `users`.
struct UserRecord: Codable, FetchableRecord, PersistableRecord, Sendable {
    static let databaseTableName = "users"
    var email: String
    var name: String
    var role: String
    var passwordHash: String
    var disabled: Bool
    var createdAt: Int64
    var mustChangePassword = false

    enum CodingKeys: String, CodingKey {
        case email, name, role, disabled
        case passwordHash = "password_hash"
        case createdAt = "created_at"
        case mustChangePassword = "must_change_password"
    }

    enum Columns {
        static let email = Column(CodingKeys.email)
        static let name = Column(CodingKeys.name)
        static let role = Column(CodingKeys.role)
        static let disabled = Column(CodingKeys.disabled)
    }

    var user: User {
        User(email: email, name: name, role: Role(rawValue: role) ?? .doctor, disabled: disabled, mustChangePassword: mustChangePassword ? true : nil)
    }
}

/// A row of `conversations`.
struct ConversationRecord: Codable, FetchableRecord, PersistableRecord, Sendable {
    static let databaseTableName = "conversations"
    var id: String
    var kind: String
    var title: String?
    var directKey: String?
    var createdBy: String
    var createdAt: Int64
    var lastSeq: Int64
    var lastMessageAt: Int64?
    /// Held conversations keep their messages past expiry (they stay invisible).
    var legalHold: Bool = false

    init(id: String, kind: String, title: String?, directKey: String?, createdBy: String, createdAt: Int64, lastSeq: Int64,
         lastMessageAt: Int64?, legalHold: Bool = false) {
        (self.id, self.kind, self.title, self.directKey, self.createdBy) = (id, kind, title, directKey, createdBy)
        (self.createdAt, self.lastSeq, self.lastMessageAt, self.legalHold) = (createdAt, lastSeq, lastMessageAt, legalHold)
    }

    /// Read by column name without the `Decodable` machinery: every send reads its conversation.
    init(row: Row) throws {
        self.init(id: row["id"], kind: row["kind"], title: row["title"], directKey: row["direct_key"], createdBy: row["created_by"],
                  createdAt: row["created_at"], lastSeq: row["last_seq"], lastMessageAt: row["last_message_at"],
                  legalHold: row["legal_hold"] ?? false)
    }

    enum CodingKeys: String, CodingKey {
        case id, kind, title
        case legalHold = "legal_hold"
        case directKey = "direct_key"
        case createdBy = "created_by"
        case createdAt = "created_at"
        case lastSeq = "last_seq"
        case lastMessageAt = "last_message_at"
    }

    enum Columns {
        static let id = Column(CodingKeys.id)
        static let directKey = Column(CodingKeys.directKey)
        static let lastSeq = Column(CodingKeys.lastSeq)
        static let lastMessageAt = Column(CodingKeys.lastMessageAt)
    }
}

/// A row of `participants`: membership and the read marker.
struct ParticipantRecord: Codable, FetchableRecord, PersistableRecord, Sendable {
    static let databaseTableName = "participants"
    var conversationID: String
    var email: String
    var readSeq: Int64
    var readAt: Int64?
    var joinedAt: Int64
    /// Which move of any marker this one's last was (`MessageStore.nextReadVersion`); 0 before it moved.
    var readVersion: Int64 = 0

    enum CodingKeys: String, CodingKey {
        case email
        case conversationID = "conversation_id"
        case readSeq = "read_seq"
        case readAt = "read_at"
        case joinedAt = "joined_at"
        case readVersion = "read_version"
    }

    enum Columns {
        static let conversationID = Column(CodingKeys.conversationID)
        static let email = Column(CodingKeys.email)
        static let readSeq = Column(CodingKeys.readSeq)
    }
}

/// A row of `messages`.
struct MessageRecord: Codable, FetchableRecord, PersistableRecord, Sendable {
    static let databaseTableName = "messages"
    var id: String
    var conversationID: String
    var seq: Int64
    var senderEmail: String
    var content: String
    var createdAt: Int64
    var expiresAt: Int64
    var readAt: Int64?
    var clientID: String?

    enum CodingKeys: String, CodingKey {
        case id, seq, content
        case conversationID = "conversation_id"
        case senderEmail = "sender_email"
        case createdAt = "created_at"
        case expiresAt = "expires_at"
        case readAt = "read_at"
        case clientID = "client_id"
    }

    enum Columns {
        static let id = Column(CodingKeys.id)
        static let conversationID = Column(CodingKeys.conversationID)
        static let seq = Column(CodingKeys.seq)
        static let senderEmail = Column(CodingKeys.senderEmail)
        static let expiresAt = Column(CodingKeys.expiresAt)
        static let clientID = Column(CodingKeys.clientID)
    }

    /// The protocol's message; `receiver` is the other participant of a 1:1.
    func message(receiver: String?) -> Message {
        Message(
            id: id, conversationID: conversationID, seq: seq, senderEmail: senderEmail, receiverEmail: receiver,
            content: content, timestamp: Date(milliseconds: createdAt), read: readAt != nil,
            readAt: readAt.map(Date.init(milliseconds:)), expiresAt: Date(milliseconds: expiresAt), clientID: clientID)
    }
}

extension MessageRecord {
    /// Read by column name without the `Decodable` machinery: a sync reads up to 500 of them.
    init(row: Row) throws {
        self.init(id: row["id"], conversationID: row["conversation_id"], seq: row["seq"], senderEmail: row["sender_email"],
                  content: row["content"], createdAt: row["created_at"], expiresAt: row["expires_at"], readAt: row["read_at"],
                  clientID: row["client_id"])
    }
}

/// A row of `audit_log`.
struct AuditRecord: Codable, FetchableRecord, PersistableRecord, Sendable {
    static let databaseTableName = "audit_log"
    var id: Int64?
    var at: Int64
    var actor: String?
    var action: String
    var target: String?
    var outcome: String
    var gateway: String?
    var requestID: String?
    var detail: String?

    enum CodingKeys: String, CodingKey {
        case id, at, actor, action, target, outcome, gateway, detail
        case requestID = "request_id"
    }
}

extension Date {
    /// From milliseconds since 1970, the store's time unit.
    init(milliseconds: Int64) { self.init(timeIntervalSince1970: TimeInterval(milliseconds) / 1000) }
}
