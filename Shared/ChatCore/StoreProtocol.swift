import Foundation
import HummingbirdBcrypt

/// What the gateways ask of the messages service through Redis.
///
/// Writes are entries on the `chat:commands` stream (durable: they wait there while the
/// store restarts). Queries are published on `store:queries` (never persisted, so a
/// login's password never lands in Redis's append-only file; with the store down they
/// time out and the gateway answers 503). Both are answered on `gateway:{id}`.
public enum StoreCommandType: String, Sendable, CaseIterable {
    case send
    case markConversationRead = "mark_conversation_read"
    case markMessageRead = "mark_message_read"
    case createConversation = "create_conversation"
    case createUser = "create_user"
    case setUserDisabled = "set_user_disabled"
    case setUserRole = "set_user_role"
    /// An audit entry from a gateway (logins, logouts, refused requests).
    case audit
    /// Retention: delete these expired messages (held conversations excepted).
    case purge
    /// Retention, after a sweep that purged: compact the search index and WAL, trim the audit log.
    case compact
    /// Admins: put a conversation on legal hold, or release it.
    case setLegalHold = "set_legal_hold"
    /// A user's new password (their own, checked first by the gateway; or an admin's reset).
    case setPassword = "set_password"
    /// Every session of a user ends (their "log out everywhere", or an admin's for a lost device).
    case endSessions = "end_sessions"
    /// A token logged out: kept by the store until it expires, so it is refused again after
    /// Redis lost its data (the gateway has already refused it through Redis).
    case revokeToken = "revoke_token"
    /// The messages service's own, when Redis has no record of the auth state (it lost its
    /// data): the disabled users, logged-out tokens and session cutoffs put back.
    case restoreAuth = "restore_auth"
    /// A group's members or title change: people added, removed (or leaving), a new title.
    case updateGroup = "update_group"
    /// Its sender takes a message back: invisible at once, deleted unless held.
    case retractMessage = "retract_message"
}

/// `retract_message`: the sender's own message.
public struct RetractMessageRequest: Codable, Sendable, Hashable {
    public var messageID: String
    public init(messageID: String) { self.messageID = messageID }
    enum CodingKeys: String, CodingKey { case messageID = "message_id" }
}

/// `purge`: at most 1,000 message ids.
public struct PurgeRequest: Codable, Sendable, Hashable {
    /// The most ids one purge names.
    public static let maximumCount = 1000
    public var messageIDs: [String]
    public init(messageIDs: [String]) { self.messageIDs = messageIDs }
    enum CodingKeys: String, CodingKey { case messageIDs = "message_ids" }
}

/// `compact`: how long audit entries are kept.
public struct CompactRequest: Codable, Sendable, Hashable {
    public var auditRetentionMilliseconds: Int64
    public init(auditRetention: Duration) { auditRetentionMilliseconds = auditRetention.milliseconds }
    enum CodingKeys: String, CodingKey { case auditRetentionMilliseconds = "audit_retention_ms" }
}

/// `set_legal_hold`.
public struct LegalHoldRequest: Codable, Sendable, Hashable {
    public var conversationID: String
    public var held: Bool
    public init(conversationID: String, held: Bool) {
        self.conversationID = conversationID
        self.held = held
    }
    enum CodingKeys: String, CodingKey {
        case held
        case conversationID = "conversation_id"
    }
}

/// `messages_purged` to clients: drop these messages, retention deleted them.
public struct MessagesPurgedEvent: Codable, Sendable, Hashable {
    public var conversationID: String
    public var messageIDs: [String]
    public init(conversationID: String, messageIDs: [String]) {
        self.conversationID = conversationID
        self.messageIDs = messageIDs
    }
    enum CodingKeys: String, CodingKey {
        case conversationID = "conversation_id"
        case messageIDs = "message_ids"
    }
}

