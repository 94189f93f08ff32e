import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOWebSocket

/// What a virtual socket tells the workload.
protocol VirtualSocketDelegate: AnyObject, Sendable {
    /// The CONNECT was accepted.
    func connected(_ socket: VirtualSocket)
    /// A Socket.IO EVENT (`42[...]`), as the raw packet text.
    func event(_ socket: VirtualSocket, packet: String)
    /// An Engine.IO ping arrived (answered already).
    func pinged(_ socket: VirtualSocket)
    /// The transport closed (or never opened), or the CONNECT was refused.
    func closed(_ socket: VirtualSocket, reason: String)
    /// A Socket.IO ACK (`43<id>[...]`), as the raw packet text.
    func acknowledged(_ socket: VirtualSocket, packet: String)
}

extension VirtualSocketDelegate {
    func acknowledged(_ socket: VirtualSocket, packet: String) {}
}

/// A Socket.IO client over one WebSocket, written straight on SwiftNIO so tens of
/// thousands fit in the load tool: no task per socket, a handler in the channel's
/// pipeline, its source address chosen among 127.0.0.2 ... 127.0.0.250 (each source
/// address has its own range of ephemeral ports).
final class VirtualSocket: @unchecked Sendable {
    let index: Int
    let user: Int
    /// Set by the channel's initializer, on its event loop, before any of its reads: a
    /// workload may send from `connected`. (Set when `connect`'s future completed, it was
    /// not always there yet when the CONNECT's answer came, and the send was dropped.)
    private let channelBox = NIOLockedValueBox<Channel?>(nil)
    var channel: Channel? { channelBox.withLockedValue { $0 } }
    weak var delegate: (any VirtualSocketDelegate)?

    init(index: Int, user: Int, delegate: any VirtualSocketDelegate) {
        self.index = index
        self.user = user
        self.delegate = delegate
    }

    /// Opens the WebSocket at `/socket.io/` and connects the default namespace with `token`.
    func connect(group: EventLoopGroup, host: String, port: Int, token: String) -> EventLoopFuture<Void> {
        let source = "127.0.0.\(2 + index % 249)"
        let handler = SocketIOHandler(socket: self, token: token)
        let bootstrap = ClientBootstrap(group: group)
            .connectTimeout(.seconds(60))
            .channelOption(.socketOption(.so_reuseaddr), value: 1)
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                self.channelBox.withLockedValue { $0 = channel }
                let request = UpgradeRequestHandler(host: "\(host):\(port)", path: "/socket.io/?EIO=4&transport=websocket")
                let upgrader = NIOWebSocketClientUpgrader(maxFrameSize: 1 << 20, automaticErrorHandling: true) { channel, _ in
                    channel.pipeline.addHandler(handler)
                }
                // The open packet may come in the same read as the 101: keep what follows it.
                return channel.pipeline.addHTTPClientHandlers(leftOverBytesStrategy: .forwardBytes, withClientUpgrade: (upgraders: [upgrader], completionHandler: { context in
                    context.pipeline.removeHandler(request, promise: nil)
                })).flatMap { channel.pipeline.addHandler(request) }
            }
        let bound = (try? SocketAddress(ipAddress: source, port: 0)).map { bootstrap.bind(to: $0) } ?? bootstrap
        return bound.connect(host: host, port: port).map { channel in
            channel.closeFuture.whenComplete { _ in handler.transportClosed() }
        }
    }

    /// Sends one Engine.IO packet (a Socket.IO packet is `4` + its text).
    func send(_ text: String) {
        guard let channel else { return }
        var buffer = channel.allocator.buffer(capacity: text.utf8.count)
        buffer.writeString(text)
        let frame = WebSocketFrame(fin: true, opcode: .text, maskKey: .random(), data: buffer)
        channel.writeAndFlush(frame, promise: nil)
    }

    /// Emits a Socket.IO event whose data is already JSON.
    func emit(_ event: String, json: String) { send("42[\"\(event)\",\(json)]") }

    func close() { channel?.close(promise: nil) }
}

/// Writes the upgrade request once connected.
private final class UpgradeRequestHandler: ChannelInboundHandler, RemovableChannelHandler, Sendable {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundOut = HTTPClientRequestPart
    let host: String
    let path: String

    init(host: String, path: String) {
        self.host = host
        self.path = path
    }

    func channelActive(context: ChannelHandlerContext) {
        var headers = HTTPHeaders()
        headers.add(name: "Host", value: host)
        headers.add(name: "Content-Length", value: "0")
        let head = HTTPRequestHead(version: .http1_1, method: .GET, uri: path, headers: headers)
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        // The upgrade was refused (a plain HTTP answer): give up on this socket.
        if case .head(let head) = unwrapInboundIn(data), head.status != .switchingProtocols { context.close(promise: nil) }
    }
}

/// Engine.IO and Socket.IO on the WebSocket: open → CONNECT with the token, pings
/// answered, events handed to the delegate.
private final class SocketIOHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    private weak var socket: VirtualSocket?
    private let token: String
    private var pending: ByteBuffer?
    private var closeReported = false

    init(socket: VirtualSocket, token: String) {
        self.socket = socket
        self.token = token
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        switch frame.opcode {
        case .text, .continuation:
            var data = frame.unmaskedData
            if frame.opcode == .continuation, var partial = pending {
                partial.writeBuffer(&data)
                pending = partial
            } else {
                pending = data
            }
            guard frame.fin, let complete = pending else { return }
            pending = nil
            handle(String(buffer: complete), context: context)
        case .ping:
            let pong = WebSocketFrame(fin: true, opcode: .pong, maskKey: .random(), data: frame.unmaskedData)
            context.writeAndFlush(wrapOutboundOut(pong), promise: nil)
        case .connectionClose:
            context.close(promise: nil)
        default:
            break
        }
    }

    private func handle(_ text: String, context: ChannelHandlerContext) {
        guard let socket, let first = text.utf8.first else { return }
        switch first {
        case UInt8(ascii: "0"):
            write("40{\"token\":\"\(token)\"}", context: context)
        case UInt8(ascii: "2"):
            write("3", context: context)
            socket.delegate?.pinged(socket)
        case UInt8(ascii: "4"):
            let second = text.utf8.dropFirst().first
            if second == UInt8(ascii: "2") {
                socket.delegate?.event(socket, packet: text)
            } else if second == UInt8(ascii: "3") {
                socket.delegate?.acknowledged(socket, packet: text)
            } else if second == UInt8(ascii: "0") {
                socket.delegate?.connected(socket)
            } else if second == UInt8(ascii: "4") {
                report("connect refused: \(text.prefix(200))")
                context.close(promise: nil)
            }
        case UInt8(ascii: "1"):
            context.close(promise: nil)
        default:
            break
        }
    }

    private func write(_ text: String, context: ChannelHandlerContext) {
        var buffer = context.channel.allocator.buffer(capacity: text.utf8.count)
        buffer.writeString(text)
        context.writeAndFlush(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .text, maskKey: .random(), data: buffer)), promise: nil)
    }

    func transportClosed() { report("transport closed") }

    private func report(_ reason: String) {
        guard !closeReported, let socket else { return }
        closeReported = true
        socket.delegate?.closed(socket, reason: reason)
    }
}
