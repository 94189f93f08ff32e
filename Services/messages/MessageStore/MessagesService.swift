import ChatCore
import Logging
import RedisClient
import ServiceLifecycle

/// The messages service: owns the SQLite store and consumes `chat:commands` in group `messages`.
///
/// At this stage it connects to Redis, creates its consumer group, reports ready and
/// waits for shutdown; the store and the command consumer arrive with the store issue.
public struct MessagesService: Service {
    private let runtime: ChatRuntime

    public init(runtime: ChatRuntime) {
        self.runtime = runtime
    }

    public func run() async throws {
        let keys = runtime.keys
        guard try await ServiceStartup.prepare(runtime, groups: [(keys.commands, RedisKeys.messagesGroup)]) else { return }
        runtime.logger.info("ready", metadata: ["redis.stream": "\(keys.commands)", "redis.group": "\(RedisKeys.messagesGroup)"])
        try? await gracefulShutdown()
    }
}
