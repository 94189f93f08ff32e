import ChatCore
import Foundation
import Histogram
import NIOConcurrencyHelpers
import NIOCore

/// Members with the conversation open on screen, marking it read as messages arrive, as the
/// web client does: every mark is a store write and a `message_read_receipt` to the reader
/// and the senders of what it covers (to every member before the seventeenth round of
/// BENCHMARKS.md), so in a busy group the marks are a large part of the work.
///
/// With an `interval`, as the web client since the sixteenth round of BENCHMARKS.md: a
/// reader has at most one mark in flight and sends the next at least `interval` after the
/// last one (and a random part of a quarter of it, so readers who got the same message do
/// not all mark at once), for the newest message it has by then (the marks in between are
/// coalesced). With none, a mark per message as it arrives (the web client before).
final class ReadMarks: @unchecked Sendable {
    private struct Reader {
        var socket: VirtualSocket
        var conversation = ""
        var wanted: Int64 = 0
        var sent: Int64 = 0
        var last: UInt64 = 0
        var armed = false
        var nextAck = 1
        /// Marks sent and not answered: ack id → when it was sent.
        var inFlight: [Int: UInt64] = [:]
    }

    private let interval: UInt64
    private let lock = NIOLock()
    private var readers: [Int: Reader] = [:]
    private var latency = Histogram<UInt64>(highestTrackableValue: 120_000_000, numberOfSignificantValueDigits: .three)
    private var marks = 0
    private var answered = 0
    private var failures: [String: Int] = [:]
    private var receipts = 0

    /// The web client's interval between a reader's marks in a conversation of `members`
    /// (`readMarkInterval` in app.js): bigger conversations get fewer marks.
    static func webClientInterval(members: Int) -> Double { Double(min(3000, 250 * max(1, (members + 4) / 5))) }

    /// `intervalMs`: the least time between one reader's marks; 0 for a mark per message.
    init(intervalMs: Double) { interval = UInt64(max(0, intervalMs) * 1_000_000) }

    /// Makes `socket` a reader.
    func add(_ socket: VirtualSocket) { lock.withLock { readers[socket.index] = Reader(socket: socket) } }

    /// A message up to `seq` of `conversation` reached reader `socket`.
    func received(_ socket: VirtualSocket, conversation: String, seq: Int64) {
        let send = lock.withLock { () -> String? in
            guard var reader = readers[socket.index] else { return nil }
            reader.conversation = conversation
            reader.wanted = max(reader.wanted, seq)
            readers[socket.index] = reader
            return due(socket.index)
        }
        if let send { socket.send(send) }
    }

    /// A `message_read_receipt` reached a member.
    func receipt() { lock.withLock { receipts += 1 } }

    /// An acknowledgement reached reader `socket`: one of its marks answered.
    func acknowledged(_ socket: VirtualSocket, packet: String) {
        let now = nowNanoseconds()
        let send = lock.withLock { () -> String? in
            guard var reader = readers[socket.index], let id = Self.ackID(packet), let sentAt = reader.inFlight.removeValue(forKey: id) else { return nil }
            readers[socket.index] = reader
            if packet.contains("\"ok\":true") {
                answered += 1
                latency.recordClamped((now - sentAt) / 1000)
            } else {
                failures[BenchContent.errorCode(packet), default: 0] += 1
            }
            return due(socket.index)
        }
        if let send { socket.send(send) }
    }

    /// No mark in flight and none waiting.
    var idle: Bool {
        lock.withLock { readers.values.allSatisfy { $0.inFlight.isEmpty && !$0.armed && $0.sent >= $0.wanted } }
    }

    /// The mark reader `index` should send now, if any (under the lock). With an interval, as the
    /// web client: a mark waits until the interval since the last one is over, plus a random
    /// part of a quarter of it (`fired` when that wait is over), on a timer.
    private func due(_ index: Int, fired: Bool = false) -> String? {
        guard var reader = readers[index], reader.wanted > reader.sent else { return nil }
        let now = nowNanoseconds()
        if interval > 0 {
            guard reader.inFlight.isEmpty, !reader.armed else { return nil }
            if !fired {
                let wait = (reader.last + interval > now ? reader.last + interval - now : 0) + UInt64.random(in: 0...(interval / 4))
                reader.armed = true
                readers[index] = reader
                let socket = reader.socket
                socket.channel?.eventLoop.scheduleTask(in: .nanoseconds(Int64(wait))) { [self] in
                    let send = lock.withLock { () -> String? in
                        readers[index]?.armed = false
                        return due(index, fired: true)
                    }
                    if let send { socket.send(send) }
                }
                return nil
            }
        }
        let id = reader.nextAck
        reader.nextAck += 1
        reader.inFlight[id] = now
        reader.sent = reader.wanted
        reader.last = now
        readers[index] = reader
        marks += 1
        return "42\(id)[\"mark_conversation_read\",{\"conversation_id\":\"\(reader.conversation)\",\"up_to_seq\":\(reader.wanted)}]"
    }

    /// The ack id of `43<id>[...]`.
    static func ackID(_ packet: String) -> Int? {
        Int(String(decoding: packet.utf8.dropFirst(2).prefix { $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }, as: UTF8.self))
    }

    /// The marks' rows of a report; `seconds` is the run's length.
    func report(into report: inout LoadReport, seconds: Double) {
        let (readerCount, marks, answered, failures, receipts, latency) = lock.withLock {
            (readers.count, self.marks, self.answered, self.failures, self.receipts, self.latency)
        }
        let policy = interval > 0 ? String(format: "one in flight, %g ms apart and up to a quarter more", Double(interval) / 1e6) : "one per message"
        report.add("read marks (\(readerCount) readers, \(policy)): sent / answered", String(format: "%d / %d (%.0f per second)", marks, answered, Double(marks) / max(seconds, 0.001)))
        if !failures.isEmpty { report.add("read marks refused", failures.sorted { $0.key < $1.key }.map { "\($0.key) × \($0.value)" }.joined(separator: ", ")) }
        report.latency("read mark → answered", latency)
        report.add("read receipts delivered", String(format: "%d (%.0f per second)", receipts, Double(receipts) / max(seconds, 0.001)))
    }
}
