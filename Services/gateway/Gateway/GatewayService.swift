import ChatCore
import Logging
import RedisClient
import ServiceLifecycle

/// A gateway: holds client sockets, publishes commands and receives fan-out.
///
/// At this stage it connects to Redis, subscribes to its own reply channel
/// `gateway:{id}`, reports ready and waits for shutdown; HTTP and Socket.IO arrive
/// with the store and real-time issues.
public struct GatewayService: Service {
    private let runtime: ChatRuntime
    private let subscriber: RedisSubscriber

    public init(runtime: ChatRuntime, subscriber: RedisSubscriber) {
        self.runtime = runtime
        self.subscriber = subscriber
    }

    public func run() async throws {
        guard try await ServiceStartup.prepare(runtime, groups: []) else { return }
        let replyChannel = runtime.keys.gateway(runtime.configuration.gatewayID)
        try await subscriber.subscribe([replyChannel])
        runtime.logger.info("ready", metadata: ["gateway.id": "\(runtime.configuration.gatewayID)", "redis.channel": "\(replyChannel)"])
        try? await gracefulShutdown()
    }
}
