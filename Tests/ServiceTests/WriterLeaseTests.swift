import ChatCore
import ChatTesting
import Foundation
import GRDB
import Logging
import MessageStore
import Operations
import Prometheus
import RedisClient
import Testing

/// One messages service in process: its own Redis connections, health, metrics and
/// database file (with the two users), on the keys it shares with the others.
struct StoreInstance: Sendable {
    let runtime: ChatRuntime
    let subscriber: RedisSubscriber
    let service: MessagesService
    let accounts: TwoUserStore

    init(server: RedisServer, keys: RedisKeys, consumer: String, lease: String) throws {
        accounts = try TwoUserStore(consumer)
        var configuration = try ChatConfiguration(environment: ["CHAT_REDIS_URL": server.url, "CHAT_DB_PATH": accounts.database, "CHAT_WRITER_LEASE": lease])
        configuration.redisPrefix = keys.prefix
        configuration.redis.clientName = "\(keys.prefix)\(consumer)"
        runtime = ChatRuntime(configuration: configuration, redis: RedisClient(configuration: configuration.redis), logger: Logger(label: consumer))
        subscriber = RedisSubscriber(configuration: configuration.redis)
        // As chat-messages runs it: the service opens its file once it holds the lease.
        service = MessagesService(runtime: runtime, subscriber: subscriber, consumer: consumer)
    }

    /// Runs the service (not its Redis client, which the test keeps up) until cancelled;
    /// the error it ended with, if any.
    func start() -> Task<(any Error)?, Never> {
        Task { [subscriber, service] in
            do {
                try await withThrowingDiscardingTaskGroup { group in
                    group.addTask { try await subscriber.run() }
                    group.addTask { try await service.run() }
                }
                return nil
            } catch {
                return error
            }
        }
    }

    /// Messages in this instance's database file.
    func stored() -> Int { storedMessages(in: accounts.database) }

    func leaseGauge() -> Double? {
        var buffer: [UInt8] = []
        runtime.metrics.emit(into: &buffer)
        return sample(String(decoding: buffer, as: UTF8.self), "chat_store_writer_lease")
    }

    var notReadyReason: String? { get async { await OperationsEndpoints(runtime: runtime).notReadyReason() } }
}

