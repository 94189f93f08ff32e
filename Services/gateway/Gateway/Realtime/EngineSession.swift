import DequeModule
import Foundation
import NIOCore
import RedisClient
import Synchronization

/// One Engine.IO connection: its transport (long-polling, possibly upgraded to
/// WebSocket, or WebSocket from the start), its outbound queue, the heartbeat, and the
/// packets it received, handed in order to its consumer (``consume(_:finished:)``).
public final class EngineSession: Sendable {
    public enum Transport: String, Sendable {
        case polling
        case websocket
    }

    /// Why a session ended (logged, and used by tests).
    public enum CloseReason: String, Sendable {
        case clientClosed = "client closed"
        case transportClosed = "transport closed"
        case pingTimeout = "ping timeout"
        case overflow = "outbound queue full"
        case inboundFlood = "too many unprocessed packets"
        case protocolError = "protocol error"
        case overlappingPolls = "overlapping polls"
        case payloadTooLarge = "payload too large"
        case serverClosed = "server shutting down"
        case connectTimeout = "no CONNECT in time"
    }

    /// What arrives from the client, for the Socket.IO layer.
    public enum Inbound: Sendable {
        case message(String)
        case binary(Data)
    }

    private struct State {
        var transport: Transport
        var upgrading = false
        var polling = false
        var closed: CloseReason?
        var nextPing: ContinuousClock.Instant
        var awaitingPongSince: ContinuousClock.Instant?
        /// Until the client connects a namespace: when the session is closed for not doing so.
        var connectDeadline: ContinuousClock.Instant?
    }

    /// What arrived and is not handled yet, and who handles it.
    private struct Reading {
        var items = Deque<Inbound>()
        var handle: (@Sendable (Inbound) async -> Void)?
        var finished: (@Sendable () -> Void)?
        /// A task is handing items over.
        var running = false
        /// The session closed: nothing more arrives.
        var ended = false
        var announcedEnd = false
        /// The transport stops reading when told to and reads again when this is called
        /// (a WebSocket): it holds reads instead of the session closing as a flood.
        var resumeReading: (@Sendable () -> Void)?
        /// Polling POSTs whose answer waits for the queue to come down.
        var postsWaiting: [CheckedContinuation<Void, Never>] = []
        /// Reading is held: the queue reached `inboundLimit`.
        var held = false

        /// Held reads go on, and waiting POSTs are answered (a closure to call after the lock).
        mutating func release() -> (@Sendable () -> Void)? {
            guard held else { return nil }
            held = false
            let (reader, posts) = (resumeReading, postsWaiting)
            postsWaiting = []
            return {
                reader?()
                for post in posts { post.resume() }
            }
        }
    }

    public let id: String
    public let remoteAddress: String?
    let queue: OutboundQueue
    private let inboundLimit: Int
    private let reading = Mutex(Reading())
    private let state: Mutex<State>
    private let onClose: @Sendable (EngineSession, CloseReason) -> Void
    private let onReadsHeld: (@Sendable () -> Void)?
    /// Where the packets are handed over: the WebSocket's event loop (from the start, or from
    /// an upgrade's probe on), or Swift's global pool while the session only polls.
    private let executor: Mutex<EventLoopExecutor?>

    init(id: String, transport: Transport, remoteAddress: String?, configuration: EngineConfiguration,
         executor: EventLoopExecutor? = nil, onReadsHeld: (@Sendable () -> Void)? = nil,
         onClose: @escaping @Sendable (EngineSession, CloseReason) -> Void) {
        self.id = id
        self.executor = Mutex(executor)
        self.remoteAddress = remoteAddress
        self.queue = OutboundQueue(capacity: configuration.queueCapacity, maximumBytes: configuration.queueBytes)
        self.inboundLimit = configuration.inboundBuffer
        let now = ContinuousClock.now
        self.state = Mutex(State(transport: transport, nextPing: now + configuration.pingInterval, connectDeadline: now + configuration.connectTimeout))
        self.onClose = onClose
        self.onReadsHeld = onReadsHeld
    }

    public var transport: Transport { state.withLock { $0.transport } }
    public var closeReason: CloseReason? { state.withLock { $0.closed } }
    var isUpgrading: Bool { state.withLock { $0.upgrading } }

    // MARK: Sending

    /// Queues a Socket.IO packet (as an Engine.IO message). On overflow the session closes.
    @discardableResult
    func send(_ socketPacket: String, _ priority: OutboundQueue.Priority = .essential) -> OutboundQueue.PushResult {
        push(EnginePacket.message(socketPacket).encoded, priority)
    }

    @discardableResult
    func push(_ encoded: String, _ priority: OutboundQueue.Priority = .essential) -> OutboundQueue.PushResult {
        let result = queue.push(encoded, priority)
        if result == .overflow { close(.overflow) }
        return result
    }

    // MARK: Receiving

    /// Handles a packet from either transport. `false`: the transport that holds reads
    /// (``holdReads(resume:)``) must stop reading until it is told to resume.
    @discardableResult
    func receive(_ packet: EnginePacket, configuration: EngineConfiguration) -> Bool {
        receive(packet, configuration: configuration, bounded: true)
    }

