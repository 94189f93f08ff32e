import ChatTesting
import Foundation
@testable import Gateway
import NIOCore
import NIOEmbedded
import NIOPosix
import NIOWebSocket
import RedisClient
import Synchronization
import Testing

/// The WebSocket transport in a channel pipeline of its own (NIO's EmbeddedChannel, so the
/// event loop and the socket's writability are the test's to drive): what it reads, what it
/// writes and when, the close handshake and the probe exchange of an upgrade. The same
/// transport over real sockets is covered by RealtimeTests.
@Suite("WebSocket transport on the event loop")
@MainActor
struct EngineWebSocketHandlerTests {
    /// Behind the transport in the pipeline: every frame it passes on (none should pass).
    final class PassedOn: ChannelInboundHandler {
        typealias InboundIn = WebSocketFrame
        var frames: [WebSocketFrame] = []
        func channelRead(context: ChannelHandlerContext, data: NIOAny) { frames.append(unwrapInboundIn(data)) }
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

    func setUp(maxPayload: Int = 1000, inboundBuffer: Int = 256, probing: Bool = false) throws -> Setup {
        var configuration = EngineConfiguration()
        configuration.maxPayload = maxPayload
        configuration.inboundBuffer = inboundBuffer
        let passedOn = PassedOn()
        let channel = EmbeddedChannel()
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        try channel.pipeline.syncOperations.addHandlers([WebSocketFrameEncoder(), ByteToMessageHandler(WebSocketFrameDecoder(maxFrameSize: 1 << 16)), passedOn])
        let closed = Closed()
        let session = EngineSession(id: "s1", transport: probing ? .polling : .websocket, remoteAddress: nil, configuration: configuration) { closed.add($1) }
        let handler = try EngineWebSocketHandler.add(to: channel.pipeline.syncOperations, session: session, probing: probing, configuration: configuration)
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

    /// The frames written to the socket so far, decoded (server frames are not masked):
    /// text frames as their text, others as `<opcode> <payload>`, a close frame as `close <code> <reason>`.
    func written(_ channel: EmbeddedChannel) throws -> [String] {
        var bytes = ByteBuffer()
        while var part = try channel.readOutbound(as: ByteBuffer.self) { bytes.writeBuffer(&part) }
        var frames: [String] = []
        while let first = bytes.readInteger(as: UInt8.self), let second = bytes.readInteger(as: UInt8.self) {
            #expect(first & 0x80 != 0, "a final frame")
            var length = Int(second & 0x7F)
            if length == 126 { length = Int(bytes.readInteger(as: UInt16.self) ?? 0) }
            guard var payload = bytes.readSlice(length: length) else { break }
            switch first & 0x0F {
            case 0x1: frames.append(payload.readString(length: payload.readableBytes) ?? "?")
            case 0x8:
                let code = payload.readInteger(as: UInt16.self).map(String.init) ?? "-"
                frames.append("close \(code) \(payload.readString(length: payload.readableBytes) ?? "")")
            case let opcode: frames.append("\(opcode) \(Array(payload.readableBytesView))")
            }
        }
        return frames
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

        // More waiting than the inbound buffer holds, with no transport that holds its reads
        // (a polling session's): a flood, and the session closes.
        configuration.inboundBuffer = 3
        let flooded = EngineSession(id: "c2", transport: .websocket, remoteAddress: nil, configuration: configuration) { _, _ in }
        for index in 0..<4 { flooded.receive(.message("f\(index)"), configuration: configuration) }
        #expect(flooded.closeReason == .inboundFlood)
    }

    @Test("a WebSocket session's packets are handled on its event loop; a polling one's on Swift's pool until an upgrade hands them over")
    func handledOnTheSocketsLoop() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let loop = group.next()
        let configuration = EngineConfiguration()
        let onLoop = Mutex<[String: Bool]>([:])
        let record: @Sendable (EngineSession.Inbound) async -> Void = { item in
            guard case .message(let text) = item else { return }
            onLoop.withLock { $0[text] = loop.inEventLoop }
        }
        let websocket = EngineSession(id: "w1", transport: .websocket, remoteAddress: nil, configuration: configuration,
                                      executor: EventLoopExecutor(loop)) { _, _ in }
        websocket.consume(record, finished: {})
        websocket.receive(.message("websocket"), configuration: configuration)
        let polling = EngineSession(id: "p1", transport: .polling, remoteAddress: nil, configuration: configuration) { _, _ in }
        polling.consume(record, finished: {})
        polling.receive(.message("polling"), configuration: configuration)
        #expect(await eventually { onLoop.withLock { $0.count == 2 } })
        polling.handOver(on: loop)
        polling.receive(.message("upgraded"), configuration: configuration)
        #expect(await eventually { onLoop.withLock { $0.count == 3 } })
        #expect(onLoop.withLock { $0 } == ["websocket": true, "polling": false, "upgraded": true])
        try await group.shutdownGracefully()
    }

