import ChatCore
import Foundation
import GRDB

/// What applying one command did, for the processor to announce after commit.
public enum CommandOutcome: Sendable {
    case sent(StoredMessage)
    case read(ReadUpdate)
    case conversation(Conversation)
    case user(User)
    case audited
    case purged(PurgeResult)
    /// A sweep finished: compact outside the batch's transaction.
    case compactRequested(auditRetention: Duration)
    /// A user's password was set, or their sessions ended: their tokens issued before
    /// `tokensBefore` (ms) are to be refused for `ttl` (the tokens' lifetime), and their
    /// sockets told to end.
    case sessionsEnded(User, tokensBefore: Int64, ttl: Int64)
    /// A token logged out: gateways refuse it for `ttl` ms more (until it would expire).
    case tokenRevoked(jti: String, ttl: Int64)
    /// The auth state to put back into a Redis that lost it.
    case authRestored(AuthSnapshot)
    /// A hold changed; `released` lists held messages already due, to schedule again.
    case legalHold(conversationID: String, held: Bool, released: [DueMessage])
    /// A group changed: told to everyone in `previous` or in the event's `participants`.
    case groupUpdated(ConversationUpdatedEvent, previous: [String])
    /// A message its sender took back: its participants are told to drop it.
    case retracted(Retraction)
    /// The entry was applied before (redelivered after a crash) and has nothing to announce
    /// again (an audit line, a compaction, or its subject is gone): answered `{}`.
    case alreadyApplied
    case failed(ChatError)
}

/// What gateways refuse, as the store keeps it (``CommandOutcome/authRestored(_:)``).
public struct AuthSnapshot: Sendable, Hashable {
    /// Disabled users (`auth:disabled:{email}`, no TTL).
    public var disabled: [String] = []
    /// Users who must change their password first (`auth:must_change:{email}`, no TTL).
    public var mustChangePassword: [String] = []
    /// Users whose tokens issued before `before` (ms) are refused, for `ttl` ms more.
    public var cutoffs: [Cutoff] = []
    /// Logged-out tokens, refused for `ttl` ms more.
    public var revoked: [Revoked] = []

    public struct Cutoff: Sendable, Hashable { public var email: String; public var before: Int64; public var ttl: Int64 }
    public struct Revoked: Sendable, Hashable { public var jti: String; public var ttl: Int64 }
}

extension MessageStore {
    /// The auth state still in force at `now`, after forgetting what has expired (when `prune`).
    func authSnapshot(_ db: Database, now: Date, prune: Bool) throws -> AuthSnapshot {
        let ms = now.epochMilliseconds
        if prune {
            try db.execute(sql: "DELETE FROM revoked_tokens WHERE expires_at <= ?", arguments: [ms])
            try db.execute(sql: "DELETE FROM session_cutoffs WHERE expires_at <= ?", arguments: [ms])
        }
        var snapshot = AuthSnapshot()
        snapshot.disabled = try String.fetchAll(db, sql: "SELECT email FROM users WHERE disabled = 1 ORDER BY email")
        snapshot.mustChangePassword = try String.fetchAll(db, sql: "SELECT email FROM users WHERE must_change_password = 1 ORDER BY email")
        snapshot.cutoffs = try Row.fetchAll(db, sql: "SELECT email, tokens_before, expires_at FROM session_cutoffs WHERE expires_at > ? ORDER BY email",
                                            arguments: [ms]).map { .init(email: $0[0], before: $0[1], ttl: ($0[2] as Int64) - ms) }
        snapshot.revoked = try Row.fetchAll(db, sql: "SELECT jti, expires_at FROM revoked_tokens WHERE expires_at > ? ORDER BY jti",
                                            arguments: [ms]).map { .init(jti: $0[0], ttl: ($0[1] as Int64) - ms) }
        return snapshot
    }

