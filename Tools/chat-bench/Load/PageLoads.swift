import ChatCore
import Foundation
import Histogram
import NIOConcurrencyHelpers
import NIOCore

/// Page loads next to a workload's live traffic: a new socket of a user with a backlog
/// connects and asks `sync` for everything (`since` empty, what a client without local
/// state asks: a new device; the web client asked it every time it was opened until the
/// fourteenth round of BENCHMARKS.md), counts the messages and receipts replayed to it,
/// and leaves once the acknowledgement came. What a morning of clinicians opening the app
/// costs the live deliveries meanwhile.
final class PageLoads: VirtualSocketDelegate, @unchecked Sendable {
    private let lock = NIOLock()
    private var asked: [Int: UInt64] = [:]
    private var replayed: [Int: (messages: Int, receipts: Int)] = [:]
    private var sockets: [Int: VirtualSocket] = [:]
    private var latency = Histogram<UInt64>(highestTrackableValue: 120_000_000, numberOfSignificantValueDigits: .three)
    private var answered = 0
    private var failures: [String: Int] = [:]
    private var messages = 0
    private var receipts = 0
    private var opened = 0

    /// Page loads opened so far, and those answered or failed.
    var started: Int { lock.withLock { opened } }
    var finished: Int { lock.withLock { answered + failures.values.reduce(0, +) } }

    func connected(_ socket: VirtualSocket) {
        lock.withLock { asked[socket.index] = nowNanoseconds() }
        socket.send("421[\"sync\",{\"since\":{}}]")
    }

    func event(_ socket: VirtualSocket, packet: String) {
        switch BenchContent.eventName(packet) {
        case "receive_message": lock.withLock { replayed[socket.index, default: (0, 0)].messages += 1 }
        case "message_read_receipt": lock.withLock { replayed[socket.index, default: (0, 0)].receipts += 1 }
        default: break
        }
    }

    func acknowledged(_ socket: VirtualSocket, packet: String) {
        let now = nowNanoseconds()
        let ok = packet.contains("\"ok\":true")
        lock.withLock {
            guard let start = asked.removeValue(forKey: socket.index) else { return }
            let counts = replayed.removeValue(forKey: socket.index) ?? (0, 0)
            if ok {
                answered += 1
                messages += counts.messages
                receipts += counts.receipts
                latency.recordClamped((now - start) / 1000)
            } else {
                failures["sync answered \(packet.prefix(120))", default: 0] += 1
            }
            sockets[socket.index] = nil
        }
        socket.close()
    }

    func pinged(_ socket: VirtualSocket) {}

    func closed(_ socket: VirtualSocket, reason: String) {
        lock.withLock {
            // Closed before its sync was answered (or before it connected).
            guard sockets.removeValue(forKey: socket.index) != nil else { return }
            asked[socket.index] = nil
            replayed[socket.index] = nil
            failures[reason, default: 0] += 1
        }
    }

    /// Opens `rate` page loads per second for `duration` seconds, socket k for user
    /// `users[k % users.count]`, whose token is `tokens[k % users.count]`.
    func run(rate: Double, duration: Double, users: [Int], tokens: [String], options: LoadOptions, group: EventLoopGroup) async throws {
        let total = Int((rate * duration).rounded())
        let start = ContinuousClock.now
        for k in 0..<total {
            let due = start + .nanoseconds(Int64(Double(k) / rate * 1e9))
            if ContinuousClock.now < due { try await Task.sleep(until: due) }
            let socket = VirtualSocket(index: k, user: users[k % users.count], delegate: self)
            lock.withLock {
                sockets[k] = socket
                opened += 1
            }
            socket.connect(group: group, host: options.host, port: options.port, token: tokens[k % users.count]).whenFailure { _ in
                self.closed(socket, reason: "connect failed")
            }
        }
    }

    /// The page loads' rows of a report.
    func report(into report: inout LoadReport) {
        let (answered, failures, messages, receipts, latency, started) = lock.withLock {
            (self.answered, self.failures, self.messages, self.receipts, self.latency, self.opened)
        }
        var counts = "\(answered) / \(started)"
        if answered > 0 {
            counts += String(format: ", %.0f messages and %.0f receipts replayed to each", Double(messages) / Double(answered), Double(receipts) / Double(answered))
        }
        report.add("page loads (a new socket, `sync` of everything) answered / started", counts)
        if !failures.isEmpty { report.add("page loads failed", failures.sorted { $0.key < $1.key }.map { "\($0.key) × \($0.value)" }.joined(separator: ", ")) }
        if latency.totalCount > 0 { report.latency("page load: `sync` → acknowledged (after its replay)", latency) }
    }
}
