import ChatCore
import Foundation
import GRDB
import HummingbirdBcrypt
import Synchronization

/// Who asked, for the audit log.
public struct RequestContext: Sendable, Hashable {
    /// The caller's email, or `nil` for the system and operators' tools.
    public var actor: String?
    public var gateway: String?
    public var requestID: String?

    public init(actor: String?, gateway: String? = nil, requestID: String? = nil) {
        self.actor = actor
        self.gateway = gateway
        self.requestID = requestID
    }

    /// Operators' tools and the services themselves.
    public static let system = RequestContext(actor: nil)
}

/// One line of the audit log.
public struct AuditEntry: Codable, Sendable, Hashable {
    public var id: Int64?
    public var at: Date
    public var actor: String?
    public var action: String
    public var target: String?
    public var outcome: String
    public var gateway: String?
    public var requestID: String?
    public var detail: String?

    public init(at: Date, context: RequestContext, action: String, target: String?, outcome: String, detail: String? = nil) {
        self.at = at
        self.actor = context.actor
        self.action = action
        self.target = target
        self.outcome = outcome
        self.gateway = context.gateway
        self.requestID = context.requestID
        self.detail = detail
    }

    enum CodingKeys: String, CodingKey {
        case id, at, actor, action, target, outcome, gateway, detail
        case requestID = "request_id"
    }
}

/// A send as the store receives it: to a conversation, or to a person (opening the 1:1 if needed).
public struct SendRequest: Sendable, Hashable {
    public var sender: String
    public var conversationID: String?
    public var receiverEmail: String?
    public var content: String
    public var clientID: String?

    public init(sender: String, conversationID: String? = nil, receiverEmail: String? = nil, content: String, clientID: String?) {
        self.sender = sender
        self.conversationID = conversationID
        self.receiverEmail = receiverEmail
        self.content = content
        self.clientID = clientID
    }
}

/// A committed message and who must hear of it.
public struct StoredMessage: Sendable, Hashable {
    public var message: Message
    /// Every participant, the sender included.
    public var participants: [String]
    /// `true` when this send's `client_id` was already stored (a client's retry): nothing
    /// new was written, and only the sender hears of it again. A stream entry read again
    /// after its batch committed is not a duplicate: it is announced in full (see `replay`).
    public var duplicate: Bool
}

/// What a read marker moved to, and who must hear of it.
public struct ReadUpdate: Sendable, Hashable {
    public var receipt: ReadReceipt
    /// Who is sent the receipt: in a 1:1 both; in a group the reader (their other devices)
    /// and the senders of the messages the move newly covers, whose ticks it changes
    /// (``MessageStore/receiptRecipients(_:conversationID:reader:after:through:)``).
    public var recipients: [String]
    /// `false` when the marker was already there (nothing changed, nobody is told again).
    public var advanced: Bool
}

/// The clinic's messages in SQLite: users, conversations, messages, read markers, audit log and search.
///
/// Writes go through one writer (WAL); reads use the pool's readers and never block
/// them. Every method that writes has a `Database`-level twin so that the command
/// consumer can apply a whole batch in one transaction.
public struct MessageStore: Sendable {
    /// The longest a message may be, in characters, after trimming.
    public static let maximumContentLength = 10_000
    /// The most participants a group may have.
    public static let maximumGroupSize = 256

    let writer: any DatabaseWriter
    /// The connection that checkpoints the WAL (file databases only).
    let checkpointer: DatabaseQueue?
    /// A compaction could not empty the WAL: ``checkpoint()`` tries again until it can.
    let walTruncation = TruncationRetry()
    /// Whether a purge step may have left the writer at `synchronous = NORMAL`.
    let writerSync = WriterSync()
    /// How long a message lives (`CHAT_RETENTION`).
    public let retention: Duration
    /// bcrypt cost for new passwords (at least 10 in production).
    public let bcryptCost: UInt8

    /// Opens (creating and migrating if needed) the database at `path` in WAL mode.
    /// `busyTimeout`: how long a write waits for a lock held elsewhere before it fails (and its batch is retried).
    public static func open(path: String, retention: Duration, bcryptCost: UInt8 = 10, busyTimeout: Duration = .seconds(10)) throws -> MessageStore {
        let pool = try filePool(path: path, busyTimeout: busyTimeout)
        var checkpointing = Configuration()
        // Only the WAL truncation after a purge waits on this connection: it blocks new
        // writers while it waits for readers on an old snapshot, so it gives up soon and
        // ``checkpoint()`` tries again after a backoff (sends wait at most this long each time).
        checkpointing.busyMode = .timeout(TimeInterval(min(busyTimeout, Self.truncationWait).milliseconds) / 1000)
        return try MessageStore(writer: pool, retention: retention, bcryptCost: bcryptCost,
                                checkpointer: DatabaseQueue(path: path, configuration: checkpointing))
    }

    /// The pool of connections to the database file, its writer syncing every commit.
    static func filePool(path: String, busyTimeout: Duration) throws -> DatabasePool {
        let pool = try DatabasePool(path: path, configuration: fileConfiguration(busyTimeout: busyTimeout))
        // A confirmed message survives a power cut: every commit syncs the WAL. GRDB sets a
        // pool's writer to `synchronous = NORMAL` after `prepareDatabase` has run (NORMAL
        // syncs only at checkpoints, so the last commits before a power cut or a kernel crash
        // can roll back, though they survive the process being killed), so it is set here.
        try pool.writeWithoutTransaction { db in try db.execute(sql: "PRAGMA synchronous = FULL") }
        return pool
    }

