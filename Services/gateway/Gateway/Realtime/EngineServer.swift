import ChatCore
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdWebSocket
import Logging
import NIOCore
import NIOWebSocket
import ServiceLifecycle
import Synchronization

/// The Socket.IO layer above Engine.IO: it consumes each session's packets.
public protocol EngineDelegate: Sendable {
    /// A session opened: the delegate starts consuming it (``EngineSession/consume(_:finished:)``).
    func opened(_ session: EngineSession)
}

/// An Engine.IO v4 server at `/socket.io/`: the handshake, HTTP long-polling (GET to
/// receive, POST to send, payloads joined by the record separator), WebSocket (from the
/// start, or by upgrading a polling session with the `2probe`/`3probe`/`5` exchange), and
/// server-initiated heartbeats.
public final class EngineServer: Service, Sendable {
    public static let path = "/socket.io/"

    public let configuration: EngineConfiguration
    private let delegate: any EngineDelegate
    private let logger: Logger
    private let sessions = Mutex<[String: EngineSession]>([:])
    private let accepting = Mutex(true)
    private let onSessionClosed: (@Sendable (EngineSession.CloseReason) -> Void)?

    /// `onSessionClosed` hears why each session ended (for metrics).
    public init(configuration: EngineConfiguration, delegate: any EngineDelegate, logger: Logger,
                onSessionClosed: (@Sendable (EngineSession.CloseReason) -> Void)? = nil) {
        self.onSessionClosed = onSessionClosed
        self.configuration = configuration
        self.delegate = delegate
        self.logger = logger
    }

    /// Runs the heartbeat until shutdown; then closes every session.
    public func run() async throws {
        try? await cancelWhenGracefulShutdown { await self.heartbeats() }
        closeAll()
    }

    public func session(_ id: String) -> EngineSession? { sessions.withLock { $0[id] } }

    public var sessionCount: Int { sessions.withLock { $0.count } }

    /// New sessions are refused from now on (503 to a polling handshake, no upgrade for a
    /// new WebSocket), so clients that reconnect land on another gateway.
    public func stopAccepting() { accepting.withLock { $0 = false } }

    var isAccepting: Bool { accepting.withLock { $0 } }

    /// Closes every session as the server going away: a WebSocket gets close code 1001, a
    /// poll gets the close packet, and stock clients reconnect (to another gateway behind a
    /// load balancer, since this one no longer accepts).
    public func closeAll() {
        for session in sessions.withLock({ Array($0.values) }) { session.close(.serverClosed) }
    }

    /// Pings, ping timeouts and connect deadlines of every session, once a tick (no timer per session).
    private func heartbeats() async {
        while !Task.isCancelled {
            guard (try? await Task.sleep(for: configuration.tick)) != nil else { return }
            let now = ContinuousClock.now
            for session in sessions.withLock({ Array($0.values) }) {
                switch session.heartbeat(now: now, configuration: configuration) {
                case .none: break
                case .ping: session.push(EnginePacket.ping("").encoded)
                case .timedOut: session.close(.pingTimeout)
                case .connectTimedOut: session.close(.connectTimeout)
                }
            }
        }
    }

    private func open(_ transport: EngineSession.Transport, remoteAddress: String?) -> EngineSession {
        let id = Self.newSessionID()
        let session = EngineSession(id: id, transport: transport, remoteAddress: remoteAddress, configuration: configuration) { [weak self] session, reason in
            guard let self else { return }
            self.sessions.withLock { _ = $0.removeValue(forKey: session.id) }
            self.onSessionClosed?(reason)
            self.logger.debug("engine session closed", metadata: ["engine.sid": "\(session.id)", "engine.reason": "\(reason.rawValue)"])
        }
        sessions.withLock { $0[id] = session }
        let handshake = EngineOpen(sid: id, upgrades: transport == .polling ? ["websocket"] : [],
                                   pingInterval: Int(configuration.pingInterval.milliseconds), pingTimeout: Int(configuration.pingTimeout.milliseconds),
                                   maxPayload: configuration.maxPayload)
        session.push(EnginePacket.open(ChatJSON.text(handshake)).encoded)
        delegate.opened(session)
        return session
    }

