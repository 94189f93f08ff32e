import ChatCore
import Foundation
import Logging
import Prometheus
import RedisClient
import ServiceLifecycle
import Synchronization

/// The right to apply `chat:commands`: held by one messages service at a time.
///
/// Consumers of one group share its stream: a second messages service on the same Redis
/// (a stray process, a Deployment scaled to two, a new pod started beside the old one)
/// would take part of the commands and apply them to its own database file, or as a second
/// writer to the same one, and nothing would say so. So the service takes this lease before
/// it reads a command or answers a query, and keeps it while it runs:
///
/// - The lease is the hash ``RedisKeys/storeWriter`` (`messages:writer`: the holder's
///   instance id, consumer name, host, database path and since when), with a TTL
///   (`CHAT_WRITER_LEASE`, default 5 s) renewed every quarter of it. Taking it and
///   renewing it is one script: a holder renews only its own lease.
/// - A second instance waits as a **standby**: not ready (`/readyz` says who holds the
///   lease), nothing read, nothing answered, one log line naming the holder, and tries
///   again every quarter TTL (at least every second). It takes over when the holder stops
///   (a graceful stop deletes the lease at once) or dies (the lease expires within the TTL).
/// - A holder commits a batch only while its lease is known to be valid: up to 80 % of
///   the TTL after the last renewal was sent. If renewals fail (Redis down, the process
///   starved), commits wait instead of going ahead on a lease that may have expired. A
///   holder that finds the lease taken by another instance stops: the service ends with
///   an error, and whatever restarts it finds the lease held and waits as a standby.
public final class WriterLease: Sendable {
    /// Who holds the lease, as the hash records it.
    public struct Holder: Sendable, Equatable, CustomStringConvertible {
        /// Random per process start: two processes with one consumer name are still two holders.
        public var instance: String
        public var consumer: String
        public var host: String
        public var database: String
        /// Milliseconds since 1970 when the holder took the lease (as recorded; the
        /// script writes the time of taking, not this value of the instance's own).
        public var since: Int64

        public init(instance: String = Holder.newInstance(), consumer: String, host: String = ProcessInfo.processInfo.hostName,
                    database: String, since: Int64 = Date().epochMilliseconds) {
            self.instance = instance
            self.consumer = consumer
            self.host = host
            self.database = database
            self.since = since
        }

        init?(_ fields: [String: String]) {
            guard let instance = fields["instance"] else { return nil }
            self.init(instance: instance, consumer: fields["consumer"] ?? "?", host: fields["host"] ?? "?",
                      database: fields["database"] ?? "?", since: fields["since"].flatMap { Int64($0) } ?? 0)
        }

        public static func newInstance() -> String {
            String(UInt64.random(in: 0...UInt64.max), radix: 16)
        }

        public var description: String { "\(consumer) on \(host) (database \(database), instance \(instance))" }
    }

    /// The lease was taken by another instance while this one held it.
    public struct Lost: Error, CustomStringConvertible {
        public var holder: Holder?
        public var description: String {
            "the store's writer lease was taken by \(holder.map(\.description) ?? "another instance"); this instance stops applying commands"
        }
    }

    /// Takes the lease if it is free, renews it if it is ours: 1 renewed, 2 taken, 0 held by another.
    static let takeOrRenewScript = RedisScript("""
        local owner = redis.call('HGET', KEYS[1], 'instance')
        if owner == ARGV[1] then
          redis.call('PEXPIRE', KEYS[1], ARGV[2])
          return 1
        end
        if owner then return 0 end
        redis.call('DEL', KEYS[1])
        redis.call('HSET', KEYS[1], 'instance', ARGV[1], 'consumer', ARGV[3], 'host', ARGV[4], 'database', ARGV[5], 'since', ARGV[6])
        redis.call('PEXPIRE', KEYS[1], ARGV[2])
        return 2
        """)

    /// Deletes the lease if it is ours.
    static let releaseScript = RedisScript("""
        if redis.call('HGET', KEYS[1], 'instance') == ARGV[1] then return redis.call('DEL', KEYS[1]) end
        return 0
        """)

    private enum Standing { case none, held, lost(Holder?) }
    private struct State {
        var standing = Standing.none
        /// Commits may go ahead until then.
        var validUntil: ContinuousClock.Instant?
    }

    public let me: Holder
    public let ttl: Duration
    private let redis: RedisClient
    private let key: String
    private let logger: Logger
    private let state = Mutex(State())
    private let heldGauge: Gauge?

    public init(redis: RedisClient, key: String, holder: Holder, ttl: Duration, logger: Logger, metrics: PrometheusCollectorRegistry? = nil) {
        self.redis = redis
        self.key = key
        self.me = holder
        self.ttl = ttl
        self.logger = logger
        self.heldGauge = metrics?.gauge("chat_store_writer_lease", help: "1 while this messages service holds the store's writer lease (applies commands), 0 while it waits as a standby.")
        heldGauge?.set(Double(0))
    }