    /// Forgets the logged-out tokens and session cutoffs whose tokens have all expired (the
    /// service's hourly upkeep; a restore forgets them too). Returns how many rows it deleted.
    @discardableResult
    public func forgetExpiredAuthRecords(now: Date = Date()) throws -> Int {
        try write { db in
            try db.execute(sql: "DELETE FROM revoked_tokens WHERE expires_at <= ?", arguments: [now.epochMilliseconds])
            var deleted = db.changesCount
            try db.execute(sql: "DELETE FROM session_cutoffs WHERE expires_at <= ?", arguments: [now.epochMilliseconds])
            deleted += db.changesCount
            return deleted
        }
    }

    /// Keeps a session cutoff until the last token it refuses has expired; a later one wins.
    func recordCutoff(_ db: Database, email: String, before: Int64, ttl: Int64) throws {
        try db.execute(sql: """
            INSERT INTO session_cutoffs (email, tokens_before, expires_at) VALUES (?, ?, ?)
            ON CONFLICT(email) DO UPDATE SET tokens_before = max(tokens_before, excluded.tokens_before), expires_at = max(expires_at, excluded.expires_at)
            """, arguments: [email, before, before + ttl])
    }

    /// The sessions of `user` ended, with the cutoff the gateways are to hold: the latest the
    /// store keeps, so a change or log-out whose command reaches the store late (an older
    /// `tokens_before`) cannot lower it, and how long it matters from the command's own time
    /// (both times are Redis's clock, which the store's own need not agree with). A cutoff
    /// forgotten since (expired) falls back to the command's own.
    func sessionsEnded(_ db: Database, _ user: User, command before: Int64, ttl: Int64) throws -> CommandOutcome {
        let kept = try Row.fetchOne(db.cachedStatement(sql: "SELECT tokens_before, expires_at FROM session_cutoffs WHERE email = ?"), arguments: [user.email])
        let (cutoff, expires): (Int64, Int64) = kept.map { ($0["tokens_before"], $0["expires_at"]) } ?? (before, before + ttl)
        return .sessionsEnded(user, tokensBefore: cutoff, ttl: max(ttl, expires - before))
    }
}

extension MessageStore {
    /// Applies a batch of stream entries in one transaction.
    ///
    /// Each command runs in its own savepoint, so one that fails validation is rolled
    /// back alone and answered with its error; a send needs none, since it refuses before
    /// it writes (``applyInSavepoint(_:_:now:)``). Entries are recorded as applied in the same
    /// transaction: a redelivered entry is not applied twice, but answered and announced
    /// again (``replay(_:_:previous:now:)``).
    /// Anything else that fails (SQLite busy, disk) throws, and nothing of the batch is kept.
    /// The batch's new messages enter the search index together, after the last savepoint.
    /// A purge adds what its earlier steps deleted (``purgeStep(ids:entry:now:)``) to its
    /// outcome and audit line.
    public func apply(_ batch: [(id: String, command: StoreCommand)], now: Date = Date()) throws -> [CommandOutcome] {
        try write { db in
            let indexed = try self.lastMessageRowID(db)
            var outcomes: [CommandOutcome] = []
            outcomes.reserveCapacity(batch.count)
            let applied = try self.appliedEntries(db, batch.map(\.id))
            var seen = Set<String>(minimumCapacity: batch.count)
            for (id, command) in batch {
                // An id the batch holds twice is looked up again: its first copy was applied above.
                let previous = seen.insert(id).inserted ? applied[id] : try self.appliedEntries(db, [id])[id]
                if let previous {
                    // A purge given again after it was applied ran its steps again, which held ids may have recorded.
                    if command.type == .purge { try self.forgetPurgeSteps(db, entry: id) }
                    outcomes.append(try self.replay(db, command, previous: previous, now: now))
                    continue
                }
                var outcome = try self.applyInSavepoint(db, command, now: now)
                if case .purged(var purge) = outcome {
                    try self.mergePurgeSteps(db, entry: id, into: &purge)
                    outcome = .purged(purge)
                } else if command.type == .purge {
                    try self.forgetPurgeSteps(db, entry: id)
                }
                var (messageID, conversationID, error, purged): (String?, String?, String?, String?)
                switch outcome {
                case .sent(let stored): messageID = stored.message.id
                case .conversation(let conversation): conversationID = conversation.id
                case .failed(let failure): error = String(decoding: try JSONEncoder().encode(failure), as: UTF8.self)
                case .purged(let purge): purged = String(decoding: try JSONEncoder().encode(purge), as: UTF8.self)
                case .retracted(let retraction): (messageID, conversationID) = (retraction.messageID, retraction.conversationID)
                default: break
                }
                try db.cachedStatement(sql: "INSERT INTO applied_commands (entry_id, applied_at, message_id, conversation_id, error, purged) VALUES (?, ?, ?, ?, ?, ?)")
                    .execute(arguments: [id, now.epochMilliseconds, messageID, conversationID, error, purged])
                try self.record(db, [self.auditEntry(for: command, outcome: outcome, now: now)].compactMap { $0 })
                outcomes.append(outcome)
            }
            try self.indexMessages(db, after: indexed)
            return outcomes
        }
    }