    /// How every connection to the database file is set up (WAL mode comes with `DatabasePool`).
    static func fileConfiguration(busyTimeout: Duration) -> Configuration {
        var configuration = Configuration()
        configuration.busyMode = .timeout(TimeInterval(busyTimeout.milliseconds) / 1000)
        configuration.prepareDatabase { db in
            // Deleted text is overwritten on disk, not just unlinked from the b-tree.
            try db.execute(sql: "PRAGMA secure_delete = ON")
            // 32 MiB of page cache per connection (SQLite's default is 2 MiB): the writer keeps
            // the hot b-tree pages of a busy store instead of reading them back from the OS.
            try db.execute(sql: "PRAGMA cache_size = -32768")
            // Checkpoints run beside the writer (``checkpoint()``), not inside a commit: a commit
            // that crossed SQLite's default threshold (1,000 pages) copied and synced the WAL
            // while every send waited, which was most of the store's latency tail. This is
            // only the backstop should the checkpointer fall behind (64 MiB of WAL).
            try db.execute(sql: "PRAGMA wal_autocheckpoint = 16384")
        }
        return configuration
    }

    /// The schema migrations the database file at `path` lacks, oldest first: every one
    /// for a file that does not exist yet. Changes nothing.
    public static func pendingMigrations(path: String) throws -> [String] {
        guard FileManager.default.fileExists(atPath: path) else { return Schema.migrator.migrations }
        let queue = try DatabaseQueue(path: path)
        defer { try? queue.close() }
        let applied = try queue.read { db in try Schema.migrator.appliedIdentifiers(db) }
        return Schema.migrator.migrations.filter { !applied.contains($0) }
    }

    /// Brings the database file at `path` (created if missing) to the current schema, each
    /// migration in a transaction of its own, then copies the WAL into the file and empties
    /// it; returns the migrations it applied. What `open` does first, for `chat-messages
    /// migrate`, which runs it on its own before the service starts (docs/operations.md).
    @discardableResult
    public static func migrate(path: String, busyTimeout: Duration = .seconds(10)) throws -> [String] {
        let pending = try pendingMigrations(path: path)
        let pool = try filePool(path: path, busyTimeout: busyTimeout)
        defer { try? pool.close() }
        try Schema.migrator.migrate(pool)
        try pool.writeWithoutTransaction { db in _ = try Row.fetchOne(db, sql: "PRAGMA wal_checkpoint(TRUNCATE)") }
        return pending
    }

    /// Copies what the WAL holds into the database file (`PRAGMA wal_checkpoint(PASSIVE)`)
    /// on a connection of its own, without taking the writer: the messages service calls it
    /// every second. Returns the WAL's frames and how many are now in the database file.
    /// After a compaction that could not empty the WAL, it truncates instead
    /// (`wal_checkpoint(TRUNCATE)`), until that succeeds.
    @discardableResult
    public func checkpoint() async throws -> (walFrames: Int, checkpointed: Int) {
        guard let checkpointer else { return (0, 0) }
        let truncate = walTruncation.due()
        let (busy, frames, checkpointed) = try await checkpointer.writeWithoutTransaction { db in
            let row = try Row.fetchOne(db, sql: truncate ? "PRAGMA wal_checkpoint(TRUNCATE)" : "PRAGMA wal_checkpoint(PASSIVE)")
            return (row?[0] ?? 0, row?[1] ?? 0, row?[2] ?? 0) as (Int, Int, Int)
        }
        if truncate { walTruncation.attempted(succeeded: busy == 0) }
        return (frames, checkpointed)
    }

    /// Whether a compaction's WAL truncation is still to be done (``checkpoint()`` retries it).
    public var walTruncationPending: Bool { walTruncation.isPending }

    /// How long the WAL truncation waits for readers before it gives up and is retried.
    static let truncationWait: Duration = .milliseconds(250)

    /// A private in-memory database, for unit tests.
    public static func inMemory(retention: Duration = .seconds(90 * 86400), bcryptCost: UInt8 = 4) throws -> MessageStore {
        try MessageStore(writer: DatabaseQueue(), retention: retention, bcryptCost: bcryptCost)
    }

    init(writer: any DatabaseWriter, retention: Duration, bcryptCost: UInt8, checkpointer: DatabaseQueue? = nil) throws {
        self.writer = writer
        self.checkpointer = checkpointer
        self.retention = retention
        self.bcryptCost = bcryptCost
        try Schema.migrator.migrate(writer)
    }

    /// Runs `body` in one write transaction, synced at commit (see ``restoreFullSync(_:)``).
    public func write<T: Sendable>(_ body: @Sendable (Database) throws -> T) throws -> T {
        try writer.writeWithoutTransaction { db in
            try self.restoreFullSync(db)
            var result: T?
            try db.inTransaction {
                result = try body(db)
                return .commit
            }
            return result!
        }
    }

    /// Puts the writer back to `synchronous = FULL` if a purge step lowered it and could not
    /// raise it again (``purgeStep(ids:entry:now:)``): then the next write does it before its
    /// transaction, or fails, and no send is confirmed on an unsynced commit. On the writer,
    /// outside a transaction (SQLite refuses the change inside one).
    func restoreFullSync(_ db: Database) throws {
        guard writerSync.isLowered else { return }
        try db.execute(sql: "PRAGMA synchronous = FULL")
        writerSync.lowered(false)
    }

    /// Runs `body` on a reader (a snapshot; never blocks writes).
    public func read<T: Sendable>(_ body: @Sendable (Database) throws -> T) throws -> T {
        try writer.read(body)
    }

    // MARK: Users

    /// Adds a user; the password is hashed with bcrypt. Emails are stored lowercased.
    @discardableResult
    public func createUser(email: String, name: String, role: Role, password: String, now: Date = Date()) throws -> User {
        let email = try Validation.email(email)
        let name = try Validation.name(name)
        try Validation.password(password)
        let hash = Bcrypt.hash(password, cost: bcryptCost)
        return try write { db in try self.insertUser(db, email: email, name: name, role: role, passwordHash: hash, now: now) }
    }

    /// Validates and inserts, inside a command batch: with the hash the sender made, or (the
    /// old form of `create_user`) hashing the password here, which holds the write lock.
    func insertUser(_ db: Database, _ request: CreateUserRequest, now: Date) throws -> User {
        let email = try Validation.email(request.email)
        let name = try Validation.name(request.name)
        let hash: String
        if let given = request.passwordHash {
            try PasswordPolicy.checkHash(given)
            hash = given
        } else if let password = request.password {
            try Validation.password(password)
            hash = Bcrypt.hash(password, cost: bcryptCost)
        } else {
            throw ChatError(.badRequest, "password_hash is required")
        }
        return try insertUser(db, email: email, name: name, role: request.role, passwordHash: hash, now: now,
                              mustChangePassword: request.mustChangePassword == true)
    }