    /// How often the lease is renewed.
    public var renewInterval: Duration { ttl / 4 }

    /// How often a standby tries to take it: as often as it is renewed, at least every second.
    public var standbyInterval: Duration { min(renewInterval, .seconds(1)) }

    /// The lease's recorded holder, if any.
    public func holder() async throws -> Holder? {
        Holder(try await redis.hgetall(key))
    }

    /// Takes the lease, or renews it: `true` if this instance holds it now.
    func takeOrRenew() async throws -> Bool {
        let sent = ContinuousClock.now
        let reply = try await redis.run(Self.takeOrRenewScript, keys: [key], arguments: [
            me.instance, String(ttl.milliseconds), me.consumer, me.host, me.database, String(Date().epochMilliseconds),
        ])
        let outcome = reply.int ?? -1
        guard outcome == 1 || outcome == 2 else { return false }
        let previous = state.withLock { state -> Standing in
            let previous = state.standing
            state.standing = .held
            state.validUntil = sent + ttl * 0.8
            return previous
        }
        if outcome == 2, case .held = previous {
            logger.notice("the store's writer lease had lapsed (Redis restarted, or renewals failed); taken again", metadata: ["chat.lease.ttl": "\(ttl)"])
        }
        heldGauge?.set(Double(1))
        return true
    }

    /// Waits until this instance holds the lease (a standby meanwhile), and sets `standby`
    /// to the holder it waits for. `false` if cancelled or stopped first.
    public func acquire(standby: @Sendable (Holder?) -> Void = { _ in }) async -> Bool {
        var waitingFor: Holder?? = .none
        var failures = LogThrottle()
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            do {
                if try await takeOrRenew() {
                    if failures.reset() { logger.notice("Redis answers again") }
                    if waitingFor != nil { logger.notice("took the store's writer lease; applying commands", metadata: ["chat.lease.instance": "\(me.instance)"]) }
                    standby(nil)
                    return true
                }
                let holder = try await self.holder()
                if waitingFor != .some(holder) {
                    waitingFor = .some(holder)
                    standby(holder)
                    logger.warning("another messages service holds the store's writer lease: waiting as a standby, applying nothing",
                                   metadata: ["chat.lease.holder": "\(holder.map(\.description) ?? "(expired meanwhile)")",
                                              "chat.lease.ttl": "\(ttl)", "redis.key": "\(key)"])
                }
            } catch {
                if let held = failures.admit() {
                    logger.warning("could not take the store's writer lease; trying again", metadata: ["chat.error": "\(error)", "chat.failures.unlogged": "\(held)"])
                }
            }
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: self.standbyInterval) }
        }
        return false
    }

    /// Renews the lease every ``renewInterval`` until cancelled or stopped; throws ``Lost``
    /// when another instance holds it. A renewal that fails (Redis unreachable) is tried
    /// again at the next interval; meanwhile ``confirm()`` holds commits once the last
    /// renewal is too old.
    public func maintain() async throws {
        var failures = LogThrottle()
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: self.renewInterval) }
            if Task.isCancelled || Task.isShuttingDownGracefully { return }
            let renewed: Bool
            do {
                renewed = try await takeOrRenew()
            } catch {
                if let held = failures.admit() {
                    logger.warning("renewing the store's writer lease failed; commits wait once it is too old",
                                   metadata: ["chat.error": "\(error)", "chat.failures.unlogged": "\(held)"])
                }
                continue
            }
            if renewed {
                if failures.reset() { logger.notice("the store's writer lease is renewed again") }
                continue
            }
            let holder = try? await self.holder()
            state.withLock { $0.standing = .lost(holder) }
            heldGauge?.set(Double(0))
            logger.error("lost the store's writer lease", metadata: ["chat.lease.holder": "\(holder.map(\.description) ?? "?")"])
            throw Lost(holder: holder)
        }
    }

    /// Whether commits may go ahead now: the lease is held and its last renewal recent enough.
    public var isConfirmed: Bool {
        state.withLock { state in
            guard case .held = state.standing, let validUntil = state.validUntil else { return false }
            return ContinuousClock.now < validUntil
        }
    }

    /// Returns once this instance's lease is known to be valid (at once, normally); waits
    /// while renewals fail; throws ``Lost`` once another instance holds it.
    public func confirm() async throws {
        while !isConfirmed {
            if case .lost(let holder) = state.withLock({ $0.standing }) { throw Lost(holder: holder) }
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    /// Deletes the lease if this instance holds it, so a standby takes over at once; no
    /// commit is confirmed after it.
    public func release() async {
        state.withLock { if case .held = $0.standing { $0.standing = .none } }
        heldGauge?.set(Double(0))
        do {
            if try await redis.run(Self.releaseScript, keys: [key], arguments: [me.instance]).int == 1 {
                logger.info("released the store's writer lease")
            }
        } catch {
            logger.notice("could not release the store's writer lease; it expires by itself", metadata: ["chat.error": "\(error)", "chat.lease.ttl": "\(ttl)"])
        }
    }
}
