@testable import chat_bench
import Foundation
import Testing

/// A clock the pacer reads and sleeps on; `oversleep` is added to every sleep, as a busy
/// machine would.
final class FakeClock: @unchecked Sendable {
    var now: UInt64
    let oversleep: UInt64
    var sleeps = 0
    init(start: UInt64, oversleep: UInt64 = 0) { (now, self.oversleep) = (start, oversleep) }
    func sleep(_ nanoseconds: UInt64) { sleeps += 1; now += nanoseconds + oversleep }
}

@Suite("The load tool's pacing and accounting")
struct LoadToolTests {
    @Test("open loop: send k goes out as soon as it is due, at start + k / rate, stamped with that time; duration × rate sends")
    func paceOnTime() async throws {
        let start: UInt64 = 1_000_000_000
        let schedule = PaceSchedule(start: start, rate: 200, duration: 2)
        let clock = FakeClock(start: start)
        var sends: [(k: Int, stamp: UInt64, at: UInt64)] = []
        try await schedule.run(now: { clock.now }, sleep: { clock.sleep($0) }) { k, stamp in sends.append((k, stamp, clock.now)) }
        #expect(sends.count == 400)
        #expect(sends.map(\.k) == Array(0..<400))
        for send in sends {
            #expect(send.stamp == start + UInt64(send.k) * 5_000_000, "send \(send.k) stamped \(send.stamp - start) ns after the start")
            // Not a whole interval later than its stamp (the bug this pins: send k went out at k + 1).
            #expect(send.at == send.stamp, "send \(send.k) went out \(send.at - send.stamp) ns after it was due")
        }
        #expect(clock.sleeps == 399)
    }

    @Test("open loop on a slow machine: late sends go out together, each keeps its own due time as its stamp (no coordinated omission)")
    func paceLate() async throws {
        let start: UInt64 = 5_000
        let interval: UInt64 = 1_000_000  // 1,000/s
        let schedule = PaceSchedule(start: start, rate: 1000, duration: 0.1)
        let clock = FakeClock(start: start, oversleep: 3 * interval + interval / 2)
        var sends: [(k: Int, stamp: UInt64, at: UInt64)] = []
        try await schedule.run(now: { clock.now }, sleep: { clock.sleep($0) }) { k, stamp in sends.append((k, stamp, clock.now)) }
        #expect(sends.count == 100)
        #expect(sends.map(\.stamp) == (0..<100).map { start + UInt64($0) * interval })
        #expect(sends.allSatisfy { $0.at >= $0.stamp }, "a send went out before it was due")
        #expect(sends.contains { $0.at - $0.stamp >= 3 * interval }, "the oversleeps should show as late sends")
        #expect(clock.sleeps < 40, "late sends should go out in bursts, not one per sleep: \(clock.sleeps) sleeps")
    }

    @Test("virtual users' emails are numbered with five digits or more, as String(format: \"%05d\") numbers them")
    func emails() {
        for user in [0, 7, 42, 12_345, 123_456] {
            #expect(benchEmail(prefix: "bench", user: user) == String(format: "bench-%05d@bench.local", user))
        }
        #expect(benchEmail(prefix: "load", user: 9) == "load-00009@bench.local")
    }

    @Test("the content every bench message carries reads back; event names, positions and error codes are found in packets")
    func content() {
        let content = BenchContent.make(sender: 17, n: 4_242, at: 123_456_789_012)
        let packet = #"42["receive_message",{"client_id":"bX-17-4242","content":"\#(content)","conversation_id":"c-1","seq":98,"sender_email":"x"}]"#
        #expect(BenchContent.eventName(packet) == "receive_message")
        let parsed = BenchContent.parse(packet)
        #expect(parsed?.sender == 17 && parsed?.n == 4_242 && parsed?.sentAt == 123_456_789_012)
        #expect(BenchContent.position(packet)?.conversation == "c-1")
        #expect(BenchContent.position(packet)?.seq == 98)
        #expect(BenchContent.parse(#"42["receive_message",{"content":"hello"}]"#) == nil)
        #expect(BenchContent.errorCode(#"42["error",{"code":"rate_limited","message":"slow down"}]"#) == "rate_limited")
        #expect(BenchContent.errorCode(#"42["error",{"message":"no code"}]"#) == "?")
        // Other text first, with multi-byte characters and near-misses of the field names.
        let awkward = #"42["receive_message",{"title":"Überweisung 🩺 \"content\":\"b|","conversation":"x","content":"b|3|7|99","conversation_id":"ü-2","seq":12}]"#
        #expect(BenchContent.parse(awkward).map { [$0.sender, $0.n, Int($0.sentAt)] } == [3, 7, 99])
        #expect(BenchContent.position(awkward)?.conversation == "ü-2")
        #expect(BenchContent.position(awkward)?.seq == 12)
        #expect(BenchContent.position(#"42["receive_message",{"conversation_id":"c","seq":null}]"#) == nil)
        #expect(BenchContent.parse(#"42["receive_message",{"content":"b|1|2"}]"#) == nil, "a field missing")
        // A bridged (non-native) string reads the same.
        let bridged = String(describing: NSString(string: packet))
        #expect(BenchContent.parse(bridged)?.n == 4_242)
    }

