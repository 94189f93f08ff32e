import ChatCore
import Logging
import RedisClient
import ServiceLifecycle

/// The retention worker: consumes `chat:events` in group `retention` and schedules purges.
///
/// At this stage it connects to Redis, creates its consumer group, reports ready and
/// waits for shutdown; scheduling and sweeping arrive with the retention issue.
public struct RetentionService: Service {
    private let runtime: ChatRuntime

    public init(runtime: ChatRuntime) {
        self.runtime = runtime
    }

    public func run() async throws {
        let keys = runtime.keys
        guard try await ServiceStartup.prepare(runtime, groups: [(keys.events, RedisKeys.retentionGroup)]) else { return }
        runtime.logger.info("ready", metadata: ["redis.stream": "\(keys.events)", "redis.group": "\(RedisKeys.retentionGroup)"])
        try? await gracefulShutdown()
    }
}