    private func insertUser(_ db: Database, email: String, name: String, role: Role, passwordHash: String, now: Date,
                            mustChangePassword: Bool = false) throws -> User {
        guard try UserRecord.fetchOne(db, key: email) == nil else { throw ChatError(.conflict, "a user with this email already exists") }
        let record = UserRecord(email: email, name: name, role: role.rawValue, passwordHash: passwordHash, disabled: false, createdAt: now.epochMilliseconds,
                                mustChangePassword: mustChangePassword)
        try record.insert(db)
        return record.user
    }

    /// The user, if they exist (disabled ones included).
    public func user(_ email: String) throws -> User? {
        let email = email.lowercased()
        return try read { db in try UserRecord.fetchOne(db, key: email)?.user }
    }

    /// Checks a password. Unknown users, wrong passwords and disabled users all give `nil`,
    /// after the same bcrypt work, so the answer does not tell which.
    public func authenticate(email: String, password: String) throws -> User? {
        let key = email.trimmingCharacters(in: .whitespaces).lowercased()
        let record = try read { db in try UserRecord.fetchOne(db, key: key) }
        let matches = Bcrypt.verify(password, hash: record?.passwordHash ?? Self.decoyHash)
        guard let record, matches, !record.disabled else { return nil }
        return record.user
    }

    /// A valid bcrypt hash of nothing anyone knows, verified for unknown users to spend the same time.
    private static let decoyHash = Bcrypt.hash(UUID().uuidString, cost: 10)

    /// Every user, by name.
    public func users() throws -> [User] {
        try read { db in try UserRecord.order(UserRecord.Columns.name).fetchAll(db).map(\.user) }
    }

    /// Conversations for an admin deciding on a legal hold: those `participant` takes part in
    /// (`not_found` for no such user), those on hold (`heldOnly`), or both; the latest
    /// activity first. Participants and counts, never content.
    public func adminConversations(participant: String?, heldOnly: Bool, limit: Int = 100, now: Date = Date()) throws -> [AdminConversation] {
        let participant = participant?.trimmingCharacters(in: .whitespaces).lowercased()
        return try read { db in
            if let participant, try UserRecord.fetchOne(db, key: participant) == nil { throw ChatError(.notFound, "no such user") }
            let rows = try Row.fetchAll(db, sql: """
                SELECT c.id, c.kind, c.title, c.created_at, c.last_message_at, c.legal_hold,
                       (SELECT COUNT(*) FROM messages m WHERE m.conversation_id = c.id) AS stored,
                       (SELECT COUNT(*) FROM messages m WHERE m.conversation_id = c.id AND m.expires_at <= :now) AS kept
                FROM conversations c
                WHERE (:participant IS NULL OR c.id IN (SELECT conversation_id FROM participants WHERE email = :participant))
                  AND (:held = 0 OR c.legal_hold = 1)
                ORDER BY COALESCE(c.last_message_at, c.created_at) DESC, c.id
                LIMIT :limit
                """, arguments: ["now": now.epochMilliseconds, "participant": participant, "held": heldOnly, "limit": max(1, min(limit, 500))])
            return try rows.map { row in
                let id: String = row["id"]
                let participants = try String.fetchAll(db, sql: "SELECT email FROM participants WHERE conversation_id = ? ORDER BY email", arguments: [id])
                return AdminConversation(id: id, kind: Conversation.Kind(rawValue: row["kind"]) ?? .direct, title: row["title"], participants: participants,
                                         createdAt: Date(milliseconds: row["created_at"]), lastMessageAt: (row["last_message_at"] as Int64?).map(Date.init(milliseconds:)),
                                         messages: row["stored"], keptPastExpiry: row["kept"], legalHold: row["legal_hold"])
            }
        }
    }

    /// Disables (or enables again) a user.
    @discardableResult
    public func setDisabled(_ email: String, _ disabled: Bool) throws -> User {
        try updateUser(email) { $0.disabled = disabled }
    }

    /// Changes a user's role.
    @discardableResult
    public func setRole(_ email: String, _ role: Role) throws -> User {
        try updateUser(email) { $0.role = role.rawValue }
    }

    private func updateUser(_ email: String, _ change: @escaping @Sendable (inout UserRecord) -> Void) throws -> User {
        let email = email.lowercased()
        return try write { db in
            guard var record = try UserRecord.fetchOne(db, key: email) else { throw ChatError(.notFound, "no such user") }
            change(&record)
            try record.update(db)
            return record.user
        }
    }

