import ChatCore
import Hummingbird
import HummingbirdWebSocket
import Logging
import RedisClient
import ServiceLifecycle

/// A gateway: serves the REST API and Socket.IO at `/socket.io/`, publishes commands and
/// queries, receives the store's answers on `gateway:{id}`, and fans out `user:{email}`
/// to the sockets it holds.
public struct GatewayService: Service {
    private let runtime: ChatRuntime
    private let subscriber: RedisSubscriber
    public let store: StoreClient
    public let api: RESTAPI
    public let engine: EngineServer
    public let realtime: RealtimeServer
    private let onListening: (@Sendable (Int) -> Void)?

    /// `onListening` gets the port the server bound (tests bind port 0).
    public init(runtime: ChatRuntime, subscriber: RedisSubscriber, jwtSecret: String, engineConfiguration: EngineConfiguration? = nil,
                storeTimeout: Duration = .seconds(5), onListening: (@Sendable (Int) -> Void)? = nil) {
        self.runtime = runtime
        self.onListening = onListening
        self.subscriber = subscriber
        let configuration = runtime.configuration
        self.store = StoreClient(redis: runtime.redis, keys: runtime.keys, gatewayID: configuration.gatewayID, timeout: storeTimeout)
        let tokens = TokenService(secret: jwtSecret, lifetime: configuration.tokenTTL, redis: runtime.redis, keys: runtime.keys)
        self.api = RESTAPI(store: store, tokens: tokens, redis: runtime.redis, keys: runtime.keys, logger: runtime.logger)
        var engineSettings = engineConfiguration ?? EngineConfiguration()
        if engineConfiguration == nil {
            engineSettings.pingInterval = configuration.pingInterval
            engineSettings.pingTimeout = configuration.pingTimeout
            engineSettings.queueCapacity = configuration.socketQueue
        }
        var realtimeSettings = RealtimeConfiguration(configuration)
        // A replay must fit in the socket's queue with room to spare.
        realtimeSettings.syncLimit = max(1, min(500, engineSettings.queueCapacity / 2))
        self.realtime = RealtimeServer(configuration: realtimeSettings, engineConfiguration: engineSettings, store: store,
                                       tokens: tokens, redis: runtime.redis, keys: runtime.keys, subscriber: subscriber, logger: runtime.logger)
        self.engine = EngineServer(configuration: engineSettings, delegate: realtime, logger: runtime.logger)
    }

    public func run() async throws {
        guard try await ServiceStartup.prepare(runtime, groups: []) else { return }
        try await subscriber.subscribe([store.replyChannel])
        let configuration = runtime.configuration
        let logger = runtime.logger
        let onListening = self.onListening
        let router = api.makeRouter().router
        // The web client: files under CHAT_PUBLIC_DIR at `/` (index.html for `/`).
        router.add(middleware: FileMiddleware(configuration.publicDirectory, searchForIndexHtml: true, logger: logger))
        engine.addRoutes(to: router) { $0.remoteAddress }
        let webSocketRouter = Router(context: GatewayRequestContext.self)
        engine.addWebSocketRoute(to: webSocketRouter) { $0.remoteAddress }
        let app = Application(
            router: router,
            server: .http1WebSocketUpgrade(webSocketRouter: webSocketRouter, configuration: .init(ws: .init(maxFrameSize: engine.configuration.maxPayload))),
            configuration: .init(address: .hostname(configuration.httpHost, port: configuration.httpPort), serverName: nil),
            onServerRunning: { channel in
                onListening?(channel.localAddress?.port ?? 0)
                logger.info("ready", metadata: ["gateway.id": "\(configuration.gatewayID)", "http.address": "\(channel.localAddress?.description ?? "?")"])
            },
            logger: logger
        )
        try await withThrowingDiscardingTaskGroup { group in
            group.addTask { await pump() }
            group.addTask { try await engine.run() }
            group.addTask { try await realtime.run() }
            group.addTask { try await app.runService() }
        }
    }

    /// Routes what the subscriber receives: store answers, user events, lost subscriptions.
    private func pump() async {
        let userPrefix = runtime.keys.user("")
        for await event in subscriber.events.cancelOnGracefulShutdown() {
            switch event {
            case .message(let message):
                if message.channel == store.replyChannel {
                    store.handleReply(message.payload)
                } else if message.channel.hasPrefix(userPrefix) {
                    realtime.deliver(email: String(message.channel.dropFirst(userPrefix.count)), payload: message.payload)
                }
            case .resubscribed:
                realtime.resynchronize()
            }
        }
    }
}