    /// `bounded`: a packet that finds `inboundLimit` packets waiting closes a session whose
    /// transport does not hold its reads.
    private func receive(_ packet: EnginePacket, configuration: EngineConfiguration, bounded: Bool) -> Bool {
        switch packet {
        case .message(let text):
            return deliver(.message(text), bounded: bounded)
        case .binary(let data):
            return deliver(.binary(data), bounded: bounded)
        case .pong:
            state.withLock { s in
                s.awaitingPongSince = nil
                s.nextPing = .now + configuration.pingInterval
            }
        case .close:
            close(.clientClosed)
        case .ping, .noop, .upgrade, .open:
            // A ping outside an upgrade probe, or packets only a server sends: ignored, as the reference server does.
            break
        }
        return true
    }

    /// Queues a packet for the consumer. With `inboundLimit` packets waiting, a transport
    /// that holds reads is told to stop reading (what it already read still queues; a
    /// WebSocket's is at most one read's worth), a polling POST's answer waits
    /// (``receivePost(_:configuration:)``), and a packet from anywhere else (a WebSocket
    /// still probing) closes the session as a flood.
    private func deliver(_ item: Inbound, bounded: Bool) -> Bool {
        enum Outcome { case queued(start: Bool, hold: Bool, first: Bool), flood, ended }
        let outcome = reading.withLock { r -> Outcome in
            if r.ended { return .ended }
            let holds = r.resumeReading != nil || !bounded
            if r.items.count >= inboundLimit, !holds { return .flood }
            r.items.append(item)
            let hold = r.items.count >= inboundLimit && holds
            let first = hold && !r.held
            if hold { r.held = true }
            return .queued(start: Self.claimRun(&r), hold: hold, first: first)
        }
        switch outcome {
        case .queued(let start, let hold, let first):
            if first { onReadsHeld?() }
            if start { startConsumer() }
            return !hold
        case .flood:
            close(.inboundFlood)
            return true
        case .ended:
            return true
        }
    }

    /// The transport holds its reads when the session has `inboundLimit` packets waiting
    /// (``receive(_:configuration:)`` returns `false`), and `resume` is called once the
    /// consumer has brought them down to half of that: TCP then slows the client down
    /// instead of the session closing as a flood. A WebSocket calls it as it starts serving.
    func holdReads(resume: @escaping @Sendable () -> Void) {
        reading.withLock { $0.resumeReading = resume }
    }

    /// Reads are held: the client's pong may be waiting behind packets not read yet.
    public var readsHeld: Bool { reading.withLock { $0.held } }

    /// A polling POST's packets, all queued; with `inboundLimit` packets waiting, the answer
    /// waits until the consumer has brought them down to half (or the session ends), so a
    /// client that sends one POST at a time, as Engine.IO clients do, is slowed down. A
    /// POST that finds `inboundLimit` packets already waiting (sent without waiting for the
    /// answer to the one before) closes the session as a flood: `false`.
    func receivePost(_ packets: [EnginePacket], configuration: EngineConfiguration) async -> Bool {
        guard reading.withLock({ $0.ended || $0.items.count < inboundLimit }) else {
            close(.inboundFlood)
            return false
        }
        for packet in packets { _ = receive(packet, configuration: configuration, bounded: false) }
        await withCheckedContinuation { (post: CheckedContinuation<Void, Never>) in
            let answerNow = reading.withLock { r -> Bool in
                guard r.held, !r.ended else { return true }
                r.postsWaiting.append(post)
                return false
            }
            if answerNow { post.resume() }
        }
        return true
    }

    /// Hands every packet that arrives to `handle`, in order and one at a time, then calls
    /// `finished` once, after the last one, when the session has closed. The handing over
    /// runs on a task that exists only while there is something to hand over, so an idle
    /// socket holds no task (a task keeps the memory of its deepest call until it ends).
    /// Packets that arrived before this call wait for it. Call it once.
    public func consume(_ handle: @escaping @Sendable (Inbound) async -> Void, finished: @escaping @Sendable () -> Void) {
        let start = reading.withLock { r -> Bool in
            r.handle = handle
            r.finished = finished
            return Self.claimRun(&r)
        }
        if start { startConsumer() }
    }

    /// True when the caller must start the consumer task: there is a consumer, none runs, and there is work.
    private static func claimRun(_ r: inout Reading) -> Bool {
        guard r.handle != nil, !r.running, !r.items.isEmpty || (r.ended && !r.announcedEnd) else { return false }
        r.running = true
        return true
    }

    /// From now on the packets are handed over on `eventLoop` (the upgrading WebSocket's).
    /// A hand-over already under way finishes where it runs; the next one starts there.
    func handOver(on eventLoop: any EventLoop) {
        executor.withLock { $0 = EventLoopExecutor(eventLoop) }
    }

    private func startConsumer() {
        if let executor = executor.withLock({ $0 }) {
            Task(executorPreference: executor) { await self.runConsumer() }
        } else {
            Task { await self.runConsumer() }
        }
    }

