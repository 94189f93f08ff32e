import ChatCore
import Hummingbird
import Logging
import RedisClient
import ServiceLifecycle

/// A gateway: serves the REST API, publishes commands and queries, and receives the
/// store's answers on its own channel `gateway:{id}`.
public struct GatewayService: Service {
    private let runtime: ChatRuntime
    private let subscriber: RedisSubscriber
    public let store: StoreClient
    public let api: RESTAPI

    public init(runtime: ChatRuntime, subscriber: RedisSubscriber, jwtSecret: String) {
        self.runtime = runtime
        self.subscriber = subscriber
        let configuration = runtime.configuration
        self.store = StoreClient(redis: runtime.redis, keys: runtime.keys, gatewayID: configuration.gatewayID)
        let tokens = TokenService(secret: jwtSecret, lifetime: configuration.tokenTTL, redis: runtime.redis, keys: runtime.keys)
        self.api = RESTAPI(store: store, tokens: tokens, redis: runtime.redis, keys: runtime.keys, logger: runtime.logger)
    }

    public func run() async throws {
        guard try await ServiceStartup.prepare(runtime, groups: []) else { return }
        try await subscriber.subscribe([store.replyChannel])
        let configuration = runtime.configuration
        let logger = runtime.logger
        let app = Application(
            router: api.makeRouter().router,
            configuration: .init(address: .hostname(configuration.httpHost, port: configuration.httpPort), serverName: nil),
            onServerRunning: { channel in
                logger.info("ready", metadata: ["gateway.id": "\(configuration.gatewayID)", "http.address": "\(channel.localAddress?.description ?? "?")"])
            },
            logger: logger
        )
        try await withThrowingDiscardingTaskGroup { group in
            group.addTask { await store.pumpReplies(from: subscriber) }
            group.addTask { try await app.runService() }
        }
    }
}