    /// 20 random bytes, base64url: unguessable, since the session id is all that identifies a polling client.
    static func newSessionID() -> String {
        var generator = SystemRandomNumberGenerator()
        let bytes = (0..<15).map { _ in UInt8.random(in: 0...255, using: &generator) }
        return TokenService.base64URL(Data(bytes))
    }

    // MARK: HTTP long-polling

    /// Adds the polling routes (GET and POST at ``path``) to `router`.
    public func addRoutes<Context: RequestContext>(to router: Router<Context>, remoteAddress: @escaping @Sendable (Context) -> String?) {
        router.get(RouterPath(stringLiteral: Self.path)) { request, context in
            await self.poll(request, remoteAddress: remoteAddress(context))
        }
        router.post(RouterPath(stringLiteral: Self.path)) { request, context in
            await self.receivePolling(request, context: context)
        }
    }

    private func check(_ request: Request, transport expected: String) -> EngineError? {
        let parameters = request.uri.queryParameters
        guard parameters.get("EIO") == "4" else { return .unsupportedProtocolVersion }
        guard let transport = parameters.get("transport"), ["polling", "websocket"].contains(transport) else { return .unknownTransport }
        return transport == expected ? nil : .badRequest
    }

    private func poll(_ request: Request, remoteAddress: String?) async -> Response {
        if let error = check(request, transport: "polling") { return Self.errorResponse(error) }
        guard let sid = request.uri.queryParameters.get("sid") else {
            guard isAccepting else { return Self.shuttingDownResponse() }
            let session = open(.polling, remoteAddress: remoteAddress)
            return await answerPoll(session)
        }
        guard let session = session(sid) else { return Self.errorResponse(.unknownSessionID) }
        guard session.transport == .polling else { return Self.errorResponse(.badRequest) }
        return await answerPoll(session)
    }

    private func answerPoll(_ session: EngineSession) async -> Response {
        guard session.beginPoll() else {
            session.close(.overlappingPolls)
            return Self.errorResponse(.badRequest)
        }
        defer { session.endPoll() }
        let body: String
        switch await session.queue.take(maximumBytes: configuration.maxPayload) {
        case .packets(let packets): body = EnginePacket.encodePayload(packets)
        case .interrupted: body = EnginePacket.noop.encoded
        case .closed: body = EnginePacket.close.encoded
        }
        return Self.text(body)
    }