    private func runConsumer() async {
        enum Next { case item(Inbound, @Sendable (Inbound) async -> Void, resume: (@Sendable () -> Void)?), end(@Sendable () -> Void), stop }
        let resumeAt = inboundLimit / 2
        while true {
            let next = reading.withLock { r -> Next in
                if !r.items.isEmpty, let handle = r.handle {
                    let item = r.items.removeFirst()
                    return .item(item, handle, resume: r.items.count <= resumeAt ? r.release() : nil)
                }
                r.running = false
                if r.ended, !r.announcedEnd, let finished = r.finished {
                    r.announcedEnd = true
                    // Nothing more is handed over: the consumer's closures (which hold its
                    // connection, and the connection this session) go, so neither is kept alive by the other.
                    r.handle = nil
                    r.finished = nil
                    return .end(finished)
                }
                return .stop
            }
            switch next {
            case .item(let item, let handle, let resume):
                resume?()
                await handle(item)
            case .end(let finished): return finished()
            case .stop: return
            }
        }
    }

    // MARK: Polling and upgrade

    /// Marks a GET as in progress; `false` if one already is (the protocol closes the session then).
    func beginPoll() -> Bool {
        state.withLock { s in
            if s.polling { return false }
            s.polling = true
            return true
        }
    }

    func endPoll() { state.withLock { $0.polling = false } }

    /// A WebSocket probe arrived: the pending GET is answered with a noop so the client can finish the upgrade.
    func beginUpgrade() -> Bool {
        let started = state.withLock { s -> Bool in
            guard s.closed == nil, s.transport == .polling, !s.upgrading else { return false }
            s.upgrading = true
            return true
        }
        if started { queue.interrupt() }
        return started
    }

    /// The client sent `5`: from now on packets go over the WebSocket.
    func completeUpgrade() {
        state.withLock { s in
            s.upgrading = false
            s.transport = .websocket
        }
    }

    func abandonUpgrade() { state.withLock { $0.upgrading = false } }

    // MARK: Heartbeat

    enum Heartbeat { case none, ping, timedOut, connectTimedOut }

    /// The Socket.IO layer connected a namespace: the connect deadline no longer applies.
    func namespaceConnected() { state.withLock { $0.connectDeadline = nil } }

    /// Called on every tick: time to ping, the pong is overdue, or no namespace was connected in time.
    /// While reads are held the pong's deadline starts again: the pong may be among the
    /// packets the gateway has not read, and the consumer is still handling the client's packets.
    func heartbeat(now: ContinuousClock.Instant, configuration: EngineConfiguration) -> Heartbeat {
        let held = readsHeld
        return state.withLock { s in
            if s.closed != nil { return .none }
            if let deadline = s.connectDeadline, now >= deadline { return .connectTimedOut }
            if s.awaitingPongSince != nil, held { s.awaitingPongSince = now }
            if let since = s.awaitingPongSince {
                return now - since > configuration.pingTimeout ? .timedOut : .none
            }
            guard now >= s.nextPing else { return .none }
            s.awaitingPongSince = now
            return .ping
        }
    }

    // MARK: Closing

    /// Ends the session once: no more pushes, the transport finishes what is queued, the consumer stops.
    public func close(_ reason: CloseReason) {
        let first = state.withLock { s -> Bool in
            guard s.closed == nil else { return false }
            s.closed = reason
            return true
        }
        guard first else { return }
        queue.close()
        // What arrived before the close is still handed over, then `finished` runs. Held
        // reads resume, so the WebSocket's close handshake can be read, and waiting POSTs are answered.
        let (start, resume) = reading.withLock { r -> (Bool, (@Sendable () -> Void)?) in
            r.ended = true
            let resume = r.release()
            r.resumeReading = nil
            return (Self.claimRun(&r), resume)
        }
        resume?()
        if start { startConsumer() }
        onClose(self, reason)
    }
}

/// Engine.IO settings (the handshake announces them to clients).
public struct EngineConfiguration: Sendable {
    public var pingInterval: Duration = .seconds(25)
    public var pingTimeout: Duration = .seconds(20)
    /// Largest polling payload or WebSocket message accepted, and announced as `maxPayload`.
    public var maxPayload = 100_000
    /// Packets a session may have waiting to be sent before it is closed.
    public var queueCapacity = 1000
    /// Bytes a session may have waiting to be sent before it is closed.
    public var queueBytes = 8 << 20
    /// Packets received and not yet handled at which a WebSocket stops reading and a
    /// polling POST's answer waits (until half are handled); a POST that finds as many
    /// waiting closes the session as a flood.
    public var inboundBuffer = 256
    /// A session that has not connected a Socket.IO namespace by then is closed.
    public var connectTimeout: Duration = .seconds(45)
    /// How often the heartbeat runs: a ping goes out at most this late (a twentieth of the
    /// shorter of interval and timeout, at most a second: 1 s with the defaults).
    public var tick: Duration { min(.seconds(1), min(pingInterval, pingTimeout) / 20) }

    public init() {}
}