/// One entry of `chat:commands`: fields `type`, `user`, `gateway`, `request`, `payload`.
public struct StoreCommand: Sendable, Hashable {
    public var type: StoreCommandType
    /// The acting user's email (empty for operators' tools).
    public var user: String
    /// The gateway to answer on `gateway:{id}`, if it wants an answer.
    public var gateway: String?
    /// The gateway's id for the request, echoed in the answer.
    public var request: String?
    /// The command's JSON body.
    public var payload: String

    public init(type: StoreCommandType, user: String, gateway: String? = nil, request: String? = nil, payload: String) {
        self.type = type
        self.user = user
        self.gateway = gateway
        self.request = request
        self.payload = payload
    }

    /// The command with an `Encodable` body.
    public init<Body: Encodable>(type: StoreCommandType, user: String, gateway: String? = nil, request: String? = nil, body: Body) throws {
        self.init(type: type, user: user, gateway: gateway, request: request, payload: String(decoding: try ChatJSON.makeEncoder().encode(body), as: UTF8.self))
    }

    /// The stream fields, in the documented order.
    public var fields: [(String, String)] {
        [("type", type.rawValue), ("user", user), ("gateway", gateway ?? ""), ("request", request ?? ""), ("payload", payload)]
    }

    /// Reads a stream entry; `nil` when `type` is missing or unknown.
    public init?(fields: [String: String]) {
        guard let type = fields["type"].flatMap(StoreCommandType.init(rawValue:)) else { return nil }
        self.init(type: type, user: fields["user"] ?? "", gateway: fields["gateway"].flatMap { $0.isEmpty ? nil : $0 },
                  request: fields["request"].flatMap { $0.isEmpty ? nil : $0 }, payload: fields["payload"] ?? "")
    }
}

/// `create_conversation`: 1:1 with one other participant and no title, or a group with a title.
public struct CreateConversationRequest: Codable, Sendable, Hashable {
    public var participants: [String]
    public var title: String?
    public init(participants: [String], title: String? = nil) {
        self.participants = participants
        self.title = title
    }
}

/// `update_group`: any member adds people or renames the group; a member leaves by removing
/// themselves; removing others is for the group's creator and admins.
public struct UpdateGroupRequest: Codable, Sendable, Hashable {
    public var conversationID: String
    public var title: String?
    public var addMembers: [String]?
    public var removeMembers: [String]?
    public init(conversationID: String, title: String? = nil, addMembers: [String]? = nil, removeMembers: [String]? = nil) {
        (self.conversationID, self.title, self.addMembers, self.removeMembers) = (conversationID, title, addMembers, removeMembers)
    }
    enum CodingKeys: String, CodingKey {
        case title
        case conversationID = "conversation_id"
        case addMembers = "add_members"
        case removeMembers = "remove_members"
    }
}

/// `conversation_updated`, to everyone who was or is a member: the group as it is now, who
/// joined and who left (a client that is no longer among `participants` drops it).
public struct ConversationUpdatedEvent: Codable, Sendable, Hashable {
    public var conversationID: String
    public var title: String?
    public var participants: [String]
    public var added: [String]
    public var removed: [String]
    public var by: String
    public init(conversationID: String, title: String?, participants: [String], added: [String], removed: [String], by: String) {
        (self.conversationID, self.title, self.participants, self.added, self.removed, self.by) = (conversationID, title, participants, added, removed, by)
    }
    enum CodingKeys: String, CodingKey {
        case title, participants, added, removed, by
        case conversationID = "conversation_id"
    }
}