    /// The records of the entries among `ids` applied before (redelivered after a crash), by
    /// entry id: one statement for the batch, not one per entry (twenty-first round).
    func appliedEntries(_ db: Database, _ ids: [String]) throws -> [String: Row] {
        let list = "[" + ids.map(JSONText.quoted).joined(separator: ",") + "]"
        let rows = try Row.fetchAll(db.cachedStatement(sql: """
            SELECT entry_id, message_id, conversation_id, error, purged FROM applied_commands WHERE entry_id IN (SELECT value FROM json_each(?))
            """), arguments: [list])
        return Dictionary(rows.map { ($0["entry_id"], $0) }, uniquingKeysWith: { first, _ in first })
    }

    /// Forgets the records of entries applied more than `age` ago whose stream ids are
    /// older than that too (Redis ids start with their time in milliseconds), `chunk` per
    /// transaction so sends wait for one chunk at most, and the steps of purges whose
    /// command never reached its own transaction. Stops after `maxChunks` full chunks (the
    /// caller can let the thread and the writer go, and call again). Returns how many
    /// entries it forgot.
    @discardableResult
    public func forgetAppliedCommands(olderThan age: Duration, now: Date = Date(), chunk: Int = 500, maxChunks: Int = .max) throws -> Int {
        let cutoff = now.epochMilliseconds - age.milliseconds
        // Through the primary key (no index on applied_at, which every send would pay for):
        // the ids below the cutoff's are a range at the start of it.
        let cutoffID = "\(max(0, cutoff))-0"
        var forgotten = 0
        for _ in 0..<max(1, maxChunks) {
            let deleted = try write { db in
                try db.execute(sql: """
                    DELETE FROM applied_commands WHERE entry_id IN (
                        SELECT entry_id FROM applied_commands WHERE entry_id < ? AND applied_at < ? ORDER BY entry_id LIMIT ?)
                    """, arguments: [cutoffID, cutoff, max(1, chunk)])
                return db.changesCount
            }
            forgotten += deleted
            if deleted < max(1, chunk) { break }
        }
        try write { db in try db.execute(sql: "DELETE FROM purge_steps WHERE recorded_at < ?", arguments: [cutoff]) }
        return forgotten
    }

