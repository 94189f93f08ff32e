import ChatCore
import Foundation
import Logging
import Prometheus
import RedisClient
import ServiceLifecycle

/// The retention worker: schedules every stored message in `retention:due` (score = expiry,
/// from `chat:events`, group `retention`), and every sweep interval sends `purge` commands
/// for what is due, at most 100 ids each and paced, to the messages service.
///
/// Crash-safe: an id leaves the schedule only after its purge command is in the stream,
/// and purging is idempotent, so a worker killed mid-sweep resumes where it stopped.
/// If the schedule is lost (Redis lost its data, at start or while it runs), it is rebuilt
/// from the store.
public final class RetentionWorker: Service, Sendable {
    public struct Configuration: Sendable {
        public var consumer: String
        public var sweepInterval: Duration
        public var auditRetention: Duration
        /// Ids per purge command: small, because a purge holds the store's single writer and
        /// sends wait behind it.
        public var batchSize = Self.defaultBatchSize
        public static let defaultBatchSize = 100
        /// After each full batch the worker waits this many times as long as the batch took,
        /// so a large backlog holds the store's writer at most 1 / (1 + rest) of the time: a
        /// third by default. Resting as long as the batch (half the time) gave sends during a
        /// purge of 100,000 a p99 a fifth higher (BENCHMARKS.md, ninth round).
        public var rest = Self.defaultRest
        public static let defaultRest = 2.0
        /// How long the reader of `chat:events` waits after a small batch (see ``StreamConsumer/linger``).
        public var eventsLinger: Duration = .seconds(1)
        /// How the worker rests after a full batch (`Task.sleep`; tests record the rests instead).
        public var pause: @Sendable (Duration) async throws -> Void = { try await Task.sleep(for: $0) }

        public init(consumer: String, sweepInterval: Duration, auditRetention: Duration) {
            self.consumer = consumer
            self.sweepInterval = sweepInterval
            self.auditRetention = auditRetention
        }
    }

    private let redis: RedisClient
    private let keys: RedisKeys
    private let store: StoreClient
    private let configuration: Configuration
    private let logger: Logger
    private let metrics: RetentionMetrics?

    public init(redis: RedisClient, keys: RedisKeys, store: StoreClient, configuration: Configuration, logger: Logger,
                metrics: RetentionMetrics? = nil) {
        self.metrics = metrics
        self.redis = redis
        self.keys = keys
        self.store = store
        self.configuration = configuration
        self.logger = logger
    }

    /// Runs until graceful shutdown or cancellation; shutdown cancels the work at once
    /// (a sweep waits a whole interval between runs).
    public func run() async throws {
        try await cancelWhenGracefulShutdown { try await self.work() }
    }

