import Foundation

/// What a user may do: admins also manage users and the audit log.
public enum Role: String, Codable, Sendable, CaseIterable {
    case admin
    case doctor
}

/// A clinic staff member; the email is the identity everywhere.
public struct User: Codable, Sendable, Hashable {
    public var email: String
    public var name: String
    public var role: Role
    /// A disabled user cannot log in and their tokens stop working.
    public var disabled: Bool
    /// Filled from presence where a result shows it.
    public var online: Bool?
    public var lastSeen: Date?
    /// `true` while the password is one an admin or operator set: the user must choose
    /// their own before anything else (absent otherwise).
    public var mustChangePassword: Bool?

    public init(email: String, name: String, role: Role, disabled: Bool = false, online: Bool? = nil, lastSeen: Date? = nil, mustChangePassword: Bool? = nil) {
        self.email = email
        self.name = name
        self.role = role
        self.disabled = disabled
        self.online = online
        self.lastSeen = lastSeen
        self.mustChangePassword = mustChangePassword
    }

    enum CodingKeys: String, CodingKey {
        case email, name, role, disabled, online
        case lastSeen = "last_seen"
        case mustChangePassword = "must_change_password"
    }
}

/// One stored message, as every client sees it.
public struct Message: Codable, Sendable, Hashable {
    public var id: String
    public var conversationID: String
    /// Gap-free position in the conversation, assigned at commit.
    public var seq: Int64
    public var senderEmail: String
    /// The other participant of a 1:1 conversation; `nil` in a group.
    public var receiverEmail: String?
    public var content: String
    public var timestamp: Date
    /// Whether a recipient has read it (derived from read markers).
    public var read: Bool
    public var readAt: Date?
    /// When retention deletes it.
    public var expiresAt: Date
    /// The sender's id for this send, so retries are stored once.
    public var clientID: String?

    public init(id: String, conversationID: String, seq: Int64, senderEmail: String, receiverEmail: String?, content: String, timestamp: Date, read: Bool = false, readAt: Date? = nil, expiresAt: Date, clientID: String?) {
        self.id = id
        self.conversationID = conversationID
        self.seq = seq
        self.senderEmail = senderEmail
        self.receiverEmail = receiverEmail
        self.content = content
        self.timestamp = timestamp
        self.read = read
        self.readAt = readAt
        self.expiresAt = expiresAt
        self.clientID = clientID
    }

    enum CodingKeys: String, CodingKey {
        case id, seq, content, timestamp, read
        case conversationID = "conversation_id"
        case senderEmail = "sender_email"
        case receiverEmail = "receiver_email"
        case readAt = "read_at"
        case expiresAt = "expires_at"
        case clientID = "client_id"
    }
}

/// A 1:1 or group conversation as listed for one participant.
/// A conversation as an admin sees it to place or lift a legal hold: who takes part and how
/// much is stored, never what was said (`GET /api/admin/conversations`).
public struct AdminConversation: Codable, Sendable, Hashable {
    public var id: String
    public var kind: Conversation.Kind
    public var title: String?
    public var participants: [String]
    public var createdAt: Date
    public var lastMessageAt: Date?
    /// Messages stored (visible or kept past their expiry by the hold).
    public var messages: Int
    /// Stored messages past their expiry: kept only by the hold, deleted by the sweep after it is lifted.
    public var keptPastExpiry: Int
    public var legalHold: Bool

    public init(id: String, kind: Conversation.Kind, title: String?, participants: [String], createdAt: Date, lastMessageAt: Date?,
                messages: Int, keptPastExpiry: Int, legalHold: Bool) {
        (self.id, self.kind, self.title, self.participants, self.createdAt) = (id, kind, title, participants, createdAt)
        (self.lastMessageAt, self.messages, self.keptPastExpiry, self.legalHold) = (lastMessageAt, messages, keptPastExpiry, legalHold)
    }

    enum CodingKeys: String, CodingKey {
        case id, kind, title, participants, messages
        case createdAt = "created_at"
        case lastMessageAt = "last_message_at"
        case keptPastExpiry = "kept_past_expiry"
        case legalHold = "legal_hold"
    }
}

public struct Conversation: Codable, Sendable, Hashable {
    public enum Kind: String, Codable, Sendable {
        case direct
        case group
    }

    public var id: String
    public var kind: Kind
    /// The group's title; `nil` for 1:1.
    public var title: String?
    public var participants: [String]
    public var createdAt: Date
    public var lastMessageAt: Date?
    /// The newest visible message, for the list preview.
    public var lastMessage: Message?
    /// Messages after the caller's read marker, not sent by the caller.
    public var unreadCount: Int
    /// Each participant's presence, filled by the gateway in the conversation list.
    public var presence: [String: PresenceState]?
    /// The participants with their names and roles (for lists: "Dr. Kim · doctor").
    public var members: [User]?
    /// Each participant's read marker (the seq they have read up to; 0 for nothing yet).
    /// In a group, a message is read by everyone when every other participant's marker
    /// reaches its seq; a message's own `read` says only that someone has read it.
    public var readPositions: [String: Int]?
    /// The version of the newest move of those markers (0 if none moved): a `sync` with
    /// `receipts_after` at the highest of a list's versions replays only receipts that
    /// changed after the list was read.
    public var readVersion: Int64?
    /// A group's creator, who (with admins) removes other members; absent for 1:1.
    public var createdBy: String?

    public init(id: String, kind: Kind, title: String?, participants: [String], createdAt: Date, lastMessageAt: Date? = nil, lastMessage: Message? = nil, unreadCount: Int = 0) {
        self.id = id
        self.kind = kind
        self.title = title
        self.participants = participants
        self.createdAt = createdAt
        self.lastMessageAt = lastMessageAt
        self.lastMessage = lastMessage
        self.unreadCount = unreadCount
    }

    enum CodingKeys: String, CodingKey {
        case id, kind, title, participants
        case createdAt = "created_at"
        case createdBy = "created_by"
        case lastMessageAt = "last_message_at"
        case lastMessage = "last_message"
        case unreadCount = "unread_count"
        case presence, members
        case readPositions = "read_positions"
        case readVersion = "read_version"
    }
}