    /// An entry applied before, read again because its batch was not acknowledged: the
    /// service may have been killed between the commit and the announcements, so it is
    /// answered and announced again, as the state is now, and nothing is written:
    /// - a refused command gets its error again;
    /// - a send, its message in full: its deliveries reach no socket twice (a gateway gives
    ///   each socket a message once), and its `stored` event schedules the same expiry again,
    ///   without which retention would never delete the message;
    /// - a read mark, the reader's marker as it is (markers only advance), receipts again;
    /// - a created conversation, that conversation;
    /// - a user created or changed, the user as now, so gateways' `disabled` flag follows
    ///   the latest state (a disabled user's sockets are told to end again);
    /// - a legal hold, the conversation's hold as now and, if released, its messages due;
    /// - a purge, what it deleted and held (its `messages_purged` events again).
    /// Audit lines and compactions are answered `{}`; so is anything whose subject is gone.
    private func replay(_ db: Database, _ command: StoreCommand, previous: Row, now: Date) throws -> CommandOutcome {
        if let error: String = previous["error"] {
            return .failed((try? JSONDecoder().decode(ChatError.self, from: Data(error.utf8))) ?? ChatError(.internal, error))
        }
        func body<Body: Decodable>(_ type: Body.Type) -> Body? { try? ChatJSON.makeDecoder().decode(type, from: Data(command.payload.utf8)) }
        switch command.type {
        case .send:
            guard let messageID: String = previous["message_id"],
                  let record = try MessageRecord.filter(MessageRecord.Columns.id == messageID).fetchOne(db) else { return .alreadyApplied }
            return .sent(try stored(db, record, duplicate: false))
        case .markConversationRead, .markMessageRead:
            let conversationID: String? = if command.type == .markConversationRead {
                body(MarkConversationReadRequest.self)?.conversationID
            } else {
                try body(MarkMessageReadRequest.self).flatMap { try String.fetchOne(db, sql: "SELECT conversation_id FROM messages WHERE id = ?", arguments: [$0.messageID]) }
            }
            let reader = command.user.lowercased()
            guard let conversationID, let marker = try ParticipantRecord.fetchOne(db, key: ["conversation_id": conversationID, "email": reader]) else {
                return .alreadyApplied
            }
            return .read(try readUpdate(db, reader: reader, conversationID: conversationID, marker: marker, advanced: true, now: now))
        case .createConversation:
            guard let id: String = previous["conversation_id"], let record = try conversation(db, id, participant: command.user) else { return .alreadyApplied }
            return .conversation(try conversation(record, for: command.user.lowercased(), db, now: now))
        case .createUser, .setUserDisabled, .setUserRole:
            let email = command.type == .createUser ? body(CreateUserRequest.self)?.email : body(UpdateUserRequest.self)?.email
            guard let email, let record = try UserRecord.fetchOne(db, key: email.lowercased()) else { return .alreadyApplied }
            return .user(record.user)
        case .setPassword:
            guard let request = body(SetPasswordRequest.self), let record = try UserRecord.fetchOne(db, key: request.email.lowercased()) else {
                return .alreadyApplied
            }
            return try sessionsEnded(db, record.user, command: request.tokensBefore, ttl: request.tokensTTLMilliseconds)
        case .endSessions:
            guard let request = body(EndSessionsRequest.self), let record = try UserRecord.fetchOne(db, key: request.email.lowercased()) else {
                return .alreadyApplied
            }
            return try sessionsEnded(db, record.user, command: request.tokensBefore, ttl: request.tokensTTLMilliseconds)
        case .revokeToken:
            guard let request = body(RevokeTokenRequest.self) else { return .alreadyApplied }
            return .tokenRevoked(jti: request.jti, ttl: request.expiresAt - now.epochMilliseconds)
        case .restoreAuth:
            return .authRestored(try authSnapshot(db, now: now, prune: false))
        case .retractMessage:
            guard let messageID: String = previous["message_id"], let conversationID: String = previous["conversation_id"] else { return .alreadyApplied }
            return .retracted(try replayedRetraction(db, messageID: messageID, conversationID: conversationID))
        case .updateGroup:
            guard let request = body(UpdateGroupRequest.self), let (event, previous) = try replayedGroupUpdate(db, request, by: command.user) else { return .alreadyApplied }
            return .groupUpdated(event, previous: previous)
        case .setLegalHold:
            guard let id = body(LegalHoldRequest.self)?.conversationID, let record = try ConversationRecord.fetchOne(db, key: id) else { return .alreadyApplied }
            return .legalHold(conversationID: id, held: record.legalHold, released: record.legalHold ? [] : try dueMessages(db, conversationID: id, now: now))
        case .purge:
            guard let json: String = previous["purged"], let purge = try? JSONDecoder().decode(PurgeResult.self, from: Data(json.utf8)) else { return .alreadyApplied }
            return .purged(purge)
        case .audit, .compact:
            return .alreadyApplied
        }
    }

