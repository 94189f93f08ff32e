import ChatCore
import Foundation
import Logging
import RedisClient
import ServiceLifecycle

/// Consumes `chat:commands` in group `messages`: a batch at a time, the users' commands
/// of a batch in one SQLite transaction, retention's purges after them in steps,
/// announcements after commit, XACK last.
///
/// On start it first re-reads its own pending entries (a crash between commit and
/// XACK leaves them there; the store knows they were applied), and it regularly
/// claims entries a dead consumer left pending (XAUTOCLAIM). A command that fails
/// validation is answered with its error and acknowledged; a batch that fails for
/// another reason (SQLite busy, disk) is not acknowledged and is tried again.
public final class CommandProcessor: Service, Sendable {
    /// Tuning, with the defaults used in production.
    public struct Configuration: Sendable {
        /// This consumer's name in the group; keep it stable across restarts of one instance.
        public var consumer: String
        /// Entries per batch (and per transaction).
        public var batchSize = 256
        /// How long one XREADGROUP blocks waiting for entries.
        public var block: Duration = .seconds(1)
        /// Entries idle this long in another consumer's pending list are claimed.
        public var claimIdle: Duration = .seconds(30)
        /// How long a failed batch waits before it is tried again.
        public var retryDelay: Duration = .milliseconds(200)
        /// A purge deletes at most this many messages per transaction. Between steps, the
        /// users' commands that arrived meanwhile are applied and answered, so a send waits
        /// for one step of a purge (about a millisecond here), not for all of it.
        public var purgeStep = 10
        /// One PUBLISH per channel per batch (``PublishBatch``), or one per event as before
        /// (`CHAT_PUBLISH_BATCHES=0`, while gateways older than batches still run).
        public var publishBatches = true

        public init(consumer: String) { self.consumer = consumer }
    }

    private let store: MessageStore
    private let redis: RedisClient
    private let keys: RedisKeys
    private let configuration: Configuration
    private let logger: Logger
    private let metrics: StoreMetrics?
    private let lease: WriterLease?

    /// With a `lease`, every transaction waits until the lease is known to be valid, and
    /// none is committed once another instance holds it (``WriterLease/confirm()``).
    public init(store: MessageStore, redis: RedisClient, keys: RedisKeys, configuration: Configuration, logger: Logger,
                metrics: StoreMetrics? = nil, lease: WriterLease? = nil) {
        self.store = store
        self.redis = redis
        self.keys = keys
        self.configuration = configuration
        self.logger = logger
        self.metrics = metrics
        self.lease = lease
    }

    public func run() async throws {
        var consumer = StreamConsumer(stream: keys.commands, group: RedisKeys.messagesGroup, consumer: configuration.consumer)
        consumer.batchSize = configuration.batchSize
        consumer.block = configuration.block
        consumer.claimIdle = configuration.claimIdle
        consumer.retryDelay = configuration.retryDelay
        await consumer.runOverlapping(redis: redis, logger: logger) { try await self.stage($0, settle: $1) }
    }

    /// Commits one batch and returns its announcing, which the consumer runs (and then
    /// acknowledges the batch) while the next batch is read and committed: the writer does
    /// not wait for Redis between batches. Announcements stay in batch order. A batch with a
    /// purge waits for the previous batch's announcements and is applied as by ``apply(_:)``.
    func stage(_ entries: [StreamEntry], settle: @escaping StreamConsumer.Settle) async throws -> StreamConsumer.FollowUp {
        let (users, maintenance) = parse(entries)
        guard maintenance.isEmpty else {
            try await settle()
            try await apply(users: users, maintenance: maintenance)
            return {}
        }
        guard !users.isEmpty else { return {} }
        let outcomes = try await commit(users)
        return { try await self.announce(users, outcomes) }
    }

    /// Applies one batch, announces the results, acknowledges, and trims what is done.
    func process(_ entries: [StreamEntry]) async throws {
        try await apply(entries)
        try await redis.acknowledgeAndTrim(keys.commands, group: RedisKeys.messagesGroup, ids: entries.map(\.id))
    }

    /// Applies one batch and announces the results (the caller acknowledges): the users'
    /// commands in one transaction, then retention's purges and compactions.
    func apply(_ entries: [StreamEntry]) async throws {
        let (users, maintenance) = parse(entries)
        try await apply(users: users, maintenance: maintenance)
    }