    @Test("accounting: a confirmed message a socket never got is lost, an unconfirmed one is not; repeats are duplicates; a lower seq is out of order")
    func accounting() {
        let recorder = Recorder()
        let key = { (sender: Int, n: Int) in UInt64(sender) << 32 | UInt64(n) }
        // Socket 5 should get messages 1...4 of sender 1; 1, 2 and 3 are confirmed, 4 is not.
        let expected = [5: Set((1...4).map { key(1, $0) })]
        for n in 1...3 { recorder.confirm(sender: 1, n: n, sentAt: 0) }
        recorder.receive(socket: 5, sender: 1, n: 1, sentAt: 0, conversation: "c", seq: 1)
        #expect(recorder.lost(expected: expected) == 2)
        recorder.receive(socket: 5, sender: 1, n: 3, sentAt: 0, conversation: "c", seq: 3)
        #expect(recorder.lost(expected: expected) == 1, "message 2 is confirmed and missing; 4 was never confirmed")
        #expect(recorder.duplicates == 0 && recorder.outOfOrder == 0)
        recorder.receive(socket: 5, sender: 1, n: 2, sentAt: 0, conversation: "c", seq: 2)
        #expect(recorder.lost(expected: expected) == 0)
        #expect(recorder.outOfOrder == 1, "seq 2 after seq 3 in one conversation")
        #expect(recorder.sendOrderInversions == 1)
        recorder.receive(socket: 5, sender: 1, n: 3, sentAt: 0, conversation: "c", seq: 4)
        #expect(recorder.duplicates == 1)
        // Another socket keeps its own order and its own duplicates.
        recorder.receive(socket: 6, sender: 1, n: 3, sentAt: 0, conversation: "c", seq: 3)
        #expect(recorder.duplicates == 1 && recorder.outOfOrder == 1)
        #expect(recorder.deliveredCount == 5 && recorder.confirmedCount == 3)
        // sent at 0: longer than the histogram's range, recorded at its top rather than dropped.
        let cut = recorder.cut()
        #expect(cut.delivery.totalCount == 5 && cut.confirmation.totalCount == 3)
        #expect(cut.delivery.max >= Recorder.longest)
    }

