import ChatCore
import ChatTesting
import Foundation
import GRDB
import Logging
import Prometheus
import RedisClient
import Testing
@testable import MessageStore

/// Records what arrives on some channels: each event of a batch (``PublishBatch``) as if
/// it had come alone, as gateways take them, and how many messages each channel got.
final class ChannelRecorder: @unchecked Sendable {
    private let lock = NSLock()
    private var received: [(channel: String, text: String)] = []
    private var messages: [String: Int] = [:]
    private var task: Task<Void, Never>?

    init(_ subscriber: RedisSubscriber) {
        task = Task { [weak self] in
            for await event in subscriber.events {
                guard case .message(let m) = event else { continue }
                let texts = PublishBatch.parts(m.payload).map { $0.map { String(decoding: $0, as: UTF8.self) } } ?? [m.text]
                self?.lock.withLock {
                    self?.messages[m.channel, default: 0] += 1
                    for text in texts { self?.received.append((m.channel, text)) }
                }
            }
        }
    }

    func texts(on channel: String) -> [String] { lock.withLock { received.filter { $0.channel == channel }.map(\.text) } }

    /// Pub/sub messages that reached `channel` (a batch counts once).
    func messageCount(on channel: String) -> Int { lock.withLock { messages[channel] ?? 0 } }

    /// The JSON objects received on `channel`.
    func objects(on channel: String) -> [[String: Any]] {
        texts(on: channel).compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
    }

    deinit { task?.cancel() }
}

/// A processor and a responder on a real Redis, with a subscriber listening to the given channels.
struct Harness: Sendable {
    let store: MessageStore
    let keys: RedisKeys
    let redis: RedisClient
    let recorder: ChannelRecorder
    let processor: CommandProcessor

    func enqueue(_ command: StoreCommand) async throws {
        try await redis.xadd(keys.commands, fields: command.fields)
    }

    func command<T: Encodable>(_ type: StoreCommandType, _ user: String, _ body: T, request: String = UUID().uuidString) throws -> StoreCommand {
        try StoreCommand(type: type, user: user, gateway: "gw-1", request: request, body: body)
    }

    func reply(_ request: String) -> StoreReply? {
        recorder.texts(on: keys.gateway("gw-1")).lazy
            .compactMap { try? ChatJSON.makeDecoder().decode(StoreReply.self, from: Data($0.utf8)) }
            .first { $0.request == request }
    }

    func waitForReply(_ request: String) async -> StoreReply? {
        _ = await eventually { reply(request) != nil }
        return reply(request)
    }
}

/// With `running: false` the processor does not consume the stream: the test hands it entries.
func withHarness(store: MessageStore? = nil, claimIdle: Duration = .seconds(30), keys: RedisKeys = uniqueKeys(), purgeStep: Int = 20, batchSize: Int = 256, running: Bool = true,
                 publishBatches: Bool = true,
                 _ body: @Sendable (Harness) async throws -> Void) async throws {
    let server = try RedisServer.required()
    let store = try store ?? makeStore()
    let subscriber = RedisSubscriber(configuration: server.configuration)
    let recorder = ChannelRecorder(subscriber)
    try await withRunning(subscriber) { subscriber in
        try await subscriber.psubscribe([keys.prefix + "*"])
        try await server.withClient { redis in
            _ = await eventually { (try? await redis.send(["PUBSUB", "NUMPAT"]).int ?? 0) ?? 0 >= 1 }
            _ = try await redis.xgroupCreate(keys.commands, group: RedisKeys.messagesGroup, startingAt: "0")
            var configuration = CommandProcessor.Configuration(consumer: "m1")
            configuration.block = .milliseconds(100)
            configuration.claimIdle = claimIdle
            configuration.purgeStep = purgeStep
            configuration.batchSize = batchSize
            configuration.publishBatches = publishBatches
            let processor = CommandProcessor(store: store, redis: redis, keys: keys, configuration: configuration, logger: Logger(label: "test"))
            let queries = RedisSubscriber(configuration: server.configuration)
            let responder = QueryResponder(store: store, redis: redis, subscriber: queries, keys: keys, logger: Logger(label: "test"))
            try await withRunning(queries) { _ in
                try await withRunning(responder) { _ in
                    let harness = Harness(store: store, keys: keys, redis: redis, recorder: recorder, processor: processor)
                    guard running else {
                        _ = await eventually { (try? await redis.send(["PUBSUB", "NUMSUB", keys.storeQueries]).array?.last?.int) == 1 }
                        return try await body(harness)
                    }
                    try await withRunning(processor) { _ in
                        _ = await eventually { (try? await redis.send(["PUBSUB", "NUMSUB", keys.storeQueries]).array?.last?.int) == 1 }
                        try await body(harness)
                    }
                }
            }
        }
    }
}

