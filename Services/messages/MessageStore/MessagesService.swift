import ChatCore
import Foundation
import Logging
import RedisClient
import ServiceLifecycle

/// The messages service: owns the SQLite store, applies `chat:commands` (group
/// `messages`) and answers `store:queries`.
public struct MessagesService: Service {
    private let runtime: ChatRuntime
    private let store: MessageStore
    private let subscriber: RedisSubscriber
    private let consumer: String

    /// `consumer` names this instance in the consumer group; keep it stable across restarts.
    public init(runtime: ChatRuntime, store: MessageStore, subscriber: RedisSubscriber, consumer: String) {
        self.runtime = runtime
        self.store = store
        self.subscriber = subscriber
        self.consumer = consumer
    }

    public func run() async throws {
        let keys = runtime.keys
        guard try await ServiceStartup.prepare(runtime, groups: [(keys.commands, RedisKeys.messagesGroup)]) else { return }
        let processor = CommandProcessor(store: store, redis: runtime.redis, keys: keys,
                                         configuration: .init(consumer: consumer), logger: runtime.logger,
                                         metrics: StoreMetrics(registry: runtime.metrics))
        StreamMetrics.register(runtime, stream: keys.commands, group: RedisKeys.messagesGroup)
        let responder = QueryResponder(store: store, redis: runtime.redis, subscriber: subscriber, keys: keys, logger: runtime.logger)
        runtime.logger.info("ready", metadata: ["redis.stream": "\(keys.commands)", "redis.group": "\(RedisKeys.messagesGroup)",
                                                "chat.consumer": "\(consumer)", "chat.database": "\(runtime.configuration.databasePath)"])
        runtime.health.markReady()
        try await withThrowingDiscardingTaskGroup { group in
            group.addTask { try await processor.run() }
            group.addTask { try await responder.run() }
            group.addTask { [store, logger = runtime.logger] in
                // Checkpoints beside the writer, so no commit pays for one (see MessageStore.checkpoint).
                var failures = LogThrottle()
                while !Task.isCancelled && !Task.isShuttingDownGracefully {
                    do {
                        try await store.checkpoint()
                        if failures.reset() { logger.notice("WAL checkpoints succeed again") }
                    } catch {
                        if let held = failures.admit() {
                            logger.warning("WAL checkpoint failed", metadata: ["chat.error": "\(error)", "chat.failures.unlogged": "\(held)"])
                        }
                    }
                    try? await cancelWhenGracefulShutdown { try await Task.sleep(for: .seconds(1)) }
                }
            }
        }
    }
}
