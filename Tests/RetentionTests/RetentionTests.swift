import ChatCore
import ChatTesting
import Foundation
import Logging
import MessageStore
import RedisClient
@testable import Retention
import Synchronization
import Testing

/// The messages service and a retention worker, in process, on a real Redis and a real SQLite file.
struct RetentionHarness: Sendable {
    let store: MessageStore
    let databasePath: String
    let keys: RedisKeys
    let redis: RedisClient
    let server: RedisServer
    let conversation: String

    func send(_ content: String, from sender: String = "admin@clinic.com") async throws {
        let command = try StoreCommand(type: .send, user: sender, body: SendMessageRequest(conversationID: conversation, content: content, clientID: UUID().uuidString))
        try await redis.xadd(keys.commands, fields: command.fields)
    }

    func stored() throws -> Int { try store.history(for: "doctor@clinic.com", conversationID: conversation, limit: 100, now: .distantPast).count }

    /// Every byte of the database, its WAL and shared-memory files.
    func databaseBytes() -> Data {
        ["", "-wal", "-shm"].reduce(into: Data()) { data, suffix in data += (FileManager.default.contents(atPath: databasePath + suffix) ?? Data()) }
    }

    /// Every field of every entry left in both streams.
    func streamText() async throws -> String {
        let entries = try await redis.xrange(keys.commands) + (try await redis.xrange(keys.events))
        return entries.flatMap { $0.fields.values }.joined(separator: "\n")
    }

    /// `count` messages stored straight into the store, already due (expired 10 s ago by their send time).
    func storeDue(_ count: Int, content: String) throws -> [Message] {
        let sends = (0..<count).map { SendRequest(sender: "admin@clinic.com", conversationID: conversation, content: "\(content) \($0)", clientID: nil) }
        return try store.append(sends, now: Date().addingTimeInterval(-10)).map { try $0.get().message }
    }

    /// A store client of its own (`gatewayID`), its answers read by a subscriber of its own, for `body`.
    func withStoreClient(_ gatewayID: String, _ body: @Sendable (StoreClient) async throws -> Void) async throws {
        let client = StoreClient(redis: redis, keys: keys, gatewayID: gatewayID, timeout: .seconds(5))
        try await withRunning(RedisSubscriber(configuration: server.configuration)) { subscriber in
            try await subscriber.subscribe([client.replyChannel])
            let pump = Task { await client.pumpReplies(from: subscriber) }
            defer { pump.cancel() }
            try await body(client)
        }
    }

    func makeWorker(_ store: StoreClient) -> RetentionWorker {
        RetentionWorker(redis: redis, keys: keys, store: store, configuration: .init(consumer: "r1", sweepInterval: .milliseconds(200), auditRetention: .seconds(3600)), logger: Logger(label: "retention"))
    }
}

func withRetention(retention: Duration = .seconds(1), runWorker: Bool = true, server: RedisServer? = nil, _ body: @Sendable (RetentionHarness) async throws -> Void) async throws {
    let server = try server ?? RedisServer.required()
    let keys = uniqueKeys("ret")
    let path = temporaryDatabasePath("retention")
    defer { removeDatabase(at: path) }
    let store = try MessageStore.open(path: path, retention: retention, bcryptCost: 4)
    for (email, name, role) in DemoAccounts.all { try store.createUser(email: email, name: name, role: role, password: "password-\(email)") }
    let conversation = try store.openDirectConversation("admin@clinic.com", "doctor@clinic.com").id

    var configuration = try ChatConfiguration(environment: ["CHAT_REDIS_URL": server.url])
    configuration.redisPrefix = keys.prefix
    let redis = RedisClient(configuration: configuration.redis)
    let runtime = ChatRuntime(configuration: configuration, redis: redis, logger: Logger(label: "test"))
    let storeSubscriber = RedisSubscriber(configuration: configuration.redis)
    let workerSubscriber = RedisSubscriber(configuration: configuration.redis)
    let storeClient = StoreClient(redis: redis, keys: keys, gatewayID: "retention-test", timeout: .seconds(5))
    try await withRunning(redis) { redis in
        try await redis.waitUntilReady()
        try await redis.xgroupCreate(keys.events, group: RedisKeys.retentionGroup, startingAt: "0")
        let harness = RetentionHarness(store: store, databasePath: path, keys: keys, redis: redis, server: server, conversation: conversation)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await storeSubscriber.run() }
            group.addTask { try await workerSubscriber.run() }
            group.addTask { await storeClient.pumpReplies(from: workerSubscriber) }
            group.addTask { try await MessagesService(runtime: runtime, store: store, subscriber: storeSubscriber, consumer: "m1").run() }
            try await workerSubscriber.subscribe([storeClient.replyChannel])
            _ = await eventually { (try? await redis.send(["PUBSUB", "NUMSUB", keys.storeQueries]).array?.last?.int) == 1 }
            if runWorker { group.addTask { try await harness.makeWorker(storeClient).run() } }
            try await body(harness)
            group.cancelAll()
        }
    }
}

