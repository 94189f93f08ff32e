import ChatCore
import Foundation
import Logging
import RedisClient
import ServiceLifecycle

/// The messages service: owns the SQLite store, applies `chat:commands` (group
/// `messages`) and answers `store:queries`, while it holds the store's writer lease
/// (``WriterLease``); another instance on the same Redis waits as a standby.
public struct MessagesService: Service {
    private let runtime: ChatRuntime
    /// The store given at init (tests, benchmarks); nil: the file at `CHAT_DB_PATH`, opened
    /// and migrated once the lease is held.
    private let given: MessageStore?
    private let subscriber: RedisSubscriber
    private let consumer: String
    private let maintenance: Maintenance

    /// When the service's own upkeep runs: the first cleanup of applied-entry records a
    /// minute after start, then hourly; a WAL checkpoint every second. Tests shorten them.
    public struct Maintenance: Sendable {
        public var firstCleanup: Duration = .seconds(60)
        public var cleanupInterval: Duration = .seconds(3600)
        public var checkpointInterval: Duration = .seconds(1)
        /// How often it checks that Redis still has the auth state (``keepAuthState(_:every:)``).
        public var authCheckInterval: Duration = .seconds(5)
        public init() {}
    }

    /// The service of the database file at `CHAT_DB_PATH`, which it opens (and migrates) only
    /// once it holds the writer lease: a standby, perhaps a newer version started beside the
    /// holder on the same file, changes nothing in it. `consumer` names this instance in the
    /// consumer group; keep it stable across restarts.
    public init(runtime: ChatRuntime, subscriber: RedisSubscriber, consumer: String, maintenance: Maintenance = Maintenance()) {
        self.init(runtime: runtime, given: nil, subscriber: subscriber, consumer: consumer, maintenance: maintenance)
    }

    /// The service of a store already open (tests, benchmarks).
    public init(runtime: ChatRuntime, store: MessageStore, subscriber: RedisSubscriber, consumer: String, maintenance: Maintenance = Maintenance()) {
        self.init(runtime: runtime, given: store, subscriber: subscriber, consumer: consumer, maintenance: maintenance)
    }

    private init(runtime: ChatRuntime, given: MessageStore?, subscriber: RedisSubscriber, consumer: String, maintenance: Maintenance) {
        self.runtime = runtime
        self.given = given
        self.subscriber = subscriber
        self.consumer = consumer
        self.maintenance = maintenance
    }

    /// How long the record of an applied `chat:commands` entry is kept (``MessageStore/forgetAppliedCommands(olderThan:now:chunk:maxChunks:)``).
    public static let appliedCommandsKept: Duration = .seconds(7 * 86400)

    /// Forgets the records of entries applied longer ago than ``appliedCommandsKept``: ten
    /// chunks of 500 at a time, then a 50 ms pause, so a large first cleanup leaves the
    /// cooperative thread and the writer to the sends in between. Returns how many it forgot.
    @discardableResult
    static func forgetOldAppliedEntries(_ store: MessageStore, logger: Logger, now: Date = Date()) async -> Int {
        let (chunk, chunks) = (500, 10)
        var forgotten = 0
        do {
            while !Task.isCancelled && !Task.isShuttingDownGracefully {
                let done = try store.forgetAppliedCommands(olderThan: appliedCommandsKept, now: now, chunk: chunk, maxChunks: chunks)
                forgotten += done
                if done < chunk * chunks { break }
                try? await Task.sleep(for: .milliseconds(50))
            }
        } catch {
            logger.warning("forgetting applied entries failed; retried in an hour", metadata: ["chat.error": "\(error)"])
        }
        if forgotten > 0 { logger.info("forgot applied entries", metadata: ["chat.count": "\(forgotten)"]) }
        return forgotten
    }

    public func run() async throws {
        let keys = runtime.keys
        guard try await ServiceStartup.prepare(runtime, groups: [(keys.commands, RedisKeys.messagesGroup)]) else { return }
        // Nothing is read or answered before the lease is ours: a second instance on this
        // Redis would otherwise take part of the commands into its own database.
        let lease = WriterLease(redis: runtime.redis, key: keys.storeWriter,
                                holder: .init(consumer: consumer, database: runtime.configuration.databasePath),
                                ttl: runtime.configuration.writerLease, logger: runtime.logger, metrics: runtime.metrics)
        let health = runtime.health
        guard await lease.acquire(standby: { holder in
            health.wait(for: holder.map { "standby: the store's writer lease is held by \($0)" })
        }) else { return }
        // Released when the service ends for any reason, so a standby takes over at once; in
        // a task of its own, as the service's may be cancelled.
        do {
            try await serve(lease: lease)
        } catch {
            await Task { await lease.release() }.value
            throw error
        }
        await Task { await lease.release() }.value
    }

    /// The store: the one given, or the file at `CHAT_DB_PATH` opened and brought to the
    /// current schema (logged, and named by `/readyz` while it runs), on a thread of its own:
    /// a migration can take minutes (docs/operations.md, Upgrades) while the lease is renewed.
    private func openStore() async throws -> MessageStore {
        if let given { return given }
        let (path, retention, logger, health) = (runtime.configuration.databasePath, runtime.configuration.retention, runtime.logger, runtime.health)
        return try await Self.onThread {
            // A new file gets every migration, instantly: nothing to announce as an upgrade.
            let pending = FileManager.default.fileExists(atPath: path) ? try MessageStore.pendingMigrations(path: path) : []
            if !pending.isEmpty {
                health.wait(for: "migrating the store's schema (\(pending.joined(separator: ", ")))")
                logger.notice("migrating the store's schema", metadata: ["chat.database": "\(path)", "chat.migrations": "\(pending)"])
            }
            let store = try MessageStore.open(path: path, retention: retention)
            if !pending.isEmpty {
                health.wait(for: nil)
                logger.notice("migrated the store's schema", metadata: ["chat.database": "\(path)", "chat.migrations": "\(pending.count)"])
            }
            return store
        }
    }

