import DequeModule
import Synchronization

/// One socket's bounded queue of encoded Engine.IO packets waiting for its transport.
///
/// Pushing never waits (fan-out must not be slowed by one client). When the queue is
/// full, droppable packets (typing, presence) go first, oldest first; if it is still
/// full, the push reports an overflow and the owner closes the socket; the client
/// reconnects and recovers what it missed through `sync`.
final class OutboundQueue: Sendable {
    enum Priority: Sendable {
        /// Messages, receipts, acknowledgements, protocol packets: never dropped.
        case essential
        /// Typing and presence: worthless once late, dropped first.
        case droppable
    }

    enum PushResult: Sendable, Equatable {
        case queued
        /// The queue was full of essential packets: this droppable one was discarded.
        case dropped
        /// The queue is full of essential packets: close the socket.
        case overflow
        case closed
    }

    /// What a transport takes from the queue.
    enum Take: Sendable, Equatable {
        case packets([String])
        /// Woken without packets (an upgrade answers the pending poll with a noop).
        case interrupted
        case closed
    }

    private struct Item {
        var text: String
        var droppable: Bool
    }

    private struct State {
        var items = Deque<Item>()
        var bytes = 0
        var droppable = 0
        var closed = false
        var interrupt = false
        var waiter: CheckedContinuation<Void, Never>?
        var dropped = 0
        /// A transport that writes from its event loop (``attach(wake:)``), and whether it was woken and has not drained yet.
        var wake: (@Sendable () -> Void)?
        var wakePending = false
    }

    let capacity: Int
    let maximumBytes: Int
    private let state = Mutex(State())

    init(capacity: Int, maximumBytes: Int) {
        self.capacity = capacity
        self.maximumBytes = maximumBytes
    }

    func push(_ text: String, _ priority: Priority = .essential) -> PushResult {
        let (result, waiter, wake) = state.withLock { s -> (PushResult, CheckedContinuation<Void, Never>?, (@Sendable () -> Void)?) in
            guard !s.closed else { return (.closed, nil, nil) }
            func full() -> Bool { s.items.count >= capacity || s.bytes + text.utf8.count > maximumBytes }
            // Make room by dropping the oldest droppable packets.
            while full() && s.droppable > 0, let index = s.items.firstIndex(where: \.droppable) {
                let removed = s.items.remove(at: index)
                s.bytes -= removed.text.utf8.count
                s.droppable -= 1
                s.dropped += 1
            }
            if full() {
                if priority == .droppable {
                    s.dropped += 1
                    return (.dropped, nil, nil)
                }
                return (.overflow, nil, nil)
            }
            s.items.append(Item(text: text, droppable: priority == .droppable))
            s.bytes += text.utf8.count
            if priority == .droppable { s.droppable += 1 }
            let waiter = s.waiter
            s.waiter = nil
            return (.queued, waiter, Self.claimWake(&s))
        }
        waiter?.resume()
        wake?()
        return result
    }

    // MARK: A transport on the event loop

    /// Hands the queue to a transport that drains it from its event loop: `wake` is called
    /// (outside the lock, on the pusher's thread) when packets or the close arrive and the
    /// last wake has been drained, so a burst of pushes costs one wake. Called once; wakes
    /// at once if packets are already waiting.
    func attach(wake: @escaping @Sendable () -> Void) {
        state.withLock { s in
            s.wake = wake
            return Self.claimWake(&s)
        }?()
    }

    /// The transport is gone (its handler left the channel): its wake, which holds it, is
    /// dropped, so the queue and the transport do not keep each other alive.
    func detach() {
        state.withLock { $0.wake = nil }
    }

    /// The wake to call (outside the lock), if there is a drainer and something for it.
    /// `force` (the close) wakes even a drainer that has not drained its last wake: it may be
    /// waiting for a socket that will never be writable again.
    private static func claimWake(_ s: inout State, force: Bool = false) -> (@Sendable () -> Void)? {
        guard let wake = s.wake, force || !s.wakePending, s.closed || !s.items.isEmpty else { return nil }
        s.wakePending = true
        return wake
    }

    /// Takes every waiting packet and re-arms the wake; `closed` once nothing more will come.
    func drain() -> (packets: [String], closed: Bool) {
        state.withLock { s in
            s.wakePending = false
            var taken: [String] = []
            taken.reserveCapacity(s.items.count)
            for item in s.items { taken.append(item.text) }
            s.items.removeAll()
            s.bytes = 0
            s.droppable = 0
            return (taken, s.closed)
        }
    }

    /// Waits for packets and takes them, at most `maximumBytes` of text in all (at least one packet).
    func take(maximumBytes: Int = .max) async -> Take {
        while true {
            let ready: Take? = state.withLock { s in
                if s.interrupt {
                    s.interrupt = false
                    return .interrupted
                }
                if s.items.isEmpty { return s.closed ? .closed : nil }
                var taken: [String] = []
                var bytes = 0
                while let first = s.items.first, taken.isEmpty || bytes + first.text.utf8.count <= maximumBytes {
                    s.items.removeFirst()
                    s.bytes -= first.text.utf8.count
                    if first.droppable { s.droppable -= 1 }
                    bytes += first.text.utf8.count
                    taken.append(first.text)
                }
                return .packets(taken)
            }
            if let ready { return ready }
            await withCheckedContinuation { continuation in
                let resumeNow = state.withLock { s -> Bool in
                    if s.closed || s.interrupt || !s.items.isEmpty { return true }
                    s.waiter = continuation
                    return false
                }
                if resumeNow { continuation.resume() }
            }
        }
    }

    /// Wakes the taker with `.interrupted` (once).
    func interrupt() {
        let waiter = state.withLock { s -> CheckedContinuation<Void, Never>? in
            s.interrupt = true
            defer { s.waiter = nil }
            return s.waiter
        }
        waiter?.resume()
    }

    /// No more pushes; the taker gets what is left, then `.closed`.
    func close() {
        let (waiter, wake) = state.withLock { s -> (CheckedContinuation<Void, Never>?, (@Sendable () -> Void)?) in
            s.closed = true
            defer { s.waiter = nil }
            return (s.waiter, Self.claimWake(&s, force: true))
        }
        waiter?.resume()
        wake?()
    }

    /// Packets waiting, and droppable packets discarded so far.
    var counts: (waiting: Int, dropped: Int) { state.withLock { ($0.items.count, $0.dropped) } }
}