    private func apply(users: [(id: String, command: StoreCommand)], maintenance: [(id: String, command: StoreCommand)]) async throws {
        // Retention's purges hold the writer longest: the users' commands read with them are
        // committed and answered first, in a transaction of their own, so a send never waits
        // for a purge that merely arrived in the same read.
        try await applyAndAnnounce(users)
        var queue = maintenance[...]
        // Entries read between the steps of a purge; acknowledged once all are applied.
        var arrived: [String] = []
        while let (id, command) = queue.popFirst() {
            for step in purgeSteps(command) {
                // A send that arrives during a large purge waits for one step, not the purge.
                // The store records each step under the purge's entry, for its answer and audit line.
                try await lease?.confirm()
                try store.purgeStep(ids: step, entry: id)
                let read = try await redis.xreadgroup(group: RedisKeys.messagesGroup, consumer: configuration.consumer,
                                                      streams: [(keys.commands, ">")], count: configuration.batchSize)
                let entries = read[keys.commands] ?? []
                guard !entries.isEmpty else { continue }
                arrived += entries.map(\.id)
                let (users, maintenance) = parse(entries)
                try await applyAndAnnounce(users)
                queue.append(contentsOf: maintenance)
            }
            try await applyAndAnnounce([(id, command)])
        }
        if !arrived.isEmpty { try await redis.xack(keys.commands, group: RedisKeys.messagesGroup, ids: arrived) }
    }

    /// Parses entries (dropping malformed ones) and splits the users' commands from retention's.
    private func parse(_ entries: [StreamEntry]) -> (users: [(id: String, command: StoreCommand)], maintenance: [(id: String, command: StoreCommand)]) {
        var users: [(id: String, command: StoreCommand)] = []
        var maintenance: [(id: String, command: StoreCommand)] = []
        var malformed: [String] = []
        for entry in entries {
            guard let command = StoreCommand(fields: entry.fields) else { malformed.append(entry.id); continue }
            if command.type == .purge || command.type == .compact { maintenance.append((entry.id, command)) } else { users.append((entry.id, command)) }
        }
        if !malformed.isEmpty {
            logger.warning("dropped malformed commands", metadata: ["chat.count": "\(malformed.count)", "redis.ids": "\(malformed.prefix(5))"])
            metrics?.dropped(malformed.count)
        }
        return (users, maintenance)
    }

    /// The ids a purge deletes ahead of its own transaction, a step at a time: all but its
    /// last step (which the command's transaction deletes, and records as applied). None
    /// for anything but a retention purge of more than one step; the command's own
    /// validation answers the rest.
    private func purgeSteps(_ command: StoreCommand) -> [[String]] {
        let step = max(1, configuration.purgeStep)
        guard command.type == .purge, command.user.isEmpty,
              let ids = try? ChatJSON.makeDecoder().decode(PurgeRequest.self, from: Data(command.payload.utf8)).messageIDs,
              ids.count > step, ids.count <= PurgeRequest.maximumCount else { return [] }
        return stride(from: 0, to: ids.count - step, by: step).map { Array(ids[$0..<min($0 + step, ids.count - step)]) }
    }

    /// Applies commands in one transaction and publishes what they did.
    private func applyAndAnnounce(_ batch: [(id: String, command: StoreCommand)]) async throws {
        guard !batch.isEmpty else { return }
        try await announce(batch, try await commit(batch))
    }

    /// Applies commands in one transaction (and compacts if a sweep asked for it), once the
    /// writer lease is known to be valid (``WriterLease/confirm()``).
    private func commit(_ batch: [(id: String, command: StoreCommand)]) async throws -> [CommandOutcome] {
        try await lease?.confirm()
        let started = ContinuousClock.now
        let outcomes = try store.apply(batch)
        metrics?.record(batch: batch.map(\.command), duration: .now - started)
        for case .compactRequested(let auditRetention) in outcomes {
            if try !store.compactAfterPurge() {
                logger.warning("the WAL could not be emptied after a purge (a reader kept an old snapshot, or another process was checkpointing); the checkpoint loop retries it")
            }
            let removed = try store.purgeAuditLog(olderThan: auditRetention)
            logger.info("compacted after purge", metadata: ["chat.audit.removed": "\(removed)"])
        }
        return outcomes
    }

    /// Publishes what the commands did.
    private func announce(_ batch: [(id: String, command: StoreCommand)], _ outcomes: [CommandOutcome]) async throws {
        var announcements: [[String]] = []
        for ((_, command), outcome) in zip(batch, outcomes) {
            announcements += try self.announcements(for: command, outcome: outcome)
        }
        guard !announcements.isEmpty else { return }
        if configuration.publishBatches { announcements = Self.coalesced(announcements, replyChannelPrefix: keys.gateway("")) }
        // Not only notifications: retention schedules deletions by the `stored` events. If the
        // pipeline fails or Redis refuses a command of it, the batch is not acknowledged; read
        // again, it is announced again in full (a gateway gives each socket a message once).
        for case .error(let message) in try await redis.pipeline(announcements) {
            throw RedisServerError(message: message)
        }
    }

