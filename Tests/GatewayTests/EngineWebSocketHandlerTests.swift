import ChatTesting
import Foundation
@testable import Gateway
import NIOCore
import NIOEmbedded
import NIOWebSocket
import Synchronization
import Testing

/// The WebSocket transport in a channel pipeline of its own (NIO's EmbeddedChannel, so the
/// event loop and the socket's writability are the test's to drive): what it reads, what it
/// writes and when, and the markers it hands the closure hummingbird runs. The same
/// transport over real sockets is covered by RealtimeTests.
@Suite("WebSocket transport on the event loop")
@MainActor
struct EngineWebSocketHandlerTests {
    /// Stands in for hummingbird's NIOAsyncChannel: every frame the transport passes on.
    final class PassedOn: ChannelInboundHandler {
        typealias InboundIn = WebSocketFrame
        var frames: [WebSocketFrame] = []
        var readCompletes = 0
        func channelRead(context: ChannelHandlerContext, data: NIOAny) { frames.append(unwrapInboundIn(data)) }
        func channelReadComplete(context: ChannelHandlerContext) { readCompletes += 1 }
        var markers: [String] {
            frames.compactMap { frame in
                if frame.data == EngineWebSocketHandler.Marker.sync { return "sync" }
                if frame.data == EngineWebSocketHandler.Marker.end { return "end" }
                return nil
            }
        }
    }

    struct Setup {
        let channel: EmbeddedChannel
        let session: EngineSession
        let handler: EngineWebSocketHandler
        let passedOn: PassedOn
        let closed: Closed
    }

    final class Closed: @unchecked Sendable {
        private let lock = NSLock()
        private var reasons: [EngineSession.CloseReason] = []
        func add(_ reason: EngineSession.CloseReason) { lock.withLock { reasons.append(reason) } }
        var all: [EngineSession.CloseReason] { lock.withLock { reasons } }
    }

    func setUp(maxPayload: Int = 1000, inboundBuffer: Int = 256) throws -> Setup {
        var configuration = EngineConfiguration()
        configuration.maxPayload = maxPayload
        configuration.inboundBuffer = inboundBuffer
        let passedOn = PassedOn()
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandlers([WebSocketFrameEncoder(), ByteToMessageHandler(WebSocketFrameDecoder(maxFrameSize: 1 << 16)), passedOn])
        let closed = Closed()
        let session = EngineSession(id: "s1", transport: .websocket, remoteAddress: nil, configuration: configuration) { closed.add($1) }
        let handler = try EngineWebSocketHandler.add(to: channel.pipeline.syncOperations, session: session, configuration: configuration)
        return Setup(channel: channel, session: session, handler: handler, passedOn: passedOn, closed: closed)
    }