/// Messages in the database file at `path` (-1 if it cannot be read).
func storedMessages(in path: String) -> Int {
    (try? DatabaseQueue(path: path).read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM messages") }) ?? -1
}

/// The schema's last migration (v10) taken out of the database file at `path` again, as a
/// file an older version left: what a newer messages service would apply when it opens it.
let lastMigration = "v10: revoked tokens, session cutoffs, passwords to change"
func unapplyLastMigration(_ path: String) throws {
    let last = lastMigration
    try #require(MessageStore.pendingMigrations(path: path + ".none").last == last, "the test knows only how to take out v10")
    try DatabaseQueue(path: path).write { db in
        try db.execute(sql: "DROP TABLE revoked_tokens")
        try db.execute(sql: "DROP TABLE session_cutoffs")
        try db.execute(sql: "ALTER TABLE users DROP COLUMN must_change_password")
        try db.execute(sql: "DELETE FROM grdb_migrations WHERE identifier = ?", arguments: [last])
    }
    try #require(MessageStore.pendingMigrations(path: path) == [last])
}

/// Sends from the admin to the doctor by address, as a gateway queues them.
func enqueueSends(_ redis: RedisClient, _ keys: RedisKeys, _ range: Range<Int>) async throws {
    let commands = try range.map { i in
        RedisClient.xaddCommand(keys.commands, fields: try StoreCommand(
            type: .send, user: "admin@clinic.com", body: SendMessageRequest(receiverEmail: "doctor@clinic.com", content: "m\(i)", clientID: "c-\(i)")).fields)
    }
    _ = try await redis.pipeline(commands)
}

@Suite("The store's writer lease", .redisServer)
struct WriterLeaseTests {
    @Test("a second messages service on the same Redis waits as a standby (not ready, nothing read) and takes over at once when the first stops")
    func standbyAndHandOver() async throws {
        let server = try RedisServer.required()
        let keys = uniqueKeys("lease")
        // A TTL far longer than the test waits: the hand-over comes from the release, not from expiry.
        let first = try StoreInstance(server: server, keys: keys, consumer: "m-first", lease: "60s")
        let second = try StoreInstance(server: server, keys: keys, consumer: "m-second", lease: "60s")
        defer { first.accounts.remove(); second.accounts.remove() }
        // The second is a newer version: its file lacks a migration, which it applies only once it holds the lease.
        try unapplyLastMigration(second.accounts.database)

        try await withRunning(first.runtime.redis) { _ in
            try await withRunning(second.runtime.redis) { _ in
                try await server.withClient { redis in
                    let firstTask = first.start()
                    defer { firstTask.cancel() }
                    try #require(await eventually { first.runtime.health.phase == .ready })
                    let secondTask = second.start()
                    defer { secondTask.cancel() }
                    let waiting = await eventually { second.runtime.health.waitingFor?.contains("m-first") == true }
                    #expect(waiting, "\(second.runtime.health.waitingFor ?? "nil")")
                    let reason = await second.notReadyReason
                    #expect(reason?.hasPrefix("starting: standby: the store's writer lease is held by m-first on ") == true, "\(reason ?? "nil")")
                    #expect(await first.notReadyReason == nil)
                    #expect(first.leaseGauge() == 1 && second.leaseGauge() == 0)
                    let lease = try await redis.hgetall(keys.storeWriter)
                    #expect(lease["consumer"] == "m-first" && lease["database"] == first.accounts.database, "\(lease)")
                    let ttl = try #require(try await redis.send(["PTTL", keys.storeWriter]).int)
                    #expect(ttl > 0 && ttl <= 60_000, "\(ttl)")

                    // Every command goes to the holder; the standby never reads the stream.
                    try await enqueueSends(redis, keys, 0..<20)
                    #expect(await eventually { first.stored() == 20 }, "first stored \(first.stored())")
                    #expect(await eventually { (try? await redis.xpending(keys.commands, group: RedisKeys.messagesGroup).count) == 0 })
                    #expect(second.stored() == 0)
                    #expect(try MessageStore.pendingMigrations(path: second.accounts.database).count == 1, "a standby opens no database")
                    let consumers = try await redis.send(["XINFO", "CONSUMERS", keys.commands, RedisKeys.messagesGroup]).array ?? []
                    #expect(consumers.count == 1, "only the holder joined the group: \(consumers)")

                    // The holder stops: it releases the lease, and the standby takes over at once.
                    firstTask.cancel()
                    let end = await firstTask.value
                    #expect(end == nil || end is CancellationError, "\(end.map { "\($0)" } ?? "")")
                    #expect(await eventually { second.runtime.health.phase == .ready }, "\(second.runtime.health.waitingFor ?? "nil")")
                    #expect(second.runtime.health.waitingFor == nil)
                    #expect(try await redis.hget(keys.storeWriter, "consumer") == "m-second")
                    #expect(second.leaseGauge() == 1 && first.leaseGauge() == 0)
                    #expect(try MessageStore.pendingMigrations(path: second.accounts.database) == [], "migrated once it held the lease")
                    try await enqueueSends(redis, keys, 20..<30)
                    let took = await eventually { second.stored() == 10 }
                    let pending = try await redis.send(["XPENDING", keys.commands, RedisKeys.messagesGroup])
                    let group = try await redis.send(["XINFO", "CONSUMERS", keys.commands, RedisKeys.messagesGroup])
                    #expect(took, "second stored \(second.stored()); pending \(pending); consumers \(group)")
                    #expect(first.stored() == 20)
                }
            }
        }
    }

    @Test("a migration that outlasts the lease's TTL keeps the lease: /readyz names the migration, a standby started meanwhile waits, nothing is applied until the schema is current, then everything is")
    func longMigrationKeepsTheLease() async throws {
        let server = try RedisServer.required()
        let keys = uniqueKeys("lease-migrating")
        let first = try StoreInstance(server: server, keys: keys, consumer: "m-migrating", lease: "1s")
        let second = try StoreInstance(server: server, keys: keys, consumer: "m-waiting", lease: "1s")
        defer { first.accounts.remove(); second.accounts.remove() }
        try unapplyLastMigration(first.accounts.database)
        // A migration made slow: another connection holds the file's write lock, so the
        // migration's transaction waits (the store's busy timeout is 10 s) for three TTLs.
        var holding = Configuration()
        holding.allowsUnsafeTransactions = true
        let blocker = try DatabaseQueue(path: first.accounts.database, configuration: holding)
        try blocker.inDatabase { db in try db.execute(sql: "BEGIN IMMEDIATE") }
        // If the test stops early (a ROLLBACK after the one below fails, harmlessly).
        defer { try? blocker.inDatabase { db in try db.execute(sql: "ROLLBACK") } }

        try await withRunning(first.runtime.redis) { _ in
            try await withRunning(second.runtime.redis) { _ in
                try await server.withClient { redis in
                    let firstTask = first.start()
                    defer { firstTask.cancel() }
                    let migrating = await eventually { first.runtime.health.waitingFor?.contains("migrating") == true }
                    #expect(migrating, "\(first.runtime.health.waitingFor ?? "nil")")
                    let reason = await first.notReadyReason
                    #expect(reason == "starting: migrating the store's schema (\(lastMigration))", "\(reason ?? "nil")")
                    #expect(first.leaseGauge() == 1)
                    try await enqueueSends(redis, keys, 0..<5)

                    let secondTask = second.start()
                    defer { secondTask.cancel() }
                    let waiting = await eventually { second.runtime.health.waitingFor?.contains("standby") == true }
                    #expect(waiting, "\(second.runtime.health.waitingFor ?? "nil")")
                    // Three TTLs into the migration: still the first's lease, renewed all along.
                    try await Task.sleep(for: .seconds(3))
                    #expect(try await redis.hget(keys.storeWriter, "consumer") == "m-migrating")
                    let ttl = try #require(try await redis.send(["PTTL", keys.storeWriter]).int)
                    #expect(ttl > 0 && ttl <= 1_000, "\(ttl)")
                    #expect(first.runtime.health.phase != .ready && second.runtime.health.phase != .ready)
                    #expect(second.runtime.health.waitingFor?.contains("m-migrating") == true, "\(second.runtime.health.waitingFor ?? "nil")")
                    #expect(first.stored() == 0 && second.stored() == 0, "nothing is applied during the migration")
                    #expect(try MessageStore.pendingMigrations(path: first.accounts.database).count == 1)

                    try blocker.inDatabase { db in try db.execute(sql: "ROLLBACK") }
                    #expect(await eventually { first.runtime.health.phase == .ready }, "\(first.runtime.health.waitingFor ?? "nil")")
                    #expect(first.runtime.health.waitingFor == nil)
                    #expect(await first.notReadyReason == nil)
                    #expect(try MessageStore.pendingMigrations(path: first.accounts.database) == [])
                    #expect(await eventually { first.stored() == 5 }, "the holder stored \(first.stored())")
                    #expect(second.stored() == 0 && second.leaseGauge() == 0)
                }
            }
        }
    }

    @Test("a holder that finds its lease taken by another instance stops applying commands and ends with an error naming the new holder")
    func lostLeaseStops() async throws {
        let server = try RedisServer.required()
        let keys = uniqueKeys("lease-lost")
        let instance = try StoreInstance(server: server, keys: keys, consumer: "m-only", lease: "1s")
        defer { instance.accounts.remove() }
        try await withRunning(instance.runtime.redis) { _ in
            try await server.withClient { redis in
                let task = instance.start()
                defer { task.cancel() }
                try #require(await eventually { instance.runtime.health.phase == .ready })
                try await enqueueSends(redis, keys, 0..<5)
                #expect(await eventually { instance.stored() == 5 })

                // Another instance's lease in its place (as if this one had been stopped for longer than the TTL).
                _ = try await redis.pipeline([
                    ["DEL", keys.storeWriter],
                    ["HSET", keys.storeWriter, "instance", "intruder", "consumer", "m-other", "host", "elsewhere", "database", "/other.sqlite", "since", "0"],
                    ["PEXPIRE", keys.storeWriter, "60000"],
                ])
                // A service that never ends fails the test at the timeout (withTimeout does not
                // wait for the task it gave up on).
                let ended = try #require(try await withTimeout(.seconds(10)) { await task.value })
                let lost = try #require(ended as? WriterLease.Lost, "\(ended)")
                #expect(lost.holder?.consumer == "m-other")
                #expect("\(lost)".contains("m-other on elsewhere"))
                #expect(instance.leaseGauge() == 0)
                // Its release left the other instance's lease alone.
                #expect(try await redis.hget(keys.storeWriter, "instance") == "intruder")
            }
        }
    }

    @Test("once its lease is found taken, a holder's commits are refused, not merely delayed: confirm() throws Lost at once")
    func lostLeaseRefusesCommits() async throws {
        let server = try RedisServer.required()
        let keys = uniqueKeys("lease-refuse")
        try await server.withClient { redis in
            let lease = WriterLease(redis: redis, key: keys.storeWriter, holder: .init(consumer: "m-1", database: "/x.sqlite"),
                                    ttl: .seconds(1), logger: Logger(label: "lease"))
            #expect(await lease.acquire())
            try await withTimeout(.seconds(1)) { try await lease.confirm() }
            _ = try await redis.pipeline([
                ["DEL", keys.storeWriter],
                ["HSET", keys.storeWriter, "instance", "intruder", "consumer", "m-other", "host", "elsewhere", "database", "/other.sqlite", "since", "0"],
                ["PEXPIRE", keys.storeWriter, "60000"],
            ])
            let thrown = await #expect(throws: WriterLease.Lost.self) { try await withTimeout(.seconds(10)) { try await lease.maintain() } }
            #expect(thrown?.holder?.instance == "intruder")
            #expect(!lease.isConfirmed)
            // A commit waiting on confirm() is refused at once, not held until a renewal that will never come.
            await #expect(throws: WriterLease.Lost.self) { try await withTimeout(.seconds(1)) { try await lease.confirm() } }
        }
    }

    @Test("while Redis is down the lease cannot be renewed and commits wait; after a restart (which lost the key) it is taken again and they go ahead")
    func commitsWaitForRenewal() async throws {
        let server = try await RedisServer.start()
        defer { server.stop() }
        let redis = RedisClient(configuration: server.configuration)
        let keys = uniqueKeys("lease-renew")
        try await withRunning(redis) { redis in
            try await redis.waitUntilReady()
            let lease = WriterLease(redis: redis, key: keys.storeWriter, holder: .init(consumer: "m-1", database: "/x.sqlite"),
                                    ttl: .seconds(1), logger: Logger(label: "lease"))
            #expect(await lease.acquire())
            #expect(lease.isConfirmed)
            try await withTimeout(.seconds(1)) { try await lease.confirm() }
            let maintaining = Task { try await lease.maintain() }
            defer { maintaining.cancel() }

            server.kill()
            #expect(await eventually { !lease.isConfirmed }, "the lease stays confirmed with Redis gone")
            await #expect(throws: TimeoutError.self) { try await withTimeout(.milliseconds(500)) { try await lease.confirm() } }

            try await server.restart()
            try await withTimeout(.seconds(10)) { try await lease.confirm() }
            #expect(try await lease.holder()?.instance == lease.me.instance)
        }
    }
}

@Suite("chat-messages standby", .redisServer)
struct StandbyExecutableTests {
    @Test("two chat-messages on one Redis: the second waits as a standby (logs it, /readyz 503); the first killed with -9, the second takes over once the lease expires and applies what follows")
    func killedHolder() async throws {
        let server = try RedisServer.required()
        let keys = uniqueKeys("standby")
        let (a, b) = (try TwoUserStore("standby-a"), try TwoUserStore("standby-b"))
        defer { a.remove(); b.remove() }
        func environment(_ accounts: TwoUserStore, _ consumer: String) -> [String: String] {
            ["CHAT_REDIS_URL": server.url, "CHAT_REDIS_PREFIX": keys.prefix, "CHAT_DB_PATH": accounts.database,
             "CHAT_CONSUMER_NAME": consumer, "CHAT_WRITER_LEASE": "1s"]
        }
        @Sendable func stored(_ accounts: TwoUserStore) -> Int { storedMessages(in: accounts.database) }
        try unapplyLastMigration(b.database)
        let (first, firstLog) = try launch("chat-messages", environment: environment(a, "messages-a"))
        defer { first.signal(SIGKILL); try? FileManager.default.removeItem(at: firstLog) }
        try #require(await eventually(timeout: .seconds(20)) { contents(firstLog).contains("] ready") }, "\(contents(firstLog))")
        let (second, secondLog) = try launch("chat-messages", environment: environment(b, "messages-b"))
        defer { second.signal(SIGKILL); try? FileManager.default.removeItem(at: secondLog) }
        try #require(await eventually(timeout: .seconds(20)) { contents(secondLog).contains("waiting as a standby") }, "\(contents(secondLog))")
        #expect(contents(secondLog).contains("messages-a on "), "the standby names the holder: \(contents(secondLog))")
        let port = try #require(await eventually { adminPort(secondLog) != nil } ? adminPort(secondLog) : nil)
        let (status, body) = try await PollingClient.request("GET", "http://127.0.0.1:\(port)/readyz")
        #expect(status == 503 && body.contains("standby"), "\(status) \(body)")
        #expect(try MessageStore.pendingMigrations(path: b.database).count == 1, "the standby has not migrated its file")
        #expect(!contents(secondLog).contains("migrating"), "\(contents(secondLog))")

        try await server.withClient { redis in
            try await enqueueSends(redis, keys, 0..<10)
            #expect(await eventually { stored(a) == 10 })
            #expect(stored(b) == 0)

            first.signal(SIGKILL)
            #expect(await first.wait(timeout: .seconds(5)) == 128 + SIGKILL)
            #expect(await eventually(timeout: .seconds(20)) { contents(secondLog).contains("] ready") }, "\(contents(secondLog))")
            #expect(contents(secondLog).contains("took the store's writer lease"))
            #expect(contents(secondLog).contains("migrating the store's schema") && contents(secondLog).contains(lastMigration),
                    "\(contents(secondLog))")
            #expect(contents(secondLog).contains("migrated the store's schema"), "\(contents(secondLog))")
            #expect(try MessageStore.pendingMigrations(path: b.database) == [])
            try await enqueueSends(redis, keys, 10..<15)
            #expect(await eventually { stored(b) == 5 }, "the new holder stored \(stored(b))")
            #expect(stored(a) == 10)
            let (readyStatus, _) = try await PollingClient.request("GET", "http://127.0.0.1:\(port)/readyz")
            #expect(readyStatus == 200)
        }
        second.signal(SIGTERM)
        #expect(await second.wait(timeout: .seconds(5)) == 0)
        let left = try await server.withClient { redis in try await redis.exists([keys.storeWriter]) }
        #expect(left == 0, "a graceful stop deletes the lease")
    }
}
