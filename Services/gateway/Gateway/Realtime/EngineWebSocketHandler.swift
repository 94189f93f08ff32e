import Foundation
import NIOCore
import NIOWebSocket

/// A WebSocket session's transport, run on its channel's event loop.
///
/// hummingbird-websocket hands each WebSocket to an async closure with an inbound sequence
/// and an outbound writer. Through them, every inbound frame costs a task switch, and every
/// outbound frame a task switch, a hop to the event loop and a flush of its own. A socket
/// also needs a reading task and a writing task. This handler sits in the pipeline
/// right after the frame decoder instead:
/// - it reads data frames itself and hands their Engine.IO packets to the session on the loop;
/// - when the session's queue wakes it, it writes every waiting packet and flushes once,
///   while the channel is writable (otherwise the queue fills, and a client that stays
///   too slow is closed as before);
/// - control frames (ping, pong, close) still go to hummingbird, which answers them and runs
///   the close handshake.
///
/// It talks to the closure hummingbird runs (``EngineServer``'s `serveWebSocket`) with two
/// marker frames, fired through the pipeline to that closure:
/// - `sync`, right after the handler is added. Frames read before it reached the closure
///   first. The handler holds the frames it reads until the closure has seen `sync` and
///   calls ``goLive()``, so no packet overtakes an earlier one.
/// - `end`, once the session has closed and the queue is written out. The closure then
///   closes the WebSocket with the session's reason.
final class EngineWebSocketHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = WebSocketFrame
    typealias InboundOut = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    /// Binary payloads no client can guess (random per process), so a client's frame is never taken for a marker.
    enum Marker {
        private static let prefix: [UInt8] = {
            var generator = SystemRandomNumberGenerator()
            return (0..<16).map { _ in UInt8.random(in: 0...255, using: &generator) }
        }()
        static let sync = ByteBuffer(bytes: prefix + Array("sync".utf8))
        static let end = ByteBuffer(bytes: prefix + Array("end".utf8))
    }

    private let session: EngineSession
    private let configuration: EngineConfiguration
    private var context: ChannelHandlerContext?
    /// False until the closure has read every frame that came before this handler.
    private var live = false
    private var held: [WebSocketFrame] = []
    /// A fragmented message being put together.
    private var fragments: (opcode: WebSocketOpcode, buffer: ByteBuffer)?
    private var waitingForWritability = false
    private var ended = false

    private init(session: EngineSession, configuration: EngineConfiguration) {
        self.session = session
        self.configuration = configuration
    }

    /// Adds a handler for `session` after the channel's frame decoder, fires `sync` and
    /// hands it the session's queue. `nil` when the channel has gone (or is not a WebSocket).
    static func install(for session: EngineSession, configuration: EngineConfiguration,
                        on channel: any Channel) async -> NIOLoopBound<EngineWebSocketHandler>? {
        try? await channel.eventLoop.submit {
            let handler = try add(to: channel.pipeline.syncOperations, session: session, configuration: configuration)
            return NIOLoopBound(handler, eventLoop: channel.eventLoop)
        }.get()
    }

    /// ``install(for:configuration:on:)`` on the event loop.
    static func add(to pipeline: ChannelPipeline.SynchronousOperations, session: EngineSession,
                    configuration: EngineConfiguration) throws -> EngineWebSocketHandler {
        let decoder = try pipeline.context(handlerType: ByteToMessageHandler<WebSocketFrameDecoder>.self)
        let handler = EngineWebSocketHandler(session: session, configuration: configuration)
        try pipeline.addHandler(handler, position: .after(decoder.handler))
        handler.start()
        return handler
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    private func start() {
        guard let context else { return }
        fireMarker(Marker.sync, context: context)
        let loop = context.eventLoop
        let bound = NIOLoopBound(self, eventLoop: loop)
        session.queue.attach { loop.execute { bound.value.drainQueue() } }
    }

    /// The closure has read everything before `sync`: the held frames go first, then frames are read as they come.
    func goLive() {
        guard !live else { return }
        live = true
        let frames = held
        held = []
        for frame in frames { read(frame) }
    }

    // MARK: Reading

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        switch frame.opcode {
        case .text, .binary, .continuation:
            guard live else {
                held.append(frame)
                if held.count > configuration.inboundBuffer { session.close(.inboundFlood) }
                return
            }
            read(frame)
        default:
            context.fireChannelRead(data)
        }
    }

    private func read(_ frame: WebSocketFrame) {
        var data = frame.unmaskedData
        if frame.opcode == .continuation {
            guard var partial = fragments else {
                // The rest of a message whose first frame came before this handler: hummingbird has its start.
                context?.fireChannelRead(wrapInboundOut(frame))
                context?.fireChannelReadComplete()
                return
            }
            fragments = nil
            guard partial.buffer.readableBytes + data.readableBytes <= configuration.maxPayload else {
                session.close(.payloadTooLarge)
                return
            }
            partial.buffer.writeBuffer(&data)
            if frame.fin { deliver(partial.opcode, partial.buffer) } else { fragments = partial }
            return
        }
        guard fragments == nil else {
            // A new message inside a fragmented one (RFC 6455 §5.4).
            session.close(.protocolError)
            return
        }
        if frame.fin { deliver(frame.opcode, data) } else { fragments = (frame.opcode, data) }
    }

    private func deliver(_ opcode: WebSocketOpcode, _ buffer: ByteBuffer) {
        guard opcode == .text else {
            session.receive(.binary(Data(buffer.readableBytesView)), configuration: configuration)
            return
        }
        guard let text = String(validating: buffer.readableBytesView, as: UTF8.self), let packet = EnginePacket(text: text) else {
            session.close(.protocolError)
            return
        }
        session.receive(packet, configuration: configuration)
    }

    // MARK: Writing

    /// Writes every waiting packet with one flush; after the session closed, fires `end`.
    func drainQueue() {
        guard let context, !ended else { return }
        // While the socket is not writable the queue keeps the packets (and fills, for a client that stays
        // too slow); the writability change drains it. A closed session is written out regardless.
        guard context.channel.isWritable || session.closeReason != nil else {
            waitingForWritability = true
            return
        }
        waitingForWritability = false
        let (packets, closed) = session.queue.drain()
        if !packets.isEmpty {
            for packet in packets {
                var buffer = context.channel.allocator.buffer(capacity: packet.utf8.count)
                buffer.writeString(packet)
                context.write(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .text, data: buffer)), promise: nil)
            }
            context.flush()
        }
        if closed {
            ended = true
            fireMarker(Marker.end, context: context)
        }
    }

    /// Sends a marker to the closure: NIOAsyncChannel hands reads on at the read's completion, so that is fired too.
    private func fireMarker(_ marker: ByteBuffer, context: ChannelHandlerContext) {
        context.fireChannelRead(wrapInboundOut(WebSocketFrame(fin: true, opcode: .binary, data: marker)))
        context.fireChannelReadComplete()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if waitingForWritability && context.channel.isWritable { drainQueue() }
        context.fireChannelWritabilityChanged()
    }
}