    /// A batch's announcements with one PUBLISH per channel, its events in their order
    /// (``PublishBatch``): a group's read marks of one batch reach each member as one message,
    /// and every answer to one gateway as one. The other commands (the events stream's XADDs,
    /// a disabled user's flag) come first, in their order; then the users' channels, in the
    /// order each first appears; then the answers to gateways. A socket's own answers thus
    /// come after the batch's deliveries to it, never before an earlier message's delivery
    /// (each socket still gets every conversation's messages in seq order).
    static func coalesced(_ commands: [[String]], replyChannelPrefix: String) -> [[String]] {
        var others: [[String]] = []
        var channels: [String] = []
        var events: [String: [String]] = [:]
        for command in commands {
            guard command.count == 3, command[0] == "PUBLISH" else {
                others.append(command)
                continue
            }
            if events[command[1]] == nil { channels.append(command[1]) }
            events[command[1], default: []].append(command[2])
        }
        let (replies, users) = (channels.filter { $0.hasPrefix(replyChannelPrefix) }, channels.filter { !$0.hasPrefix(replyChannelPrefix) })
        // A group's members get the same events: their batch is written once.
        var last: (events: [String], payload: String)?
        return others + (users + replies).compactMap { channel in
            guard let list = events[channel] else { return nil }
            if let last, last.events == list { return ["PUBLISH", channel, last.payload] }
            let payload = PublishBatch.payload(list)
            last = (list, payload)
            return ["PUBLISH", channel, payload]
        }
    }

    /// Gateways allow a user's tokens nothing but a password change while this key exists.
    private func mustChangeFlag(_ user: User) -> [String] {
        user.mustChangePassword == true ? ["SET", keys.passwordChangeRequired(user.email), "1"] : ["DEL", keys.passwordChangeRequired(user.email)]
    }