/// `create_user` (admins and `chatctl`).
public struct CreateUserRequest: Codable, Sendable, Hashable {
    public var email: String
    public var name: String
    public var role: Role
    /// The bcrypt hash of the password, made by whoever sends the command (``PasswordPolicy``),
    /// so no password is ever written to the stream and Redis's append-only file.
    public var passwordHash: String?
    /// The password itself: what gateways older than `password_hash` sent; still applied.
    public var password: String?
    /// Whether the user must choose their own password before anything else (one set by
    /// an admin or an operator); absent: no.
    public var mustChangePassword: Bool?
    public init(email: String, name: String, role: Role, passwordHash: String, mustChangePassword: Bool = false) {
        self.email = email
        self.name = name
        self.role = role
        self.passwordHash = passwordHash
        self.mustChangePassword = mustChangePassword ? true : nil
    }
    /// The old form, with the password itself (kept for tests of what older gateways send).
    public init(email: String, name: String, role: Role, password: String) {
        self.email = email
        self.name = name
        self.role = role
        self.password = password
    }
    enum CodingKeys: String, CodingKey {
        case email, name, role, password
        case passwordHash = "password_hash"
        case mustChangePassword = "must_change_password"
    }
}

/// `set_password`: a user's new password, as its bcrypt hash, and the time before which
/// the user's tokens are refused from now on (every session is ended, on every gateway).
public struct SetPasswordRequest: Codable, Sendable, Hashable {
    public var email: String
    public var passwordHash: String
    /// Milliseconds since 1970: tokens issued before it are refused (`auth:tokens_before:{email}`).
    public var tokensBefore: Int64
    /// How long that refusal is kept: the tokens' lifetime, after which they have expired anyway.
    public var tokensTTLMilliseconds: Int64
    /// Whether the user must change it before anything else (set by an admin or operator).
    public var mustChangePassword: Bool?
    public init(email: String, passwordHash: String, tokensBefore: Int64, tokensTTL: Duration, mustChangePassword: Bool = false) {
        self.email = email
        self.passwordHash = passwordHash
        self.tokensBefore = tokensBefore
        self.tokensTTLMilliseconds = tokensTTL.milliseconds
        self.mustChangePassword = mustChangePassword ? true : nil
    }
    enum CodingKeys: String, CodingKey {
        case email
        case mustChangePassword = "must_change_password"
        case passwordHash = "password_hash"
        case tokensBefore = "tokens_before"
        case tokensTTLMilliseconds = "tokens_ttl_ms"
    }
}

/// `end_sessions`: the user's tokens issued before `tokens_before` are refused from now on,
/// and their sockets end, on every gateway (as after a password change, which does the same).
public struct EndSessionsRequest: Codable, Sendable, Hashable {
    public var email: String
    /// Milliseconds since 1970: tokens issued before it are refused (`auth:tokens_before:{email}`).
    public var tokensBefore: Int64
    /// How long that refusal is kept: the tokens' lifetime, after which they have expired anyway.
    public var tokensTTLMilliseconds: Int64
    public init(email: String, tokensBefore: Int64, tokensTTL: Duration) {
        self.email = email
        self.tokensBefore = tokensBefore
        self.tokensTTLMilliseconds = tokensTTL.milliseconds
    }
    enum CodingKeys: String, CodingKey {
        case email
        case tokensBefore = "tokens_before"
        case tokensTTLMilliseconds = "tokens_ttl_ms"
    }
}

/// `revoke_token`: a logged-out token's id and expiry (ms since 1970).
public struct RevokeTokenRequest: Codable, Sendable, Hashable {
    public var jti: String
    public var expiresAt: Int64
    public init(jti: String, expiresAt: Int64) {
        self.jti = jti
        self.expiresAt = expiresAt
    }
    enum CodingKeys: String, CodingKey {
        case jti
        case expiresAt = "expires_at"
    }
}

/// What a password must be, checked wherever one is chosen (the gateway, `chatctl`, the
/// store for the old form of `create_user`), and what its bcrypt hash looks like.
public enum PasswordPolicy {
    /// The bcrypt cost of new hashes (about 60 ms here; a login verifies at the hash's own cost).
    public static let cost: UInt8 = 10

    /// Refuses a password that is too short, or too long for bcrypt (which reads 72 bytes).
    public static func check(_ password: String) throws {
        guard password.count >= 8 else { throw ChatError(.invalidContent, "a password has at least 8 characters") }
        guard password.utf8.count <= 72 else { throw ChatError(.invalidContent, "a password has at most 72 bytes (bcrypt's limit)") }
    }

