import ChatCore
import ChatTesting
import Foundation
import GRDB
import MessageStore
import RedisClient
import Testing

@Suite("chat-retention killed with -9 in the middle of a sweep", .redisServer)
struct RetentionCrashTests {
    @Test("the next chat-retention finishes the purge: every expired message gone, the live one kept, nothing left pending")
    func killNineMidSweep() async throws {
        let server = try RedisServer.required()
        let keys = uniqueKeys("retcrash")
        let database = temporaryDatabasePath("retcrash")
        defer { removeDatabase(at: database) }
        let expiredCount = 12_000

        // Expired messages written straight to SQLite (no `stored` events): the worker rebuilds its schedule from the store.
        let conversation = try {
            let store = try MessageStore.open(path: database, retention: .seconds(86400), bcryptCost: 4)
            try store.createUser(email: "admin@clinic.com", name: "Alex Admin", role: .admin, password: "password1")
            try store.createUser(email: "doctor@clinic.com", name: "Dr. Sarah Kim", role: .doctor, password: "password1")
            let id = try store.openDirectConversation("admin@clinic.com", "doctor@clinic.com").id
            for chunk in stride(from: 0, to: expiredCount, by: 4000) {
                _ = try store.append((chunk..<chunk + 4000).map { SendRequest(sender: "admin@clinic.com", conversationID: id, content: "old \($0)", clientID: nil) },
                                     now: Date().addingTimeInterval(-2 * 86400))
            }
            _ = try store.append([SendRequest(sender: "doctor@clinic.com", conversationID: id, content: "still current", clientID: "live")])
            return id
        }()
        let observer = try DatabasePool(path: database)
        @Sendable func remaining() -> Int { (try? observer.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM messages") }) ?? -1 }

        let environment = [
            "CHAT_REDIS_URL": server.url, "CHAT_REDIS_PREFIX": keys.prefix, "CHAT_DB_PATH": database,
            "CHAT_CONSUMER_NAME": "messages-retcrash", "CHAT_RETENTION": "1d", "CHAT_SWEEP_INTERVAL": "500ms",
        ]
        let (messages, messagesLog) = try launch("chat-messages", environment: environment)
        defer { messages.signal(SIGKILL); try? FileManager.default.removeItem(at: messagesLog) }
        let (first, firstLog) = try launch("chat-retention", environment: environment)
        defer { first.signal(SIGKILL); try? FileManager.default.removeItem(at: firstLog) }

        // Kill it while it works through the rebuilt schedule: some batches sent for purge, others not yet.
        let scheduled = try await server.withClient { redis in
            await eventually(timeout: .seconds(60), every: .milliseconds(1)) {
                guard let count = try? await redis.send(["ZCARD", keys.retentionDue]).int, count > 0, count <= expiredCount - 1000 else { return false }
                first.signal(SIGKILL)
                return true
            }
        }
        #expect(scheduled, "the sweep was not caught in the middle\n\(contents(firstLog))\n\(contents(messagesLog))")
        #expect(await first.wait(timeout: .seconds(5)) == 128 + SIGKILL)
        let left = try await server.withClient { redis in try await redis.send(["ZCARD", keys.retentionDue]).int ?? 0 }
        FileHandle.standardError.write(Data("chat-retention killed with \(left) of \(expiredCount + 1) still scheduled, \(remaining()) stored\n".utf8))
        #expect(left > 1, "the sweep finished before the kill; nothing was interrupted")

        let (second, secondLog) = try launch("chat-retention", environment: environment)
        defer { second.signal(SIGKILL); try? FileManager.default.removeItem(at: secondLog) }
        #expect(await eventually(timeout: .seconds(90)) { remaining() == 1 }, "\(remaining()) left; \(contents(secondLog))")
        let kept = try await observer.read { db in try String.fetchAll(db, sql: "SELECT content FROM messages WHERE conversation_id = ?", arguments: [conversation]) }
        #expect(kept == ["still current"])
        try await server.withClient { redis in
            #expect(await eventually { (try? await redis.xpending(keys.commands, group: RedisKeys.messagesGroup).count) == 0 })
            // The schedule holds only the live message now.
            #expect(await eventually { (try? await redis.send(["ZCARD", keys.retentionDue]).int) == 1 })
        }
        second.signal(SIGTERM)
        #expect(await second.wait(timeout: .seconds(5)) == 0)
        messages.signal(SIGTERM)
        #expect(await messages.wait(timeout: .seconds(5)) == 0)
    }
}