    private func applyInSavepoint(_ db: Database, _ command: StoreCommand, now: Date) throws -> CommandOutcome {
        do {
            // A send refuses (a `ChatError`, a `DecodingError`) before it writes anything
            // (``append(_:_:now:)``), and anything it meets after its first write is SQLite's
            // own error, which fails the whole batch anyway: it needs no savepoint of its own
            // (two statements of the ten a send ran, eighteenth and twenty-first rounds).
            if command.type == .send { return try applyOne(db, command, now: now) }
            return try Self.inSavepoint(db) { try self.applyOne(db, command, now: now) }
        } catch let error as ChatError {
            return .failed(error)
        } catch let error as DecodingError {
            return .failed(ChatError(.badRequest, "the \(command.type.rawValue) payload is not valid: \(Self.describe(error))"))
        }
    }

    /// Runs `body` in a savepoint of the open transaction: released when it returns, rolled
    /// back (and released) when it throws, and the error thrown again. GRDB's `inSavepoint`
    /// does the same with statements it prepares again each time: with a savepoint per
    /// command that was 8 % of the service's CPU in the open loop (BENCHMARKS.md, eighteenth
    /// round); these come from the statement cache.
    static func inSavepoint<T>(_ db: Database, _ body: () throws -> T) throws -> T {
        try db.cachedStatement(sql: "SAVEPOINT command").execute()
        let result: T
        do {
            result = try body()
        } catch {
            do {
                try db.cachedStatement(sql: "ROLLBACK TO SAVEPOINT command").execute()
                try db.cachedStatement(sql: "RELEASE SAVEPOINT command").execute()
            } catch let rollback {
                // No savepoint left: SQLite ended the transaction (a full disk, say). The
                // batch must fail, so an error answered as this command's alone is not thrown.
                throw error is ChatError || error is DecodingError ? rollback : error
            }
            throw error
        }
        try db.cachedStatement(sql: "RELEASE SAVEPOINT command").execute()
        return result
    }