    /// What a person may choose (the gateway's routes, `chatctl`): ``check(_:)``, and not one
    /// of the passwords tried first by anyone guessing, nor the account's own address or its
    /// name part (case ignored).
    public static func checkChosen(_ password: String, email: String) throws {
        try check(password)
        let lowered = password.lowercased()
        let address = email.lowercased()
        if common.contains(lowered) || common.contains(lowered.trimmingCharacters(in: .decimalDigits.union(.punctuationCharacters))) {
            throw ChatError(.invalidContent, "this password is one of the most common; choose another")
        }
        if lowered == address || lowered == address.split(separator: "@").first.map(String.init) {
            throw ChatError(.invalidContent, "a password cannot be the account's address")
        }
    }

    /// The most common passwords of at least 8 characters in published leak lists (and
    /// their stems, which a digit or two appended does not save), lowercased.
    static let common: Set<String> = [
        "password", "passw0rd", "p@ssw0rd", "p@ssword", "12345678", "123456789", "1234567890", "12341234", "11111111", "00000000",
        "87654321", "11223344", "12121212", "88888888", "qwertyui", "qwerty12", "qwerty123", "qwertyuiop", "1q2w3e4r", "1qaz2wsx",
        "zaq12wsx", "asdfghjk", "asdfasdf", "zxcvbnm", "zxcvbnm1", "abcd1234", "abc12345", "abcdefgh", "iloveyou", "letmein",
        "welcome", "sunshine", "princess", "football", "baseball", "basketball", "superman", "batman", "starwars", "trustno1",
        "whatever", "changeme", "admin", "administrator", "computer", "internet", "monkey", "dragon", "master", "shadow",
        "michael", "jennifer", "jordan", "hunter", "freedom", "secret", "doctor", "clinic", "hospital", "nurse", "patient",
        "qwerty", "123456", "1234567", "goodluck", "loveyou", "mustang", "access", "login", "default", "guest",
    ]

    /// Refuses anything but a bcrypt hash (`$2a$`, `$2b$` or `$2y$`, cost 4 to 31, 53
    /// characters of salt and hash): a command carrying anything else would lock the user out.
    public static func checkHash(_ hash: String) throws {
        let bytes = Array(hash.utf8)
        let alphabet = Set("./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789".utf8)
        guard bytes.count == 60, bytes[0] == UInt8(ascii: "$"), bytes[1] == UInt8(ascii: "2"),
              [UInt8(ascii: "a"), UInt8(ascii: "b"), UInt8(ascii: "y")].contains(bytes[2]), bytes[3] == UInt8(ascii: "$"),
              let cost = Int(String(decoding: bytes[4..<6], as: UTF8.self)), (4...31).contains(cost), bytes[6] == UInt8(ascii: "$"),
              bytes[7...].allSatisfy(alphabet.contains) else {
            throw ChatError(.badRequest, "password_hash is not a bcrypt hash")
        }
    }

    /// The password's bcrypt hash at ``cost``, made on a thread of its own (about 60 ms of
    /// CPU, which the few threads tasks share should not spend).
    public static func hash(_ password: String, cost: UInt8 = cost) async -> String {
        await withCheckedContinuation { continuation in
            Thread { continuation.resume(returning: Bcrypt.hash(password, cost: cost)) }.start()
        }
    }

    /// A password of 16 letters and digits, for an account made or reset by an operator.
    public static func generate() -> String {
        let alphabet = Array("abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789")
        var generator = SystemRandomNumberGenerator()
        return String((0..<16).map { _ in alphabet[Int.random(in: 0..<alphabet.count, using: &generator)] })
    }
}

/// `set_user_disabled` and `set_user_role`.
public struct UpdateUserRequest: Codable, Sendable, Hashable {
    public var email: String
    public var disabled: Bool?
    public var role: Role?
    public init(email: String, disabled: Bool? = nil, role: Role? = nil) {
        self.email = email
        self.disabled = disabled
        self.role = role
    }
}

