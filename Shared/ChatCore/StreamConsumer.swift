import Foundation
import Logging
import RedisClient
import ServiceLifecycle

/// The consumer-group loop every service uses: first its own pending entries (a crash
/// between processing and XACK leaves them there), then new ones; entries that a dead
/// consumer left pending are claimed (XAUTOCLAIM); a batch is acknowledged (and the
/// stream trimmed below what is still pending) only after `process` returned. A batch
/// that throws stays pending and is tried again.
public struct StreamConsumer: Sendable {
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
    public func run(redis: RedisClient, logger: Logger, process: @Sendable ([StreamEntry]) async throws -> Void) async {
        var ownPendingFirst = true
        var lastClaim = ContinuousClock.now - claimIdle
        var failures = LogThrottle()
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            do {
                if ContinuousClock.now - lastClaim >= claimIdle / 2 {
                    lastClaim = .now
                    try await claimAbandoned(redis: redis, logger: logger, process: process)
                }
                let read = try await redis.xreadgroup(group: group, consumer: consumer, streams: [(stream, ownPendingFirst ? "0" : ">")],
                                                      count: batchSize, block: ownPendingFirst ? nil : block)
                let entries = read[stream] ?? []
                if ownPendingFirst && entries.count < batchSize { ownPendingFirst = false }
                if !entries.isEmpty { try await finish(entries, redis: redis, process: process) }
                if failures.reset() { logger.notice("batches succeed again", metadata: ["redis.stream": "\(stream)"]) }
                if linger > .zero, !entries.isEmpty, entries.count < batchSize, !ownPendingFirst { try await Task.sleep(for: linger) }
            } catch is CancellationError {
                break
            } catch {
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
    }

    private func claimAbandoned(redis: RedisClient, logger: Logger, process: @Sendable ([StreamEntry]) async throws -> Void) async throws {
        var start = "0-0"
        repeat {
            let claim = try await redis.xautoclaim(stream, group: group, consumer: consumer, minIdle: claimIdle, start: start, count: batchSize)
            if !claim.entries.isEmpty {
                logger.info("claimed abandoned entries", metadata: ["redis.stream": "\(stream)", "chat.count": "\(claim.entries.count)"])
                try await finish(claim.entries, redis: redis, process: process)
            }
            start = claim.nextStart
        } while start != "0-0"
    }

    private func finish(_ entries: [StreamEntry], redis: RedisClient, process: @Sendable ([StreamEntry]) async throws -> Void) async throws {
        try await process(entries)
        switch trim {
        case .never: _ = try await redis.xack(stream, group: group, ids: entries.map(\.id))
        case .belowOwnGroup: try await redis.acknowledgeAndTrim(stream, group: group, ids: entries.map(\.id))
        case .belowAllGroups: try await redis.acknowledgeAndTrim(stream, group: group, ids: entries.map(\.id), otherGroups: true)
        }
    }
}