    private func receivePolling<Context: RequestContext>(_ request: Request, context: Context) async -> Response {
        if let error = check(request, transport: "polling") { return Self.errorResponse(error) }
        guard let sid = request.uri.queryParameters.get("sid"), let session = session(sid) else {
            return Self.errorResponse(request.uri.queryParameters.get("sid") == nil ? .badHandshakeMethod : .unknownSessionID)
        }
        var request = request
        guard let buffer = try? await request.collectBody(upTo: configuration.maxPayload) else {
            session.close(.payloadTooLarge)
            return Response(status: .contentTooLarge, headers: [.contentType: "application/json"],
                            body: .init(byteBuffer: ByteBuffer(string: #"{"code":3,"message":"payload too large"}"#)))
        }
        guard let payload = String(validating: buffer.readableBytesView, as: UTF8.self), let packets = EnginePacket.decodePayload(payload) else {
            session.close(.protocolError)
            return Self.errorResponse(.badRequest)
        }
        for packet in packets { session.receive(packet, configuration: configuration) }
        return Self.text("ok")
    }

    static func text(_ body: String) -> Response {
        Response(status: .ok, headers: [.contentType: "text/plain; charset=UTF-8", .cacheControl: "no-store"],
                 body: .init(byteBuffer: ByteBuffer(string: body)))
    }

    static func shuttingDownResponse() -> Response {
        Response(status: .serviceUnavailable, headers: [.contentType: "application/json", .retryAfter: "1"],
                 body: .init(byteBuffer: ByteBuffer(string: #"{"code":3,"message":"Server shutting down; reconnect"}"#)))
    }

    static func errorResponse(_ error: EngineError) -> Response {
        Response(status: .init(code: error.status), headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: error.body)))
    }

    // MARK: WebSocket

    /// Adds the WebSocket route at ``path`` to `router` (the router given to the upgrade handler);
    /// `channel` gives the request's NIO channel, where ``EngineWebSocketHandler`` is installed.
    public func addWebSocketRoute<Context: WebSocketRequestContext>(to router: Router<Context>, remoteAddress: @escaping @Sendable (Context) -> String?,
                                                                    channel: @escaping @Sendable (Context) -> any Channel) {
        router.ws(RouterPath(stringLiteral: Self.path)) { request, _ in
            if self.check(request, transport: "websocket") != nil { return .dontUpgrade }
            if let sid = request.uri.queryParameters.get("sid") {
                guard let session = self.session(sid), session.transport == .polling, !session.isUpgrading else { return .dontUpgrade }
            } else if !self.isAccepting {
                return .dontUpgrade
            }
            return .upgrade([:])
        } onUpgrade: { inbound, outbound, context in
            let address = remoteAddress(context.requestContext)
            let channel = channel(context.requestContext)
            if let sid = context.request.uri.queryParameters.get("sid") {
                guard let session = self.session(sid) else { return }
                try await self.upgrade(session, inbound: inbound, outbound: outbound, channel: channel)
            } else {
                let session = self.open(.websocket, remoteAddress: address)
                await self.serveWebSocket(session, inbound: inbound.messages(maxSize: self.configuration.maxPayload).makeAsyncIterator(),
                                          outbound: outbound, channel: channel)
            }
        }
    }

    /// The upgrade of a polling session: `2probe` → `3probe`, the pending poll gets a noop, then `5`.
    private func upgrade(_ session: EngineSession, inbound: WebSocketInboundStream, outbound: WebSocketOutboundWriter, channel: any Channel) async throws {
        var messages = inbound.messages(maxSize: configuration.maxPayload).makeAsyncIterator()
        guard case .text(let probe)? = try await messages.next(), probe == EnginePacket.ping("probe").encoded, session.beginUpgrade() else {
            return
        }
        try await outbound.write(.text(EnginePacket.pong("probe").encoded))
        while true {
            guard case .text(let text)? = try await messages.next() else {
                session.abandonUpgrade()
                return
            }
            if text == EnginePacket.upgrade.encoded { break }
            // A client may answer a ping over the new transport before it upgrades.
            guard let packet = EnginePacket(text: text) else {
                session.abandonUpgrade()
                return
            }
            session.receive(packet, configuration: configuration)
        }
        session.completeUpgrade()
        await serveWebSocket(session, inbound: messages, outbound: outbound, channel: channel)
    }

    /// Serves the session over the WebSocket until either ends: ``EngineWebSocketHandler`` reads
    /// and writes packets on the channel's event loop. This task reads what came before the
    /// handler, waits for the handler's `end` marker or the client's close, and then finishes
    /// the close handshake through hummingbird.
    private func serveWebSocket(_ session: EngineSession, inbound: WebSocketInboundMessageStream.AsyncIterator, outbound: WebSocketOutboundWriter,
                                channel: any Channel) async {
        var inbound = inbound
        if let handler = await EngineWebSocketHandler.install(for: session, configuration: configuration, on: channel) {
            do {
                reading: while let message = try await inbound.next() {
                    switch message {
                    case .binary(let buffer) where buffer == EngineWebSocketHandler.Marker.sync:
                        handler.eventLoop.execute { handler.value.goLive() }
                    case .binary(let buffer) where buffer == EngineWebSocketHandler.Marker.end:
                        break reading
                    case .text(let text):
                        guard let packet = EnginePacket(text: text) else {
                            session.close(.protocolError)
                            break reading
                        }
                        session.receive(packet, configuration: configuration)
                    case .binary(let buffer):
                        session.receive(.binary(Data(buffer.readableBytesView)), configuration: configuration)
                    }
                }
            } catch {}
        }
        session.close(session.closeReason ?? .transportClosed)
        // Finish the close handshake with the reason, when it was ours.
        if let reason = session.closeReason, reason != .clientClosed, reason != .transportClosed {
            // 1008 for a client too slow to keep up, 1001 when this gateway is going away, 1009 for a message over maxPayload.
            let code: WebSocketErrorCode = switch reason {
            case .overflow: .policyViolation
            case .serverClosed: .goingAway
            case .payloadTooLarge: .messageTooLarge
            default: .normalClosure
            }
            try? await outbound.close(code, reason: reason.rawValue)
        }
    }
}
