import Foundation

/// Events a client emits (Socket.IO event names of the original clinic app, plus two of ours).
public enum ClientEventName: String, Sendable, CaseIterable {
    case userJoined = "user_joined"
    case sendMessage = "send_message"
    case userTyping = "user_typing"
    case markMessageRead = "mark_message_read"
    case markConversationRead = "mark_conversation_read"
    case sync
}

/// Events the server emits to clients.
public enum ServerEventName: String, Sendable, CaseIterable {
    case receiveMessage = "receive_message"
    case messageSentConfirmed = "message_sent_confirmed"
    case userTyping = "user_typing"
    case messageReadReceipt = "message_read_receipt"
    case userOnline = "user_online"
    case userOffline = "user_offline"
    /// Retention deleted messages the client may hold.
    case messagesPurged = "messages_purged"
    /// A group's members or title changed (``ConversationUpdatedEvent``).
    case conversationUpdated = "conversation_updated"
    /// The gateway lost its Redis subscription and has replayed what the socket missed: the
    /// replay's summary, as `sync` acknowledges one. What a replay does not carry (a
    /// conversation left out at its limit, new conversations, unread counts) the client
    /// reloads (the web client reloads its conversation list).
    case resynchronized
    case error
}

/// `send_message {receiver_email | conversation_id, content, client_id}`.
public struct SendMessageRequest: Codable, Sendable, Hashable {
    public var receiverEmail: String?
    public var conversationID: String?
    public var content: String
    public var clientID: String?

    public init(receiverEmail: String? = nil, conversationID: String? = nil, content: String, clientID: String?) {
        self.receiverEmail = receiverEmail
        self.conversationID = conversationID
        self.content = content
        self.clientID = clientID
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case content
        case receiverEmail = "receiver_email"
        case conversationID = "conversation_id"
        case clientID = "client_id"
    }

    /// The body read with ``JSONScan`` (the store reads one per send): nil for anything but
    /// the plain shape (an unknown or repeated key, a member of the wrong type), which the
    /// caller then decodes the usual way, with its usual error.
    public init?(scanning bytes: [UInt8], in range: Range<Int>? = nil) {
        guard let scan = JSONScan(bytes, in: range), scan.endsAt(range?.upperBound ?? bytes.count), scan.members.count <= CodingKeys.allCases.count,
              Set(scan.members.map(\.key)).count == scan.members.count,
              scan.members.allSatisfy({ CodingKeys(rawValue: $0.key) != nil }),
              let content = scan.decodedString("content") else { return nil }
        func optional(_ key: CodingKeys) -> String?? {
            scan.isNull(key.rawValue) ? .some(nil) : scan.decodedString(key.rawValue).map { .some($0) }
        }
        guard let receiver = optional(.receiverEmail), let conversation = optional(.conversationID), let client = optional(.clientID) else { return nil }
        self.init(receiverEmail: receiver, conversationID: conversation, content: content, clientID: client)
    }

    /// This body as `ChatJSON.makeEncoder()` writes it (the gateway writes one per send).
    public var jsonText: String {
        var out = "{"
        if let clientID { out += "\"client_id\":"; JSONText.appendQuoted(clientID, to: &out); out += "," }
        out += "\"content\":"; JSONText.appendQuoted(content, to: &out)
        if let conversationID { out += ",\"conversation_id\":"; JSONText.appendQuoted(conversationID, to: &out) }
        if let receiverEmail { out += ",\"receiver_email\":"; JSONText.appendQuoted(receiverEmail, to: &out) }
        out += "}"
        return out
    }
}

/// `user_typing` from a client `{receiver_email | conversation_id, is_typing}` and to a client
/// `{sender_email, conversation_id, is_typing}`.
public struct TypingEvent: Codable, Sendable, Hashable {
    public var senderEmail: String?
    public var receiverEmail: String?
    public var conversationID: String?
    public var isTyping: Bool

    public init(senderEmail: String? = nil, receiverEmail: String? = nil, conversationID: String?, isTyping: Bool) {
        self.senderEmail = senderEmail
        self.receiverEmail = receiverEmail
        self.conversationID = conversationID
        self.isTyping = isTyping
    }

    enum CodingKeys: String, CodingKey {
        case senderEmail = "sender_email"
        case receiverEmail = "receiver_email"
        case conversationID = "conversation_id"
        case isTyping = "is_typing"
    }
}

/// `mark_message_read {message_id}`.
public struct MarkMessageReadRequest: Codable, Sendable, Hashable {
    public var messageID: String
    public init(messageID: String) { self.messageID = messageID }
    enum CodingKeys: String, CodingKey { case messageID = "message_id" }
}

/// `mark_conversation_read {conversation_id, up_to_seq}`.
public struct MarkConversationReadRequest: Codable, Sendable, Hashable {
    public var conversationID: String
    public var upToSeq: Int64
    public init(conversationID: String, upToSeq: Int64) {
        self.conversationID = conversationID
        self.upToSeq = upToSeq
    }
    enum CodingKeys: String, CodingKey {
        case conversationID = "conversation_id"
        case upToSeq = "up_to_seq"
    }
}

/// `sync {since: {conversation_id: seq}}`: what the client already has.
public struct SyncRequest: Codable, Sendable, Hashable {
    public var since: [String: Int64]
    public init(since: [String: Int64]) { self.since = since }
}

/// `message_read_receipt {message_id, conversation_id, reader_email, read_at, up_to_seq}`.
public struct ReadReceipt: Codable, Sendable, Hashable {
    public var messageID: String?
    public var conversationID: String
    public var readerEmail: String
    public var readAt: Date
    public var upToSeq: Int64

    public init(messageID: String?, conversationID: String, readerEmail: String, readAt: Date, upToSeq: Int64) {
        self.messageID = messageID
        self.conversationID = conversationID
        self.readerEmail = readerEmail
        self.readAt = readAt
        self.upToSeq = upToSeq
    }

    enum CodingKeys: String, CodingKey {
        case messageID = "message_id"
        case conversationID = "conversation_id"
        case readerEmail = "reader_email"
        case readAt = "read_at"
        case upToSeq = "up_to_seq"
    }
}

/// `user_online {email, name}`.
public struct UserOnlineEvent: Codable, Sendable, Hashable {
    public var email: String
    public var name: String
    public init(email: String, name: String) {
        self.email = email
        self.name = name
    }
}

/// `user_offline {email, last_seen}`.
public struct UserOfflineEvent: Codable, Sendable, Hashable {
    public var email: String
    public var lastSeen: Date
    public init(email: String, lastSeen: Date) {
        self.email = email
        self.lastSeen = lastSeen
    }
    enum CodingKeys: String, CodingKey {
        case email
        case lastSeen = "last_seen"
    }
}