    private func applyOne(_ db: Database, _ command: StoreCommand, now: Date) throws -> CommandOutcome {
        // Made only when needed: a send's body is normally read by the scanner.
        func decode<Body: Decodable>(_ type: Body.Type) throws -> Body {
            try ChatJSON.makeDecoder().decode(type, from: Data(command.payload.utf8))
        }
        switch command.type {
        case .send:
            let body = try SendMessageRequest(scanning: Array(command.payload.utf8)) ?? decode(SendMessageRequest.self)
            return .sent(try append(db, SendRequest(sender: command.user, conversationID: body.conversationID, receiverEmail: body.receiverEmail,
                                                   content: body.content, clientID: body.clientID), now: now))
        case .markConversationRead:
            let body = try decode(MarkConversationReadRequest.self)
            return .read(try markRead(db, reader: command.user, conversationID: body.conversationID, upToSeq: body.upToSeq, now: now))
        case .markMessageRead:
            let body = try decode(MarkMessageReadRequest.self)
            return .read(try markMessageRead(db, reader: command.user, messageID: body.messageID, now: now))
        case .createConversation:
            let body = try decode(CreateConversationRequest.self)
            let record: ConversationRecord
            if let title = body.title {
                record = try createGroup(db, creator: command.user, title: title, members: body.participants, now: now)
            } else {
                let others = Set(body.participants.map { $0.lowercased() }).subtracting([command.user.lowercased()])
                guard others.count == 1, let other = others.first else {
                    throw ChatError(.badRequest, "a 1:1 conversation has exactly one other participant; a group needs a title")
                }
                record = try openDirect(db, command.user, other, now: now)
            }
            return .conversation(try conversation(record, for: command.user.lowercased(), db, now: now))
        case .createUser:
            try requireAdmin(db, command.user)
            return .user(try insertUser(db, decode(CreateUserRequest.self), now: now))
        case .setPassword:
            let body = try decode(SetPasswordRequest.self)
            let email = body.email.lowercased()
            // Users set their own (the gateway checked their current password first); admins and operators' tools anyone's.
            if command.user.lowercased() != email { try requireAdmin(db, command.user) }
            guard var record = try UserRecord.fetchOne(db, key: email) else { throw ChatError(.notFound, "no such user") }
            guard command.user.lowercased() != email || !record.disabled else { throw ChatError(.forbidden, "this account is disabled") }
            try PasswordPolicy.checkHash(body.passwordHash)
            guard body.tokensTTLMilliseconds > 0 else { throw ChatError(.badRequest, "tokens_ttl_ms must be positive") }
            record.passwordHash = body.passwordHash
            // One set by someone else (an admin, an operator's tool) is theirs to replace first.
            record.mustChangePassword = body.mustChangePassword == true && command.user.lowercased() != email
            try record.update(db)
            try recordCutoff(db, email: email, before: body.tokensBefore, ttl: body.tokensTTLMilliseconds)
            return try sessionsEnded(db, record.user, command: body.tokensBefore, ttl: body.tokensTTLMilliseconds)
        case .endSessions:
            let body = try decode(EndSessionsRequest.self)
            let email = body.email.lowercased()
            // Users end their own; admins and operators' tools anyone's.
            if command.user.lowercased() != email { try requireAdmin(db, command.user) }
            guard let record = try UserRecord.fetchOne(db, key: email) else { throw ChatError(.notFound, "no such user") }
            guard body.tokensTTLMilliseconds > 0 else { throw ChatError(.badRequest, "tokens_ttl_ms must be positive") }
            try recordCutoff(db, email: email, before: body.tokensBefore, ttl: body.tokensTTLMilliseconds)
            return try sessionsEnded(db, record.user, command: body.tokensBefore, ttl: body.tokensTTLMilliseconds)
        case .revokeToken:
            // The gateway that logged the token out names its user; the token's own expiry bounds the row.
            guard !command.user.isEmpty else { throw ChatError(.badRequest, "a revoked token belongs to a user") }
            let body = try decode(RevokeTokenRequest.self)
            guard !body.jti.isEmpty, body.jti.utf8.count <= 128 else { throw ChatError(.badRequest, "jti must have 1 to 128 bytes") }
            try db.execute(sql: "INSERT OR IGNORE INTO revoked_tokens (jti, email, expires_at) VALUES (?, ?, ?)",
                           arguments: [body.jti, command.user.lowercased(), body.expiresAt])
            return .tokenRevoked(jti: body.jti, ttl: body.expiresAt - now.epochMilliseconds)
        case .restoreAuth:
            try requireSystem(command.user)
            return .authRestored(try authSnapshot(db, now: now, prune: true))
        case .updateGroup:
            let (event, previous) = try updateGroup(db, try decode(UpdateGroupRequest.self), by: command.user, now: now)
            return .groupUpdated(event, previous: previous)
        case .retractMessage:
            return .retracted(try retract(db, try decode(RetractMessageRequest.self).messageID, by: command.user, now: now))
        case .setUserDisabled, .setUserRole:
            try requireAdmin(db, command.user)
            let body = try decode(UpdateUserRequest.self)
            guard var record = try UserRecord.fetchOne(db, key: body.email.lowercased()) else { throw ChatError(.notFound, "no such user") }
            if command.type == .setUserDisabled {
                guard let disabled = body.disabled else { throw ChatError(.badRequest, "disabled is required") }
                record.disabled = disabled
            } else {
                guard let role = body.role else { throw ChatError(.badRequest, "role is required") }
                record.role = role.rawValue
            }
            try record.update(db)
            return .user(record.user)
        case .audit:
            _ = try decode(AuditRequest.self)
            return .audited
        case .purge:
            try requireSystem(command.user)
            let body = try decode(PurgeRequest.self)
            guard body.messageIDs.count <= PurgeRequest.maximumCount else { throw ChatError(.badRequest, "a purge names at most 1,000 messages") }
            return .purged(try purge(db, ids: body.messageIDs, now: now))
        case .compact:
            try requireSystem(command.user)
            let body = try decode(CompactRequest.self)
            return .compactRequested(auditRetention: .milliseconds(body.auditRetentionMilliseconds))
        case .setLegalHold:
            try requireAdmin(db, command.user)
            let body = try decode(LegalHoldRequest.self)
            _ = try setLegalHold(db, conversationID: body.conversationID, held: body.held)
            return .legalHold(conversationID: body.conversationID, held: body.held,
                              released: body.held ? [] : try dueMessages(db, conversationID: body.conversationID, now: now))
        }
    }

