import ChatCore
import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import Logging
import NIOSSL
import Operations
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
        let store = self.store
        // Ready without the messages service: with the store down a gateway still holds its
        // sockets, typing and presence, and takes sends into the stream (confirmed when the
        // store is back). Were every gateway unready then, a store restart would shut out
        // every client. `chat_gateway_store_up` tells whether the store answers.
        let operations = OperationsEndpoints(runtime: runtime)
        self.api = RESTAPI(store: store, tokens: tokens, redis: runtime.redis, keys: runtime.keys, logger: runtime.logger,
                           operations: operations, hsts: configuration.tlsCertificatePath != nil)
        var engineSettings = engineConfiguration ?? EngineConfiguration()
        if engineConfiguration == nil {
            engineSettings.pingInterval = configuration.pingInterval
            engineSettings.pingTimeout = configuration.pingTimeout
            engineSettings.queueCapacity = configuration.socketQueue
        }
        var realtimeSettings = RealtimeConfiguration(configuration)
        // A replay must fit in the socket's queue with room to spare.
        realtimeSettings.syncLimit = max(1, min(500, engineSettings.queueCapacity / 2))
        let metrics = GatewayMetrics(registry: runtime.metrics)
        self.realtime = RealtimeServer(configuration: realtimeSettings, engineConfiguration: engineSettings, store: store,
                                       tokens: tokens, redis: runtime.redis, keys: runtime.keys, subscriber: subscriber, logger: runtime.logger,
                                       metrics: metrics)
        self.engine = EngineServer(configuration: engineSettings, delegate: realtime, logger: runtime.logger,
                                   onReadsHeld: { metrics.readsHeld.increment() }) { reason in
            metrics.sessionClosed(reason.rawValue).increment()
        }
        metrics.register(on: runtime, realtime: realtime, engine: engine)
        // What the subscriber receives is routed on its connection's event loop (no task in between).
        let (realtime, userPrefix) = (self.realtime, runtime.keys.user(""))
        subscriber.handleEvents { event in Self.route(event, store: store, realtime: realtime, userPrefix: userPrefix) }
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
        let health = runtime.health
        // Engine.IO's WebSocket upgrade is the engine's own (no task per WebSocket); the rest is Hummingbird's HTTP/1.1.
        let server = EngineHTTPChannel.builder(engine: engine)
        let app = Application(
            router: router,
            server: try Self.tlsConfiguration(configuration).map { try .tls(server, tlsConfiguration: $0) } ?? server,
            configuration: .init(address: .hostname(configuration.httpHost, port: configuration.httpPort), serverName: nil),
            onServerRunning: { channel in
                onListening?(channel.localAddress?.port ?? 0)
                health.markReady()
                logger.info("ready", metadata: ["gateway.id": "\(configuration.gatewayID)", "http.address": "\(channel.localAddress?.description ?? "?")",
                                                "http.tls": "\(configuration.tlsCertificatePath != nil)"])
            },
            logger: logger
        )
        // The parts run in a group of their own, so a stop can be done in order (drain) rather
        // than by every part at once: see ``drain()``.
        var partsConfiguration = ServiceGroupConfiguration(
            services: ([realtime, engine, app] as [any Service]).map { .init(service: $0) },
            gracefulShutdownSignals: [],
            logger: logger
        )
        // Connections that still linger after the drain are cut.
        partsConfiguration.maximumGracefulShutdownDuration = .seconds(5)
        let parts = ServiceGroup(configuration: partsConfiguration)
        try await withThrowingDiscardingTaskGroup { group in
            group.addTask { try await parts.run() }
            group.addTask {
                // Cancelled (not stopped gracefully): the group is ending anyway.
                do { try await gracefulShutdown() } catch { return }
                await drain()
                await parts.triggerGracefulShutdown()
            }
        }
    }

    /// A stop in order: `/readyz` turns 503 and new sessions are refused; events that would
    /// start new work are answered "reconnect" while the sends already in flight are
    /// confirmed (up to `CHAT_SHUTDOWN_GRACE`); then every socket is closed as "going away"
    /// so clients reconnect to another gateway; then the HTTP server stops.
    public func drain() async {
        let grace = runtime.configuration.shutdownGrace
        let deadline = ContinuousClock.now + grace
        runtime.health.startDraining()
        engine.stopAccepting()
        realtime.startDraining()
        let sockets = realtime.allConnections().count
        runtime.logger.notice("draining", metadata: ["chat.sockets": "\(sockets)", "chat.pending": "\(store.pendingRequests)",
                                                     "chat.grace": "\(DurationParser.format(grace))"])
        while store.pendingRequests > 0, ContinuousClock.now < deadline, !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(20))
        }
        let unanswered = store.pendingRequests
        engine.closeAll()
        // The writers flush what is queued (confirmations included) and close the transports.
        while engine.sessionCount > 0, ContinuousClock.now < deadline, !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(20))
        }
        runtime.logger.notice("drained", metadata: ["chat.sockets.closed": "\(sockets)", "chat.unanswered": "\(unanswered)"])
    }

    /// The server's TLS settings from `CHAT_TLS_CERT`/`CHAT_TLS_KEY` (nil without them); a
    /// file that cannot be read or parsed is a ``ConfigurationError``.
    public static func tlsConfiguration(_ configuration: ChatConfiguration) throws -> TLSConfiguration? {
        guard let certificate = configuration.tlsCertificatePath, let key = configuration.tlsKeyPath else { return nil }
        do {
            let chain = try NIOSSLCertificate.fromPEMFile(certificate).map { NIOSSLCertificateSource.certificate($0) }
            return TLSConfiguration.makeServerConfiguration(certificateChain: chain, privateKey: .privateKey(try NIOSSLPrivateKey(file: key, format: .pem)))
        } catch {
            throw ConfigurationError(variable: "CHAT_TLS_CERT", expected: "a readable PEM certificate chain (and CHAT_TLS_KEY its PEM private key)",
                                     value: certificate, reason: "\(error)")
        }
    }

    /// Routes what the subscriber receives: store answers, user events, lost subscriptions.
    private static func route(_ event: RedisSubscriber.Event, store: StoreClient, realtime: RealtimeServer, userPrefix: String) {
        switch event {
        case .message(let message):
            if message.channel == store.replyChannel {
                store.handleReply(message.payload)
            } else if message.channel.hasPrefix(userPrefix) {
                realtime.deliver(email: String(message.channel.dropFirst(userPrefix.count)), payload: message.payload)
            }
        case .connectionLost:
            realtime.subscriptionLost()
        case .resubscribed:
            realtime.resynchronize()
        }
    }
}