@Suite("Command processor and query responder on a real redis-server", .redisServer)
struct CommandProcessorTests {
    @Test("a send is stored, confirmed to the sender and the asking gateway, delivered to the receiver, and its text leaves the stream")
    func sendFlow() async throws {
        try await withHarness { h in
            let send = try h.command(.send, "doctor@clinic.com", SendMessageRequest(receiverEmail: "admin@clinic.com", content: "Bed 4 stable", clientID: "c1"), request: "r1")
            try await h.enqueue(send)
            let reply = try #require(await h.waitForReply("r1"))
            let message = try ChatJSON.makeDecoder().decode(Message.self, from: Data(try #require(reply.result).utf8))
            #expect(message.content == "Bed 4 stable" && message.seq == 1 && message.receiverEmail == "admin@clinic.com")

            #expect(await eventually { h.recorder.objects(on: h.keys.user("admin@clinic.com")).count == 1 })
            let delivered = h.recorder.objects(on: h.keys.user("admin@clinic.com"))[0]
            #expect(delivered["event"] as? String == "receive_message")
            #expect((delivered["data"] as? [String: Any])?["id"] as? String == message.id)
            let confirmed = h.recorder.objects(on: h.keys.user("doctor@clinic.com"))
            #expect(confirmed.map { $0["event"] as? String } == ["message_sent_confirmed"])
            #expect(confirmed.first?["request"] as? String == "r1")

            #expect(try h.store.history(for: "admin@clinic.com", conversationID: message.conversationID).map(\.id) == [message.id])
            let events = try await h.redis.xrange(h.keys.events)
            #expect(events.map { $0.fields["type"] } == ["stored"])
            #expect(events.first?.fields["message_id"] == message.id)
            #expect(!events.contains { $0.fields.values.contains { $0.contains("Bed 4") } })
            #expect(await eventually { (try? await h.redis.xlen(h.keys.commands)) == 0 })
            #expect(try await h.redis.xpending(h.keys.commands, group: RedisKeys.messagesGroup).count == 0)
        }
    }

    @Test("the same client_id sent three times through the stream is stored once and answered with the same message")
    func retriedSendsThroughTheStream() async throws {
        try await withHarness { h in
            for request in ["a", "b", "c"] {
                try await h.enqueue(try h.command(.send, "doctor@clinic.com", SendMessageRequest(receiverEmail: "admin@clinic.com", content: "once", clientID: "same"), request: request))
            }
            var ids: [String] = []
            for request in ["a", "b", "c"] {
                let reply = try #require(await h.waitForReply(request))
                ids.append(try ChatJSON.makeDecoder().decode(Message.self, from: Data(try #require(reply.result).utf8)).id)
            }
            #expect(Set(ids).count == 1)
            let conversation = try #require(try h.store.conversations(for: "admin@clinic.com").first)
            #expect(try h.store.history(for: "admin@clinic.com", conversationID: conversation.id).count == 1)
            #expect(h.recorder.objects(on: h.keys.user("admin@clinic.com")).count == 1)
        }
    }

    @Test("bad commands are answered with their error and acknowledged; the commands after them still apply")
    func badCommands() async throws {
        try await withHarness { h in
            try await h.redis.xadd(h.keys.commands, fields: [("type", "no_such_type"), ("payload", "{}")])
            try await h.enqueue(StoreCommand(type: .send, user: "doctor@clinic.com", gateway: "gw-1", request: "json", payload: "{not json"))
            try await h.enqueue(try h.command(.send, "doctor@clinic.com", SendMessageRequest(receiverEmail: "admin@clinic.com", content: "  ", clientID: "e1"), request: "empty"))
            try await h.enqueue(try h.command(.markConversationRead, "dr.patel@clinic.com", MarkConversationReadRequest(conversationID: "nope", upToSeq: 1), request: "unknown"))
            try await h.enqueue(try h.command(.createUser, "doctor@clinic.com", CreateUserRequest(email: "x@clinic.com", name: "X", role: .admin, password: "password1"), request: "not-admin"))
            try await h.enqueue(try h.command(.send, "doctor@clinic.com", SendMessageRequest(receiverEmail: "admin@clinic.com", content: "still works", clientID: "ok"), request: "ok"))

            #expect(await h.waitForReply("json")?.error?.code == .badRequest)
            #expect(await h.waitForReply("empty")?.error?.code == .invalidContent)
            #expect(await h.waitForReply("unknown")?.error?.code == .notFound)
            #expect(await h.waitForReply("not-admin")?.error?.code == .forbidden)
            #expect(await h.waitForReply("ok")?.result != nil)
            let errors = h.recorder.objects(on: h.keys.user("doctor@clinic.com")).filter { $0["event"] as? String == "error" }
            #expect(errors.compactMap { ($0["data"] as? [String: Any])?["client_id"] as? String } == ["e1"])
            #expect(await eventually { (try? await h.redis.xpending(h.keys.commands, group: RedisKeys.messagesGroup).count) == 0 })
            #expect(try h.store.auditLog().contains { $0.action == "admin.create_user" && $0.outcome == "forbidden" && $0.target == "x@clinic.com" }, "a refused one names whom it was about")
        }
    }

    @Test("an entry delivered again after its batch committed (a crash before XACK) is applied once")
    func redeliveryAppliesOnce() async throws {
        try await withHarness { h in
            let c = try h.store.openDirectConversation("admin@clinic.com", "doctor@clinic.com")
            let entry = StreamEntry(id: "1-1", fields: Dictionary(uniqueKeysWithValues: try h.command(.send, "admin@clinic.com",
                SendMessageRequest(conversationID: c.id, content: "no client id", clientID: nil)).fields))
            try await h.processor.process([entry])
            try await h.processor.process([entry])
            #expect(try h.store.history(for: "doctor@clinic.com", conversationID: c.id).map(\.content) == ["no client id"])
        }
    }

    @Test("a send committed by a service killed before it announced anything is announced in full when its entry is read again: confirmed, delivered, scheduled for deletion")
    func replayAnnouncesInFull() async throws {
        try await withHarness(running: false) { h in
            let c = try h.store.openDirectConversation("admin@clinic.com", "doctor@clinic.com")
            let command = try h.command(.send, "admin@clinic.com", SendMessageRequest(conversationID: c.id, content: "committed, never announced", clientID: "k1"), request: "k1")
            let entry = StreamEntry(id: "1-1", fields: Dictionary(uniqueKeysWithValues: command.fields))
            // The commit of a service killed right after it: nothing published.
            _ = try h.store.apply([(entry.id, try #require(StoreCommand(fields: entry.fields)))])
            #expect(h.recorder.texts(on: h.keys.user("doctor@clinic.com")).isEmpty)
            try await h.processor.process([entry])
            #expect(await h.waitForReply("k1")?.result != nil)
            #expect(await eventually { h.recorder.objects(on: h.keys.user("doctor@clinic.com")).contains { $0["event"] as? String == "receive_message" } })
            #expect(h.recorder.objects(on: h.keys.user("admin@clinic.com")).contains { $0["event"] as? String == "message_sent_confirmed" })
            let stored = try await h.redis.xrange(h.keys.events).filter { $0.fields["type"] == "stored" }
            let id = try h.store.history(for: "doctor@clinic.com", conversationID: c.id).map(\.id)
            #expect(stored.compactMap { $0.fields["message_id"] } == id)
            #expect(id.count == 1, "stored once")
        }
    }

    @Test("a user disabled, committed but never announced (killed before the announcements), is flagged and revoked when the entry is read again; a read mark's receipt goes out again")
    func replayedCommandsAnnounceAgain() async throws {
        try await withHarness(running: false) { h in
            let c = try h.store.openDirectConversation("admin@clinic.com", "doctor@clinic.com")
            let sent = try h.store.send("admin@clinic.com", to: c.id, "potassium 5.9").message
            let commands = [
                try h.command(.setUserDisabled, "admin@clinic.com", UpdateUserRequest(email: "doctor@clinic.com", disabled: true), request: "d1"),
                try h.command(.markConversationRead, "admin@clinic.com", MarkConversationReadRequest(conversationID: c.id, upToSeq: sent.seq), request: "r1"),
            ]
            let entries = commands.enumerated().map { StreamEntry(id: "1-\($0.offset + 1)", fields: Dictionary(uniqueKeysWithValues: $0.element.fields)) }
            _ = try h.store.apply(try entries.map { ($0.id, try #require(StoreCommand(fields: $0.fields))) })
            #expect(try await h.redis.send(["EXISTS", h.keys.disabledUser("doctor@clinic.com")]) == .integer(0))
            try await h.processor.process(entries)
            #expect(try await h.redis.send(["EXISTS", h.keys.disabledUser("doctor@clinic.com")]) == .integer(1), "the gateways refuse the user's tokens")
            #expect(await eventually { h.recorder.objects(on: h.keys.user("doctor@clinic.com")).contains { $0["event"] as? String == "session_revoked" } })
            let user = try #require(await h.waitForReply("d1")?.result)
            #expect(try ChatJSON.makeDecoder().decode(User.self, from: Data(user.utf8)).disabled)
            let receipt = try #require(await h.waitForReply("r1")?.result)
            #expect(try ChatJSON.makeDecoder().decode(ReadReceipt.self, from: Data(receipt.utf8)).upToSeq == sent.seq)
            #expect(h.recorder.objects(on: h.keys.user("admin@clinic.com")).contains { $0["event"] as? String == "message_read_receipt" })
            #expect(try await h.redis.xrange(h.keys.events).contains { $0.fields["type"] == "read" && $0.fields["up_to_seq"] == String(sent.seq) })
        }
    }

    @Test("a batch whose announcements Redis refuses (the events key of the wrong type) is not acknowledged; read again once they are accepted, it is announced in full, once stored")
    func refusedAnnouncementsAreRetried() async throws {
        try await withHarness { h in
            let c = try h.store.openDirectConversation("admin@clinic.com", "doctor@clinic.com")
            _ = try await h.redis.send(["SET", h.keys.events, "not a stream"])
            try await h.enqueue(try h.command(.send, "admin@clinic.com", SendMessageRequest(conversationID: c.id, content: "scheduled at last", clientID: "w1"), request: "w1"))
            #expect(await eventually { (try? h.store.history(for: "doctor@clinic.com", conversationID: c.id).count) == 1 })
            try await Task.sleep(for: .milliseconds(300))
            #expect(try await h.redis.xpending(h.keys.commands, group: RedisKeys.messagesGroup).count == 1, "not acknowledged while refused")
            _ = try await h.redis.send(["DEL", h.keys.events])
            #expect(await eventually { (try? await h.redis.xrange(h.keys.events).contains { $0.fields["type"] == "stored" }) == true })
            #expect(await eventually { h.recorder.objects(on: h.keys.user("doctor@clinic.com")).contains { $0["event"] as? String == "receive_message" } })
            #expect(await eventually { (try? await h.redis.xpending(h.keys.commands, group: RedisKeys.messagesGroup).count) == 0 })
            #expect(try h.store.history(for: "doctor@clinic.com", conversationID: c.id).map(\.content) == ["scheduled at last"])
        }
    }

    @Test("a malformed entry read with a purge is dropped, counted once, and the purge still applies")
    func malformedWithPurgeCountedOnce() async throws {
        try await withHarness(running: false) { h in
            let c = try h.store.openDirectConversation("admin@clinic.com", "doctor@clinic.com")
            let old = try h.store.send("admin@clinic.com", to: c.id, "old note", now: Date().addingTimeInterval(-91 * 86400)).message
            let registry = PrometheusCollectorRegistry()
            let processor = CommandProcessor(store: h.store, redis: h.redis, keys: h.keys, configuration: .init(consumer: "m2"),
                                             logger: Logger(label: "test"), metrics: StoreMetrics(registry: registry))
            let purge = StreamEntry(id: "1-1", fields: Dictionary(uniqueKeysWithValues: try StoreCommand(type: .purge, user: "", gateway: "gw-1", request: "purge",
                                                                                                         body: PurgeRequest(messageIDs: [old.id])).fields))
            let junk = StreamEntry(id: "1-2", fields: ["nonsense": "x"])
            let followUp = try await processor.stage([purge, junk], settle: {})
            try await followUp()
            #expect(await h.waitForReply("purge")?.error == nil)
            var buffer: [UInt8] = []
            registry.emit(into: &buffer)
            let lines = String(decoding: buffer, as: UTF8.self).split(separator: "\n")
            #expect(lines.contains("chat_store_commands_malformed_total 1"))
            #expect(try h.store.history(for: "doctor@clinic.com", conversationID: c.id).isEmpty)
        }
    }

    @Test("a send read together with a purge is committed and answered first, in a transaction of its own")
    func sendsGoBeforePurges() async throws {
        try await withHarness { h in
            let c = try h.store.openDirectConversation("admin@clinic.com", "doctor@clinic.com")
            let old = try h.store.send("admin@clinic.com", to: c.id, "old note", now: Date().addingTimeInterval(-91 * 86400)).message
            func entry(_ id: String, _ command: StoreCommand) -> StreamEntry { StreamEntry(id: id, fields: Dictionary(uniqueKeysWithValues: command.fields)) }
            let purge = entry("1-1", try StoreCommand(type: .purge, user: "", gateway: "gw-1", request: "purge", body: PurgeRequest(messageIDs: [old.id])))
            let send = entry("1-2", try h.command(.send, "doctor@clinic.com", SendMessageRequest(conversationID: c.id, content: "new note", clientID: "n1"), request: "send"))
            try await h.processor.process([purge, send])
            #expect(await h.waitForReply("purge")?.error == nil)
            let requests = h.recorder.texts(on: h.keys.gateway("gw-1")).compactMap { try? ChatJSON.makeDecoder().decode(StoreReply.self, from: Data($0.utf8)).request }
            #expect(requests == ["send", "purge"])
            #expect(try h.store.history(for: "doctor@clinic.com", conversationID: c.id).map(\.content) == ["new note"])
        }
    }

    @Test("batches overlap (one commits while the last is announced), yet replies, confirmations and deliveries keep the order of the stream, a purge's too")
    func overlappingBatchesKeepOrder() async throws {
        try await withHarness(batchSize: 4, running: false) { h in
            let c = try h.store.openDirectConversation("admin@clinic.com", "doctor@clinic.com")
            let old = try h.store.send("admin@clinic.com", to: c.id, "old note", now: Date().addingTimeInterval(-91 * 86400)).message
            // Batches of four: s1-s4 | s5 s6 purge s7 (sends first) | s8-s10. The second batch
            // announces directly, so it must wait for the first batch's announcements. This checks
            // the order end to end; the first batch's announcements nearly always win that race
            // anyway, so the waiting itself is tested on StreamConsumer (settleWaitsForThePreviousFollowUp).
            var commands: [[String]] = []
            var expected: [String] = []
            for n in 1...10 {
                if n == 7 {
                    commands.append(RedisClient.xaddCommand(h.keys.commands, fields: try StoreCommand(type: .purge, user: "", gateway: "gw-1", request: "purge",
                                                                                                      body: PurgeRequest(messageIDs: [old.id])).fields))
                }
                let sender = n.isMultiple(of: 2) ? "doctor@clinic.com" : "admin@clinic.com"
                commands.append(RedisClient.xaddCommand(h.keys.commands, fields: try h.command(.send, sender,
                    SendMessageRequest(conversationID: c.id, content: "note \(n)", clientID: "o\(n)"), request: "s\(n)").fields))
                expected.append("s\(n)")
                if n == 7 { expected.append("purge") }
            }
            // All in the stream before the processor starts, so the batches are as above.
            _ = try await h.redis.pipeline(commands)
            try await withRunning(h.processor) { _ in
                #expect(await h.waitForReply("s10") != nil)
                #expect(await eventually { h.reply("purge") != nil })
                #expect(await eventually { (try? await h.redis.xpending(h.keys.commands, group: RedisKeys.messagesGroup).count) == 0 })
            }
            let replies = h.recorder.texts(on: h.keys.gateway("gw-1")).compactMap { try? ChatJSON.makeDecoder().decode(StoreReply.self, from: Data($0.utf8)).request }
            #expect(replies == expected)
            // Each side sees every message, its own confirmed and the other's delivered, in seq order.
            for user in ["admin@clinic.com", "doctor@clinic.com"] {
                let seqs = h.recorder.objects(on: h.keys.user(user)).compactMap { event -> Int? in
                    guard ["message_sent_confirmed", "receive_message"].contains(event["event"] as? String ?? "") else { return nil }
                    return (event["data"] as? [String: Any])?["seq"] as? Int
                }
                #expect(seqs == Array(2...11), "\(user)")
            }
        }
    }

    @Test("a large purge runs in steps: a send and a second purge that arrive meanwhile are applied in between, and the purge is answered and audited as one")
    func purgeInSteps() async throws {
        try await withHarness(purgeStep: 2, running: false) { h in
            let c = try h.store.openDirectConversation("admin@clinic.com", "doctor@clinic.com")
            let old = try (0..<7).map { try h.store.send("admin@clinic.com", to: c.id, "old note \($0)", now: Date().addingTimeInterval(-91 * 86400)).message.id }
            func entry(_ id: String, _ command: StoreCommand) -> StreamEntry { StreamEntry(id: id, fields: Dictionary(uniqueKeysWithValues: command.fields)) }
            // Two due messages of a conversation on legal hold, in two of the steps: held, not deleted.
            let held = try h.store.openDirectConversation("admin@clinic.com", "dr.patel@clinic.com")
            let kept = try (0..<2).map { try h.store.send("admin@clinic.com", to: held.id, "kept \($0)", now: Date().addingTimeInterval(-91 * 86400)).message.id }
            _ = try h.store.apply([("0-1", StoreCommand(type: .setLegalHold, user: "", body: LegalHoldRequest(conversationID: held.id, held: true)))])
            let ids = [kept[0], old[0], old[1], kept[1], old[2], old[3], old[4]]
            let purge = entry("1-1", try StoreCommand(type: .purge, user: "", gateway: "gw-1", request: "purge", body: PurgeRequest(messageIDs: ids)))
            // Arrive after the purge was read: the processor finds them between its steps.
            try await h.enqueue(try h.command(.send, "doctor@clinic.com", SendMessageRequest(conversationID: c.id, content: "new note", clientID: "n1"), request: "send"))
            try await h.enqueue(try StoreCommand(type: .purge, user: "", gateway: "gw-1", request: "second", body: PurgeRequest(messageIDs: Array(old[5...]))))
            try await h.processor.process([purge])

            #expect(await h.waitForReply("second") != nil)
            let replies = h.recorder.texts(on: h.keys.gateway("gw-1")).compactMap { try? ChatJSON.makeDecoder().decode(StoreReply.self, from: Data($0.utf8)) }
            #expect(replies.map(\.request) == ["send", "purge", "second"])
            func counts(_ request: String) -> [String: Int]? {
                replies.first { $0.request == request }?.result.flatMap { try? JSONDecoder().decode([String: Int].self, from: Data($0.utf8)) }
            }
            #expect(counts("purge") == ["purged": 5, "held": 2])
            #expect(counts("second") == ["purged": 2, "held": 0])
            #expect(try h.store.history(for: "doctor@clinic.com", conversationID: c.id).map(\.content) == ["new note"])
            // One messages_purged event for the first purge names all five, from every step.
            let purged = h.recorder.objects(on: h.keys.user("doctor@clinic.com")).filter { $0["event"] as? String == "messages_purged" }
            #expect(purged.map { Set(($0["data"] as? [String: Any])?["message_ids"] as? [String] ?? []) } == [Set(old[..<5]), Set(old[5...])])
            let audit = try h.store.auditLog().filter { $0.action == "retention.purge" }.map(\.detail)
            #expect(audit == ["2 deleted, 0 held", "5 deleted, 2 held"])  // newest first
            let stillHeld = try h.store.read { db in try String.fetchAll(db, sql: "SELECT id FROM messages WHERE conversation_id = ?", arguments: [held.id]) }
            #expect(Set(stillHeld) == Set(kept))
            // What arrived between the steps is acknowledged, and its text leaves the stream.
            #expect(try await h.redis.xpending(h.keys.commands, group: RedisKeys.messagesGroup).count == 0)
            #expect(try await h.redis.xlen(h.keys.commands) == 0)
        }
    }

    @Test("a batch's announcements go out one PUBLISH per channel (a group's read marks reach the sender as one message, the answers to a gateway as one), each event in its order; with publishBatches off, one per event", arguments: [true, false])
    func oneMessagePerChannel(batches: Bool) async throws {
        try await withHarness(running: false, publishBatches: batches) { h in
            let members = ["doctor@clinic.com", "dr.patel@clinic.com", "dr.okafor@clinic.com"]
            let group = try h.store.createGroup(creator: "admin@clinic.com", title: "Ward 5", members: members)
            let sent = try h.store.send("admin@clinic.com", to: group.id, "rounds at 9").message
            // One batch: three readers' marks and a send.
            var commands = try members.map { reader in
                RedisClient.xaddCommand(h.keys.commands, fields: try h.command(.markConversationRead, reader,
                    MarkConversationReadRequest(conversationID: group.id, upToSeq: sent.seq), request: "read-\(reader)").fields)
            }
            commands.append(RedisClient.xaddCommand(h.keys.commands, fields: try h.command(.send, "doctor@clinic.com",
                SendMessageRequest(conversationID: group.id, content: "on my way", clientID: "omw"), request: "send").fields))
            _ = try await h.redis.pipeline(commands)
            try await withRunning(h.processor) { _ in
                #expect(await h.waitForReply("send") != nil)
            }
            let readers = members.map { "read-\($0)" }
            let replies = h.recorder.texts(on: h.keys.gateway("gw-1")).compactMap { try? ChatJSON.makeDecoder().decode(StoreReply.self, from: Data($0.utf8)).request }
            #expect(replies == readers + ["send"])
            #expect(h.recorder.messageCount(on: h.keys.gateway("gw-1")) == (batches ? 1 : 4))
            for user in ["admin@clinic.com"] + members {
                let events = h.recorder.objects(on: h.keys.user(user))
                let got = events.map { event -> String in
                    let data = event["data"] as? [String: Any] ?? [:]
                    return "\(event["event"] ?? "") \(data["reader_email"] ?? data["seq"] ?? "")"
                }
                let message = user == "doctor@clinic.com" ? "message_sent_confirmed 2" : "receive_message 2"
                // Every receipt to the admin, whose message they cover; each reader only their own.
                let receipts = user == "admin@clinic.com" ? members : [user]
                #expect(got == receipts.map { "message_read_receipt \($0)" } + [message], "\(user)")
                #expect(h.recorder.messageCount(on: h.keys.user(user)) == (batches ? 1 : receipts.count + 1), "\(user)")
            }
        }
    }

    @Test("coalescing keeps each channel's events in order, the other commands first, the users' channels in the order they first appear, the answers to gateways last")
    func coalescedOrder() {
        let commands: [[String]] = [
            ["PUBLISH", "gateway:g1", #"{"request":"1"}"#], ["PUBLISH", "user:b", #"{"event":"b1"}"#], ["XADD", "chat:events", "*", "type", "stored"],
            ["PUBLISH", "user:a", #"{"event":"a1"}"#], ["PUBLISH", "gateway:g2", #"{"request":"2"}"#], ["PUBLISH", "user:b", #"{"event":"b2"}"#],
            ["SET", "auth:disabled:c", "1"], ["PUBLISH", "gateway:g1", #"{"request":"3"}"#], ["PUBLISH", "user:c", #"{"event":"c1"}"#],
        ]
        #expect(CommandProcessor.coalesced(commands, replyChannelPrefix: "gateway:") == [
            ["XADD", "chat:events", "*", "type", "stored"], ["SET", "auth:disabled:c", "1"],
            ["PUBLISH", "user:b", #"{"batch":[{"event":"b1"},{"event":"b2"}]}"#], ["PUBLISH", "user:a", #"{"event":"a1"}"#], ["PUBLISH", "user:c", #"{"event":"c1"}"#],
            ["PUBLISH", "gateway:g1", #"{"batch":[{"request":"1"},{"request":"3"}]}"#], ["PUBLISH", "gateway:g2", #"{"request":"2"}"#],
        ])
        #expect(CommandProcessor.coalesced([], replyChannelPrefix: "gateway:").isEmpty)
    }

    @Test("marking read moves the marker, sends receipts to every participant and answers the gateway")
    func readReceipts() async throws {
        try await withHarness { h in
            let m = try h.store.send("admin@clinic.com", receiver: "doctor@clinic.com", "please review")
            try await h.enqueue(try h.command(.markMessageRead, "doctor@clinic.com", MarkMessageReadRequest(messageID: m.message.id), request: "read"))
            let reply = try #require(await h.waitForReply("read"))
            let receipt = try ChatJSON.makeDecoder().decode(ReadReceipt.self, from: Data(try #require(reply.result).utf8))
            #expect(receipt.upToSeq == 1 && receipt.readerEmail == "doctor@clinic.com" && receipt.messageID == m.message.id)
            #expect(await eventually { h.recorder.objects(on: h.keys.user("admin@clinic.com")).contains { $0["event"] as? String == "message_read_receipt" } })
            #expect(try h.store.unreadCounts(for: "doctor@clinic.com").total == 0)
        }
    }

    @Test("queries: login, history, conversation list and search answer on the gateway channel; outsiders get not_found; reads are audited")
    func queries() async throws {
        try await withHarness { h in
            let m = try h.store.send("admin@clinic.com", receiver: "doctor@clinic.com", "potassium 5.9")
            func ask(_ query: StoreQuery) async throws -> StoreReply? {
                try await h.redis.publish(String(decoding: try ChatJSON.makeEncoder().encode(query), as: UTF8.self), to: h.keys.storeQueries)
                return await h.waitForReply(query.request)
            }
            let login = try await ask(StoreQuery(kind: .login, user: "doctor@clinic.com", gateway: "gw-1", request: "q1", password: "password-doctor@clinic.com"))
            #expect(login?.result?.contains("Dr. Sarah Kim") == true)
            let wrong = try await ask(StoreQuery(kind: .login, user: "doctor@clinic.com", gateway: "gw-1", request: "q2", password: "nope"))
            #expect(wrong?.error == ChatError(.unauthorized, "wrong email or password"))
            let history = try await ask(StoreQuery(kind: .history, user: "doctor@clinic.com", gateway: "gw-1", request: "q3", conversationID: m.message.conversationID, limit: 30))
            #expect(history?.result?.contains(m.message.id) == true)
            let outsider = try await ask(StoreQuery(kind: .history, user: "dr.patel@clinic.com", gateway: "gw-1", request: "q4", conversationID: m.message.conversationID))
            #expect(outsider?.error?.code == .notFound)
            let list = try await ask(StoreQuery(kind: .conversations, user: "doctor@clinic.com", gateway: "gw-1", request: "q5"))
            #expect(list?.result?.contains("\"unread_count\":1") == true)
            let search = try await ask(StoreQuery(kind: .searchMessages, user: "doctor@clinic.com", gateway: "gw-1", request: "q6", query: "potassium"))
            #expect(search?.result?.contains(m.message.id) == true)
            let audit = try await ask(StoreQuery(kind: .auditLog, user: "doctor@clinic.com", gateway: "gw-1", request: "q7"))
            #expect(audit?.error?.code == .forbidden)
            // Asked with raw_result, as every store client asks: the list as JSON in
            // result_json, not quoted; the client's reading of it is the string's text.
            var raw = StoreQuery(kind: .conversations, user: "doctor@clinic.com", gateway: "gw-1", request: "q8")
            raw.rawResult = true
            try await h.redis.publish(String(decoding: try ChatJSON.makeEncoder().encode(raw), as: UTF8.self), to: h.keys.storeQueries)
            #expect(await eventually { h.recorder.texts(on: h.keys.gateway("gw-1")).contains { $0.hasPrefix(#"{"request":"q8","result_json":[{"#) } })
            let rawText = try #require(h.recorder.texts(on: h.keys.gateway("gw-1")).first { $0.hasPrefix(#"{"request":"q8""#) })
            #expect(rawText.contains(#""content":"potassium 5.9""#))
            let listed = try #require(list?.result)
            #expect(StoreClient.readReply(Array(rawText.utf8))?.result == listed)

            let actions = try h.store.auditLog().map { "\($0.action):\($0.outcome)" }
            for expected in ["login:ok", "login_failed:denied", "history:ok", "history:not_found", "search:ok"] {
                #expect(actions.contains(expected), "\(expected) in \(actions)")
            }
            #expect(try h.store.auditLog().first { $0.action == "history" }?.gateway == "gw-1")
        }
    }

    @Test("a query that finds the responder's lane and backlog full is answered unavailable at once; the one running is answered")
    func busyResponderRefuses() async throws {
        let server = try RedisServer.required()
        let keys = uniqueKeys()
        let store = try MessageStore.inMemory()
        try store.createUser(email: "doctor@clinic.com", name: "Dr. Kim", role: .doctor, password: "password1")
        // The in-memory store has one connection: while a transaction holds it, the login
        // admitted to the lane's only thread waits inside it, and the other finds the lane
        // full, however the machine schedules the two (a bcrypt check's time alone was not
        // enough on a busy machine).
        let release = DispatchSemaphore(value: 0), holding = DispatchSemaphore(value: 0)
        Thread.detachNewThread { try? store.write { _ in holding.signal(); release.wait() } }
        holding.wait()
        let replies = RedisSubscriber(configuration: server.configuration)
        let recorder = ChannelRecorder(replies)
        try await withRunning(replies) { replies in
            try await replies.subscribe([keys.gateway("gw-1")])
            try await server.withClient { redis in
                let queries = RedisSubscriber(configuration: server.configuration)
                let responder = QueryResponder(store: store, redis: redis, subscriber: queries, keys: keys, logger: Logger(label: "test"), width: 1, backlog: 0)
                try await withRunning(queries) { _ in
                    try await withRunning(responder) { _ in
                        _ = await eventually { (try? await redis.send(["PUBSUB", "NUMSUB", keys.storeQueries]).array?.last?.int) == 1 }
                        let logins = try ["first", "second"].map { request in
                            ["PUBLISH", keys.storeQueries, String(decoding: try ChatJSON.makeEncoder().encode(
                                StoreQuery(kind: .login, user: "doctor@clinic.com", gateway: "gw-1", request: request, password: "password1")), as: UTF8.self)]
                        }
                        _ = try await redis.pipeline(logins)
                        @Sendable func answers() -> [StoreReply] {
                            recorder.texts(on: keys.gateway("gw-1")).compactMap { try? ChatJSON.makeDecoder().decode(StoreReply.self, from: Data($0.utf8)) }
                        }
                        #expect(await eventually { answers().count == 1 })
                        #expect(answers().first?.error == ChatError(.unavailable, "the store is busy; try again"))
                        release.signal()
                        #expect(await eventually { answers().count == 2 })
                        let got = answers()
                        #expect(got.filter { $0.result?.contains("Dr. Kim") == true }.count == 1)
                        #expect(got.filter { $0.error == ChatError(.unavailable, "the store is busy; try again") }.count == 1)
                        #expect(Set(got.map(\.request)) == ["first", "second"])
                    }
                }
            }
        }
    }

    @Test("entries a dead consumer left pending are claimed and applied")
    func claimsAbandonedEntries() async throws {
        let store = try makeStore()
        let c = try store.openDirectConversation("admin@clinic.com", "doctor@clinic.com")
        let server = try RedisServer.required()
        let keys = uniqueKeys()
        // Another consumer reads the entries and dies before applying them.
        try await server.withClient { redis in
            try await redis.xgroupCreate(keys.commands, group: RedisKeys.messagesGroup, startingAt: "0")
            for i in 0..<3 {
                let command = try StoreCommand(type: .send, user: "admin@clinic.com", body: SendMessageRequest(conversationID: c.id, content: "orphan \(i)", clientID: nil))
                try await redis.xadd(keys.commands, fields: command.fields)
            }
            _ = try await redis.xreadgroup(group: RedisKeys.messagesGroup, consumer: "dead", streams: [(keys.commands, ">")], count: 10)
        }
        try await withHarness(store: store, claimIdle: .milliseconds(200), keys: keys) { h in
            #expect(await eventually { (try? h.store.history(for: "doctor@clinic.com", conversationID: c.id).count) == 3 })
            #expect(await eventually { (try? await h.redis.xpending(h.keys.commands, group: RedisKeys.messagesGroup).count) == 0 })
        }
    }

    @Test("a batch that fails for a transient reason (the database locked) is not acknowledged and is applied once the lock is gone")
    func transientFailureIsRetried() async throws {
        let path = temporaryDatabasePath("locked")
        defer { removeDatabase(at: path) }
        let store = try MessageStore.open(path: path, retention: .seconds(3600), bcryptCost: 4, busyTimeout: .milliseconds(100))
        for (email, name, role) in cast { try store.createUser(email: email, name: name, role: role, password: "password-\(email)") }
        let c = try store.openDirectConversation("admin@clinic.com", "doctor@clinic.com")
        try await withHarness(store: store) { h in
            // Another connection holds the write lock for a second, on a thread of its own.
            let blocker = try DatabaseQueue(path: path)
            let locked = DispatchSemaphore(value: 0)
            let released = DispatchSemaphore(value: 0)
            Thread {
                try? blocker.writeWithoutTransaction { db in
                    try db.execute(sql: "BEGIN IMMEDIATE")
                    locked.signal()
                    Thread.sleep(forTimeInterval: 1.0)
                    try db.execute(sql: "COMMIT")
                }
                released.signal()
            }.start()
            locked.wait()
            try await h.enqueue(try h.command(.send, "admin@clinic.com", SendMessageRequest(conversationID: c.id, content: "while locked", clientID: "l1"), request: "locked"))
            // Delivered to the processor, refused by SQLite, left pending.
            #expect(await eventually { (try? await h.redis.xpending(h.keys.commands, group: RedisKeys.messagesGroup).count) == 1 })
            try await Task.sleep(for: .milliseconds(300))
            #expect(h.reply("locked") == nil)
            #expect(try await h.redis.xpending(h.keys.commands, group: RedisKeys.messagesGroup).count == 1)
            _ = await Task.detached { released.wait() }.value
            let reply = await h.waitForReply("locked")
            #expect(reply?.result != nil)
            #expect(try h.store.history(for: "doctor@clinic.com", conversationID: c.id).map(\.content) == ["while locked"])
            #expect(await eventually { (try? await h.redis.xpending(h.keys.commands, group: RedisKeys.messagesGroup).count) == 0 })
        }
    }

    @Test("set_password and end_sessions: only a bcrypt hash is taken; a user sets their own, admins and tools anyone's, a doctor no one else's; the cutoff key and the revocation go out, and again when the entry is read again; create_user takes a hash, or (the old form) a password")
    func passwords() async throws {
        try await withHarness(running: false) { h in
            let hash = await PasswordPolicy.hash("a-new-password", cost: 4)
            let ttl = Duration.seconds(3600)
            // Cutoffs a few seconds old, as gateways send them (Redis's clock).
            let base = Date().epochMilliseconds - 10_000
            func set(_ actor: String, _ email: String, _ hash: String, before: Int64? = nil, request: String) throws -> StoreCommand {
                try h.command(.setPassword, actor, SetPasswordRequest(email: email, passwordHash: hash, tokensBefore: before ?? base + 123, tokensTTL: ttl), request: request)
            }
            let commands = [
                try set("doctor@clinic.com", "doctor@clinic.com", "not-a-hash", request: "bad-hash"),
                try set("doctor@clinic.com", "doctor@clinic.com", String(hash.dropLast()), request: "short-hash"),
                try set("doctor@clinic.com", "dr.patel@clinic.com", hash, request: "someone-else"),
                try set("admin@clinic.com", "ghost@clinic.com", hash, request: "unknown"),
                try set("doctor@clinic.com", "doctor@clinic.com", hash, request: "own"),
                try set("", "dr.patel@clinic.com", hash, before: base + 456, request: "tool"),
                try h.command(.createUser, "admin@clinic.com", CreateUserRequest(email: "dr.lee@clinic.com", name: "Dr. Lee", role: .doctor, passwordHash: hash), request: "new-hash"),
                try h.command(.createUser, "admin@clinic.com", CreateUserRequest(email: "dr.old@clinic.com", name: "Dr. Old", role: .doctor, password: "an-old-gateway"), request: "new-old"),
                try h.command(.createUser, "admin@clinic.com", CreateUserRequest(email: "dr.bad@clinic.com", name: "Dr. Bad", role: .doctor, passwordHash: "$2b$10$nope"), request: "new-bad"),
                try h.command(.endSessions, "doctor@clinic.com", EndSessionsRequest(email: "dr.patel@clinic.com", tokensBefore: 1, tokensTTL: ttl), request: "end-other"),
                try h.command(.endSessions, "dr.okafor@clinic.com", EndSessionsRequest(email: "dr.okafor@clinic.com", tokensBefore: base + 789, tokensTTL: ttl), request: "end-own"),
                // Older than the change before it (a gateway's command that reached the store late): it cannot lower the cutoff.
                try h.command(.endSessions, "dr.okafor@clinic.com", EndSessionsRequest(email: "dr.okafor@clinic.com", tokensBefore: base + 700, tokensTTL: ttl), request: "end-late"),
            ]
            let entries = commands.enumerated().map { StreamEntry(id: "1-\($0.offset + 1)", fields: Dictionary(uniqueKeysWithValues: $0.element.fields)) }
            try await h.processor.process(entries)
            for (request, code) in [("bad-hash", ChatError.Code.badRequest), ("short-hash", .badRequest), ("someone-else", .forbidden), ("unknown", .notFound), ("new-bad", .badRequest), ("end-other", .forbidden)] {
                let reply = await h.waitForReply(request)
                #expect(reply?.error?.code == code, "\(request): \(String(describing: reply))")
            }
            for request in ["own", "tool", "new-hash", "new-old", "end-own", "end-late"] { #expect(await h.waitForReply(request)?.result != nil, "\(request)") }
            #expect(try h.store.authenticate(email: "doctor@clinic.com", password: "a-new-password") != nil)
            #expect(try h.store.authenticate(email: "doctor@clinic.com", password: "password-doctor@clinic.com") == nil)
            #expect(try h.store.authenticate(email: "dr.patel@clinic.com", password: "a-new-password") != nil)
            #expect(try h.store.authenticate(email: "dr.lee@clinic.com", password: "a-new-password") != nil)
            #expect(try h.store.authenticate(email: "dr.old@clinic.com", password: "an-old-gateway") != nil)
            #expect(try h.store.user("dr.bad@clinic.com") == nil)
            // The gateways' cutoff, with the tokens' lifetime, and the sessions of the older tokens told to end.
            #expect(try await h.redis.send(["GET", h.keys.tokensBefore("doctor@clinic.com")]).string == String(base + 123))
            let ttlLeft = try #require(try await h.redis.send(["PTTL", h.keys.tokensBefore("doctor@clinic.com")]).int)
            #expect(ttlLeft > 3_590_000 && ttlLeft <= 3_600_000, "the tokens' lifetime: \(ttlLeft)")
            #expect(try await h.redis.send(["GET", h.keys.tokensBefore("dr.patel@clinic.com")]).string == String(base + 456), "not lowered by a refused end_sessions")
            #expect(try await h.redis.send(["GET", h.keys.tokensBefore("dr.okafor@clinic.com")]).string == String(base + 789), "not lowered by a late end_sessions")
            #expect(try h.store.read { db in try Int64.fetchOne(db, sql: "SELECT tokens_before FROM session_cutoffs WHERE email = 'dr.okafor@clinic.com'") } == base + 789)
            #expect(try h.store.authenticate(email: "dr.okafor@clinic.com", password: "password-dr.okafor@clinic.com") != nil, "ending sessions leaves the password")
            #expect(await eventually {
                h.recorder.objects(on: h.keys.user("doctor@clinic.com")).contains {
                    $0["event"] as? String == "session_revoked" && ($0["data"] as? [String: Any])?["issued_before"] as? Int == Int(base + 123)
                }
            })
            // Who did what, and nothing of the hash.
            let audit = try h.store.auditLog().filter { $0.action.contains("password") }.map { "\($0.action) \($0.actor ?? "-") \($0.target ?? "-") \($0.outcome)" }
            #expect(audit.contains("password_change doctor@clinic.com doctor@clinic.com ok"), "\(audit)")
            #expect(audit.contains("admin.set_password doctor@clinic.com dr.patel@clinic.com forbidden"), "\(audit)")
            #expect(audit.contains("admin.set_password - dr.patel@clinic.com ok"), "\(audit)")
            #expect(try !h.store.auditLog().contains { ($0.detail ?? "").contains(hash) })

            // Read again (killed before XACK): the cutoff is set and the sessions revoked again, nothing applied twice.
            _ = try await h.redis.send(["DEL", h.keys.tokensBefore("doctor@clinic.com"), h.keys.tokensBefore("dr.okafor@clinic.com")])
            try await h.processor.process([entries[4], entries.last!])
            #expect(try await h.redis.send(["GET", h.keys.tokensBefore("doctor@clinic.com")]).string == String(base + 123))
            #expect(try await h.redis.send(["GET", h.keys.tokensBefore("dr.okafor@clinic.com")]).string == String(base + 789), "the late one read again announces the kept cutoff")
            #expect(try h.store.auditLog().filter { $0.action == "password_change" && $0.outcome == "ok" }.count == 1)
        }
    }

    @Test("the auth state is kept by the store and put back by restore_auth: disabled users, logged-out tokens until they expire, session cutoffs; expired ones forgotten; a user cannot ask for it")
    func authStateRestored() async throws {
        try await withHarness(running: false) { h in
            let now = Date().epochMilliseconds
            let hash = await PasswordPolicy.hash("a-new-password", cost: 4)
            let commands = [
                try h.command(.setUserDisabled, "admin@clinic.com", UpdateUserRequest(email: "dr.patel@clinic.com", disabled: true), request: "disable"),
                try h.command(.setPassword, "doctor@clinic.com", SetPasswordRequest(email: "doctor@clinic.com", passwordHash: hash, tokensBefore: now, tokensTTL: .seconds(3600)), request: "password"),
                try h.command(.setPassword, "admin@clinic.com", SetPasswordRequest(email: "dr.novak@clinic.com", passwordHash: hash, tokensBefore: now,
                                                                                     tokensTTL: .seconds(60), mustChangePassword: true), request: "reset"),
                try h.command(.revokeToken, "dr.okafor@clinic.com", RevokeTokenRequest(jti: "j-live", expiresAt: now + 600_000), request: "logout"),
                try h.command(.revokeToken, "dr.okafor@clinic.com", RevokeTokenRequest(jti: "j-expired", expiresAt: now - 1), request: "logout-old"),
                try h.command(.restoreAuth, "doctor@clinic.com", [String: String](), request: "not-a-user"),
            ]
            let entries = commands.enumerated().map { StreamEntry(id: "1-\($0.offset + 1)", fields: Dictionary(uniqueKeysWithValues: $0.element.fields)) }
            try await h.processor.process(entries)
            #expect(await h.waitForReply("not-a-user")?.error?.code == .forbidden)
            #expect(try await h.redis.send(["EXISTS", h.keys.revokedToken("j-live")]).int == 1, "a logout is announced as well")
            #expect(try await h.redis.send(["EXISTS", h.keys.revokedToken("j-expired")]).int == 0, "nothing to refuse once expired")
            #expect(try h.store.auditLog().contains { $0.action == "logout" && $0.actor == "dr.okafor@clinic.com" })
            #expect(try await h.redis.send(["EXISTS", h.keys.passwordChangeRequired("dr.novak@clinic.com")]).int == 1, "an admin's reset must be changed first")
            #expect(try await h.redis.send(["EXISTS", h.keys.passwordChangeRequired("doctor@clinic.com")]).int == 0, "one's own change need not")

            // Redis loses it all; the service's keeper would queue this.
            let everything = [h.keys.disabledUser("dr.patel@clinic.com"), h.keys.tokensBefore("doctor@clinic.com"), h.keys.revokedToken("j-live"), h.keys.authState,
                              h.keys.passwordChangeRequired("dr.novak@clinic.com"), h.keys.tokensBefore("dr.novak@clinic.com")]
            _ = try await h.redis.delete(everything)
            let restore = try h.command(.restoreAuth, "", [String: String](), request: "restore")
            try await h.processor.process([StreamEntry(id: "2-1", fields: Dictionary(uniqueKeysWithValues: restore.fields))])
            #expect(await h.waitForReply("restore")?.result != nil)
            #expect(try await h.redis.send(["TTL", h.keys.disabledUser("dr.patel@clinic.com")]).int == -1, "a disabled flag has no TTL")
            #expect(try await h.redis.send(["GET", h.keys.tokensBefore("doctor@clinic.com")]).string == String(now))
            let cutoffTTL = try #require(try await h.redis.send(["PTTL", h.keys.tokensBefore("doctor@clinic.com")]).int)
            #expect(cutoffTTL > 3_500_000 && cutoffTTL <= 3_600_000, "\(cutoffTTL)")
            let revokedTTL = try #require(try await h.redis.send(["PTTL", h.keys.revokedToken("j-live")]).int)
            #expect(revokedTTL > 500_000 && revokedTTL <= 600_000, "\(revokedTTL)")
            #expect(try await h.redis.send(["EXISTS", h.keys.revokedToken("j-expired")]).int == 0)
            #expect(try await h.redis.send(["TTL", h.keys.passwordChangeRequired("dr.novak@clinic.com")]).int == -1)
            #expect(try await h.redis.send(["GET", h.keys.authState]).string?.hasPrefix("restored ") == true)
            #expect(try await h.redis.send(["TTL", h.keys.authState]).int == -1)
            let restored = try #require(try h.store.auditLog().first { $0.action == "auth.restore" && $0.outcome == "ok" })
            #expect(restored.detail == "1 disabled users, 1 logged-out tokens, 2 session cutoffs, 1 passwords to change", "\(restored.detail ?? "")")
            #expect(try h.store.read { db in try String.fetchAll(db, sql: "SELECT jti FROM revoked_tokens") } == ["j-live"], "the expired one is forgotten")
            // The hourly upkeep forgets the rest once their tokens have expired.
            #expect(try h.store.forgetExpiredAuthRecords(now: Date().addingTimeInterval(3 * 3600)) == 3)
            #expect(try h.store.read { db in try Int.fetchOne(db, sql: "SELECT (SELECT COUNT(*) FROM revoked_tokens) + (SELECT COUNT(*) FROM session_cutoffs)") } == 0)
        }
    }
}
