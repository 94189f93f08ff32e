import ChatCore
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import NIOWebSocket
import RedisClient
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
    private let onReadsHeld: (@Sendable () -> Void)?
    private let heldReads = Atomic<Int>(0)

    /// `onSessionClosed` hears why each session ended, `onReadsHeld` each time a session
    /// holds its client back (for metrics).
    public init(configuration: EngineConfiguration, delegate: any EngineDelegate, logger: Logger,
                onReadsHeld: (@Sendable () -> Void)? = nil, onSessionClosed: (@Sendable (EngineSession.CloseReason) -> Void)? = nil) {
        self.onSessionClosed = onSessionClosed
        self.onReadsHeld = onReadsHeld
        self.configuration = configuration
        self.delegate = delegate
        self.logger = logger
    }

    /// Runs the heartbeat until shutdown; then closes every session.
    public func run() async throws {
        await cancelWhenGracefulShutdown { await self.heartbeats() }
        closeAll()
    }

    public func session(_ id: String) -> EngineSession? { sessions.withLock { $0[id] } }

    public var sessionCount: Int { sessions.withLock { $0.count } }

    /// How many times a session had `inboundBuffer` packets waiting to be handled and held
    /// its client back (a WebSocket's reads held, a polling POST's answer delayed).
    public var readsHeldCount: Int { heldReads.load(ordering: .relaxed) }

    private func readsHeld() {
        heldReads.add(1, ordering: .relaxed)
        onReadsHeld?()
    }

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

    /// Pings, ping timeouts and connect deadlines of every session, once a tick (no timer per
    /// session). Ticks keep to their schedule, however long a pass over the sessions takes.
    private func heartbeats() async {
        var next = ContinuousClock.now
        while !Task.isCancelled {
            next = max(next + configuration.tick, .now)
            guard (try? await Task.sleep(until: next)) != nil else { return }
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

    private func open(_ transport: EngineSession.Transport, remoteAddress: String?, eventLoop: (any EventLoop)? = nil) -> EngineSession {
        let id = Self.newSessionID()
        let session = EngineSession(id: id, transport: transport, remoteAddress: remoteAddress, configuration: configuration,
                                    executor: eventLoop.map(EventLoopExecutor.init),
                                    onReadsHeld: { [weak self] in self?.readsHeld() }) { [weak self] session, reason in
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

    /// 15 random bytes, base64url (20 characters): unguessable, since the session id is all that identifies a polling client.
    static func newSessionID() -> String {
        // Two draws from the system's generator, not one per byte (each is a getrandom call).
        var generator = SystemRandomNumberGenerator()
        let words: (UInt64, UInt64) = (generator.next(), generator.next())
        return Base64URL.encode(withUnsafeBytes(of: words) { Array($0.prefix(15)) })
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
        check(request.uri, transport: expected)
    }

    private func check(_ uri: URI, transport expected: String) -> EngineError? {
        let parameters = uri.queryParameters
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
        guard await session.receivePost(packets, configuration: configuration) else { return Self.errorResponse(.badRequest) }
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

    /// Whether a WebSocket upgrade request for `uri` is accepted (asked by ``EngineHTTPChannel``
    /// before it answers 101): the Engine.IO path and parameters, and either a polling session
    /// that may upgrade or a server that still takes new sessions.
    func acceptsWebSocket(uri: String) -> Bool {
        let uri = URI(uri)
        guard uri.path == Self.path, check(uri, transport: "websocket") == nil else { return false }
        if let sid = uri.queryParameters.get("sid") { return upgradable(sid) != nil }
        return isAccepting
    }

    /// The polling session `sid`, if it may upgrade to a WebSocket now.
    private func upgradable(_ sid: String) -> EngineSession? {
        guard let session = session(sid), session.transport == .polling, !session.isUpgrading else { return nil }
        return session
    }

    /// An upgraded WebSocket, called by ``EngineHTTPChannel`` on the channel's event loop as
    /// the upgrade completes, before any frame is read: its session (a new one, or the
    /// polling session it upgrades) is served by ``EngineWebSocketHandler`` on that event
    /// loop, with no task, and its packets are handed to the Socket.IO layer on that loop
    /// too. The connection is closed if the session may no longer upgrade or the server
    /// takes no new sessions.
    func serveWebSocket(on channel: any Channel, uri: String) {
        let session: EngineSession
        let probing: Bool
        if let sid = URI(uri).queryParameters.get("sid") {
            guard let existing = upgradable(sid) else {
                channel.close(promise: nil)
                return
            }
            (session, probing) = (existing, true)
            session.handOver(on: channel.eventLoop)
        } else {
            guard isAccepting else {
                channel.close(promise: nil)
                return
            }
            (session, probing) = (open(.websocket, remoteAddress: channel.remoteAddress?.ipAddress, eventLoop: channel.eventLoop), false)
        }
        do {
            _ = try EngineWebSocketHandler.add(to: channel.pipeline.syncOperations, session: session, probing: probing, configuration: configuration)
        } catch {
            if !probing { session.close(.transportClosed) }
            channel.close(promise: nil)
        }
    }
}
