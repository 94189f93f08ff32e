import ChatCore
import ChatTesting
import Foundation
import Logging
import RedisClient
import Synchronization
import Testing

@Suite("StreamConsumer: lingering after a small batch", .redisServer)
struct StreamConsumerLingerTests {
    @Test("with a linger, entries added while it waits are read as one batch; every entry once, in order, acknowledged")
    func lingerBatches() async throws {
        let server = try RedisServer.required()
        let keys = uniqueKeys("linger")
        let stream = keys.prefix + "events"
        let redis = RedisClient(configuration: server.configuration)
        try await withRunning(redis) { redis in
            try await redis.waitUntilReady()
            _ = try await redis.send(["XGROUP", "CREATE", stream, "g", "$", "MKSTREAM"])
            var consumer = StreamConsumer(stream: stream, group: "g", consumer: "c1")
            consumer.linger = .seconds(2)
            let batches = Mutex<[[String]]>([])
            let reader = Task {
                await consumer.run(redis: redis, logger: Logger(label: "test")) { entries in
                    batches.withLock { $0.append(entries.compactMap { $0.fields["n"] }) }
                }
            }
            defer { reader.cancel() }
            _ = try await redis.xadd(stream, fields: [("n", "1")])
            #expect(await eventually { batches.withLock { $0.count } == 1 })
            // The consumer now waits 2 s before it reads again: these arrive meanwhile.
            for n in 2...6 { _ = try await redis.xadd(stream, fields: [("n", "\(n)")]) }
            #expect(await eventually { batches.withLock { $0.flatMap { $0 }.count } == 6 })
            #expect(batches.withLock { $0 } == [["1"], ["2", "3", "4", "5", "6"]])
            #expect(await eventually { (try? await redis.xpending(stream, group: "g").count) == 0 }, "every batch acknowledged")
        }
    }
}