/// `audit`: something a gateway saw that belongs in the audit log.
public struct AuditRequest: Codable, Sendable, Hashable {
    public var action: String
    public var target: String?
    public var outcome: String
    public var detail: String?
    public init(action: String, target: String? = nil, outcome: String, detail: String? = nil) {
        self.action = action
        self.target = target
        self.outcome = outcome
        self.detail = detail
    }
}

/// A query published on `store:queries`.
public struct StoreQuery: Codable, Sendable, Hashable {
    public enum Kind: String, Codable, Sendable, CaseIterable {
        /// Answers `{}`: the store is up and reading (for `/readyz`).
        case ping
        case login, me, conversations, conversation, history, unreadCount = "unread_count"
        case searchUsers = "search_users", searchMessages = "search_messages", listUsers = "list_users", auditLog = "audit_log"
        /// Retention (operators only): messages expiring before `before` (ms), after the cursor `query` ("ms:id").
        case dueMessages = "due_messages"
        /// A user's current password, checked before they change it: as `login`, audited as
        /// `password_check` (`ok` or `denied`).
        case checkPassword = "check_password"
        /// What a reconnecting socket missed: messages after `since` per conversation, and read receipts.
        case sync
        /// Presence: the user's name and everyone who shares a conversation with them.
        case partners
        /// Presence (typing): a conversation's participants, by `conversation_id` or by the other
        /// person of a 1:1 (`query`); `not_found` unless the user takes part.
        case participants
        /// Admins (and operators' tools): conversations with their participants and counts, no
        /// content (``AdminConversation``): those `query` (an email) takes part in, those on
        /// legal hold (`held`), or both; the latest activity first, `limit` at most.
        case adminConversations = "admin_conversations"
    }

    public var kind: Kind
    /// The caller's email (the email to check, for `login`).
    public var user: String
    public var gateway: String
    public var request: String
    public var conversationID: String?
    public var limit: Int?
    public var before: Int64?
    public var skip: Int?
    public var query: String?
    public var role: Role?
    public var password: String?
    /// `sync`: the last seq the client has, per conversation.
    public var since: [String: Int64]?
    /// `sync`: for conversations not in `since`, only messages stored at or after this time (ms); all if absent.
    public var after: Int64?
    /// `sync`: for conversations in `since`, only read receipts whose marker moved after this
    /// version (the `receipts_cursor` of an earlier sync, or a listed conversation's
    /// `read_version`); all of them if absent.
    public var receiptsAfter: Int64?
    /// The asker reads the answer's result as raw JSON (`result_json`, see
    /// ``JSONText/storeReply(request:result:raw:)``); a store older than this leaves it out and
    /// answers a string (`result`), which the asker reads too.
    public var rawResult: Bool?
    /// `admin_conversations`: only those on legal hold.
    public var held: Bool?

    public init(kind: Kind, user: String, gateway: String, request: String, conversationID: String? = nil, limit: Int? = nil,
                before: Int64? = nil, skip: Int? = nil, query: String? = nil, role: Role? = nil, password: String? = nil) {
        self.kind = kind
        self.user = user
        self.gateway = gateway
        self.request = request
        self.conversationID = conversationID
        self.limit = limit
        self.before = before
        self.skip = skip
        self.query = query
        self.role = role
        self.password = password
    }

    enum CodingKeys: String, CodingKey {
        case kind, user, gateway, request, limit, before, skip, query, role, password, since, after, held
        case conversationID = "conversation_id"
        case receiptsAfter = "receipts_after"
        case rawResult = "raw_result"
    }
}

/// What comes back on `gateway:{id}`: the request id with a JSON result or an error.
public struct StoreReply: Codable, Sendable, Hashable {
    public var request: String
    /// The result as JSON text (decoded by the asker, who knows its type).
    public var result: String?
    public var error: ChatError?

