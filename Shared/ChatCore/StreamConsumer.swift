import Foundation
import Logging
import RedisClient
import ServiceLifecycle
import Synchronization

/// The consumer-group loop every service uses: first its own pending entries (a crash
/// between processing and XACK leaves them there), then new ones; entries that a dead
/// consumer left pending are claimed (XAUTOCLAIM); a batch is acknowledged (and the
/// stream trimmed below what is still pending) only after `process` returned. A batch
/// that throws stays pending and is tried again.
///
/// A consumer whose batches end in slow I/O (the store: publishing what a batch did) can
/// overlap batches with ``runOverlapping(redis:logger:process:)``: `process` returns what is
/// left to do (a ``FollowUp``), which runs while the next batch is read and processed.
/// Follow-ups run one at a time in batch order, and a batch is acknowledged after its own.
public struct StreamConsumer: Sendable {
    /// What is left of a batch once `process` returned; the batch is acknowledged after it.
    public typealias FollowUp = @Sendable () async throws -> Void
    /// Waits for the previous batch's follow-up and acknowledgement, and throws what they threw.
    public typealias Settle = @Sendable () async throws -> Void

    public var stream: String
    public var group: String
    public var consumer: String
    public var batchSize = 256
    public var block: Duration = .seconds(1)
    public var claimIdle: Duration = .seconds(30)
    public var retryDelay: Duration = .milliseconds(200)
    /// How the stream is trimmed after each batch.
    public enum Trimming: Sendable {
        /// Not by this consumer.
        case never
        /// Below what this group still needs (its oldest pending entry, or the entries it
        /// has not been given yet): for a stream this group alone reads.
        case belowOwnGroup
        /// Below what any group of the stream still needs: for a stream several groups read.
        case belowAllGroups
    }
    public var trim = Trimming.belowOwnGroup
    /// After a batch smaller than ``batchSize``, wait this long before reading again, so a
    /// trickle of entries is read in batches instead of a read, a process and an
    /// acknowledgement each. For consumers that a short delay does not hurt.
    public var linger: Duration = .zero

    public init(stream: String, group: String, consumer: String) {
        self.stream = stream
        self.group = group
        self.consumer = consumer
    }

    /// Runs until cancelled or the service group shuts down.
    public func run(redis: RedisClient, logger: Logger, process: @Sendable @escaping ([StreamEntry]) async throws -> Void) async {
        await run(redis: redis, logger: logger, overlapping: false) { entries, _ in
            try await process(entries)
            return {}
        }
    }

    /// Runs until cancelled or the service group shuts down, each batch's follow-up (and
    /// acknowledgement) overlapping the next batch's read and `process`. `process` calls
    /// the `Settle` it is given before it does anything that must come after the previous
    /// batch's follow-up (for the store: announcing something directly). If a follow-up
    /// or acknowledgement fails, the batch processed meanwhile is not followed up either:
    /// both stay pending and are read again.
    public func runOverlapping(redis: RedisClient, logger: Logger,
                               process: @Sendable @escaping ([StreamEntry], _ settle: @escaping Settle) async throws -> FollowUp) async {
        await run(redis: redis, logger: logger, overlapping: true, process: process)
    }

