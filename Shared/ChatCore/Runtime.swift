import Foundation
import Logging
import Prometheus
import RedisClient
import ServiceLifecycle

/// What a service is built from: its configuration, a running Redis client, a logger,
/// the registry its metrics live in and the health it reports on `/readyz`.
public struct ChatRuntime: Sendable {
    public let configuration: ChatConfiguration
    public let redis: RedisClient
    public let logger: Logger
    /// Served at `/metrics` (the gateway's port, or `CHAT_ADMIN_PORT` for the other services).
    public let metrics: PrometheusCollectorRegistry
    public let health: ServiceHealth
    /// Run before each `/metrics` answer, to refresh gauges read on demand.
    public let scrape: ScrapeHooks

    public init(configuration: ChatConfiguration, redis: RedisClient, logger: Logger,
                metrics: PrometheusCollectorRegistry = PrometheusCollectorRegistry(), health: ServiceHealth = ServiceHealth(), scrape: ScrapeHooks = ScrapeHooks()) {
        self.configuration = configuration
        self.redis = redis
        self.logger = logger
        self.metrics = metrics
        self.health = health
        self.scrape = scrape
    }

    /// The key and channel names of this deployment.
    public var keys: RedisKeys { configuration.keys }
}

/// Start-up steps every service shares.
public enum ServiceStartup {
    /// Waits for Redis (returning `false` if the service is stopped first) and creates
    /// the consumer groups the service reads, starting at the beginning of each stream.
    public static func prepare(_ runtime: ChatRuntime, groups: [(stream: String, group: String)]) async throws -> Bool {
        do {
            try await cancelWhenGracefulShutdown {
                try await runtime.redis.waitUntilReady()
            }
        } catch is CancellationError {
            return false
        } catch let error as RedisConnectionError where error.code == .shutdown {
            return false
        }
        for (stream, group) in groups {
            if try await runtime.redis.xgroupCreate(stream, group: group, startingAt: "0", makeStream: true) {
                runtime.logger.info("created consumer group", metadata: ["redis.stream": "\(stream)", "redis.group": "\(group)"])
            }
        }
        return true
    }
}
