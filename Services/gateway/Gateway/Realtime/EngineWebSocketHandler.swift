import Foundation
import NIOCore
import NIOWebSocket

/// A WebSocket's Engine.IO transport, run on its channel's event loop: no task per socket.
///
/// It sits in the pipeline right after the frame decoder, put there by
/// ``EngineServer/serveWebSocket(on:uri:)`` as ``EngineHTTPChannel`` completes the upgrade,
/// before any frame is read:
/// - It reads every frame itself. Data frames become Engine.IO packets for the session
///   (fragments are joined, up to `maxPayload`). A ping gets its pong, and a close frame
///   gets the close handshake's answer, and the connection closes.
/// - When the session has `inboundBuffer` packets waiting to be handled it holds the
///   channel's reads until half of them are, so a client that sends faster than its
///   packets are handled is slowed down by TCP rather than closed.
/// - When the session's queue wakes it, it writes every waiting packet and flushes once,
///   while the channel is writable. Otherwise the queue fills, and a client that stays too
///   slow is closed for overflow.
/// - When the session ends, it writes what is left, sends a close frame with the reason's
///   code (1008 overflow or flood, 1001 server going away, 1009 message too large,
///   1002 protocol error, else 1000), and
///   closes the connection when the client answers, or after `closeWait`.
/// - When the client's side of the connection ends without a close frame (TCP FIN), the
///   connection closes at once, and the session with it (`transport closed`).
/// - A socket that upgrades a polling session starts in the probe exchange: `2probe` gets
///   `3probe` and the pending poll is answered, packets may still come until `5`, and only
///   then does the socket take the session's queue. If it fails or closes before `5`, the
///   session carries on polling.
final class EngineWebSocketHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = WebSocketFrame
    typealias OutboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    /// How long a close frame we sent waits for the client's answer before the connection is closed.
    static let closeWait: TimeAmount = .seconds(3)

    private enum Mode {
        /// Upgrading a polling session: `probed` once `2probe` was answered.
        case probing(probed: Bool)
        case serving
    }

    private let session: EngineSession
    private let configuration: EngineConfiguration
    private var context: ChannelHandlerContext?
    private var mode: Mode
    /// A fragmented message being put together.
    private var fragments: (opcode: WebSocketOpcode, buffer: ByteBuffer)?
    private var waitingForWritability = false
    private var closeSent = false
    private var closeTimer: Scheduled<Void>?
    /// The session has too many packets waiting: reads are held.
    private var readsHeld = false
    /// A read was asked for while reads were held: it is passed on when they resume.
    private var pendingRead = false

    private init(session: EngineSession, probing: Bool, configuration: EngineConfiguration) {
        self.session = session
        self.configuration = configuration
        self.mode = probing ? .probing(probed: false) : .serving
    }

    /// Adds a handler for `session` after the channel's frame decoder (on the event loop);
    /// throws if the channel has no WebSocket frame decoder.
    static func add(to pipeline: ChannelPipeline.SynchronousOperations, session: EngineSession, probing: Bool = false,
                    configuration: EngineConfiguration) throws -> EngineWebSocketHandler {
        let decoder = try pipeline.context(handlerType: ByteToMessageHandler<WebSocketFrameDecoder>.self)
        let handler = EngineWebSocketHandler(session: session, probing: probing, configuration: configuration)
        try pipeline.addHandler(handler, position: .after(decoder.handler))
        handler.start()
        return handler
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    func handlerRemoved(context: ChannelHandlerContext) {
        closeTimer?.cancel()
        self.context = nil
        // The session's queue and read hold point back at this handler (``attachQueue()``).
        if case .serving = mode { session.queue.detach() }
    }

    private func start() {
        if case .serving = mode { attachQueue() }
    }

    private func attachQueue() {
        guard let context else { return }
        let loop = context.eventLoop
        let bound = NIOLoopBound(self, eventLoop: loop)
        session.queue.attach { loop.execute { bound.value.drainQueue() } }
        session.holdReads { loop.execute { bound.value.resumeReading() } }
    }

    // MARK: Holding reads

    func read(context: ChannelHandlerContext) {
        if readsHeld {
            pendingRead = true
        } else {
            context.read()
        }
    }

    private func resumeReading() {
        readsHeld = false
        guard pendingRead, let context else { return }
        pendingRead = false
        context.read()
    }

    // MARK: Reading

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        read(unwrapInboundIn(data))
    }

    /// The client's side of the connection ended without a close frame (its process ended,
    /// or it closed the socket as it was): nothing more can come from it, not even a pong.
    /// The server lets HTTP connections half-close (Hummingbird), so without this the
    /// session stayed, its user online, until the next ping found the client gone, or
    /// until the ping timed out for a client that still read (25 to 45 s by default).
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, event == .inputClosed {
            context.close(promise: nil)
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        closeTimer?.cancel()
        switch mode {
        case .serving: session.close(.transportClosed)
        case .probing(probed: true): session.abandonUpgrade()
        case .probing(probed: false): break
        }
        context.fireChannelInactive()
    }

    private func read(_ frame: WebSocketFrame) {
        guard !closeSent || frame.opcode == .connectionClose else { return }
        var data = frame.unmaskedData
        switch frame.opcode {
        case .ping:
            write(WebSocketFrame(fin: true, opcode: .pong, data: data), flush: true)
        case .pong:
            break
        case .connectionClose:
            receivedClose(data)
        case .continuation:
            guard var partial = fragments else { return fail(.protocolError) }
            fragments = nil
            guard partial.buffer.readableBytes + data.readableBytes <= configuration.maxPayload else { return fail(.payloadTooLarge) }
            partial.buffer.writeBuffer(&data)
            if frame.fin { deliver(partial.opcode, partial.buffer) } else { fragments = partial }
        case .text, .binary:
            // A new message inside a fragmented one is a protocol error (RFC 6455 §5.4).
            guard fragments == nil else { return fail(.protocolError) }
            if frame.fin { deliver(frame.opcode, data) } else { fragments = (frame.opcode, data) }
        default:
            fail(.protocolError)
        }
    }

    private func deliver(_ opcode: WebSocketOpcode, _ buffer: ByteBuffer) {
        guard opcode == .text else {
            guard case .serving = mode else { return fail(.protocolError) }
            if !session.receive(.binary(Data(buffer.readableBytesView)), configuration: configuration) { readsHeld = true }
            return
        }
        guard let text = String(validating: buffer.readableBytesView, as: UTF8.self) else { return fail(.protocolError) }
        switch mode {
        case .serving:
            guard let packet = EnginePacket(text: text) else { return fail(.protocolError) }
            if !session.receive(packet, configuration: configuration) { readsHeld = true }
        case .probing(probed: false):
            guard text == EnginePacket.ping("probe").encoded, session.beginUpgrade() else { return fail(.protocolError) }
            mode = .probing(probed: true)
            writeText(EnginePacket.pong("probe").encoded)
            context?.flush()
        case .probing(probed: true):
            if text == EnginePacket.upgrade.encoded {
                session.completeUpgrade()
                mode = .serving
                attachQueue()
            } else if let packet = EnginePacket(text: text) {
                // A client may answer a ping over the new transport before it upgrades.
                session.receive(packet, configuration: configuration)
            } else {
                fail(.protocolError)
            }
        }
    }

    /// Bad input: a serving socket closes its session (the close frame follows from
    /// ``drainQueue()``); a socket still probing closes alone and the session keeps polling.
    private func fail(_ reason: EngineSession.CloseReason) {
        switch mode {
        case .serving:
            session.close(reason)
        case .probing(let probed):
            if probed { session.abandonUpgrade() }
            mode = .probing(probed: false)
            sendClose(Self.closeCode(reason), reason: reason.rawValue)
        }
    }

    private func receivedClose(_ data: ByteBuffer) {
        // The close handshake: answer with the client's code, then close the connection.
        if !closeSent {
            closeSent = true
            var answer = context?.channel.allocator.buffer(capacity: 2) ?? ByteBuffer()
            if data.readableBytes >= 2, let code = data.getSlice(at: data.readerIndex, length: 2) { answer = code }
            write(WebSocketFrame(fin: true, opcode: .connectionClose, data: answer), flush: true)
        }
        context?.close(promise: nil)
    }

    // MARK: Writing

    /// Writes every waiting packet with one flush; once the session closed, sends the close frame.
    func drainQueue() {
        guard let context, !closeSent else { return }
        // While the socket is not writable the queue keeps the packets (and fills, for a client that stays
        // too slow); the writability change drains it. A closed session is written out regardless.
        guard context.channel.isWritable || session.closeReason != nil else {
            waitingForWritability = true
            return
        }
        waitingForWritability = false
        let (packets, closed) = session.queue.drain()
        for packet in packets { writeText(packet) }
        if !packets.isEmpty { context.flush() }
        if closed {
            let reason = session.closeReason ?? .transportClosed
            // Closes the client asked for, or a transport already gone, get a plain 1000.
            let ours = reason != .clientClosed && reason != .transportClosed
            sendClose(Self.closeCode(reason), reason: ours ? reason.rawValue : nil)
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if waitingForWritability && context.channel.isWritable { drainQueue() }
        context.fireChannelWritabilityChanged()
    }

    static func closeCode(_ reason: EngineSession.CloseReason) -> WebSocketErrorCode {
        switch reason {
        case .overflow, .inboundFlood: .policyViolation
        case .serverClosed: .goingAway
        case .payloadTooLarge: .messageTooLarge
        case .protocolError: .protocolError
        default: .normalClosure
        }
    }

    private func sendClose(_ code: WebSocketErrorCode, reason: String?) {
        guard let context, !closeSent else { return }
        closeSent = true
        var data = context.channel.allocator.buffer(capacity: 2 + (reason?.utf8.count ?? 0))
        data.write(webSocketErrorCode: code)
        if let reason { data.writeString(reason) }
        write(WebSocketFrame(fin: true, opcode: .connectionClose, data: data), flush: true)
        let channel = context.channel
        closeTimer = context.eventLoop.scheduleTask(in: Self.closeWait) { channel.close(promise: nil) }
    }

    private func writeText(_ text: String) {
        guard let context else { return }
        var buffer = context.channel.allocator.buffer(capacity: text.utf8.count)
        buffer.writeString(text)
        context.write(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .text, data: buffer)), promise: nil)
    }

    private func write(_ frame: WebSocketFrame, flush: Bool) {
        guard let context else { return }
        context.write(wrapOutboundOut(frame), promise: nil)
        if flush { context.flush() }
    }
}
