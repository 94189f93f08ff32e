import ChatCore
import ChatTesting
import Foundation
import Logging
import RedisClient
import Synchronization
import Testing

@Suite("StreamConsumer: overlapping batches", .redisServer)
struct StreamConsumerOverlapTests {
    /// A stream with group `g`, the entries n=1...count added, and a consumer of batches of two.
    private func withStream(_ label: String, count: Int, _ body: @Sendable (RedisClient, String, StreamConsumer) async throws -> Void) async throws {
        let server = try RedisServer.required()
        let stream = uniqueKeys(label).prefix + "commands"
        let redis = RedisClient(configuration: server.configuration)
        try await withRunning(redis) { redis in
            try await redis.waitUntilReady()
            _ = try await redis.send(["XGROUP", "CREATE", stream, "g", "$", "MKSTREAM"])
            for n in 1...count { _ = try await redis.xadd(stream, fields: [("n", "\(n)")]) }
            var consumer = StreamConsumer(stream: stream, group: "g", consumer: "c1")
            consumer.batchSize = 2
            consumer.retryDelay = .milliseconds(10)
            try await body(redis, stream, consumer)
        }
    }

    private func numbers(_ entries: [StreamEntry]) -> String { entries.compactMap { $0.fields["n"] }.joined(separator: ",") }

    @Test("the next batch is processed while the last one's follow-up runs; follow-ups run in batch order, each batch acknowledged after its own")
    func overlapInOrder() async throws {
        try await withStream("overlap", count: 4) { redis, stream, consumer in
            let log = Mutex<[String]>([])
            let open = Mutex(false)
            let reader = Task {
                await consumer.runOverlapping(redis: redis, logger: Logger(label: "test")) { entries, _ in
                    let batch = numbers(entries)
                    log.withLock { $0.append("process \(batch)") }
                    return {
                        while !open.withLock({ $0 }) { try await Task.sleep(for: .milliseconds(5)) }
                        log.withLock { $0.append("follow-up \(batch)") }
                    }
                }
            }
            defer { reader.cancel() }
            // The first follow-up is held: the second batch is processed anyway, its follow-up waits its turn.
            #expect(await eventually { log.withLock { $0 } == ["process 1,2", "process 3,4"] })
            try await Task.sleep(for: .milliseconds(100))
            #expect(log.withLock { $0 } == ["process 1,2", "process 3,4"])
            #expect(try await redis.xpending(stream, group: "g").count == 4, "nothing acknowledged before its follow-up")
            open.withLock { $0 = true }
            #expect(await eventually { log.withLock { $0.count } == 4 })
            #expect(log.withLock { $0 } == ["process 1,2", "process 3,4", "follow-up 1,2", "follow-up 3,4"])
            #expect(await eventually { (try? await redis.xpending(stream, group: "g").count) == 0 }, "both acknowledged")
        }
    }

    @Test("a follow-up that fails leaves its batch and the one processed meanwhile pending; both are read again, processed and acknowledged (also when nothing else comes)",
          arguments: [4, 2])
    func failedFollowUpRetries(entries count: Int) async throws {
        let batches = count == 4 ? ["1,2", "3,4"] : ["1,2"]
        try await withStream("overlap-fail", count: count) { redis, stream, consumer in
            let processed = Mutex<[String]>([])
            let followedUp = Mutex<[String]>([])
            let failures = Mutex(1)
            let reader = Task {
                await consumer.runOverlapping(redis: redis, logger: Logger(label: "test")) { entries, _ in
                    let batch = numbers(entries)
                    processed.withLock { $0.append(batch) }
                    return {
                        if failures.withLock({ remaining in defer { remaining -= 1 }; return remaining > 0 }) {
                            throw ChatError(.unavailable, "publishing failed")
                        }
                        followedUp.withLock { $0.append(batch) }
                    }
                }
            }
            defer { reader.cancel() }
            #expect(await eventually { followedUp.withLock { $0 } == batches })
            #expect(processed.withLock { $0 } == batches + batches)
            #expect(await eventually { (try? await redis.xpending(stream, group: "g").count) == 0 })
        }
    }

    @Test("process can wait for the previous batch's follow-up before doing something that must come after it")
    func settleWaitsForThePreviousFollowUp() async throws {
        try await withStream("overlap-settle", count: 4) { redis, stream, consumer in
            let log = Mutex<[String]>([])
            let reader = Task {
                await consumer.runOverlapping(redis: redis, logger: Logger(label: "test")) { entries, settle in
                    let batch = numbers(entries)
                    if batch == "3,4" {
                        try await settle()
                        log.withLock { $0.append("announced 3,4 directly") }
                        return {}
                    }
                    return {
                        try await Task.sleep(for: .milliseconds(200))
                        log.withLock { $0.append("follow-up \(batch)") }
                    }
                }
            }
            defer { reader.cancel() }
            #expect(await eventually { log.withLock { $0.count } == 2 })
            #expect(log.withLock { $0 } == ["follow-up 1,2", "announced 3,4 directly"])
            #expect(await eventually { (try? await redis.xpending(stream, group: "g").count) == 0 })
        }
    }
}
