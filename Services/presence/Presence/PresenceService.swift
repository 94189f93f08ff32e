import ChatCore
import Logging
import RedisClient
import ServiceLifecycle

/// The presence service: keeps `presence:*` keys and consumes `presence:commands` in group `presence`.
///
/// At this stage it connects to Redis, creates its consumer group, reports ready and
/// waits for shutdown; liveness and typing arrive with the presence issue.
public struct PresenceService: Service {
    private let runtime: ChatRuntime

    public init(runtime: ChatRuntime) {
        self.runtime = runtime
    }

    public func run() async throws {
        let keys = runtime.keys
        guard try await ServiceStartup.prepare(runtime, groups: [(keys.presenceCommands, RedisKeys.presenceGroup)]) else { return }
        runtime.logger.info("ready", metadata: ["redis.stream": "\(keys.presenceCommands)", "redis.group": "\(RedisKeys.presenceGroup)"])
        try? await gracefulShutdown()
    }
}
