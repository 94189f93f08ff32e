import ChatCore
import ChatTesting
import Foundation
import GRDB
import MessageStore
import RedisClient
import Testing

@Suite("chat-messages killed with -9", .redisServer)
struct MessagesCrashTests {
    @Test("with 500 commands queued, the service killed with -9 and started again applies every command exactly once")
    func killNineAndRestart() async throws {
        let server = try RedisServer.required()
        let keys = uniqueKeys("crash")
        let database = temporaryDatabasePath("crash")
        defer { removeDatabase(at: database) }

        let conversationID = try {
            let store = try MessageStore.open(path: database, retention: .seconds(86400), bcryptCost: 4)
            try store.createUser(email: "admin@clinic.com", name: "Alex Admin", role: .admin, password: "password1")
            try store.createUser(email: "doctor@clinic.com", name: "Dr. Sarah Kim", role: .doctor, password: "password1")
            return try store.openDirectConversation("admin@clinic.com", "doctor@clinic.com").id
        }()

        try await server.withClient { redis in
            // No client ids: only the store's record of applied entries keeps a redelivery from storing twice.
            let commands = try (0..<500).map { i in
                RedisClient.xaddCommand(keys.commands, fields: try StoreCommand(
                    type: .send, user: i % 2 == 0 ? "admin@clinic.com" : "doctor@clinic.com",
                    body: SendMessageRequest(conversationID: conversationID, content: "m\(i)", clientID: nil)).fields)
            }
            _ = try await redis.pipeline(commands)
            #expect(try await redis.xlen(keys.commands) == 500)
        }

        let environment = [
            "CHAT_REDIS_URL": server.url, "CHAT_REDIS_PREFIX": keys.prefix, "CHAT_DB_PATH": database,
            "CHAT_CONSUMER_NAME": "messages-crash-test", "CHAT_RETENTION": "1d",
        ]
        let observer = try DatabasePool(path: database)
        @Sendable func stored() -> Int { (try? observer.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM messages") }) ?? 0 }

        let (first, firstLog) = try launch("chat-messages", environment: environment)
        defer { first.signal(SIGKILL); try? FileManager.default.removeItem(at: firstLog) }
        #expect(await eventually(every: .milliseconds(1)) { stored() > 0 }, "\(contents(firstLog))")
        first.signal(SIGKILL)
        #expect(await first.wait(timeout: .seconds(5)) == 128 + SIGKILL)
        let atKill = stored()
        FileHandle.standardError.write(Data("killed with \(atKill) of 500 stored\n".utf8))

        let (second, secondLog) = try launch("chat-messages", environment: environment)
        defer { second.signal(SIGKILL); try? FileManager.default.removeItem(at: secondLog) }
        #expect(await eventually(timeout: .seconds(30)) { stored() >= 500 }, "stored \(stored()) of 500; \(contents(secondLog))")
        try await server.withClient { redis in
            #expect(await eventually { (try? await redis.xpending(keys.commands, group: RedisKeys.messagesGroup).count) == 0 })
        }
        second.signal(SIGTERM)
        #expect(await second.wait(timeout: .seconds(5)) == 0)

        let rows = try observer.read { db in try Row.fetchAll(db, sql: "SELECT seq, content FROM messages WHERE conversation_id = ? ORDER BY seq", arguments: [conversationID]) }
        #expect(rows.count == 500, "killed with \(atKill) stored")
        #expect(rows.map { $0["seq"] as Int64 } == Array(1...500))
        #expect(Set(rows.map { $0["content"] as String }) == Set((0..<500).map { "m\($0)" }))
    }
}