    /// A client's frame: masked, as RFC 6455 requires of clients.
    func clientFrame(_ opcode: WebSocketOpcode, _ payload: [UInt8], fin: Bool = true) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.writeInteger(UInt8(fin ? 0x80 : 0) | UInt8(webSocketOpcode: opcode))
        precondition(payload.count < 126)
        buffer.writeInteger(UInt8(0x80) | UInt8(payload.count))
        let mask: [UInt8] = [0x12, 0x34, 0x56, 0x78]
        buffer.writeBytes(mask)
        buffer.writeBytes(payload.enumerated().map { $0.element ^ mask[$0.offset % 4] })
        return buffer
    }

    func text(_ string: String, fin: Bool = true, opcode: WebSocketOpcode = .text) -> ByteBuffer {
        clientFrame(opcode, Array(string.utf8), fin: fin)
    }

    /// The text frames written to the socket so far, decoded (server frames are not masked).
    func written(_ channel: EmbeddedChannel) throws -> [String] {
        var bytes = ByteBuffer()
        while var part = try channel.readOutbound(as: ByteBuffer.self) { bytes.writeBuffer(&part) }
        var texts: [String] = []
        while let first = bytes.readInteger(as: UInt8.self), let second = bytes.readInteger(as: UInt8.self) {
            #expect(first == 0x81, "a final text frame")
            var length = Int(second & 0x7F)
            if length == 126 { length = Int(bytes.readInteger(as: UInt16.self) ?? 0) }
            texts.append(bytes.readString(length: length) ?? "?")
        }
        return texts
    }

    func inbound(_ session: EngineSession, count: Int) async -> [String] {
        let texts = Mutex<[String]>([])
        session.consume({ item in
            texts.withLock { if case .message(let text) = item { $0.append(text) } else { $0.append("<binary>") } }
        }, finished: {})
        _ = await eventually { texts.withLock { $0.count >= count } }
        return texts.withLock { $0 }
    }

    @Test("a session hands its packets over in order, one at a time, what came before consume() too; after the close the rest, then finished once")
    func consumer() async throws {
        var configuration = EngineConfiguration()
        configuration.inboundBuffer = 100
        let session = EngineSession(id: "c1", transport: .websocket, remoteAddress: nil, configuration: configuration) { _, _ in }
        session.receive(.message("early"), configuration: configuration)
        struct Seen { var texts: [String] = []; var busy = false; var overlapped = false; var finished = 0 }
        let seen = Mutex(Seen())
        session.consume({ item in
            guard case .message(let text) = item else { return }
            seen.withLock { if $0.busy { $0.overlapped = true }; $0.busy = true }
            try? await Task.sleep(for: .milliseconds(2))
            seen.withLock { $0.busy = false; $0.texts.append(text) }
        }, finished: { seen.withLock { $0.finished += 1 } })
        for index in 1...20 { session.receive(.message("m\(index)"), configuration: configuration) }
        session.close(.clientClosed)
        session.receive(.message("after the close"), configuration: configuration)
        #expect(await eventually { seen.withLock { $0.finished == 1 } })
        try await Task.sleep(for: .milliseconds(50))
        let result = seen.withLock { $0 }
        #expect(result.texts == ["early"] + (1...20).map { "m\($0)" })
        #expect(!result.overlapped)
        #expect(result.finished == 1)

        // More waiting than the inbound buffer holds: a flood, and the session closes.
        configuration.inboundBuffer = 3
        let flooded = EngineSession(id: "c2", transport: .websocket, remoteAddress: nil, configuration: configuration) { _, _ in }
        for index in 0..<4 { flooded.receive(.message("f\(index)"), configuration: configuration) }
        #expect(flooded.closeReason == .inboundFlood)
    }

    @Test("frames read before the closure saw sync are held, then go first, in order")
    func holdsUntilLive() async throws {
        let s = try setUp()
        // Installing fires sync (with a read completion, so NIOAsyncChannel hands it on).
        #expect(s.passedOn.markers == ["sync"])
        #expect(s.passedOn.readCompletes >= 1)
        try s.channel.writeInbound(text("4first"))
        try s.channel.writeInbound(text("4second"))
        s.handler.goLive()
        try s.channel.writeInbound(text("4third"))
        #expect(await inbound(s.session, count: 3) == ["first", "second", "third"])
        // Data frames are the transport's; only the marker was passed on.
        #expect(s.passedOn.frames.count == 1)
    }

    @Test("control frames go on to hummingbird; fragments are joined; binary frames arrive as binary")
    func fragmentsAndControlFrames() async throws {
        let s = try setUp()
        s.handler.goLive()
        try s.channel.writeInbound(clientFrame(.ping, [1, 2]))
        try s.channel.writeInbound(text("4hel", fin: false))
        try s.channel.writeInbound(text("lo wor", fin: false, opcode: .continuation))
        try s.channel.writeInbound(text("ld", opcode: .continuation))
        try s.channel.writeInbound(clientFrame(.binary, [9, 9]))
        #expect(await inbound(s.session, count: 2) == ["hello world", "<binary>"])
        #expect(s.passedOn.frames.map(\.opcode) == [.binary, .ping])
        #expect(s.session.closeReason == nil)
    }

    @Test("bad frames close the session with the reason: too large when joined, a message inside a message, invalid UTF-8, not Engine.IO, a flood while held")
    func badFrames() throws {
        let tooLarge = try setUp(maxPayload: 10)
        tooLarge.handler.goLive()
        try tooLarge.channel.writeInbound(text("4abcdef", fin: false))
        try tooLarge.channel.writeInbound(text("ghijk", opcode: .continuation))
        #expect(tooLarge.closed.all == [.payloadTooLarge])

        let nested = try setUp()
        nested.handler.goLive()
        try nested.channel.writeInbound(text("4abc", fin: false))
        try nested.channel.writeInbound(text("4def"))
        #expect(nested.closed.all == [.protocolError])

        let invalid = try setUp()
        invalid.handler.goLive()
        try invalid.channel.writeInbound(clientFrame(.text, [0x34, 0xFF, 0xFE]))
        #expect(invalid.closed.all == [.protocolError])

        let garbage = try setUp()
        garbage.handler.goLive()
        try garbage.channel.writeInbound(text("z"))
        #expect(garbage.closed.all == [.protocolError])

        let flood = try setUp(inboundBuffer: 3)
        for index in 0..<4 { try flood.channel.writeInbound(text("4m\(index)")) }
        #expect(flood.closed.all == [.inboundFlood])
    }

    @Test("a burst of pushes is written in order after one wake; an unwritable socket keeps them queued until it drains")
    func writes() throws {
        let s = try setUp()
        s.session.send("a")
        s.session.send("b")
        s.session.send("c")
        // Nothing is written until the event loop runs the wake.
        #expect(try written(s.channel) == [])
        s.channel.embeddedEventLoop.run()
        #expect(try written(s.channel) == ["4a", "4b", "4c"])
        #expect(s.session.queue.counts.waiting == 0)

        s.channel.isWritable = false
        s.session.send("d")
        s.session.send("e")
        s.channel.embeddedEventLoop.run()
        #expect(try written(s.channel) == [])
        #expect(s.session.queue.counts.waiting == 2)
        s.channel.isWritable = true
        s.channel.pipeline.fireChannelWritabilityChanged()
        #expect(try written(s.channel) == ["4d", "4e"])
        #expect(s.passedOn.markers == ["sync"])
    }

    @Test("a closed session is written out and ends with the end marker, even on a socket that will never drain")
    func closeWhileUnwritable() throws {
        let s = try setUp()
        s.channel.isWritable = false
        s.session.send("last words")
        s.channel.embeddedEventLoop.run()
        #expect(try written(s.channel) == [])
        s.session.close(.overflow)
        s.channel.embeddedEventLoop.run()
        #expect(try written(s.channel) == ["4last words"])
        #expect(s.passedOn.markers == ["sync", "end"])
        // Pushes after the close go nowhere, and the end is not repeated.
        s.session.send("too late")
        s.channel.embeddedEventLoop.run()
        #expect(try written(s.channel) == [])
        #expect(s.passedOn.markers == ["sync", "end"])
    }
}