    /// The PUBLISH and XADD commands that tell everyone concerned what happened.
    func announcements(for command: StoreCommand, outcome: CommandOutcome) throws -> [[String]] {
        // Sends and marks are written by hand (JSONText, the encoder's bytes); the encoder is
        // made only for the rarer outcomes that need it.
        func json<T: Encodable>(_ value: T) throws -> String { String(decoding: try ChatJSON.makeEncoder().encode(value), as: UTF8.self) }
        /// The answer to the gateway that asked, if one did.
        func reply(result: String) -> [[String]] {
            guard let gateway = command.gateway, let request = command.request else { return [] }
            return [["PUBLISH", keys.gateway(gateway), JSONText.storeReply(request: request, result: result)]]
        }
        func reply(error: ChatError) throws -> [[String]] {
            guard let gateway = command.gateway, let request = command.request else { return [] }
            return [["PUBLISH", keys.gateway(gateway), try json(StoreReply(request: request, result: nil, error: error))]]
        }

        switch outcome {
        case .sent(let stored):
            // Every send: written by hand (JSONText), the same bytes as the encoder's.
            let message = stored.message
            let messageJSON = message.jsonText
            var out = reply(result: messageJSON)
            out.append(["PUBLISH", keys.user(message.senderEmail),
                        JSONText.userEvent(.messageSentConfirmed, data: messageJSON, gateway: command.gateway, request: command.request)])
            if !stored.duplicate {
                let delivery = JSONText.userEvent(.receiveMessage, data: messageJSON)
                for participant in stored.participants where participant != message.senderEmail {
                    out.append(["PUBLISH", keys.user(participant), delivery])
                }
                // No message text in events: retention needs only the id and the expiry.
                out.append(RedisClient.xaddCommand(keys.events, fields: [
                    ("type", "stored"), ("message_id", message.id), ("conversation_id", message.conversationID),
                    ("seq", String(message.seq)), ("sender", message.senderEmail), ("expires_at", String(message.expiresAt.epochMilliseconds)),
                ], trim: .maxLength(1_000_000)))
            }
            return out
        case .read(let update):
            // Written by hand (JSONText), as a send's: a busy group has as many marks as messages.
            let receiptJSON = update.receipt.jsonText
            var out = reply(result: receiptJSON)
            if update.advanced {
                let receipt = JSONText.userEvent(.messageReadReceipt, data: receiptJSON)
                for recipient in update.recipients { out.append(["PUBLISH", keys.user(recipient), receipt]) }
                out.append(RedisClient.xaddCommand(keys.events, fields: [
                    ("type", "read"), ("conversation_id", update.receipt.conversationID), ("reader", update.receipt.readerEmail),
                    ("up_to_seq", String(update.receipt.upToSeq)),
                ], trim: .maxLength(1_000_000)))
            }
            return out
        case .conversation(let conversation):
            return reply(result: conversation.jsonText)
        case .user(let user):
            // Gateways refuse a disabled user's tokens while this key exists.
            let flag = user.disabled ? ["SET", keys.disabledUser(user.email), "1"] : ["DEL", keys.disabledUser(user.email)]
            // A disabled user's open sockets end on every gateway.
            let revoke = user.disabled ? [["PUBLISH", keys.user(user.email), #"{"data":{},"event":"session_revoked"}"#]] : []
            return try reply(result: json(user)) + [flag, mustChangeFlag(user)] + revoke
        case .sessionsEnded(let user, let before, let ttl):
            // Gateways refuse the user's tokens issued before the change or the log-out (for as
            // long as such a token could live), and end the sockets opened with them, on every gateway.
            let cutoff = ["SET", keys.tokensBefore(user.email), String(before), "PX", String(max(1, ttl))]
            let revoke = ["PUBLISH", keys.user(user.email), #"{"data":{"issued_before":\#(before)},"event":"session_revoked"}"#]
            return try reply(result: json(user)) + [cutoff, mustChangeFlag(user), revoke]
        case .tokenRevoked(let jti, let ttl):
            // The gateway set it already; set again (idempotent), as a restore would, while it matters.
            return reply(result: "{}") + (ttl > 0 ? [["SET", keys.revokedToken(jti), "1", "PX", String(ttl)]] : [])
        case .authRestored(let snapshot):
            var out = reply(result: "{}")
            out += snapshot.disabled.map { ["SET", keys.disabledUser($0), "1"] }
            out += snapshot.mustChangePassword.map { ["SET", keys.passwordChangeRequired($0), "1"] }
            out += snapshot.cutoffs.map { ["SET", keys.tokensBefore($0.email), String($0.before), "PX", String(max(1, $0.ttl))] }
            out += snapshot.revoked.map { ["SET", keys.revokedToken($0.jti), "1", "PX", String(max(1, $0.ttl))] }
            // Last: the state is whole in this Redis now (the keeper's check looks for it).
            out.append(["SET", keys.authState, "restored \(Date().epochMilliseconds)"])
            return out
        case .audited, .alreadyApplied, .compactRequested:
            return reply(result: "{}")
        case .purged(let purge):
            var out: [[String]] = []
            for (conversation, ids) in purge.deleted {
                let event = try json(UserEvent(event: .messagesPurged, data: MessagesPurgedEvent(conversationID: conversation, messageIDs: ids)))
                for participant in purge.participants[conversation] ?? [] { out.append(["PUBLISH", keys.user(participant), event]) }
            }
            if purge.count > 0 || !purge.held.isEmpty {
                out.append(RedisClient.xaddCommand(keys.events, fields: [
                    ("type", "purged"), ("count", String(purge.count)), ("held", String(purge.held.count)),
                ], trim: .maxLength(1_000_000)))
            }
            return try reply(result: json(["purged": purge.count, "held": purge.held.count])) + out
        case .legalHold(let conversation, let held, let released):
            // Released messages already due go back on the schedule.
            let rescheduled = released.map { due in
                RedisClient.xaddCommand(keys.events, fields: [
                    ("type", "stored"), ("message_id", due.id), ("conversation_id", due.conversationID),
                    ("expires_at", String(due.expiresAt.epochMilliseconds)),
                ], trim: .maxLength(1_000_000))
            }
            return try reply(result: json(["conversation_id": conversation, "legal_hold": held ? "on" : "off"])) + rescheduled
        case .retracted(let retraction):
            var out = try reply(result: json(["message_id": retraction.messageID, "conversation_id": retraction.conversationID]))
            // Every page that holds it drops it, as after a purge (the sender's other devices too).
            let event = try json(UserEvent(event: .messagesPurged, data: MessagesPurgedEvent(conversationID: retraction.conversationID,
                                                                                            messageIDs: [retraction.messageID])))
            for participant in retraction.participants { out.append(["PUBLISH", keys.user(participant), event]) }
            return out
        case .groupUpdated(let event, let previous):
            var out = try reply(result: json(event))
            let everyone = Set(previous).union(event.participants).sorted()
            // Everyone who was or is a member: the ones removed drop it, the others see the change.
            let text = try json(UserEvent(event: .conversationUpdated, data: event))
            for email in everyone { out.append(["PUBLISH", keys.user(email), text]) }
            // Presence forgets who takes part in it (its typing indicators go to members only).
            if !event.added.isEmpty || !event.removed.isEmpty {
                out.append(RedisClient.xaddCommand(keys.events, fields: [("type", "members"), ("conversation_id", event.conversationID)], trim: .maxLength(1_000_000)))
            }
            return out
        case .failed(let error):
            var out = try reply(error: error)
            if command.type == .send, let clientID = try? ChatJSON.makeDecoder().decode(SendMessageRequest.self, from: Data(command.payload.utf8)).clientID {
                var event = error
                event.clientID = clientID
                out.append(["PUBLISH", keys.user(command.user), try json(UserEvent(event: .error, data: event, gateway: command.gateway, request: command.request))])
            }
            return out
        }
    }

}