    private func run(redis: RedisClient, logger: Logger, overlapping: Bool,
                     process: @Sendable @escaping ([StreamEntry], _ settle: @escaping Settle) async throws -> FollowUp) async {
        var ownPendingFirst = true
        var lastClaim = ContinuousClock.now - claimIdle
        var failures = LogThrottle()
        let previous = InFlight()
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            do {
                if ContinuousClock.now - lastClaim >= claimIdle / 2 {
                    lastClaim = .now
                    try await previous.settle()
                    try await claimAbandoned(redis: redis, logger: logger, process: process, previous: previous)
                }
                // Reading its own pending entries again, the consumer must not see those of a follow-up still running.
                if ownPendingFirst { try await previous.settle() }
                let read = try await redis.xreadgroup(group: group, consumer: consumer, streams: [(stream, ownPendingFirst ? "0" : ">")],
                                                      count: batchSize, block: ownPendingFirst ? nil : block)
                let entries = read[stream] ?? []
                if ownPendingFirst && entries.count < batchSize { ownPendingFirst = false }
                if !entries.isEmpty { try await finish(entries, redis: redis, process: process, previous: previous) }
                // The follow-up stays in flight only to overlap the next batch: after an empty read a
                // follow-up that failed is found now, not when the next entry comes.
                if !overlapping || entries.isEmpty { try await previous.settle() }
                if failures.reset() { logger.notice("batches succeed again", metadata: ["redis.stream": "\(stream)"]) }
                if linger > .zero, !entries.isEmpty, entries.count < batchSize, !ownPendingFirst { try await Task.sleep(for: linger) }
            } catch is CancellationError {
                break
            } catch let error as RedisServerError where error.prefix == "NOGROUP" {
                // Redis lost its data (restarted without persistence, or replaced): the stream and
                // its group are gone, and nothing would ever be read again. The group is created
                // again from the stream's start, so what was added since (sends made meanwhile,
                // which made the stream anew) is read; what the lost stream held is gone with it.
                await previous.drain()
                if Task.isCancelled || Task.isShuttingDownGracefully { break }
                do {
                    if try await redis.xgroupCreate(stream, group: group, startingAt: "0", makeStream: true) {
                        logger.warning("the consumer group was gone (Redis lost its data?); created it again, reading the stream from its start",
                                       metadata: ["redis.stream": "\(stream)", "redis.group": "\(group)", "chat.error": "\(error)"])
                    }
                } catch {
                    logger.warning("the consumer group was gone and could not be created again; retried", metadata: ["chat.error": "\(error)"])
                }
                ownPendingFirst = true
                try? await Task.sleep(for: retryDelay)
            } catch {
                await previous.drain()
                if Task.isCancelled || Task.isShuttingDownGracefully { break }
                if let held = failures.admit() {
                    logger.warning("batch failed; it stays pending and is retried", metadata: [
                        "redis.stream": "\(stream)", "chat.error": "\(error)", "chat.failures.unlogged": "\(held)",
                    ])
                }
                ownPendingFirst = true
                try? await Task.sleep(for: retryDelay)
            }
        }
        // What the last batch left to do still runs (and acknowledges it) before the consumer stops.
        await previous.drain()
    }

    private func claimAbandoned(redis: RedisClient, logger: Logger, process: @Sendable ([StreamEntry], _ settle: @escaping Settle) async throws -> FollowUp,
                                previous: InFlight) async throws {
        var start = "0-0"
        repeat {
            let claim = try await redis.xautoclaim(stream, group: group, consumer: consumer, minIdle: claimIdle, start: start, count: batchSize)
            if !claim.entries.isEmpty {
                logger.info("claimed abandoned entries", metadata: ["redis.stream": "\(stream)", "chat.count": "\(claim.entries.count)"])
                try await finish(claim.entries, redis: redis, process: process, previous: previous)
                try await previous.settle()
            }
            start = claim.nextStart
        } while start != "0-0"
    }

    /// Processes a batch, waits for the previous batch's follow-up, and starts this one's
    /// (its acknowledgement last).
    private func finish(_ entries: [StreamEntry], redis: RedisClient, process: @Sendable ([StreamEntry], _ settle: @escaping Settle) async throws -> FollowUp,
                        previous: InFlight) async throws {
        let followUp = try await process(entries, previous.settle)
        try await previous.settle()
        previous.start {
            try await followUp()
            try await acknowledge(entries, redis: redis)
        }
    }

    private func acknowledge(_ entries: [StreamEntry], redis: RedisClient) async throws {
        switch trim {
        case .never: _ = try await redis.xack(stream, group: group, ids: entries.map(\.id))
        case .belowOwnGroup: try await redis.acknowledgeAndTrim(stream, group: group, ids: entries.map(\.id))
        case .belowAllGroups: try await redis.acknowledgeAndTrim(stream, group: group, ids: entries.map(\.id), otherGroups: true)
        }
    }
}

/// The follow-up (and acknowledgement) of the last batch, while it runs.
private final class InFlight: Sendable {
    private let task = Mutex<Task<Void, any Error>?>(nil)

    func start(_ work: @Sendable @escaping () async throws -> Void) {
        task.withLock { $0 = Task { try await work() } }
    }

    /// Waits for it, and throws what it threw. Cancelling the waiting task cancels it.
    @Sendable func settle() async throws {
        guard let running = task.withLock({ $0.take() }) else { return }
        try await withTaskCancellationHandler { try await running.value } onCancel: { running.cancel() }
    }

    /// Waits for it, whatever it does.
    func drain() async {
        try? await settle()
    }
}