    private func work() async throws {
        // The store may still be starting: keep asking until the schedule is in place.
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            do {
                try await rebuildScheduleIfMissing()
                break
            } catch {
                logger.warning("cannot check the retention schedule yet; retrying", metadata: ["chat.error": "\(error)"])
                try? await Task.sleep(for: .seconds(1))
            }
        }
        try await withThrowingDiscardingTaskGroup { group in
            group.addTask { await self.scheduleStoredMessages() }
            group.addTask {
                while !Task.isCancelled && !Task.isShuttingDownGracefully {
                    do {
                        // Redis may have lost its data since (restarted without persistence): the
                        // messages stored before would never be scheduled again.
                        try await self.rebuildScheduleIfMissing()
                        try await self.sweep()
                    } catch {
                        self.logger.warning("sweep failed; the next one resumes it", metadata: ["chat.error": "\(error)"])
                    }
                    try? await Task.sleep(for: self.configuration.sweepInterval)
                }
            }
        }
    }

    /// Reads `stored` events into the schedule.
    func scheduleStoredMessages() async {
        var consumer = StreamConsumer(stream: keys.events, group: RedisKeys.retentionGroup, consumer: configuration.consumer)
        consumer.batchSize = 1000
        // Presence reads chat:events too: never trim what it has not read yet.
        consumer.trim = .belowAllGroups
        // Expiries are 90 days out: a second's delay costs nothing, and at a few hundred
        // messages a second it turns a round of reads and acknowledgements per message into
        // one per second (at 200 messages/s that was a tenth of a core).
        consumer.linger = configuration.eventsLinger
        await consumer.run(redis: redis, logger: logger) { entries in
            let due = entries.compactMap { entry -> (Double, String)? in
                guard entry.fields["type"] == "stored", let id = entry.fields["message_id"], let ms = entry.fields["expires_at"].flatMap(Double.init) else { return nil }
                return (ms, id)
            }
            if !due.isEmpty { try await self.redis.zadd(self.keys.retentionDue, due) }
        }
    }

    /// Sends purge commands for everything due, then (if anything was due) a compaction,
    /// one audit line with the counts, and an append-only-file rewrite.
    @discardableResult
    public func sweep(now: Date = Date()) async throws -> Int {
        var sent = 0
        let cutoff = String(now.epochMilliseconds)
        while true {
            let ids = try await redis.zrangeByScore(keys.retentionDue, min: "-inf", max: cutoff, limit: configuration.batchSize)
            guard !ids.isEmpty else { break }
            // The ids leave the schedule once the purge is in the stream (a crash before that
            // leaves them scheduled), and before the store applies it (so a legal hold released
            // meanwhile, which schedules them again, is not undone). Then wait for the store:
            // one batch at a time, so a large backlog never floods chat:commands and sends
            // queued meanwhile are not stuck behind it.
            let started = ContinuousClock.now
            let reply = try await store.command(.purge, user: "", body: PurgeRequest(messageIDs: ids)) {
                try await self.redis.zrem(self.keys.retentionDue, ids)
            }
            if let error = reply.error { throw error }
            sent += ids.count
            metrics?.purged.increment(by: Int64(ids.count))
            // Paced: the store's writer is left to the users `rest` times as long as the purge
            // held it, so a large backlog (a restore, a lifted hold) never takes more than a third of it.
            if ids.count == configuration.batchSize { try await configuration.pause((ContinuousClock.now - started) * configuration.rest) }
        }
        metrics?.sweeps.increment()
        metrics?.lastSweep.set(now.timeIntervalSince1970)
        guard sent > 0 else { return 0 }
        try await redis.xadd(keys.commands, fields: try StoreCommand(type: .compact, user: "", body: CompactRequest(auditRetention: configuration.auditRetention)).fields)
        try await redis.xadd(keys.commands, fields: try StoreCommand(type: .audit, user: "", body: AuditRequest(
            action: "retention.sweep", outcome: "ok", detail: "\(sent) messages due, sent for purge")).fields)
        try await redis.set(keys.retentionLastSweep, to: String(Int64(now.timeIntervalSince1970)))
        // The append-only file still holds the purged text in old stream entries: rewrite it.
        if try await redis.send(["CONFIG", "GET", "appendonly"]).array?.last?.string == "yes" {
            _ = try? await redis.send(["BGREWRITEAOF"])
        }
        logger.info("sweep sent messages for purge", metadata: ["chat.count": "\(sent)"])
        return sent
    }

    /// If the schedule is not known to be whole (Redis lost it: its `:built` marker, set
    /// once a rebuild finished, is gone), asks the store for every message still stored and
    /// schedules it again, a page of 1,000 at a time, under a marker key: a worker killed
    /// halfway leaves the marker, and the next one starts over instead of trusting a partial
    /// schedule. Checked at start and before every sweep: a Redis that loses its data while
    /// the worker runs gets a schedule again from `stored` events made since, which alone
    /// would leave every message stored before unscheduled, never deleted. Small pages keep
    /// each Redis command short, so the sends of a busy clinic do not queue behind them (one
    /// ZADD or ZUNIONSTORE of 100,000 members holds Redis for tens of milliseconds).
    func rebuildScheduleIfMissing() async throws {
        let marker = keys.retentionDue + ":rebuilding"
        let built = keys.retentionDue + ":built"
        let exists = try await redis.pipeline([["EXISTS", built], ["EXISTS", marker]]).map { $0.int ?? 0 }
        guard exists.count == 2, exists[0] == 0 || exists[1] > 0 else { return }
        // The side key of earlier versions, if one was left behind.
        _ = try await redis.pipeline([["SET", marker, "1"], ["DEL", keys.retentionDue + ":rebuild"]])
        var cursor: String?
        var total = 0
        while true {
            let page: [DueMessage] = try store.result(await store.query(.dueMessages, user: "") {
                $0.limit = 1000
                $0.query = cursor
            })
            guard let last = page.last else { break }
            try await redis.zadd(keys.retentionDue, page.map { (Double($0.expiresAt.epochMilliseconds), $0.id) })
            total += page.count
            cursor = "\(last.expiresAt.epochMilliseconds):\(last.id)"
        }
        // Marked whole only if the rebuild's own marker is still there: a Redis that lost its
        // data halfway lost the pages added before, and the next check starts over.
        let whole = try await redis.send(["EVAL", """
            if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('SET', KEYS[1], ARGV[1]); redis.call('DEL', KEYS[2]); return 1 end
            return 0
            """, "2", built, marker, String(Date().epochMilliseconds)]).int == 1
        guard whole else {
            logger.warning("the retention schedule was lost while it was being rebuilt (Redis lost its data?); rebuilt again at the next check")
            return
        }
        if total > 0 { logger.notice("rebuilt the retention schedule from the store", metadata: ["chat.count": "\(total)"]) }
    }

}