    /// At the head of the pipeline: counts the reads asked of the socket.
    final class ReadCounter: ChannelOutboundHandler, Sendable {
        typealias OutboundIn = Any
        let count = Atomic(0)
        func read(context: ChannelHandlerContext) {
            count.add(1, ordering: .relaxed)
            context.read()
        }
    }

    @Test("with inboundBuffer packets waiting the socket holds its reads: a read asked for is withheld, frames already read still queue, nothing closes, a pong cannot be overdue; half handled, the read goes on; a close lets reads go on")
    func holdsReads() async throws {
        let configuration = {
            var configuration = EngineConfiguration()
            configuration.inboundBuffer = 4
            configuration.pingTimeout = .seconds(20)
            return configuration
        }()
        // A testing loop that takes work from any thread: the consumer resumes reads from Swift's pool.
        let channel = NIOAsyncTestingChannel()
        let reads = ReadCounter()
        let session = EngineSession(id: "h1", transport: .websocket, remoteAddress: nil, configuration: configuration) { _, _ in }
        try await channel.testingEventLoop.executeInContext {
            try channel.pipeline.syncOperations.addHandlers([reads, WebSocketFrameEncoder(), ByteToMessageHandler(WebSocketFrameDecoder(maxFrameSize: 1 << 16))])
            _ = try EngineWebSocketHandler.add(to: channel.pipeline.syncOperations, session: session, configuration: configuration)
        }
        try await channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1))
        let gate = Atomic(false)
        let handled = Mutex<[String]>([])
        session.consume({ item in
            while !gate.load(ordering: .relaxed) { try? await Task.sleep(for: .milliseconds(2)) }
            if case .message(let text) = item { handled.withLock { $0.append(text) } }
        }, finished: {})
        func readAsked() async throws -> Bool {
            let before = reads.count.load(ordering: .relaxed)
            try await channel.testingEventLoop.executeInContext { channel.read() }
            return reads.count.load(ordering: .relaxed) > before
        }
        #expect(try await readAsked())
        // One being handled (held at the gate) and five waiting: reads are held.
        for index in 1...6 { try await channel.writeInbound(text("4m\(index)")) }
        #expect(session.readsHeld)
        let before = reads.count.load(ordering: .relaxed)
        #expect(try await !readAsked())
        for index in 7...8 { try await channel.writeInbound(text("4m\(index)")) }
        #expect(session.closeReason == nil)
        // The pong may be behind what is not read: its deadline starts again while reads are held.
        session.namespaceConnected()
        let now = ContinuousClock.now
        #expect(session.heartbeat(now: now + .seconds(3600), configuration: configuration) == .ping)
        #expect(session.heartbeat(now: now + .seconds(7200), configuration: configuration) == .none)
        // Handled down to half the buffer: the withheld read goes on, and later ones pass.
        gate.store(true, ordering: .relaxed)
        #expect(await eventually {
            await channel.testingEventLoop.run()
            return reads.count.load(ordering: .relaxed) == before + 1
        })
        #expect(await eventually { handled.withLock { $0.count == 8 } })
        #expect(handled.withLock { $0 } == (1...8).map { "m\($0)" })
        #expect(!session.readsHeld)
        #expect(try await readAsked())
        // Held again, then closed: reads go on (the close handshake must be read).
        gate.store(false, ordering: .relaxed)
        for index in 9...14 { try await channel.writeInbound(text("4m\(index)")) }
        #expect(session.readsHeld)
        #expect(try await !readAsked())
        session.close(.serverClosed)
        #expect(!session.readsHeld)
        #expect(await eventually {
            await channel.testingEventLoop.run()
            return reads.count.load(ordering: .relaxed) == before + 3
        })
        gate.store(true, ordering: .relaxed)
        #expect(await eventually { handled.withLock { $0.count == 14 } })
    }

    @Test("frames are read in order from the first one, and none is passed on down the pipeline")
    func readsInOrder() async throws {
        let s = try setUp()
        for text in ["4first", "4second", "4third"] { try s.channel.writeInbound(self.text(text)) }
        #expect(await inbound(s.session, count: 3) == ["first", "second", "third"])
        #expect(s.passedOn.frames.isEmpty)
    }

    @Test("a ping gets its pong; fragments are joined; binary frames arrive as binary")
    func fragmentsAndControlFrames() async throws {
        let s = try setUp()
        try s.channel.writeInbound(clientFrame(.ping, [1, 2]))
        try s.channel.writeInbound(clientFrame(.pong, [3]))
        try s.channel.writeInbound(text("4hel", fin: false))
        try s.channel.writeInbound(text("lo wor", fin: false, opcode: .continuation))
        try s.channel.writeInbound(text("ld", opcode: .continuation))
        try s.channel.writeInbound(clientFrame(.binary, [9, 9]))
        #expect(await inbound(s.session, count: 2) == ["hello world", "<binary>"])
        #expect(try written(s.channel) == ["10 [1, 2]"])
        #expect(s.passedOn.frames.isEmpty)
        #expect(s.session.closeReason == nil)
    }

    @Test("the client's close frame is answered with its code, the connection closes, and so does the session")
    func clientClose() throws {
        let s = try setUp()
        try s.channel.writeInbound(clientFrame(.connectionClose, [0x03, 0xE8] + Array("bye".utf8)))
        #expect(try written(s.channel) == ["close 1000 "])
        #expect(!s.channel.isActive)
        #expect(s.closed.all == [.transportClosed])
    }

    @Test("the client's side ending without a close frame (TCP FIN, which the server lets half-close) closes the connection and the session at once; a socket still probing closes alone")
    func inputClosed() throws {
        let s = try setUp()
        s.channel.pipeline.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        #expect(!s.channel.isActive)
        #expect(s.closed.all == [.transportClosed])

        let probing = try setUp(probing: true)
        try probing.channel.writeInbound(text("2probe"))
        #expect(probing.session.isUpgrading)
        probing.channel.pipeline.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        #expect(!probing.channel.isActive)
        #expect(!probing.session.isUpgrading)
        #expect(probing.session.closeReason == nil)
    }

    @Test("bad frames close the session with the reason and its close code: too large when joined, a message inside a message, a stray continuation, invalid UTF-8, not Engine.IO")
    func badFrames() throws {
        func check(_ frames: [ByteBuffer], maxPayload: Int = 1000,
                   _ reason: EngineSession.CloseReason, _ close: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
            let s = try setUp(maxPayload: maxPayload)
            for frame in frames { try s.channel.writeInbound(frame) }
            #expect(s.closed.all == [reason], sourceLocation: sourceLocation)
            s.channel.embeddedEventLoop.run()
            #expect(try written(s.channel) == [close], sourceLocation: sourceLocation)
        }
        try check([text("4abcdef", fin: false), text("ghijk", opcode: .continuation)], maxPayload: 10, .payloadTooLarge, "close 1009 payload too large")
        try check([text("4abc", fin: false), text("4def")], .protocolError, "close 1002 protocol error")
        try check([text("def", opcode: .continuation)], .protocolError, "close 1002 protocol error")
        try check([clientFrame(.text, [0x34, 0xFF, 0xFE])], .protocolError, "close 1002 protocol error")
        try check([text("z")], .protocolError, "close 1002 protocol error")
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
        #expect(s.passedOn.frames.isEmpty)
    }

    @Test("a closed session is written out and ends with a close frame, even on a socket that will never drain; the connection closes when the client answers")
    func closeWhileUnwritable() throws {
        let s = try setUp()
        s.channel.isWritable = false
        s.session.send("last words")
        s.channel.embeddedEventLoop.run()
        #expect(try written(s.channel) == [])
        s.session.close(.overflow)
        s.channel.embeddedEventLoop.run()
        #expect(try written(s.channel) == ["4last words", "close 1008 outbound queue full"])
        // Pushes after the close go nowhere, and the close is not repeated.
        s.session.send("too late")
        s.channel.embeddedEventLoop.run()
        #expect(try written(s.channel) == [])
        #expect(s.channel.isActive)
        try s.channel.writeInbound(clientFrame(.connectionClose, [0x03, 0xF0]))
        #expect(try written(s.channel) == [])
        #expect(!s.channel.isActive)
    }

    @Test("upgrading a polling session: 2probe gets 3probe, packets before 5 still count, the queue is the socket's only after 5")
    func probeExchange() async throws {
        let s = try setUp(probing: true)
        s.session.send("still polling")
        s.channel.embeddedEventLoop.run()
        try s.channel.writeInbound(text("2probe"))
        #expect(try written(s.channel) == ["3probe"])
        #expect(s.session.isUpgrading)
        try s.channel.writeInbound(text("4before five"))
        #expect(s.session.transport == .polling)
        try s.channel.writeInbound(text("5"))
        #expect(s.session.transport == .websocket)
        s.channel.embeddedEventLoop.run()
        #expect(try written(s.channel) == ["4still polling"])
        #expect(await inbound(s.session, count: 1) == ["before five"])

        // A socket that does not start with 2probe is closed; the polling session is untouched.
        let wrong = try setUp(probing: true)
        try wrong.channel.writeInbound(text("4hello"))
        #expect(try written(wrong.channel) == ["close 1002 protocol error"])
        #expect(wrong.session.closeReason == nil)
        #expect(wrong.session.transport == .polling)
        // One that closes after 2probe gives the upgrade up.
        let gone = try setUp(probing: true)
        try gone.channel.writeInbound(text("2probe"))
        #expect(gone.session.isUpgrading)
        try await gone.channel.close().get()
        #expect(!gone.session.isUpgrading)
        #expect(gone.session.closeReason == nil)
    }
}
