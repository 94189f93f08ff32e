import HTTPTypes
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import NIOHTTPTypesHTTP1
import NIOWebSocket

/// The gateway's HTTP/1.1 connections, with Engine.IO's WebSocket upgrade done here
/// instead of through hummingbird-websocket.
///
/// hummingbird-websocket keeps a task per WebSocket for as long as it is open, and a task
/// keeps the memory of its deepest call until it ends: 12–17 KiB per socket, more than
/// half of an idle socket's cost. Here an upgraded socket goes to
/// ``EngineServer/serveWebSocket(on:uri:)`` as the upgrade completes, whose
/// ``EngineWebSocketHandler`` serves it on the event loop; the connection's task then ends.
/// Every other request is Hummingbird's HTTP/1.1, set up as `HTTPServerBuilder.http1()` and
/// hummingbird-websocket's upgrade channel do it; an upgrade that is refused gets a 400.
public struct EngineHTTPChannel: HTTPChannelHandler {
    enum UpgradeResult: Sendable {
        /// Served on the event loop by then.
        case websocket
        case notUpgraded(NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>)
        case failedUpgrade(NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>)
    }

    public struct Value: ServerChildChannelValue {
        let upgradeResult: EventLoopFuture<UpgradeResult>
        public let channel: any Channel
    }

    public let responder: HTTPChannelHandler.Responder
    let engine: EngineServer

    /// The server builder for `Application(server:)` (wrap it in `.tls(...)` for HTTPS).
    public static func builder(engine: EngineServer) -> HTTPServerBuilder {
        HTTPServerBuilder { responder in EngineHTTPChannel(responder: responder, engine: engine) }
    }

    public func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        let engine = self.engine
        return channel.eventLoop.makeCompletedFuture {
            let upgradeAttempted = NIOLoopBoundBox(false, eventLoop: channel.eventLoop)
            let upgrader = NIOTypedWebSocketServerUpgrader<UpgradeResult>(
                maxFrameSize: engine.configuration.maxPayload,
                shouldUpgrade: { channel, head in
                    upgradeAttempted.value = true
                    return channel.eventLoop.makeSucceededFuture(engine.acceptsWebSocket(uri: head.uri) ? HTTPHeaders() : nil)
                },
                upgradePipelineHandler: { channel, head in
                    channel.eventLoop.makeCompletedFuture {
                        engine.serveWebSocket(on: channel, uri: head.uri)
                        return UpgradeResult.websocket
                    }
                }
            )
            let upgrades = NIOTypedHTTPServerUpgradeConfiguration(upgraders: [upgrader]) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(HTTP1ToHTTPServerCodec(secure: false))
                    try channel.pipeline.syncOperations.addHandler(HTTPConnectionStateHandler(logger: logger))
                    let http1 = try NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>(
                        wrappingChannelSynchronously: channel, configuration: .init(isOutboundHalfClosureEnabled: true))
                    return upgradeAttempted.value ? UpgradeResult.failedUpgrade(http1) : .notUpgraded(http1)
                }
            }
            var configuration = NIOUpgradableHTTPServerPipelineConfiguration<UpgradeResult>(upgradeConfiguration: upgrades)
            configuration.enablePipelining = false  // NIOAsyncChannel pipelines HTTP
            configuration.enableErrorHandling = false  // Hummingbird answers errors
            configuration.enableResponseHeaderValidation = false  // HTTPTypes validates
            let negotiated = try channel.pipeline.syncOperations.configureUpgradableHTTPServerPipeline(configuration: configuration)
            return Value(upgradeResult: negotiated, channel: channel)
        }
    }

    public func handle(value: Value, logger: Logger) async {
        do {
            switch try await value.upgradeResult.get() {
            case .notUpgraded(let http1):
                await handleHTTP(asyncChannel: http1, logger: logger)
            case .failedUpgrade(let http1):
                try await http1.executeThenClose { _, outbound in
                    try await outbound.write(contentsOf: [.head(HTTPResponse(status: .badRequest, headerFields: [.connection: "close", .contentLength: "0"])),
                                                          .end(nil)])
                }
            case .websocket:
                break
            }
        } catch {
            logger.debug("connection ended during the upgrade", metadata: ["error.type": "\(error)"])
        }
    }
}