    /// Puts the auth state back into a Redis that lost it. Gateways refuse disabled users'
    /// tokens, logged-out tokens and tokens older than a password change through Redis keys
    /// alone; a Redis restarted without its data (or replaced) would let them all in again
    /// until they expired. Every `interval` the service claims `auth:state` if it is missing
    /// (`SET NX`, a minute's TTL), and if it was, queues `restore_auth` on `chat:commands`:
    /// applied in the stream's order, its announcements set every key from the store and then
    /// `auth:state` for good. On a first start it finds nothing missing but the marker.
    static func keepAuthState(_ runtime: ChatRuntime, every interval: Duration) async {
        let keys = runtime.keys
        var failures = LogThrottle()
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            do {
                let claimed = try await runtime.redis.send(["SET", keys.authState, "pending", "NX", "PX", "60000"]).string == "OK"
                if claimed {
                    runtime.logger.notice("Redis has no record of the auth state (it lost its data, or this is its first start): restoring disabled users, logged-out tokens and session cutoffs from the store")
                    try await runtime.redis.xadd(keys.commands, fields: try StoreCommand(type: .restoreAuth, user: "", body: [String: String]()).fields)
                }
                if failures.reset() { runtime.logger.notice("the auth state check succeeds again") }
            } catch {
                if let held = failures.admit() {
                    runtime.logger.warning("cannot check the auth state in Redis; retried", metadata: ["chat.error": "\(error)", "chat.failures.unlogged": "\(held)"])
                }
            }
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: interval) }
        }
    }

    /// Runs blocking work on a thread of its own, not on one of the few the tasks share.
    static func onThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            Thread { continuation.resume(with: Result { try body() }) }.start()
        }
    }

    private func serve(lease: WriterLease) async throws {
        try await withThrowingDiscardingTaskGroup { group in
            // Renewed from now on, so a long migration keeps the lease.
            group.addTask { try await lease.maintain() }
            let store = try await openStore()
            try Task.checkCancellation()
            let keys = runtime.keys
            var configuration = CommandProcessor.Configuration(consumer: consumer)
            configuration.publishBatches = runtime.configuration.publishBatches
            let processor = CommandProcessor(store: store, redis: runtime.redis, keys: keys,
                                             configuration: configuration, logger: runtime.logger,
                                             metrics: StoreMetrics(registry: runtime.metrics), lease: lease)
            StreamMetrics.register(runtime, stream: keys.commands, group: RedisKeys.messagesGroup)
            let responder = QueryResponder(store: store, redis: runtime.redis, subscriber: subscriber, keys: keys, logger: runtime.logger)
            runtime.logger.info("ready", metadata: ["redis.stream": "\(keys.commands)", "redis.group": "\(RedisKeys.messagesGroup)",
                                                    "chat.consumer": "\(consumer)", "chat.database": "\(runtime.configuration.databasePath)"])
            runtime.health.markReady()
            group.addTask { try await processor.run() }
            group.addTask { try await responder.run() }
            group.addTask { [store, maintenance, logger = runtime.logger] in
                // The records of applied entries guard against applying an entry twice when the
                // service dies between its commit and XACK; a week covers any outage before the
                // entry is claimed again. Forgotten hourly, so the table does not grow by a row per send forever.
                try? await cancelWhenGracefulShutdown { try await Task.sleep(for: maintenance.firstCleanup) }
                while !Task.isCancelled && !Task.isShuttingDownGracefully {
                    await Self.forgetOldAppliedEntries(store, logger: logger)
                    do {
                        let forgotten = try store.forgetExpiredAuthRecords()
                        if forgotten > 0 { logger.info("forgot expired logouts and session cutoffs", metadata: ["chat.count": "\(forgotten)"]) }
                    } catch {
                        logger.warning("forgetting expired logouts and session cutoffs failed; retried in an hour", metadata: ["chat.error": "\(error)"])
                    }
                    try? await cancelWhenGracefulShutdown { try await Task.sleep(for: maintenance.cleanupInterval) }
                }
            }
            group.addTask { [runtime, maintenance] in
                await Self.keepAuthState(runtime, every: maintenance.authCheckInterval)
            }
            group.addTask { [store, maintenance, logger = runtime.logger] in
                // Checkpoints beside the writer, so no commit pays for one (see MessageStore.checkpoint).
                var failures = LogThrottle()
                while !Task.isCancelled && !Task.isShuttingDownGracefully {
                    do {
                        let truncating = store.walTruncationPending
                        try await store.checkpoint()
                        if truncating && !store.walTruncationPending { logger.notice("the WAL was emptied after the purge") }
                        if failures.reset() { logger.notice("WAL checkpoints succeed again") }
                    } catch {
                        if let held = failures.admit() {
                            logger.warning("WAL checkpoint failed", metadata: ["chat.error": "\(error)", "chat.failures.unlogged": "\(held)"])
                        }
                    }
                    try? await cancelWhenGracefulShutdown { try await Task.sleep(for: maintenance.checkpointInterval) }
                }
            }
        }
    }
}