    public init(request: String, result: String? = nil, error: ChatError? = nil) {
        self.request = request
        self.result = result
        self.error = error
    }
}

/// What a user's sockets receive on `user:{email}`: a protocol event name and its data.
public struct UserEvent<Data: Codable & Sendable>: Codable, Sendable {
    public var event: String
    public var data: Data
    /// For the sender's own confirmation: the gateway and request that asked, so exactly that socket gets the ack.
    public var gateway: String?
    public var request: String?

    public init(event: ServerEventName, data: Data, gateway: String? = nil, request: String? = nil) {
        self.event = event.rawValue
        self.data = data
        self.gateway = gateway
        self.request = request
    }
}

/// The conversation list answer, with the total of unread messages.
public struct UnreadCount: Codable, Sendable, Hashable {
    public var total: Int
    public var conversations: [String: Int]
    public init(total: Int, conversations: [String: Int]) {
        self.total = total
        self.conversations = conversations
    }
}

/// A message and its expiry, as the `due_messages` query lists them (retention's schedule).
public struct DueMessage: Codable, Sendable, Hashable {
    public var id: String
    public var conversationID: String
    public var expiresAt: Date

    public init(id: String, conversationID: String, expiresAt: Date) {
        self.id = id
        self.conversationID = conversationID
        self.expiresAt = expiresAt
    }

    enum CodingKeys: String, CodingKey {
        case id
        case conversationID = "conversation_id"
        case expiresAt = "expires_at"
    }
}

/// The `sync` answer: per conversation of the user, what came after the client's seq.
public struct SyncResult: Codable, Sendable, Hashable {
    public var conversations: [SyncedConversation]
    /// The highest read-marker version the answer was read at, or with `receiptsTruncated`
    /// the last one replayed: the next sync's `receipts_after`.
    public var receiptsCursor: Int64?
    /// True when receipts were left out to keep the replay within its limit.
    public var receiptsTruncated: Bool?
    public init(conversations: [SyncedConversation], receiptsCursor: Int64? = nil, receiptsTruncated: Bool? = nil) {
        self.conversations = conversations
        self.receiptsCursor = receiptsCursor
        self.receiptsTruncated = receiptsTruncated
    }

    enum CodingKeys: String, CodingKey {
        case conversations
        case receiptsCursor = "receipts_cursor"
        case receiptsTruncated = "receipts_truncated"
    }
}

public struct SyncedConversation: Codable, Sendable, Hashable {
    public var id: String
    /// The conversation's newest seq (messages past their expiry included).
    public var lastSeq: Int64
    /// Visible messages after the client's seq, in seq order.
    public var messages: [Message]
    /// Where each other participant has read up to (only those who read something, and
    /// only those that moved after the request's `receipts_after`).
    public var receipts: [ReadReceipt]
    /// More messages were missed than one sync returns: page back with the history route.
    public var truncated: Bool

    public init(id: String, lastSeq: Int64, messages: [Message], receipts: [ReadReceipt], truncated: Bool) {
        self.id = id
        self.lastSeq = lastSeq
        self.messages = messages
        self.receipts = receipts
        self.truncated = truncated
    }

    enum CodingKeys: String, CodingKey {
        case id, messages, receipts, truncated
        case lastSeq = "last_seq"
    }
}

/// The `partners` answer.
public struct PartnersResult: Codable, Sendable, Hashable {
    public var name: String
    public var partners: [String]
    public init(name: String, partners: [String]) {
        self.name = name
        self.partners = partners
    }
}

/// The `participants` answer.
public struct ParticipantsResult: Codable, Sendable, Hashable {
    public var conversationID: String
    public var participants: [String]
    public init(conversationID: String, participants: [String]) {
        self.conversationID = conversationID
        self.participants = participants
    }
    enum CodingKeys: String, CodingKey {
        case participants
        case conversationID = "conversation_id"
    }
}