/// The retention service: waits for Redis, creates group `retention` on `chat:events`, runs the worker.
public struct RetentionService: Service {
    private let runtime: ChatRuntime
    private let subscriber: RedisSubscriber

    private let rest: Double

    /// `rest`: ``RetentionWorker/Configuration/rest``.
    public init(runtime: ChatRuntime, subscriber: RedisSubscriber, rest: Double = RetentionWorker.Configuration.defaultRest) {
        self.runtime = runtime
        self.subscriber = subscriber
        self.rest = rest
    }

    public func run() async throws {
        let keys = runtime.keys
        guard try await ServiceStartup.prepare(runtime, groups: [(keys.events, RedisKeys.retentionGroup)]) else { return }
        let configuration = runtime.configuration
        let store = StoreClient(redis: runtime.redis, keys: keys, gatewayID: "retention-\(ProcessInfo.processInfo.hostName)", timeout: .seconds(30))
        try await subscriber.subscribe([store.replyChannel])
        var workerConfiguration = RetentionWorker.Configuration(
            consumer: "retention-\(ProcessInfo.processInfo.hostName)", sweepInterval: configuration.sweepInterval,
            auditRetention: configuration.auditRetention)
        workerConfiguration.rest = rest
        let worker = RetentionWorker(redis: runtime.redis, keys: keys, store: store, configuration: workerConfiguration,
                                     logger: runtime.logger, metrics: RetentionMetrics(runtime: runtime))
        StreamMetrics.register(runtime, stream: keys.events, group: RedisKeys.retentionGroup)
        runtime.logger.info("ready", metadata: ["redis.stream": "\(keys.events)", "redis.group": "\(RedisKeys.retentionGroup)",
                                                "chat.retention": "\(DurationParser.format(configuration.retention))",
                                                "chat.sweep": "\(DurationParser.format(configuration.sweepInterval))"])
        runtime.health.markReady()
        try await withThrowingDiscardingTaskGroup { group in
            group.addTask { await store.pumpReplies(from: self.subscriber) }
            group.addTask { try await worker.run() }
        }
    }
}

/// The retention worker's metrics: messages purged, sweeps and when the last one ended,
/// and the schedule (read from Redis on each scrape).
public struct RetentionMetrics: Sendable {
    let purged: Counter
    let sweeps: Counter
    let lastSweep: Gauge

    public init(runtime: ChatRuntime) {
        let registry = runtime.metrics
        purged = registry.counter("chat_retention_purged_total", help: "Messages purged (the store confirmed the purge command).")
        sweeps = registry.counter("chat_retention_sweeps_total", help: "Sweeps completed.")
        lastSweep = registry.gauge("chat_retention_last_sweep_timestamp_seconds", help: "When the last sweep completed, in seconds since the Unix epoch.")
        let scheduled = registry.gauge("chat_retention_scheduled", help: "Messages in the retention schedule (retention:due).")
        let due = registry.gauge("chat_retention_due", help: "Scheduled messages whose expiry has passed (purged by the next sweep).")
        let redis = runtime.redis
        let key = runtime.keys.retentionDue
        runtime.scrape.add {
            let now = String(Date().epochMilliseconds)
            guard let replies = try? await redis.pipeline([["ZCARD", key], ["ZCOUNT", key, "-inf", now]]), replies.count == 2 else { return }
            scheduled.set(Double(replies[0].int ?? 0))
            due.set(Double(replies[1].int ?? 0))
        }
    }
}