    /// A conversation's messages already due (to schedule again when its hold is released).
    private func dueMessages(_ db: Database, conversationID: String, now: Date) throws -> [DueMessage] {
        try Row.fetchAll(db, sql: "SELECT id, expires_at FROM messages WHERE conversation_id = ? AND expires_at <= ?",
                         arguments: [conversationID, now.epochMilliseconds])
            .map { DueMessage(id: $0["id"], conversationID: conversationID, expiresAt: Date(milliseconds: $0["expires_at"])) }
    }

    /// Retention's commands (and the auth restore) come from the services, never from a user.
    private func requireSystem(_ actor: String) throws {
        guard actor.isEmpty else { throw ChatError(.forbidden, "only the services send this command") }
    }

    /// Only admins (or operators' tools, with no user) manage users.
    private func requireAdmin(_ db: Database, _ actor: String) throws {
        guard !actor.isEmpty else { return }
        guard let record = try UserRecord.fetchOne(db, key: actor.lowercased()), record.role == Role.admin.rawValue, !record.disabled else {
            throw ChatError(.forbidden, "only admins manage users")
        }
    }

    /// The audit line for a command, with its outcome.
    private func auditEntry(for command: StoreCommand, outcome: CommandOutcome, now: Date) -> AuditEntry? {
        let context = RequestContext(actor: command.user.isEmpty ? nil : command.user, gateway: command.gateway, requestID: command.request)
        let result: String
        var target: String?
        switch outcome {
        case .sent(let stored): result = stored.duplicate ? "duplicate" : "ok"; target = stored.message.conversationID
        case .read(let update): result = "ok"; target = update.receipt.conversationID
        case .conversation(let conversation): result = "ok"; target = conversation.id
        case .user(let user), .sessionsEnded(let user, _, _): result = "ok"; target = user.email
        case .tokenRevoked, .authRestored: result = "ok"
        case .audited, .alreadyApplied, .compactRequested: result = "ok"
        case .purged(let purge): result = "ok"; target = "\(purge.count) deleted, \(purge.held.count) held"
        case .legalHold(let conversation, _, _): result = "ok"; target = conversation
        case .groupUpdated(let event, _): result = "ok"; target = event.conversationID
        case .retracted(let retraction): result = retraction.held ? "held" : "ok"; target = retraction.conversationID
        case .failed(let error): result = error.code.rawValue
        }
        switch command.type {
        case .audit:
            guard let body = try? ChatJSON.makeDecoder().decode(AuditRequest.self, from: Data(command.payload.utf8)) else { return nil }
            return AuditEntry(at: now, context: context, action: body.action, target: body.target, outcome: body.outcome, detail: body.detail)
        case .send: return AuditEntry(at: now, context: context, action: "send", target: target, outcome: result)
        case .markConversationRead, .markMessageRead: return AuditEntry(at: now, context: context, action: "mark_read", target: target, outcome: result)
        case .createConversation: return AuditEntry(at: now, context: context, action: "create_conversation", target: target, outcome: result)
        case .setPassword, .endSessions:
            // Nothing of the hash in the log: who set whose password (or ended whose sessions), and whether they could.
            let email = (try? ChatJSON.makeDecoder().decode(EndSessionsRequest.self, from: Data(command.payload.utf8)))?.email.lowercased() ?? target
            let own = email != nil && command.user.lowercased() == email
            let action = command.type == .setPassword ? (own ? "password_change" : "admin.set_password") : (own ? "logout_everywhere" : "admin.end_sessions")
            return AuditEntry(at: now, context: context, action: action, target: email, outcome: result)
        case .createUser, .setUserDisabled, .setUserRole, .setLegalHold:
            // A refused one still names whom it was about.
            if target == nil, command.type != .setLegalHold {
                let body = try? ChatJSON.makeDecoder().decode(UpdateUserRequest.self, from: Data(command.payload.utf8))
                target = body?.email.lowercased()
            }
            return AuditEntry(at: now, context: context, action: "admin.\(command.type.rawValue)", target: target, outcome: result,
                              detail: command.type == .setLegalHold ? command.payload : nil)
        case .purge: return AuditEntry(at: now, context: context, action: "retention.purge", target: nil, outcome: result, detail: target)
        case .revokeToken: return AuditEntry(at: now, context: context, action: "logout", target: nil, outcome: result)
        case .restoreAuth:
            guard case .authRestored(let snapshot) = outcome else { return AuditEntry(at: now, context: context, action: "auth.restore", target: nil, outcome: result) }
            return AuditEntry(at: now, context: context, action: "auth.restore", target: nil, outcome: result,
                              detail: "\(snapshot.disabled.count) disabled users, \(snapshot.revoked.count) logged-out tokens, \(snapshot.cutoffs.count) session cutoffs, \(snapshot.mustChangePassword.count) passwords to change")
        case .updateGroup:
            // Who was added and removed (emails), and whether it was renamed (not the title).
            var detail: [String] = []
            if case .groupUpdated(let event, _) = outcome {
                if !event.added.isEmpty { detail.append("added \(event.added.joined(separator: ", "))") }
                if !event.removed.isEmpty { detail.append("removed \(event.removed.joined(separator: ", "))") }
                if (try? ChatJSON.makeDecoder().decode(UpdateGroupRequest.self, from: Data(command.payload.utf8)))?.title != nil { detail.append("title set") }
            } else {
                target = (try? ChatJSON.makeDecoder().decode(UpdateGroupRequest.self, from: Data(command.payload.utf8)))?.conversationID
            }
            return AuditEntry(at: now, context: context, action: "update_group", target: target, outcome: result,
                              detail: detail.isEmpty ? nil : detail.joined(separator: "; "))
        case .retractMessage:
            // The message's id (its text is gone, or kept only by a legal hold).
            let id = (try? ChatJSON.makeDecoder().decode(RetractMessageRequest.self, from: Data(command.payload.utf8)))?.messageID
            return AuditEntry(at: now, context: context, action: "retract_message", target: target, outcome: result, detail: id)
        case .compact: return nil
        }
    }

    private static func describe(_ error: DecodingError) -> String {
        switch error {
        case .keyNotFound(let key, _): return "'\(key.stringValue)' is missing"
        case .typeMismatch(_, let context), .valueNotFound(_, let context), .dataCorrupted(let context):
            let path = context.codingPath.map(\.stringValue).joined(separator: ".")
            return path.isEmpty ? "not JSON of the expected shape" : "'\(path)' has the wrong type"
        @unknown default: return "not JSON of the expected shape"
        }
    }
}