@Suite("Retention on a real redis-server and SQLite file", .redisServer)
struct RetentionTests {
    @Test("an expired message is gone from history, search and unread counts at once, then from the SQLite file and the Redis streams after a sweep")
    func expiredMessagesAreDeletedEverywhere() async throws {
        try await withRetention { h in
            let marker = "zebra\(UUID().uuidString.prefix(8).lowercased())"
            let subscriber = RedisSubscriber(configuration: h.server.configuration)
            try await withRunning(subscriber) { subscriber in
                try await subscriber.subscribe([h.keys.user("doctor@clinic.com")])
                var events = subscriber.events.makeAsyncIterator()
                try await h.send("potassium \(marker) result")
                #expect(await eventually { (try? h.stored()) == 1 })
                #expect(h.databaseBytes().range(of: Data(marker.utf8)) != nil, "the text is on disk while the message lives")
                try await Task.sleep(for: .milliseconds(1100))
                // Invisible at once, before any sweep runs.
                #expect(try h.store.history(for: "doctor@clinic.com", conversationID: h.conversation).isEmpty)
                #expect(try h.store.searchMessages(for: "doctor@clinic.com", query: marker).isEmpty)
                #expect(try h.store.unreadCounts(for: "doctor@clinic.com").total == 0)

                #expect(await eventually(timeout: .seconds(15)) { (try? h.stored()) == 0 })
                #expect(await eventually { h.databaseBytes().range(of: Data(marker.utf8)) == nil }, "the text is nowhere in the database, its WAL or its index")
                #expect(try await h.streamText().contains(marker) == false)
                var kinds: [String] = []
                while kinds.count < 2, let event = await events.next(), case .message(let message) = event {
                    kinds.append((try? JSONSerialization.jsonObject(with: Data(message.payload)) as? [String: Any])?["event"] as? String ?? "?")
                }
                #expect(kinds == ["receive_message", "messages_purged"])
                // The sweep's own audit line is queued after its purge commands.
                #expect(await eventually {
                    let audit = (try? h.store.auditLog().map(\.action)) ?? []
                    return audit.contains("retention.sweep") && audit.contains("retention.purge")
                })
            }
        }
    }

    @Test("retention trims chat:events only below what presence has read: a presence that is behind still gets every event")
    func eventsWaitForPresence() async throws {
        try await withRetention(retention: .seconds(3600)) { h in
            try await h.redis.xgroupCreate(h.keys.events, group: RedisKeys.presenceGroup, startingAt: "0")
            for i in 0..<5 { try await h.send("note \(i)") }
            // Retention has read, scheduled and acknowledged all five...
            #expect(await eventually { (try? await h.redis.zcard(h.keys.retentionDue)) == 5 })
            #expect(await eventually { (try? await h.redis.xpending(h.keys.events, group: RedisKeys.retentionGroup).count) == 0 })
            // ...and presence, which has read nothing yet, still gets all five.
            let behind = try await h.redis.xreadgroup(group: RedisKeys.presenceGroup, consumer: "p", streams: [(h.keys.events, ">")], count: 100)[h.keys.events] ?? []
            #expect(behind.map { $0.fields["type"] } == Array(repeating: "stored", count: 5))
            #expect(try await h.redis.xack(h.keys.events, group: RedisKeys.presenceGroup, ids: behind.map(\.id)) == 5)
            // Once presence has them, retention's next batch trims them.
            try await h.send("one more")
            #expect(await eventually(timeout: .seconds(10)) { (try? await h.redis.xlen(h.keys.events)) == 1 })
        }
    }

    @Test("a conversation on legal hold keeps its messages; released, they are purged")
    func legalHold() async throws {
        try await withRetention { h in
            let hold = try StoreCommand(type: .setLegalHold, user: "admin@clinic.com", body: LegalHoldRequest(conversationID: h.conversation, held: true))
            try await h.redis.xadd(h.keys.commands, fields: hold.fields)
            #expect(await eventually { (try? h.store.auditLog().contains { $0.action == "admin.set_legal_hold" }) == true })
            try await h.send("keep for the court")
            #expect(await eventually { (try? h.stored()) == 1 })
            try await Task.sleep(for: .seconds(2))
            #expect(try h.stored() == 1, "held messages survive their expiry")
            let release = try StoreCommand(type: .setLegalHold, user: "admin@clinic.com", body: LegalHoldRequest(conversationID: h.conversation, held: false))
            try await h.redis.xadd(h.keys.commands, fields: release.fields)
            #expect(await eventually(timeout: .seconds(15)) { (try? h.stored()) == 0 })
            let doctorHold = try StoreCommand(type: .setLegalHold, user: "doctor@clinic.com", gateway: nil, body: LegalHoldRequest(conversationID: h.conversation, held: true))
            try await h.redis.xadd(h.keys.commands, fields: doctorHold.fields)
            #expect(await eventually { (try? h.store.auditLog().contains { $0.action == "admin.set_legal_hold" && $0.outcome == "forbidden" }) == true })
        }
    }

    @Test("with the schedule key deleted, a restarted worker rebuilds it from the store and purges")
    func rebuildsALostSchedule() async throws {
        try await withRetention(runWorker: false) { h in
            for i in 0..<3 { try await h.send("note \(i)") }
            #expect(await eventually { (try? h.stored()) == 3 })
            // No worker read the events; the schedule does not exist. Drop the events too, as a Redis that lost its data would.
            try await h.redis.delete([h.keys.retentionDue])
            try await h.redis.xtrim(h.keys.events, .maxLength(0, approximate: false))
            try await Task.sleep(for: .milliseconds(1100))
            let client = StoreClient(redis: h.redis, keys: h.keys, gatewayID: "retention-rebuild", timeout: .seconds(5))
            let subscriber = RedisSubscriber(configuration: h.server.configuration)
            try await withRunning(subscriber) { subscriber in
                try await subscriber.subscribe([client.replyChannel])
                let pump = Task { await client.pumpReplies(from: subscriber) }
                defer { pump.cancel() }
                try await withRunning(h.makeWorker(client)) { _ in
                    #expect(await eventually(timeout: .seconds(15)) { (try? h.stored()) == 0 })
                }
            }
        }
    }

    @Test("the schedule lost while the worker runs (Redis lost its data) and begun again by a new message: the messages stored before are scheduled again at the next sweep, and purged")
    func rebuildsAScheduleLostWhileRunning() async throws {
        try await withRetention(retention: .seconds(4)) { h in
            // The worker's first check found no schedule and built one (from nothing).
            #expect(await eventually { (try? await h.redis.exists([h.keys.retentionDue + ":built"])) == 1 })
            for i in 0..<3 { try await h.send("before \(i)") }
            #expect(await eventually { (try? await h.redis.send(["ZCARD", h.keys.retentionDue]).int) == 3 }, "scheduled")
            // What a Redis restarted without its data leaves: no schedule, no marker, no events.
            try await h.redis.delete([h.keys.retentionDue, h.keys.retentionDue + ":built", h.keys.retentionDue + ":rebuilding"])
            try await h.redis.xtrim(h.keys.events, .maxLength(0, approximate: false))
            try await h.send("after")
            let purged = await eventually(timeout: .seconds(20)) { (try? h.stored()) == 0 }
            let scheduled = try await h.redis.send(["ZRANGE", h.keys.retentionDue, "0", "-1", "WITHSCORES"])
            let built = try await h.redis.send(["GET", h.keys.retentionDue + ":built"])
            #expect(purged, "stored \((try? h.stored()) ?? -1), scheduled \(scheduled), built \(built), now \(Date().epochMilliseconds)")
        }
    }

    @Test("the schedule lost again while it is being rebuilt (Redis lost its data halfway): the rebuild is not marked whole, and the next check schedules every message")
    func rebuildLostHalfway() async throws {
        try await withRetention(retention: .seconds(3600), runWorker: false) { h in
            let count = 10_000
            let stored = try h.storeDue(count, content: "kept")
            let (schedule, built, marker) = (h.keys.retentionDue, h.keys.retentionDue + ":built", h.keys.retentionDue + ":rebuilding")
            try await h.withStoreClient("retention-halfway") { client in
                let worker = h.makeWorker(client)
                let rebuilding = Task { try await worker.rebuildScheduleIfMissing() }
                // Once its first page is in, Redis loses its data: the pages so far and the rebuild's marker.
                let begun = await eventually(every: .milliseconds(1)) { (try? await h.redis.zcard(schedule)) ?? 0 >= 1000 }
                try await h.redis.delete([schedule, marker])
                try await rebuilding.value
                #expect(begun)
                let partial = try await h.redis.zcard(schedule)
                #expect(partial < count, "only the pages read after the loss are in: \(partial)")
                #expect(try await h.redis.exists([built]) == 0, "a partial schedule is not marked whole")
                // The next check (before the next sweep) starts over and schedules every message, at its expiry.
                try await worker.rebuildScheduleIfMissing()
                #expect(try await h.redis.zcard(schedule) == count)
                #expect(try await h.redis.exists([built]) == 1)
                #expect(try await h.redis.exists([marker]) == 0)
                for message in [stored[0], stored[count / 2], stored[count - 1]] {
                    let score = try await h.redis.send(["ZSCORE", schedule, message.id]).string.flatMap(Double.init)
                    #expect(score == Double(message.expiresAt.epochMilliseconds))
                }
                // Whole now: the check after it leaves the schedule alone.
                _ = try await h.redis.send(["ZREM", schedule, stored[0].id])
                try await worker.rebuildScheduleIfMissing()
                #expect(try await h.redis.zcard(schedule) == count - 1)
            }
        }
    }

    @Test("a worker stopped in the middle of a sweep leaves the rest scheduled, and the next one finishes the job")
    func resumesAnInterruptedSweep() async throws {
        try await withRetention(retention: .seconds(1), runWorker: false) { h in
            // 2,500 messages at once, straight into the store, already due.
            let stored = try h.storeDue(2500, content: "bulk")
            try await h.redis.zadd(h.keys.retentionDue, stored.map { (Double($0.expiresAt.epochMilliseconds), $0.id) })

            // A sweep cut short after its first purge command: the rest stays in the schedule.
            try await h.withStoreClient("retention-resume") { client in
                var configuration = RetentionWorker.Configuration(consumer: "r1", sweepInterval: .milliseconds(200), auditRetention: .seconds(3600))
                configuration.batchSize = 1000
                let cut = RetentionWorker(redis: h.redis, keys: h.keys, store: client, configuration: configuration, logger: Logger(label: "retention"))
                let interrupted = Task { try await cut.sweep() }
                _ = await eventually(every: .milliseconds(1)) { (try? await h.redis.zcard(h.keys.retentionDue)) ?? 2500 < 2500 }
                interrupted.cancel()
                _ = await interrupted.result
                let left = try await h.redis.zcard(h.keys.retentionDue)
                #expect(left < 2500)
                try await withRunning(h.makeWorker(client)) { _ in
                    #expect(await eventually(timeout: .seconds(20)) { (try? h.stored()) == 0 }, "\(left) were left in the schedule")
                    #expect(await eventually { (try? await h.redis.zcard(h.keys.retentionDue)) == 0 })
                }
            }
        }
    }

    @Test("a sweep rests after each full batch, rest × as long as the batch took, and not after the last, partial one")
    func pacesLargeSweeps() async throws {
        try await withRetention(retention: .seconds(1), runWorker: false) { h in
            let stored = try h.storeDue(250, content: "paced")
            try await h.withStoreClient("retention-pace") { client in
                for rest in [2.0, 0] {
                    try await h.redis.zadd(h.keys.retentionDue, stored.map { (Double($0.expiresAt.epochMilliseconds), $0.id) })
                    // Each rest, and how long the batch before it can have taken at most (since the sweep
                    // began or the last rest ended).
                    let rests = Mutex<[(rest: Duration, batchAtMost: Duration)]>([])
                    let mark = Mutex(ContinuousClock.now)
                    var configuration = RetentionWorker.Configuration(consumer: "r1", sweepInterval: .seconds(60), auditRetention: .seconds(3600))
                    configuration.rest = rest
                    configuration.pause = { duration in
                        rests.withLock { $0.append((duration, .now - mark.withLock { $0 })) }
                        mark.withLock { $0 = .now }
                    }
                    let worker = RetentionWorker(redis: h.redis, keys: h.keys, store: client, configuration: configuration, logger: Logger(label: "retention"))
                    mark.withLock { $0 = .now }
                    #expect(try await worker.sweep() == 250)
                    let recorded = rests.withLock { $0 }
                    #expect(recorded.count == 2, "batches of 100, 100 and 50: a rest after each full one (rest \(rest))")
                    for (duration, batchAtMost) in recorded {
                        if rest == 0 {
                            #expect(duration == .zero)
                        } else {
                            #expect(duration > .zero)
                            #expect(duration <= batchAtMost * rest, "rested \(duration) after a batch of at most \(batchAtMost)")
                        }
                    }
                }
                #expect(try h.stored() == 0)
            }
        }
    }

    @Test("with append-only persistence, the purged text is gone from Redis's files after the sweep's rewrite")
    func appendOnlyFileIsRewritten() async throws {
        let server = try await RedisServer.start(arguments: ["--appendonly", "yes", "--appendfsync", "always"])
        defer { server.stop() }
        try await withRetention(server: server) { h in
            let marker = "okapi\(UUID().uuidString.prefix(8).lowercased())"
            try await h.send("sodium \(marker) low")
            #expect(await eventually { (try? h.stored()) == 1 })
            #expect(await eventually { redisFiles(server).range(of: Data(marker.utf8)) != nil }, "the send is in the append-only file while it is processed")
            #expect(await eventually(timeout: .seconds(15)) { (try? h.stored()) == 0 })
            #expect(await eventually(timeout: .seconds(15)) {
                let info = (try? await h.redis.send(["INFO", "persistence"]).string) ?? ""
                return info.contains("aof_rewrite_in_progress:0") && info.contains("aof_rewrite_scheduled:0")
                    && redisFiles(server).range(of: Data(marker.utf8)) == nil
            }, "the text is nowhere in the append-only files")
        }
    }
}

/// Every byte Redis keeps on disk for `server` (the append-only directory and any RDB).
func redisFiles(_ server: RedisServer) -> Data {
    var data = Data()
    let enumerator = FileManager.default.enumerator(at: server.directory, includingPropertiesForKeys: nil)
    while let url = enumerator?.nextObject() as? URL {
        if url.lastPathComponent != "redis.log", let bytes = FileManager.default.contents(atPath: url.path) { data += bytes }
    }
    return data
}
