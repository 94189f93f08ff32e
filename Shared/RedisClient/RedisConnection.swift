#if canImport(Glibc)
import Glibc
#endif
import Logging
import NIOCore
import NIOPosix
import Synchronization

/// A caller waiting for `expected` replies, in the order its commands were written.
struct PendingReply: Sendable {
    let expected: Int
    /// How much longer than the reply timeout its first reply may take (a blocking read's
    /// `BLOCK` time); nil: as long as it takes (`BLOCK 0`).
    var allowance: TimeAmount? = .zero
    var received: [RESPValue] = []
    let continuation: CheckedContinuation<[RESPValue], any Error>
}

/// Matches replies to requests through a FIFO; the first pending caller gets the next reply.
///
/// In pub/sub mode, `message` and `pmessage` pushes are not replies: they go to `onPush`.
///
/// With a reply timeout, a connection on which callers wait and no reply has come for that
/// long (the head caller's allowance more) is closed: every caller fails with
/// ``RedisConnectionError/Code/timedOut`` and the connection reconnects.
final class RedisCommandHandler: ChannelInboundHandler {
    typealias InboundIn = RESPValue

    private var fifo = CircularBuffer<PendingReply>(initialCapacity: 64)
    private var closedError: RedisConnectionError?
    private let onPush: (@Sendable (RESPValue) -> Void)?
    private let replyTimeout: TimeAmount?
    /// When the caller at the head of the FIFO last saw progress: it became the head, or a reply arrived.
    private var headSince = NIODeadline.now()
    private var watchdog: Scheduled<Void>?

    init(onPush: (@Sendable (RESPValue) -> Void)?, replyTimeout: TimeAmount? = nil) {
        self.onPush = onPush
        self.replyTimeout = replyTimeout
    }

    /// Queues callers whose commands are about to be written; fails them at once if the channel is gone.
    func enqueue(_ pending: [PendingReply]) -> Bool {
        if let closedError {
            for p in pending { p.continuation.resume(throwing: closedError) }
            return false
        }
        if fifo.isEmpty, replyTimeout != nil { headSince = .now() }
        fifo.append(contentsOf: pending)
        return true
    }

    func channelActive(context: ChannelHandlerContext) {
        armWatchdog(context)
        context.fireChannelActive()
    }

    /// Checks the head caller's wait four times per timeout, at least every second, for as long as the channel lives.
    private func armWatchdog(_ context: ChannelHandlerContext) {
        guard let replyTimeout, closedError == nil else { return }
        let interval = TimeAmount.nanoseconds(max(min(replyTimeout.nanoseconds / 4, 1_000_000_000), 50_000_000))
        watchdog = context.eventLoop.assumeIsolated().scheduleTask(in: interval) {
            self.checkDeadline(context, replyTimeout)
            self.armWatchdog(context)
        }
    }