    /// Enabled users whose name or email contains `query`, optionally of one role; at most `limit`.
    public func searchUsers(_ query: String, role: Role?, excluding caller: String? = nil, limit: Int = 20) throws -> [User] {
        let pattern = "%" + query.trimmingCharacters(in: .whitespaces).lowercased()
            .replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "%", with: "\\%").replacingOccurrences(of: "_", with: "\\_") + "%"
        return try read { db in
            var request = UserRecord
                .filter(sql: "(lower(name) LIKE ? ESCAPE '\\' OR email LIKE ? ESCAPE '\\') AND disabled = 0", arguments: [pattern, pattern])
                .order(UserRecord.Columns.name)
                .limit(max(1, min(limit, 100)))
            if let role { request = request.filter(UserRecord.Columns.role == role.rawValue) }
            if let caller { request = request.filter(UserRecord.Columns.email != caller.lowercased()) }
            return try request.fetchAll(db).map(\.user)
        }
    }

    // MARK: Conversations

    /// The 1:1 conversation of two users, created on first use (the same pair always gets the same one).
    public func openDirectConversation(_ a: String, _ b: String, now: Date = Date()) throws -> Conversation {
        try write { db in try self.conversation(try self.openDirect(db, a, b, now: now), for: a.lowercased(), db, now: now) }
    }

    /// A new group conversation with a title; the creator is a participant.
    public func createGroup(creator: String, title: String, members: [String], now: Date = Date()) throws -> Conversation {
        try write { db in
            let record = try self.createGroup(db, creator: creator, title: title, members: members, now: now)
            return try self.conversation(record, for: creator.lowercased(), db, now: now)
        }
    }

    func openDirect(_ db: Database, _ a: String, _ b: String, now: Date) throws -> ConversationRecord {
        let pair = [a.lowercased(), b.lowercased()].sorted()
        guard pair[0] != pair[1] else { throw ChatError(.badRequest, "a 1:1 conversation needs two different people") }
        let key = pair.joined(separator: " ")
        if let existing = try db.cachedFetchOne(ConversationRecord.self, "SELECT * FROM conversations WHERE direct_key = ?", [key]) { return existing }
        for email in pair { try requireActiveUser(db, email) }
        let record = ConversationRecord(id: Self.newID(), kind: Conversation.Kind.direct.rawValue, title: nil, directKey: key,
                                        createdBy: a.lowercased(), createdAt: now.epochMilliseconds, lastSeq: 0, lastMessageAt: nil)
        try record.insert(db)
        for email in pair { try ParticipantRecord(conversationID: record.id, email: email, readSeq: 0, readAt: nil, joinedAt: now.epochMilliseconds).insert(db) }
        return record
    }

    /// The 1:1 a send by receiver email goes to, if its sender may send, and its
    /// participants: the sender's `disabled` flag and the 1:1 by its pair read in one
    /// statement (every such send read them in two; BENCHMARKS.md, twenty-first round);
    /// opened as `openDirect` does on the pair's first message. The participants are the
    /// pair, sorted as `participants` reads them: a 1:1's members never change. `sender` is
    /// lowercased already (``append(_:_:now:)`` does it once per send).
    func directConversation(_ db: Database, from sender: String, to receiver: String, now: Date) throws -> (ConversationRecord, participants: [String]) {
        let pair = [sender, receiver.lowercased()].sorted()
        let row = try Row.fetchOne(db.cachedStatement(sql: """
            SELECT u.disabled AS sender_disabled, c.* FROM users u LEFT JOIN conversations c ON c.direct_key = ? WHERE u.email = ?
            """), arguments: [pair.joined(separator: " "), sender])
        guard let row, (row["sender_disabled"] as Bool?) == false else { throw ChatError(.notFound, "no such user: \(sender)") }
        guard pair[0] != pair[1] else { throw ChatError(.badRequest, "a 1:1 conversation needs two different people") }
        if (row["id"] as String?) != nil { return (try ConversationRecord(row: row), pair) }
        return (try openDirect(db, sender, receiver, now: now), pair)
    }

    func createGroup(_ db: Database, creator: String, title: String, members: [String], now: Date) throws -> ConversationRecord {
        let title = title.trimmingCharacters(in: .whitespacesAndNewlines)
        guard (1...100).contains(title.count) else { throw ChatError(.invalidContent, "a group title has 1 to 100 characters") }
        var everyone = [creator.lowercased()]
        for member in members.map({ $0.lowercased() }) where !everyone.contains(member) { everyone.append(member) }
        guard everyone.count >= 2 else { throw ChatError(.badRequest, "a group needs at least one other member") }
        guard everyone.count <= Self.maximumGroupSize else { throw ChatError(.invalidContent, "a group has at most \(Self.maximumGroupSize) members") }
        for email in everyone { try requireActiveUser(db, email) }
        let record = ConversationRecord(id: Self.newID(), kind: Conversation.Kind.group.rawValue, title: title, directKey: nil,
                                        createdBy: everyone[0], createdAt: now.epochMilliseconds, lastSeq: 0, lastMessageAt: nil)
        try record.insert(db)
        for email in everyone { try ParticipantRecord(conversationID: record.id, email: email, readSeq: 0, readAt: nil, joinedAt: now.epochMilliseconds).insert(db) }
        return record
    }

    func requireActiveUser(_ db: Database, _ email: String) throws {
        // One column, not the decoded record: this ran for every send addressed by email
        // (the whole record through `Decodable` was 4 % of the service's closed-loop
        // profile); such a send now reads its sender's flag with its 1:1
        // (``directConversation(_:from:to:now:)``), and this runs when a 1:1 or group is made.
        guard let disabled = try Bool.fetchOne(db.cachedStatement(sql: "SELECT disabled FROM users WHERE email = ?"), arguments: [email]), !disabled else {
            throw ChatError(.notFound, "no such user: \(email)")
        }
    }

    /// The caller's conversations, most recent activity first, with the last visible message and unread count.
    public func conversations(for user: String, now: Date = Date()) throws -> [Conversation] {
        let user = user.lowercased()
        return try read { db in
            let records = try ConversationRecord.fetchAll(db.cachedStatement(sql: """
                SELECT c.* FROM conversations c JOIN participants p ON p.conversation_id = c.id
                WHERE p.email = ? ORDER BY COALESCE(c.last_message_at, c.created_at) DESC, c.id
                """), arguments: [user])
            // Every participant of every one of them in one statement, not three per conversation.
            let members = try self.members(db.cachedStatement(sql: """
                SELECT \(Self.memberColumns) FROM participants mine
                JOIN participants p ON p.conversation_id = mine.conversation_id JOIN users u ON u.email = p.email
                WHERE mine.email = ? ORDER BY p.conversation_id, p.email
                """), arguments: [user])
            return try self.describe(records, members: members, for: user, db, now: now)
        }
    }

    /// One conversation as `user` sees it; `notFound` unless they take part.
    public func conversation(_ id: String, for user: String, now: Date = Date()) throws -> Conversation {
        try read { db in try self.conversation(try self.requireParticipant(db, id, user), for: user.lowercased(), db, now: now) }
    }

    func conversation(_ record: ConversationRecord, for user: String, _ db: Database, now: Date) throws -> Conversation {
        let members = try members(db.cachedStatement(sql: """
            SELECT \(Self.memberColumns) FROM participants p JOIN users u ON u.email = p.email
            WHERE p.conversation_id = ? ORDER BY p.email
            """), arguments: [record.id])
        return try describe([record], members: members, for: user, db, now: now)[0]
    }

    /// A participant of a conversation being described, with their user.
    struct Member {
        var conversationID: String
        var readSeq: Int64
        var readVersion: Int64
        var user: User
    }

    /// The columns ``members(_:arguments:)`` reads, by position.
    static let memberColumns = "p.conversation_id, p.read_seq, p.read_version, u.email, u.name, u.role, u.disabled"

    /// Participants joined with their users, read by column position: by name, GRDB looks
    /// each column up without regard to case (`lowercased()` on every name of every row), and
    /// decoding a whole `UserRecord` read its password hash too; for a user in three groups of
    /// 200, that was a third of the list's time (BENCHMARKS.md, seventeenth round). One
    /// `User` per person, shared by their conversations.
    func members(_ statement: Statement, arguments: StatementArguments) throws -> [Member] {
        var users: [String: User] = [:]
        var members: [Member] = []
        let rows = try Row.fetchCursor(statement, arguments: arguments)
        while let row = try rows.next() {
            let email: String = row[3]
            let user: User
            if let known = users[email] {
                user = known
            } else {
                user = User(email: email, name: row[4], role: Role(rawValue: row[5]) ?? .doctor, disabled: row[6])
                users[email] = user
            }
            members.append(Member(conversationID: row[0], readSeq: row[1], readVersion: row[2], user: user))
        }
        return members
    }

    /// Conversations as `user` sees them, in the order of `records`: participants, members,
    /// read markers and their version from `members` (by conversation then email), the last
    /// visible message and the unread count from a cached statement each.
    func describe(_ records: [ConversationRecord], members: [Member], for user: String, _ db: Database, now: Date) throws -> [Conversation] {
        var rowsOf: [String: Range<Int>] = [:]
        var start = 0
        for index in members.indices where index + 1 == members.count || members[index + 1].conversationID != members[index].conversationID {
            rowsOf[members[index].conversationID] = start..<(index + 1)
            start = index + 1
        }
        let lastVisible = try db.cachedStatement(sql: "SELECT * FROM messages WHERE conversation_id = ? AND expires_at > ? ORDER BY seq DESC LIMIT 1")
        return try records.map { record in
            let rows = members[rowsOf[record.id] ?? 0..<0]
            let participants = rows.map(\.user.email)
            let last = try MessageRecord.fetchOne(lastVisible, arguments: [record.id, now.epochMilliseconds])
            let receiverOf = Self.receiver(kind: record.kind, participants: participants)
            var conversation = Conversation(
                id: record.id, kind: Conversation.Kind(rawValue: record.kind) ?? .direct, title: record.title, participants: participants,
                createdAt: Date(milliseconds: record.createdAt), lastMessageAt: last.map { Date(milliseconds: $0.createdAt) },
                lastMessage: last.map { $0.message(receiver: receiverOf($0.senderEmail)) },
                unreadCount: try unreadCount(db, conversation: record.id, user: user, now: now))
            conversation.members = rows.map(\.user)
            conversation.readPositions = Dictionary(uniqueKeysWithValues: rows.map { ($0.user.email, Int($0.readSeq)) })
            conversation.readVersion = rows.map(\.readVersion).max() ?? 0
            if record.kind == Conversation.Kind.group.rawValue { conversation.createdBy = record.createdBy }
            return conversation
        }
    }

    /// The conversation if `user` takes part; otherwise `notFound`, as if it did not exist.
    func requireParticipant(_ db: Database, _ conversationID: String, _ user: String) throws -> ConversationRecord {
        guard let record = try conversation(db, conversationID, participant: user) else { throw ChatError(.notFound, "conversation not found") }
        return record
    }

    /// The conversation, if `user` takes part in it.
    func conversation(_ db: Database, _ conversationID: String, participant user: String) throws -> ConversationRecord? {
        try db.cachedFetchOne(ConversationRecord.self, """
            SELECT c.* FROM conversations c JOIN participants p ON p.conversation_id = c.id WHERE c.id = ? AND p.email = ?
            """, [conversationID, user.lowercased()])
    }

    /// The conversation and its participants (by email) in one statement, if `user` is one of
    /// them; otherwise `notFound`, as if it did not exist. Every send by conversation id reads
    /// both: one statement instead of two (BENCHMARKS.md, twenty-first round).
    func conversationAndParticipants(_ db: Database, _ conversationID: String, _ user: String) throws -> (ConversationRecord, [String]) {
        // The sender's `disabled` flag comes with them (a subquery SQLite runs once): a send
        // queued before its sender was disabled is refused as one by receiver email is.
        let rows = try Row.fetchCursor(db.cachedStatement(sql: """
            SELECT c.*, p.email AS member, (SELECT disabled FROM users WHERE email = ?) AS sender_disabled
            FROM conversations c JOIN participants p ON p.conversation_id = c.id WHERE c.id = ? ORDER BY p.email
            """), arguments: [user, conversationID])
        var record: ConversationRecord?
        var members: [String] = []
        var senderDisabled: Bool?
        while let row = try rows.next() {
            if record == nil {
                record = try ConversationRecord(row: row)
                senderDisabled = row["sender_disabled"]
            }
            members.append(row["member"])
        }
        guard let record, members.contains(user) else { throw ChatError(.notFound, "conversation not found") }
        guard senderDisabled == false else { throw ChatError(.notFound, "no such user: \(user)") }
        return (record, members)
    }

    /// For a 1:1, who receives what `sender` sends; `nil` in groups.
    static func receiver(kind: String, participants: [String]) -> (String) -> String? {
        guard kind == Conversation.Kind.direct.rawValue else { return { _ in nil } }
        return { sender in participants.first { $0 != sender } }
    }

    // MARK: Messages

    /// Stores sends in one transaction; each gets its own result (a bad one does not stop the others).
    public func append(_ requests: [SendRequest], now: Date = Date()) throws -> [Result<StoredMessage, ChatError>] {
        try write { db in
            let indexed = try self.lastMessageRowID(db)
            let results = requests.map { request in Result { try self.append(db, request, now: now) }.mapError(ChatError.wrap) }
            try self.indexMessages(db, after: indexed)
            return results
        }
    }

    /// The newest message's rowid; messages inserted later in the transaction get larger ones.
    func lastMessageRowID(_ db: Database) throws -> Int64 {
        try Int64.fetchOne(db.cachedStatement(sql: "SELECT COALESCE(MAX(rowid), 0) FROM messages")) ?? 0
    }

    /// Adds the messages stored in this transaction (rowid above `rowid`) to the search index.
    /// Every transaction that inserts messages calls it before it commits, once, after its
    /// savepoints: FTS5 flushes its pending terms at every savepoint, so indexing row by row
    /// inside them wrote a new index segment per message.
    func indexMessages(_ db: Database, after rowid: Int64) throws {
        try db.cachedStatement(sql: "INSERT INTO messages_fts(rowid, content) SELECT rowid, content FROM messages WHERE rowid > ?")
            .execute(arguments: [rowid])
    }

    func append(_ db: Database, _ request: SendRequest, now: Date) throws -> StoredMessage {
        let sender = request.sender.lowercased()
        let content = try Validation.content(request.content)
        if let clientID = request.clientID {
            guard (1...128).contains(clientID.count) else { throw ChatError(.badRequest, "client_id has 1 to 128 characters") }
            if let existing = try db.cachedFetchOne(MessageRecord.self, "SELECT * FROM messages WHERE client_id = ? AND sender_email = ?", [clientID, sender]) {
                return try stored(db, existing, duplicate: true)
            }
        }
        var conversation: ConversationRecord
        let participants: [String]
        if let id = request.conversationID {
            (conversation, participants) = try conversationAndParticipants(db, id, sender)
        } else if let receiver = request.receiverEmail {
            (conversation, participants) = try directConversation(db, from: sender, to: receiver, now: now)
        } else {
            throw ChatError(.badRequest, "a message needs a conversation_id or a receiver_email")
        }
        // Every refusal comes before the first write (`openDirect` refuses before it inserts
        // a new 1:1) and nothing below throws a `ChatError`: a send refused leaves nothing
        // behind without a savepoint (``apply(_:now:)``).
        conversation.lastSeq += 1
        conversation.lastMessageAt = now.epochMilliseconds
        // The send path's writes run from the statement cache (no SQL built per send).
        try db.cachedStatement(sql: "UPDATE conversations SET last_seq = ?, last_message_at = ? WHERE id = ?")
            .execute(arguments: [conversation.lastSeq, conversation.lastMessageAt, conversation.id])
        let record = MessageRecord(
            id: TimeOrderedID.make(at: now), conversationID: conversation.id, seq: conversation.lastSeq, senderEmail: sender, content: content,
            createdAt: now.epochMilliseconds, expiresAt: now.epochMilliseconds + retention.milliseconds, readAt: nil, clientID: request.clientID)
        try db.cachedStatement(sql: """
            INSERT INTO messages (id, conversation_id, seq, sender_email, content, created_at, expires_at, read_at, client_id)
            VALUES (?, ?, ?, ?, ?, ?, ?, NULL, ?)
            """).execute(arguments: [record.id, record.conversationID, record.seq, record.senderEmail, record.content,
                                      record.createdAt, record.expiresAt, record.clientID])
        return StoredMessage(message: record.message(receiver: Self.receiver(kind: conversation.kind, participants: participants)(sender)),
                             participants: participants, duplicate: false)
    }

    /// A message already stored, as a send answers and announces it.
    func stored(_ db: Database, _ record: MessageRecord, duplicate: Bool) throws -> StoredMessage {
        let conversation = try db.cachedFetchOne(ConversationRecord.self, "SELECT * FROM conversations WHERE id = ?", [record.conversationID])!
        let participants = try participants(db, record.conversationID)
        return StoredMessage(message: record.message(receiver: Self.receiver(kind: conversation.kind, participants: participants)(record.senderEmail)),
                             participants: participants, duplicate: duplicate)
    }

    func participants(_ db: Database, _ conversationID: String) throws -> [String] {
        try String.fetchAll(db.cachedStatement(sql: "SELECT email FROM participants WHERE conversation_id = ? ORDER BY email"), arguments: [conversationID])
    }

    /// Moves `reader`'s marker forward to `upToSeq` (never back, never past the last message).
    public func markRead(reader: String, conversationID: String, upToSeq: Int64, now: Date = Date()) throws -> ReadUpdate {
        try write { db in try self.markRead(db, reader: reader, conversationID: conversationID, upToSeq: upToSeq, now: now) }
    }

    /// Marks everything up to and including this message as read by `reader`.
    public func markMessageRead(reader: String, messageID: String, now: Date = Date()) throws -> ReadUpdate {
        try write { db in try self.markMessageRead(db, reader: reader, messageID: messageID, now: now) }
    }

    func markMessageRead(_ db: Database, reader: String, messageID: String, now: Date) throws -> ReadUpdate {
        guard let message = try db.cachedFetchOne(MessageRecord.self, "SELECT * FROM messages WHERE id = ?", [messageID]),
              message.expiresAt > now.epochMilliseconds else {
            throw ChatError(.notFound, "message not found")
        }
        return try markRead(db, reader: reader, conversationID: message.conversationID, upToSeq: message.seq, now: now)
    }

    func markRead(_ db: Database, reader: String, conversationID: String, upToSeq: Int64, now: Date) throws -> ReadUpdate {
        let reader = reader.lowercased()
        let conversation = try requireParticipant(db, conversationID, reader)
        guard upToSeq >= 0 else { throw ChatError(.badRequest, "up_to_seq must not be negative") }
        // Every statement of a mark from the statement cache: in a busy group the marks are
        // as many as the messages (BENCHMARKS.md, sixteenth round).
        guard var marker = try db.cachedFetchOne(ParticipantRecord.self, "SELECT * FROM participants WHERE conversation_id = ? AND email = ?",
                                                 [conversationID, reader]) else { throw ChatError(.notFound, "conversation not found") }
        let target = min(upToSeq, conversation.lastSeq)
        let advanced = target > marker.readSeq
        var recipients: [String]?
        if advanced {
            if conversation.kind == Conversation.Kind.group.rawValue {
                recipients = try receiptRecipients(db, conversationID: conversationID, reader: reader, after: marker.readSeq, through: target)
            }
            try db.cachedStatement(sql: """
                UPDATE messages SET read_at = ? WHERE conversation_id = ? AND seq > ? AND seq <= ? AND sender_email != ? AND read_at IS NULL
                """).execute(arguments: [now.epochMilliseconds, conversationID, marker.readSeq, target, reader])
            marker.readSeq = target
            marker.readAt = now.epochMilliseconds
            marker.readVersion = try nextReadVersion(db)
            try db.cachedStatement(sql: "UPDATE participants SET read_seq = ?, read_at = ?, read_version = ? WHERE conversation_id = ? AND email = ?")
                .execute(arguments: [marker.readSeq, marker.readAt, marker.readVersion, conversationID, reader])
        }
        return try readUpdate(db, reader: reader, conversationID: conversationID, marker: marker, advanced: advanced,
                               recipients: recipients, now: now)
    }

    /// The longest move of a group's marker whose receipt goes only to the senders it
    /// covers; a longer one (a reader back after days) goes to every member, without
    /// reading thousands of messages for it.
    static let receiptRecipientScan: Int64 = 1_000

    /// Who hears of `reader`'s marker moving from `after` to `through` in a group: the reader
    /// (their other devices clear the badge) and whoever sent a message in that range, the
    /// only members whose ticks change. Sending it to every member made each mark G
    /// receipts and a group where all read G² per message: 26,000 receipts a second in a
    /// group of 256 at 20 messages a second (BENCHMARKS.md, seventeenth round). The others
    /// read every marker with the conversation list and in `sync`'s replay.
    func receiptRecipients(_ db: Database, conversationID: String, reader: String, after: Int64, through: Int64) throws -> [String]? {
        guard through - after <= Self.receiptRecipientScan else { return nil }
        let senders = try String.fetchAll(db.cachedStatement(sql: """
            SELECT DISTINCT sender_email FROM messages WHERE conversation_id = ? AND seq > ? AND seq <= ? AND sender_email != ? ORDER BY sender_email
            """), arguments: [conversationID, after, through, reader])
        return [reader] + senders
    }

    /// The version of a marker's move: one more than any before it. In the move's own
    /// transaction, on the store's one writer, so versions follow the commits: a reader's
    /// snapshot holds every move up to its highest version and none after it.
    func nextReadVersion(_ db: Database) throws -> Int64 { try readVersion(db) + 1 }

    /// The highest marker version in the reader's snapshot: a `sync` with `receipts_after` at
    /// it replays only the moves after this snapshot.
    func readVersion(_ db: Database) throws -> Int64 {
        try Int64.fetchOne(db.cachedStatement(sql: "SELECT COALESCE(MAX(read_version), 0) FROM participants")) ?? 0
    }

    /// The receipt of `reader`'s marker as it is, for `recipients` (everyone in the
    /// conversation when not given; nobody when the marker did not move).
    func readUpdate(_ db: Database, reader: String, conversationID: String, marker: ParticipantRecord, advanced: Bool,
                    recipients: [String]? = nil, now: Date) throws -> ReadUpdate {
        let messageID = try String.fetchOne(db.cachedStatement(sql: "SELECT id FROM messages WHERE conversation_id = ? AND seq = ?"), arguments: [conversationID, marker.readSeq])
        let receipt = ReadReceipt(messageID: messageID, conversationID: conversationID, readerEmail: reader,
                                  readAt: Date(milliseconds: marker.readAt ?? now.epochMilliseconds), upToSeq: marker.readSeq)
        let recipients = advanced ? try recipients ?? participants(db, conversationID) : []
        return ReadUpdate(receipt: receipt, recipients: recipients, advanced: advanced)
    }

    /// A page of history, oldest first: the newest `limit` messages before `before` (a seq), or after skipping `skip` from the newest.
    public func history(for user: String, conversationID: String, limit: Int = 30, before: Int64? = nil, skip: Int = 0, now: Date = Date()) throws -> [Message] {
        let limit = max(1, min(limit, 100))
        return try read { db in
            let conversation = try self.requireParticipant(db, conversationID, user)
            let receiverOf = Self.receiver(kind: conversation.kind, participants: try self.participants(db, conversationID))
            // From the statement cache: preparing it was an eighth of the service's CPU when paging.
            let page = try MessageRecord.fetchAll(db.cachedStatement(sql: """
                SELECT * FROM messages WHERE conversation_id = ? AND expires_at > ? AND seq < ?
                ORDER BY seq DESC LIMIT ? OFFSET ?
                """), arguments: [conversationID, now.epochMilliseconds, before ?? Int64.max, limit, max(0, skip)])
            return page.reversed().map { $0.message(receiver: receiverOf($0.senderEmail)) }
        }
    }

    /// Unread messages per conversation for `user` (only conversations with some), and their total.
    public func unreadCounts(for user: String, now: Date = Date()) throws -> (total: Int, byConversation: [String: Int]) {
        let user = user.lowercased()
        return try read { db in
            let rows = try Row.fetchAll(db, sql: """
                SELECT m.conversation_id AS id, COUNT(*) AS n FROM participants p
                JOIN messages m ON m.conversation_id = p.conversation_id AND m.seq > p.read_seq
                WHERE p.email = ? AND m.sender_email != ? AND m.expires_at > ?
                GROUP BY m.conversation_id
                """, arguments: [user, user, now.epochMilliseconds])
            var byConversation: [String: Int] = [:]
            for row in rows { byConversation[row["id"]] = row["n"] }
            return (byConversation.values.reduce(0, +), byConversation)
        }
    }

    func unreadCount(_ db: Database, conversation: String, user: String, now: Date) throws -> Int {
        try Int.fetchOne(db.cachedStatement(sql: """
            SELECT COUNT(*) FROM messages m JOIN participants p ON p.conversation_id = m.conversation_id AND p.email = ?
            WHERE m.conversation_id = ? AND m.seq > p.read_seq AND m.sender_email != ? AND m.expires_at > ?
            """), arguments: [user, conversation, user, now.epochMilliseconds]) ?? 0
    }

    /// Messages containing every word of `query`, newest first, from the caller's conversations only.
    public func searchMessages(for user: String, query: String, limit: Int = 50, now: Date = Date()) throws -> [Message] {
        guard let match = Self.ftsQuery(query) else { return [] }
        let user = user.lowercased()
        return try read { db in
            let records = try MessageRecord.fetchAll(db, sql: """
                SELECT m.* FROM messages_fts f
                JOIN messages m ON m.rowid = f.rowid
                JOIN participants p ON p.conversation_id = m.conversation_id AND p.email = ?
                WHERE messages_fts MATCH ? AND m.expires_at > ?
                ORDER BY m.created_at DESC LIMIT ?
                """, arguments: [user, match, now.epochMilliseconds, max(1, min(limit, 100))])
            var participantsByConversation: [String: (String) -> String?] = [:]
            return try records.map { record in
                if participantsByConversation[record.conversationID] == nil {
                    let conversation = try ConversationRecord.fetchOne(db, key: record.conversationID)!
                    participantsByConversation[record.conversationID] = Self.receiver(kind: conversation.kind, participants: try self.participants(db, record.conversationID))
                }
                return record.message(receiver: participantsByConversation[record.conversationID]!(record.senderEmail))
            }
        }
    }

    /// Each word quoted (so FTS5 syntax in user input is just text) and matched as a prefix; `nil` for no words.
    static func ftsQuery(_ query: String) -> String? {
        let words = query.split(whereSeparator: { $0.isWhitespace }).prefix(16)
        guard !words.isEmpty else { return nil }
        return words.map { "\"" + $0.replacingOccurrences(of: "\"", with: "\"\"") + "\"*" }.joined(separator: " ")
    }

    // MARK: Audit

    /// Appends entries to the audit log (it cannot be edited or deleted through the store).
    public func record(_ entries: [AuditEntry]) throws {
        guard !entries.isEmpty else { return }
        try write { db in try self.record(db, entries) }
    }

    func record(_ db: Database, _ entries: [AuditEntry]) throws {
        let insert = try db.cachedStatement(sql: """
            INSERT INTO audit_log (at, actor, action, target, outcome, gateway, request_id, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
            """)
        for entry in entries {
            try insert.execute(arguments: [entry.at.epochMilliseconds, entry.actor, entry.action, entry.target, entry.outcome,
                                           entry.gateway, entry.requestID, entry.detail])
        }
    }

    /// The newest audit entries first, `limit` at most, older than the entry `beforeID` when given.
    public func auditLog(limit: Int = 100, beforeID: Int64? = nil) throws -> [AuditEntry] {
        try read { db in
            try AuditRecord.fetchAll(db, sql: "SELECT * FROM audit_log WHERE id < ? ORDER BY id DESC LIMIT ?",
                                     arguments: [beforeID ?? Int64.max, max(1, min(limit, 1000))]).map { record in
                var entry = AuditEntry(at: Date(milliseconds: record.at), context: RequestContext(actor: record.actor, gateway: record.gateway, requestID: record.requestID),
                                       action: record.action, target: record.target, outcome: record.outcome, detail: record.detail)
                entry.id = record.id
                return entry
            }
        }
    }

    static func newID() -> String { UUID().uuidString.lowercased() }
}