    @Test("slow confirmations: kept from the threshold up, grouped into episodes of sends less than a second apart, described with their time of day")
    func slowEpisodes() throws {
        let recorder = Recorder(slowThreshold: 50_000)
        let start = nowNanoseconds()
        // Confirmed now: sent 10 ms ago (fast), 60 ms ago, 80 ms ago (slow, one episode).
        recorder.confirm(sender: 1, n: 1, sentAt: start - 10_000_000)
        recorder.confirm(sender: 1, n: 2, sentAt: start - 60_000_000)
        recorder.confirm(sender: 1, n: 3, sentAt: start - 80_000_000)
        let slow = recorder.cut().slow
        #expect(slow.count == 2 && slow.allSatisfy { $0.latency >= 50_000 }, "\(slow)")

        let second: UInt64 = 1_000_000_000
        let sends: [SlowEpisode.Send] = [.init(sentAt: 5 * second, latency: 300_000), .init(sentAt: 2 * second, latency: 120_000),
                                         .init(sentAt: 2 * second + second / 2, latency: 450_000), .init(sentAt: 3 * second + second / 4, latency: 200_000)]
        let episodes = SlowEpisode.episodes(sends)
        #expect(episodes == [SlowEpisode(firstSent: 2 * second, lastSent: 3 * second + second / 4, count: 3, worst: 450_000),
                             SlowEpisode(firstSent: 5 * second, lastSent: 5 * second, count: 1, worst: 300_000)])
        #expect(SlowEpisode.episodes([]).isEmpty)
        let origin = (monotonic: UInt64(0), wall: Date(timeIntervalSince1970: 1_764_000_000))  // 16:00:00 UTC
        #expect(SlowEpisode.describe(episodes, origin: origin) == "2: 16:00:02.000 UTC +1.25 s: 3 sends, worst 450 ms; 16:00:05.000 UTC +0.00 s: 1 send, worst 300 ms")
        #expect(SlowEpisode.describe(episodes, origin: origin, limit: 1).hasSuffix("; 1 more"))
        #expect(SlowEpisode.describe([], origin: origin) == "none")
    }

    @Test("the end of a run: its figures stay as they were; only messages confirmed by then can be lost, and their deliveries still count after it")
    func cut() {
        let recorder = Recorder()
        let now = nowNanoseconds()
        let expected = [7: Set([UInt64(1) << 32 | 1, UInt64(1) << 32 | 2])]
        recorder.confirm(sender: 1, n: 1, sentAt: now)
        let cut = recorder.cut()
        #expect(cut.confirmed == 1 && cut.received == 0)
        #expect(recorder.lost(expected: expected) == 1, "message 1 is confirmed and not delivered yet")
        recorder.confirm(sender: 1, n: 2, sentAt: now)
        #expect(recorder.lost(expected: expected) == 1, "message 2 was confirmed after the end: not counted")
        recorder.receive(socket: 7, sender: 1, n: 1, sentAt: now, conversation: "c", seq: 1)
        #expect(recorder.lost(expected: expected) == 0, "its delivery arrived after the end")
        #expect(cut.received == 0 && cut.delivery.totalCount == 0, "the run's figures do not move")
    }

    @Test("the services' side of a run: /metrics read in Prometheus' text format; counters as their growth, by label, those that did not grow left out; gauges as the highest seen; the store's admin address from its log")
    func servicesSide() throws {
        let first = MetricsWatch.samples("""
            # HELP chat_gateway_reads_held_total Times a session held its client back.
            # TYPE chat_gateway_reads_held_total counter
            chat_gateway_reads_held_total 4
            chat_gateway_sessions_closed_total{reason="ping timeout"} 2
            chat_gateway_rate_limited_total{limit="send"} 7
            chat_gateway_memory_released_bytes_total 0
            chat_gateway_admission_waiting 0.0
            not a sample
            """)
        #expect(first["chat_gateway_reads_held_total"] == 4)
        #expect(first["chat_gateway_sessions_closed_total{reason=\"ping timeout\"}"] == 2)
        #expect(first["chat_gateway_admission_waiting"] == 0)
        #expect(first.count == 5)
        let last = MetricsWatch.samples("""
            chat_gateway_reads_held_total 10
            chat_gateway_sessions_closed_total{reason="ping timeout"} 2
            chat_gateway_sessions_closed_total{reason="transport closed"} 200
            chat_gateway_sessions_closed_total{reason="outbound queue full"} 3
            chat_gateway_rate_limited_total{limit="send"} 7
            chat_gateway_memory_releases_total 1
            chat_gateway_memory_released_bytes_total 3145728
            """)
        let rows = MetricsWatch.rows(MetricsWatch.gateway, first: first, last: last, highest: ["chat_gateway_admission_waiting": 1734, "chat_gateway_store_requests_pending": 12])
        #expect(rows.map(\.0) == ["the gateway's counters over the run (its /metrics)", "the gateway's queues, highest seen (its /metrics, every 0.5 s)"])
        #expect(rows.first?.1 == "reads held: 6 · sessions closed: outbound queue full × 3, transport closed × 200 · memory given back: 1 (3.0 MiB)")
        #expect(rows.last?.1 == "CONNECTs waiting their turn 1734 · store requests pending 12 · late writes ?")
        #expect(MetricsWatch.rows(MetricsWatch.gateway, first: first, last: first, highest: [:]).first?.1 == "none grew")

        // The store's: commands applied by type; its stream's queues.
        let store = MetricsWatch.rows(MetricsWatch.store, first: MetricsWatch.samples(#"chat_store_commands_applied_total{type="send"} 10"#),
                                      last: MetricsWatch.samples(#"chat_store_commands_applied_total{type="send"} 130"# + "\n" + #"chat_store_commands_applied_total{type="audit"} 6"#),
                                      highest: ["chat_stream_lag": 52, "chat_stream_pending": 368])
        #expect(store.map(\.0) == ["the store's counters over the run (its /metrics)", "the store's queues, highest seen (its /metrics, every 0.5 s)"])
        #expect(store.first?.1 == "commands applied: audit × 6, send × 120")
        #expect(store.last?.1 == "commands not yet read 52 · read, not yet applied 368")

        // The store's admin address, from its log in the run folder, as the launcher reads it.
        let runDir = FileManager.default.temporaryDirectory.appendingPathComponent("watch-\(UUID().uuidString.prefix(8))")
        defer { try? FileManager.default.removeItem(at: runDir) }
        try FileManager.default.createDirectory(at: runDir.appendingPathComponent("logs"), withIntermediateDirectories: true)
        #expect(MetricsWatch.storeAddress(runDir: runDir.path) == nil)
        try ("2026-12-03T18:36:04+0000 info chat-messages: starting\n" +
             "2026-12-03T18:36:04+0000 info chat-messages: http.address=[IPv4]127.0.0.1/127.0.0.1:40693 http.paths=/healthz /readyz /metrics service=chat-messages [Operations] admin endpoints listening\n")
            .write(to: runDir.appendingPathComponent("logs/messages.log"), atomically: true, encoding: .utf8)
        #expect(MetricsWatch.storeAddress(runDir: runDir.path) == "127.0.0.1:40693")
    }
}