    private func checkDeadline(_ context: ChannelHandlerContext, _ replyTimeout: TimeAmount) {
        guard let head = fifo.first, let allowance = head.allowance else { return }
        let waited = NIODeadline.now() - headSince
        guard waited > replyTimeout + allowance else { return }
        failAll(RedisConnectionError(.timedOut, "no reply from Redis in \(Duration.nanoseconds(waited.nanoseconds)) (\(fifo.count) callers waiting); the connection is closed and reconnects"))
        context.close(promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let value = unwrapInboundIn(data)
        if let onPush, Self.isPush(value) {
            onPush(value)
            return
        }
        if replyTimeout != nil { headSince = .now() }
        guard !fifo.isEmpty else {
            context.fireErrorCaught(RedisConnectionError(.protocolError, "a reply arrived with no command waiting for it"))
            return
        }
        if fifo[fifo.startIndex].expected == 1 {
            fifo.removeFirst().continuation.resume(returning: [value])
            return
        }
        // Taken out and put back rather than appended through the subscript: CircularBuffer's
        // subscript has no in-place accessor, so that appended to a copy of the array, and a
        // pipeline of n commands copied n²/2 replies (a tenth of the store's CPU at batches of 256).
        var head = fifo.removeFirst()
        if head.received.isEmpty { head.received.reserveCapacity(head.expected) }
        head.received.append(value)
        if head.received.count == head.expected {
            head.continuation.resume(returning: head.received)
        } else {
            fifo.prepend(head)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        watchdog?.cancel()
        watchdog = nil
        failAll(RedisConnectionError(.connectionClosed, "the connection closed before the reply arrived"))
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if let protocolError = error as? RESPProtocolError {
            failAll(RedisConnectionError(.protocolError, protocolError.message))
        } else if let connectionError = error as? RedisConnectionError {
            failAll(connectionError)
        } else {
            failAll(RedisConnectionError(.connectionClosed, "\(error)"))
        }
        context.close(promise: nil)
    }

    private func failAll(_ error: RedisConnectionError) {
        if closedError == nil { closedError = error }
        while let pending = fifo.popFirst() {
            pending.continuation.resume(throwing: error)
        }
    }

    private static func isPush(_ value: RESPValue) -> Bool {
        guard case .array(let parts) = value, let kind = parts.first?.string else { return false }
        return (kind == "message" && parts.count == 3) || (kind == "pmessage" && parts.count == 4)
    }
}

/// One TCP or Unix connection to Redis with pipelining: any number of callers may send at once.
///
/// Commands from concurrent callers are encoded into one buffer and written with one
/// flush per event-loop turn; replies are matched to callers in order.
final class RedisConnection: Sendable {
    private struct Outbox: Sendable {
        var buffer: ByteBuffer
        var pending: [PendingReply] = []
        var flushScheduled = false
        var closedError: RedisConnectionError?
    }

    private enum SendAction {
        case none, scheduleFlush, fail(RedisConnectionError)
    }

    let channel: any Channel
    private let handler: NIOLoopBound<RedisCommandHandler>
    private let outbox: LockedState<Outbox>

    private init(channel: any Channel, handler: NIOLoopBound<RedisCommandHandler>) {
        self.channel = channel
        self.handler = handler
        self.outbox = LockedState(Outbox(buffer: channel.allocator.buffer(capacity: 1024)))
        channel.closeFuture.whenComplete { [outbox] _ in
            let stranded = outbox.withLock { box -> [PendingReply] in
                let error = RedisConnectionError(.connectionClosed, "the connection closed before the command was sent")
                box.closedError = box.closedError ?? error
                defer { box.pending = [] }
                return box.pending
            }
            for p in stranded {
                p.continuation.resume(throwing: RedisConnectionError(.connectionClosed, "the connection closed before the command was sent"))
            }
        }
    }

    /// Connects, then authenticates, selects the database and names the connection as configured.
    static func connect(
        to configuration: RedisConfiguration,
        on group: any EventLoopGroup,
        onPush: (@Sendable (RESPValue) -> Void)? = nil
    ) async throws -> RedisConnection {
        let bootstrap = ClientBootstrap(group: group)
            .connectTimeout(TimeAmount(configuration.connectTimeout))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(RESPReplyDecoder()))
                    try channel.pipeline.syncOperations.addHandler(RedisCommandHandler(onPush: onPush, replyTimeout: configuration.replyTimeout.map(TimeAmount.init)))
                }
            }
        let channel: any Channel
        do {
            switch configuration.endpoint {
            case .tcp(let host, let port):
                var tcp = bootstrap.channelOption(ChannelOptions.socketOption(.tcp_nodelay), value: 1)
                if let keepAlive = configuration.keepAlive {
                    let idle = max(Int(keepAlive.components.seconds), 1)
                    tcp = tcp
                        .channelOption(ChannelOptions.socketOption(.so_keepalive), value: 1)
                        .channelOption(ChannelOptions.Types.SocketOption(level: .tcp, name: .init(rawValue: Int32(TCP_KEEPIDLE))), value: idle)
                        .channelOption(ChannelOptions.Types.SocketOption(level: .tcp, name: .init(rawValue: Int32(TCP_KEEPINTVL))), value: max(idle / 3, 1))
                        .channelOption(ChannelOptions.Types.SocketOption(level: .tcp, name: .init(rawValue: Int32(TCP_KEEPCNT))), value: 3)
                }
                channel = try await tcp.connect(host: host, port: port).get()
            case .unix(let path):
                channel = try await bootstrap.connect(unixDomainSocketPath: path).get()
            }
        } catch {
            throw RedisConnectionError(.connectFailed, "\(configuration.endpoint): \(error)")
        }
        let handler = try await channel.eventLoop.submit {
            NIOLoopBound(try channel.pipeline.syncOperations.handler(type: RedisCommandHandler.self), eventLoop: channel.eventLoop)
        }.get()
        let connection = RedisConnection(channel: channel, handler: handler)
        do {
            try await connection.handshake(configuration)
        } catch {
            connection.close()
            throw error
        }
        return connection
    }

    private func handshake(_ configuration: RedisConfiguration) async throws {
        var commands: [[String]] = []
        if let password = configuration.password {
            commands.append(configuration.username.map { ["AUTH", $0, password] } ?? ["AUTH", password])
        }
        if configuration.database != 0 { commands.append(["SELECT", String(configuration.database)]) }
        if let name = configuration.clientName { commands.append(["CLIENT", "SETNAME", name]) }
        guard !commands.isEmpty else { return }
        for (command, reply) in zip(commands, try await send(commands, expectedReplies: commands.count)) {
            if case .error(let message) = reply {
                throw RedisConnectionError(.connectFailed, "\(command[0]) refused: \(message)")
            }
        }
    }

    /// Writes `commands` and returns the next `expectedReplies` replies (error replies included as values).
    /// `allowance`: how much longer than the reply timeout the first reply may take (nil: no limit).
    func send(_ commands: [[String]], expectedReplies: Int, allowance: TimeAmount? = .zero) async throws -> [RESPValue] {
        guard expectedReplies > 0 else { return [] }
        return try await withCheckedThrowingContinuation { continuation in
            let action = outbox.withLock { box -> SendAction in
                if let error = box.closedError { return .fail(error) }
                for command in commands { RESPCommandEncoder.encode(command, into: &box.buffer) }
                box.pending.append(PendingReply(expected: expectedReplies, allowance: allowance, continuation: continuation))
                if box.flushScheduled { return .none }
                box.flushScheduled = true
                return .scheduleFlush
            }
            switch action {
            case .none: break
            case .fail(let error): continuation.resume(throwing: error)
            case .scheduleFlush: channel.eventLoop.execute { self.flush() }
            }
        }
    }

    /// Runs on the event loop: moves everything staged so far to the FIFO and the socket in one write.
    private func flush() {
        let allocator = channel.allocator
        let (buffer, pending) = outbox.withLock { box -> (ByteBuffer, [PendingReply]) in
            box.flushScheduled = false
            let staged = (box.buffer, box.pending)
            box.buffer = allocator.buffer(capacity: max(1024, staged.0.readableBytes))
            box.pending = []
            return staged
        }
        guard !pending.isEmpty, handler.value.enqueue(pending) else { return }
        channel.writeAndFlush(buffer, promise: nil)
    }

    /// Closes the connection; everything waiting fails with a connection error.
    func close() {
        channel.close(promise: nil)
    }

    var isActive: Bool { channel.isActive }
}

extension TimeAmount {
    init(_ duration: Duration) {
        let (seconds, attoseconds) = duration.components
        self = .nanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
    }
}