extension ChatError {
    /// Store errors as they are; anything else (SQLite, I/O) as an internal error whose text stays in the logs.
    static func wrap(_ error: any Error) -> ChatError {
        (error as? ChatError) ?? ChatError(.internal, "the store could not complete the request")
    }
}

extension Database {
    /// One record through a statement compiled once per connection (the hot path of every
    /// send: compiling SQL, and SQLite's authorizer callbacks while it does, cost more than
    /// running it).
    func cachedFetchOne<Record: FetchableRecord>(_ type: Record.Type, _ sql: String, _ arguments: StatementArguments) throws -> Record? {
        try Record.fetchOne(cachedStatement(sql: sql), arguments: arguments)
    }
}

/// Whether the writer may be at `synchronous = NORMAL`: set before a purge step lowers it,
/// cleared once it is back at FULL. Shared by copies of a ``MessageStore``; read and written
/// on the writer's queue only.
final class WriterSync: Sendable {
    private let state = Mutex(false)
    var isLowered: Bool { state.withLock { $0 } }
    func lowered(_ value: Bool) { state.withLock { $0 = value } }
}

/// A WAL truncation still to be done, shared by copies of a ``MessageStore``: retried
/// after 1 s, then 2, 4, ... up to a minute, since every attempt against a reader that
/// keeps its old snapshot holds new writers for up to ``MessageStore/truncationWait``.
final class TruncationRetry: Sendable {
    private struct State {
        var pending = false
        var failures = 0
        var next = ContinuousClock.now
    }
    private let state = Mutex(State())

    var isPending: Bool { state.withLock { $0.pending } }

    /// Whether ``MessageStore/checkpoint()`` should truncate now.
    func due(now: ContinuousClock.Instant = .now) -> Bool {
        state.withLock { $0.pending && now >= $0.next }
    }

    func attempted(succeeded: Bool, now: ContinuousClock.Instant = .now) {
        state.withLock { state in
            guard !succeeded else { state = State(); return }
            state.pending = true
            state.failures += 1
            state.next = now + .seconds(min(60, 1 << min(state.failures - 1, 6)))
        }
    }
}
