import ArgumentParser
import ChatCore
import ChatTesting
import Foundation
import GRDB
import Logging
import MessageStore
import RedisClient
import Retention

/// `chat-bench purge`: how much a large retention purge slows sends down. Send latency
/// (a store round trip: XADD, commit, answer) with nothing to purge, then the same sends
/// while retention deletes `--messages` expired messages, in one run, on one machine.
struct PurgeBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "purge",
        abstract: "Send latency while retention purges expired messages, next to the same sends with nothing to purge."
    )

    @Option(help: "Expired messages to purge.")
    var messages = 100_000

    @Option(help: "Sends measured with nothing to purge.")
    var sends = 1000

    @Option(help: "Pause between sends (ms), so sends sample the whole purge.")
    var pause = 5

    @Option(help: "How long the retention worker rests after each full batch, as a multiple of the batch's time.")
    var rest = RetentionWorker.Configuration.defaultRest

    @Option(help: "How often the messages service checkpoints the WAL (ms).")
    var checkpointInterval = Int(MessagesService.Maintenance().checkpointInterval.milliseconds)

    func run() async throws {
        let server = try await RedisServer.start()
        defer { server.stop() }
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("purge-bench-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }

        let store = try MessageStore.open(path: directory.appendingPathComponent("chat.sqlite").path, retention: .seconds(86400), bcryptCost: 4)
        for email in ["a@clinic.com", "b@clinic.com"] { _ = try store.createUser(email: email, name: email, role: .doctor, password: "password") }
        let conversation = try store.openDirectConversation("a@clinic.com", "b@clinic.com").id
        let seedStart = ContinuousClock.now
        let past = Date().addingTimeInterval(-2 * 86400)
        for chunk in stride(from: 0, to: messages, by: 5000) {
            let requests = (chunk..<min(messages, chunk + 5000)).map { i in
                SendRequest(sender: i % 2 == 0 ? "a@clinic.com" : "b@clinic.com", conversationID: conversation,
                            content: "expired note \(i) " + String(repeating: "x", count: 80), clientID: nil)
            }
            _ = try store.append(requests, now: past)
        }
        log("seeded \(messages) expired messages in \(ContinuousClock.now - seedStart)")
        // Whether any expired message is left: one step down the expiry index (a COUNT of them
        // walked up to 100,000 index entries, 3-7 ms of CPU every 20 sends, beside the sends
        // measured; taking it out did not change the results, BENCHMARKS.md, twelfth round).
        @Sendable func anyExpired() throws -> Bool {
            try store.read { db in try Bool.fetchOne(db, sql: "SELECT EXISTS (SELECT 1 FROM messages WHERE expires_at <= ?)", arguments: [Date().epochMilliseconds]) ?? false }
        }

        let configuration = try ChatConfiguration(environment: [
            "CHAT_REDIS_URL": server.url, "CHAT_RETENTION": "1d", "CHAT_SWEEP_INTERVAL": "1s", "LOG_LEVEL": "warning",
        ])
        var logger = Logger(label: "bench")
        logger.logLevel = .warning
        let redis = RedisClient(configuration: configuration.redis)
        let runtime = ChatRuntime(configuration: configuration, redis: redis, logger: logger)
        let storeSubscriber = RedisSubscriber(configuration: configuration.redis)
        let benchSubscriber = RedisSubscriber(configuration: configuration.redis)
        let retentionSubscriber = RedisSubscriber(configuration: configuration.redis)
        let client = StoreClient(redis: redis, keys: configuration.keys, gatewayID: "bench", timeout: .seconds(30))

        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await redis.run() }
            for subscriber in [storeSubscriber, benchSubscriber, retentionSubscriber] {
                group.addTask { try await subscriber.run() }
            }
            var maintenance = MessagesService.Maintenance()
            maintenance.checkpointInterval = .milliseconds(checkpointInterval)
            group.addTask { [maintenance] in
                try await MessagesService(runtime: runtime, store: store, subscriber: storeSubscriber, consumer: "bench", maintenance: maintenance).run()
            }
            group.addTask { await client.pumpReplies(from: benchSubscriber) }
            try await redis.waitUntilReady()
            try await benchSubscriber.subscribe([client.replyChannel])

            var counter = 0
            func send() async throws -> Double {
                counter += 1
                let start = ContinuousClock.now
                let reply = try await client.command(.send, user: "a@clinic.com", body: SendMessageRequest(
                    conversationID: conversation, content: "live note \(counter)", clientID: TimeOrderedID.make()))
                if let error = reply.error { throw error }
                return ms(ContinuousClock.now - start)
            }

            for _ in 0..<20 { _ = try await send() }  // warm up
            var idle: [Double] = []
            for _ in 0..<sends {
                idle.append(try await send())
                try await Task.sleep(for: .milliseconds(pause))
            }
            log("idle: \(sends) sends, median \(fixed2(median(idle))) ms, p99 \(fixed2(percentile(idle, 0.99))) ms")

            let purgeStart = ContinuousClock.now
            let writtenBefore = ProcessStatus.bytesWritten()
            group.addTask { try await RetentionService(runtime: runtime, subscriber: retentionSubscriber, rest: rest).run() }
            var during: [Double] = []
            // When each send went out, since the worker started: the tail by phase of the purge.
            var at: [Double] = []
            var remaining = try anyExpired()
            while remaining {
                at.append(ms(ContinuousClock.now - purgeStart))
                during.append(try await send())
                try await Task.sleep(for: .milliseconds(pause))
                if during.count % 20 == 0 { remaining = try anyExpired() }
                if ContinuousClock.now - purgeStart > .seconds(600) { throw CommandFailure("the purge did not finish in 10 minutes") }
            }
            let purgeTime = ContinuousClock.now - purgeStart
            let written = Double(ProcessStatus.bytesWritten() - writtenBefore) / 1024 / 1024
            log("during the purge: \(during.count) sends, median \(fixed2(median(during))) ms, p99 \(fixed2(percentile(during, 0.99))) ms")
            print("""

            | sends | n | median ms | p99 ms |
            |---|---|---|---|
            | nothing to purge | \(idle.count) | \(fixed2(median(idle))) | \(fixed2(percentile(idle, 0.99))) |
            | while purging \(messages) | \(during.count) | \(fixed2(median(during))) | \(fixed2(percentile(during, 0.99))) |

            median during / idle: \(fixed2(median(during) / median(idle)))×; p99 during / idle: \(fixed2(percentile(during, 0.99) / percentile(idle, 0.99)))×
            p99 ms by tenth of the purge's time: \(tenths(at: at, during, total: ms(purgeTime)).map(fixed2).joined(separator: ", "))
            purge of \(messages) messages (schedule rebuilt from the store, paced batches of \(RetentionWorker.Configuration.defaultBatchSize)): \(fixed2(ms(purgeTime) / 1000)) s, \(Int(Double(messages) / (ms(purgeTime) / 1000))) messages/s
            written meanwhile (SQLite and the sends, write(2) and kin): \(fixed2(written)) MiB, \(fixed2(written * 1024 / Double(messages))) KiB per purged message
            """)
            group.cancelAll()
        }
    }
}

/// The p99 of `values` sent in each tenth of `total` (by `at`, the send times).
func tenths(at: [Double], _ values: [Double], total: Double) -> [Double] {
    var buckets = Array(repeating: [Double](), count: 10)
    for (time, value) in zip(at, values) { buckets[min(9, max(0, Int(time / max(total, 1) * 10)))].append(value) }
    return buckets.map { percentile($0, 0.99) }
}

func percentile(_ values: [Double], _ p: Double) -> Double {
    guard !values.isEmpty else { return 0 }
    let sorted = values.sorted()
    return sorted[min(sorted.count - 1, Int((Double(sorted.count - 1) * p).rounded()))]
}

func ms(_ duration: Duration) -> Double { Double(duration.components.seconds) * 1000 + Double(duration.components.attoseconds) / 1e15 }

func fixed2(_ value: Double) -> String { String(format: "%.2f", value) }
