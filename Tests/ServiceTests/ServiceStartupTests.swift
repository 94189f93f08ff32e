import ChatCore
import ChatTesting
import Foundation
import Gateway
import Logging
import MessageStore
import Presence
import RedisClient
import Retention
import ServiceLifecycle
import Testing

@Suite("Services start against a real redis-server", .redisServer)
struct ServiceStartupTests {
    /// The shared Redis, fresh keys, a runtime on them and a subscriber for the service under test.
    func setUp() throws -> (server: RedisServer, keys: RedisKeys, runtime: ChatRuntime, subscriber: RedisSubscriber) {
        let server = try RedisServer.required()
        let keys = uniqueKeys()
        var configuration = try ChatConfiguration(environment: ["CHAT_REDIS_URL": server.url, "CHAT_GATEWAY_ID": "gw-test", "CHAT_HTTP_PORT": "0"])
        configuration.redisPrefix = keys.prefix
        let runtime = ChatRuntime(configuration: configuration, redis: RedisClient(configuration: configuration.redis), logger: Logger(label: "test"))
        return (server, keys, runtime, RedisSubscriber(configuration: configuration.redis))
    }

    @Test("messages, presence and retention each create their consumer group on their stream")
    func consumerGroups() async throws {
        let (server, keys, rt, subscriber) = try setUp()
        let store = try MessageStore.inMemory()
        // The test ends by cancelling the services: a CancellationError one of them throws then
        // is the end, not a failure (the discarding group would rethrow it).
        @Sendable func run(_ service: some Service) async throws {
            do { try await service.run() } catch is CancellationError {}
        }
        try await withRunning(rt.redis) { _ in
            try await withThrowingDiscardingTaskGroup { group in
                group.addTask { try await run(subscriber) }
                group.addTask { try await run(MessagesService(runtime: rt, store: store, subscriber: subscriber, consumer: "m1")) }
                let presenceSubscriber = RedisSubscriber(configuration: rt.configuration.redis)
                group.addTask { try await run(presenceSubscriber) }
                group.addTask { try await run(PresenceService(runtime: rt, subscriber: presenceSubscriber)) }
                let retentionSubscriber = RedisSubscriber(configuration: rt.configuration.redis)
                group.addTask { try await run(retentionSubscriber) }
                group.addTask { try await run(RetentionService(runtime: rt, subscriber: retentionSubscriber)) }
                let expected = [(keys.commands, "messages"), (keys.presenceCommands, "presence"), (keys.events, "retention"), (keys.events, "presence")]
                try await server.withClient { redis in
                    for (stream, name) in expected {
                        let found = await eventually {
                            let groups = (try? await redis.xinfoGroups(stream)) ?? []
                            return groups.contains { $0["name"]?.string == name }
                        }
                        #expect(found, "group \(name) on \(stream)")
                    }
                }
                group.cancelAll()
            }
        }
    }

    @Test("the messages service's upkeep runs on its own: applied-entry records older than a week are forgotten, again on every round, and the WAL is checkpointed into the file")
    func messagesServiceUpkeep() async throws {
        let (_, _, rt, subscriber) = try setUp()
        let path = temporaryDatabasePath("upkeep")
        defer { removeDatabase(at: path) }
        let store = try MessageStore.open(path: path, retention: .seconds(3600), bcryptCost: 4)
        let old = Date().addingTimeInterval(-8 * 86400).epochMilliseconds, young = Date().addingTimeInterval(-86400).epochMilliseconds
        @Sendable func addRecords(_ round: Int) throws {
            try store.write { db in
                for i in 0..<3 {
                    try db.execute(sql: "INSERT INTO applied_commands (entry_id, applied_at) VALUES (?, ?)", arguments: ["\(old)-\(round * 10 + i)", old])
                    try db.execute(sql: "INSERT INTO applied_commands (entry_id, applied_at) VALUES (?, ?)", arguments: ["\(young)-\(round * 10 + i)", young])
                }
            }
        }
        @Sendable func records() throws -> (old: Int, young: Int) {
            try store.read { db in
                (try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM applied_commands WHERE applied_at = ?", arguments: [old]) ?? -1,
                 try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM applied_commands WHERE applied_at = ?", arguments: [young]) ?? -1)
            }
        }
        @Sendable func fileBytes() -> Int { (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? -1 }
        try addRecords(0)
        let maintenance = {
            var maintenance = MessagesService.Maintenance()
            maintenance.firstCleanup = .milliseconds(200)
            maintenance.cleanupInterval = .milliseconds(300)
            maintenance.checkpointInterval = .milliseconds(100)
            return maintenance
        }()
        let service = MessagesService(runtime: rt, store: store, subscriber: subscriber, consumer: "m1", maintenance: maintenance)
        try await withRunning(rt.redis) { _ in
            try await withRunning(subscriber) { _ in
                try await withRunning(service) { _ in
                    #expect(await eventually { (try? records().old) == 0 }, "the first round forgets the old records")
                    #expect(try records().young == 3)
                    try addRecords(1)
                    #expect(await eventually { (try? records().old) == 0 }, "a later round forgets the next ones")
                    #expect(try records().young == 6)

                    // Writes land in the WAL; only a checkpoint copies them into the file (SQLite's own
                    // would wait for 64 MiB), and the test runs none.
                    let before = fileBytes()
                    try store.createUser(email: "a@clinic.com", name: "A", role: .doctor, password: "password1")
                    try store.createUser(email: "b@clinic.com", name: "B", role: .doctor, password: "password1")
                    let conversation = try store.openDirectConversation("a@clinic.com", "b@clinic.com")
                    _ = try store.append((0..<300).map { SendRequest(sender: "a@clinic.com", conversationID: conversation.id, content: String(repeating: "note \($0) ", count: 20), clientID: nil) })
                    #expect(await eventually { fileBytes() > before + 100_000 }, "the checkpoint loop copied the WAL into the file (\(before) → \(fileBytes()) bytes)")
                }
            }
        }
    }

    @Test("the gateway subscribes to its reply channel gateway:{id}")
    func gatewayReplyChannel() async throws {
        let (server, keys, rt, subscriber) = try setUp()
        try await withRunning(rt.redis) { _ in
            try await withRunning(subscriber) { subscriber in
                try await withRunning(GatewayService(runtime: rt, subscriber: subscriber, jwtSecret: String(repeating: "k", count: 32))) { _ in
                    try await server.withClient { redis in
                        let subscribed = await eventually {
                            (try? await redis.send(["PUBSUB", "CHANNELS", keys.gateway("*")]).array?.compactMap(\.string)) == [keys.gateway("gw-test")]
                        }
                        #expect(subscribed)
                    }
                }
            }
        }
    }
}
