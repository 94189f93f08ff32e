import ArgumentParser
import ChatCore
import ChatTesting
import Foundation
import Histogram
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// Where the system under test is, and who the virtual users are.
struct LoadOptions: ParsableArguments {
    @Option(help: "The gateway's base URL.")
    var gateway = "http://127.0.0.1:8080"
    @Option(help: "The launcher's run folder: its `pids` file names the processes whose CPU and memory are reported.")
    var runDir: String?
    @Option(help: "Virtual users are <prefix>-00000@bench.local ... (made by `chat-bench seed`).")
    var userPrefix = "bench"
    @Option(help: "Their password.")
    var password = "bench-password"
    @Option(help: "Event-loop threads of the load tool.")
    var threads = 1
    @Option(help: "pairs and group: confirmations this slow (ms) or slower are reported as episodes with their time of day, to line them up with the services' logs.")
    var slowMs: Double = 100

    var host: String { URL(string: gateway)?.host ?? "127.0.0.1" }
    var port: Int { URL(string: gateway)?.port ?? 8080 }

    func email(_ user: Int) -> String { benchEmail(prefix: userPrefix, user: user) }
}

/// A virtual user's email, `<prefix>-00042@bench.local` (the number padded to 5 digits), as
/// `chat-bench seed` makes them. Built without `String(format:)`, which cost the open loop's
/// pacer 6 % of the tool's CPU when it named every send's receiver.
func benchEmail(prefix: String, user: Int) -> String {
    let digits = String(user)
    return prefix + "-" + String(repeating: "0", count: max(0, 5 - digits.count)) + digits + "@bench.local"
}

/// Monotonic nanoseconds, the clock every send is stamped with.
@inline(__always) func nowNanoseconds() -> UInt64 { DispatchTime.now().uptimeNanoseconds }

/// REST calls of the load tool (login, conversations, history).
struct REST: Sendable {
    let base: String

    func call(_ method: String, _ path: String, token: String? = nil, body: [String: Any]? = nil) async throws -> (Int, Any?) {
        var request = URLRequest(url: URL(string: base + path)!)
        request.httpMethod = method
        request.timeoutInterval = 60
        if let token { request.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization") }
        if let body {
            request.httpBody = try JSONSerialization.data(withJSONObject: body)
            request.setValue("application/json", forHTTPHeaderField: "Content-Type")
        }
        let data: Data, response: URLResponse
        do {
            (data, response) = try await URLSession.shared.dataIgnoringCancellation(for: request)
        } catch let error as URLError {
            throw CommandFailure(error.code == .cannotConnectToHost
                ? "nothing answers at \(base) (\(method) \(path)): is the stack running?"
                : "\(method) \(base)\(path) failed: URL error \(error.code.rawValue)")
        }
        return ((response as? HTTPURLResponse)?.statusCode ?? 0, try? JSONSerialization.jsonObject(with: data))
    }

    /// Sends `count` messages into `conversation` over REST, 8 at a time: message n from
    /// `tokens[n % tokens.count]`, with `content(n)`.
    func fill(_ conversation: String, count: Int, tokens: [String], content: @escaping @Sendable (Int) -> String) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            for worker in 0..<8 {
                group.addTask {
                    for n in stride(from: worker, to: count, by: 8) {
                        let (status, _) = try await call("POST", "/api/messages", token: tokens[n % tokens.count],
                                                         body: ["conversation_id": conversation, "content": content(n), "client_id": "h\(conversation)-\(n)"])
                        guard status == 201 || status == 200 else { throw CommandFailure("sending into \(conversation) answered \(status)") }
                    }
                }
            }
            try await group.waitForAll()
        }
    }

    /// Logs every user in, `concurrency` at a time; the tokens in user order.
    func login(_ emails: [String], password: String, concurrency: Int = 16) async throws -> [String] {
        var tokens = [String](repeating: "", count: emails.count)
        try await withThrowingTaskGroup(of: (Int, String).self) { group in
            var next = 0
            func add() {
                let index = next
                next += 1
                group.addTask {
                    let (status, json) = try await call("POST", "/api/auth/login", body: ["email": emails[index], "password": password])
                    guard status == 200, let token = (json as? [String: Any])?["token"] as? String else {
                        throw CommandFailure("login \(emails[index]) answered \(status): run `chat-bench seed` against the store first")
                    }
                    return (index, token)
                }
            }
            for _ in 0..<min(concurrency, emails.count) { add() }
            while let (index, token) = try await group.next() {
                tokens[index] = token
                if next < emails.count { add() }
            }
        }
        return tokens
    }
}

/// Latencies and message accounting, shared by every socket's callbacks.
final class Recorder: @unchecked Sendable {
    private let lock = NIOLock()
    /// Latencies in microseconds, up to 120 s (a longer one is recorded as 120 s).
    static let longest: UInt64 = 120_000_000
    private var delivery = Histogram<UInt64>(highestTrackableValue: longest, numberOfSignificantValueDigits: .three)
    private var confirmation = Histogram<UInt64>(highestTrackableValue: longest, numberOfSignificantValueDigits: .three)
    /// Per receiving socket: the (sender, n) keys it got, and the last n per sender.
    private var seen: [Int: Set<UInt64>] = [:]
    private var lastFrom: [Int: [Int: Int]] = [:]
    private(set) var received = 0
    private(set) var duplicates = 0
    private(set) var outOfOrder = 0
    private(set) var confirmed = 0
    private(set) var errors: [String: Int] = [:]
    private(set) var lastReceive: UInt64 = 0

    /// Per receiving socket and conversation: the last seq seen (the order the system guarantees).
    private var lastSeq: [Int: [String: Int64]] = [:]
    /// Messages of one sender that arrived after a later one of theirs (send order, which
    /// the store keeps for one socket's sends unless some were refused and sent again).
    private(set) var sendOrderInversions = 0
    private var confirmedKeys: Set<UInt64> = []
    /// Confirmations at least this slow (µs) are kept, with their send time, for ``SlowEpisode``s.
    let slowThreshold: UInt64
    private var slow: [SlowEpisode.Send] = []
    /// The wall clock at a known monotonic instant: turns send times into times of day.
    let clockOrigin = (monotonic: nowNanoseconds(), wall: Date())

    init(slowThreshold: UInt64 = 100_000) { self.slowThreshold = slowThreshold }

    /// A `receive_message` at `socket`.
    func receive(socket: Int, sender: Int, n: Int, sentAt: UInt64, conversation: String?, seq: Int64?) {
        let now = nowNanoseconds()
        let key = UInt64(sender) << 32 | UInt64(n)
        lock.withLock {
            received += 1
            lastReceive = max(lastReceive, now)
            delivery.recordClamped((now &- sentAt) / 1000)
            if !seen[socket, default: []].insert(key).inserted { duplicates += 1 }
            if let last = lastFrom[socket]?[sender], n < last { sendOrderInversions += 1 }
            lastFrom[socket, default: [:]][sender] = max(n, lastFrom[socket]?[sender] ?? 0)
            if let conversation, let seq {
                if let last = lastSeq[socket]?[conversation], seq <= last { outOfOrder += 1 }
                lastSeq[socket, default: [:]][conversation] = max(seq, lastSeq[socket]?[conversation] ?? 0)
            }
        }
    }

    func confirm(sender: Int, n: Int, sentAt: UInt64) {
        let now = nowNanoseconds()
        lock.withLock {
            confirmed += 1
            confirmedKeys.insert(UInt64(sender) << 32 | UInt64(n))
            let latency = (now &- sentAt) / 1000
            confirmation.recordClamped(latency)
            if latency >= slowThreshold && slow.count < 1_000_000 { slow.append(.init(sentAt: sentAt, latency: latency)) }
        }
    }

    func error(_ code: String) { lock.withLock { errors[code, default: 0] += 1 } }

    /// What the report shows: the figures at the end of the run.
    struct Cut {
        var delivery: Histogram<UInt64>
        var confirmation: Histogram<UInt64>
        var received: Int
        var confirmed: Int
        var lastReceive: UInt64
        var slow: [SlowEpisode.Send]
    }

    /// The messages confirmed by the end of the run (``cut()``); nil while it runs.
    private var confirmedAtCut: Set<UInt64>?

    /// Ends the run: the figures as they are now. Deliveries still count afterwards for
    /// ``lost(expected:)``, which from now on asks only about the messages confirmed by now:
    /// a confirmation and its delivery are published together, and one that arrived just
    /// before the end must not count as lost because its delivery arrived just after.
    func cut() -> Cut {
        lock.withLock {
            confirmedAtCut = confirmedKeys
            return Cut(delivery: delivery, confirmation: confirmation, received: received, confirmed: confirmed, lastReceive: lastReceive, slow: slow)
        }
    }

    /// Confirmed messages a receiving socket should have had but did not (a refused send,
    /// answered with an error, is not confirmed and not counted here).
    func lost(expected: [Int: Set<UInt64>]) -> Int {
        lock.withLock {
            let confirmed = confirmedAtCut ?? confirmedKeys
            return expected.reduce(0) { $0 + $1.value.intersection(confirmed).subtracting(seen[$1.key] ?? []).count }
        }
    }

    var deliveredCount: Int { lock.withLock { received } }
    var confirmedCount: Int { lock.withLock { confirmed } }
}

extension Histogram<UInt64> {
    /// Records `value`, or the highest trackable value if it is beyond the range: the
    /// histogram would drop it, and a dropped sample flatters the tail.
    mutating func recordClamped(_ value: UInt64) {
        _ = record(Swift.min(value, highestTrackableValue))
    }
}

/// A stretch of slow confirmations: sends at least the threshold slow whose send times are
/// less than `gap` apart. A stall anywhere between the sender and the store shows as one
/// episode; its time of day lines it up with the services' logs.
struct SlowEpisode: Equatable {
    struct Send: Equatable {
        var sentAt: UInt64   // monotonic ns
        var latency: UInt64  // µs
    }
    var firstSent: UInt64
    var lastSent: UInt64
    var count: Int
    var worst: UInt64

    static func episodes(_ sends: [Send], gap: UInt64 = 1_000_000_000) -> [SlowEpisode] {
        var episodes: [SlowEpisode] = []
        for send in sends.sorted(by: { $0.sentAt < $1.sentAt }) {
            if var last = episodes.last, send.sentAt - last.lastSent < gap {
                last.lastSent = send.sentAt
                last.count += 1
                last.worst = max(last.worst, send.latency)
                episodes[episodes.count - 1] = last
            } else {
                episodes.append(SlowEpisode(firstSent: send.sentAt, lastSent: send.sentAt, count: 1, worst: send.latency))
            }
        }
        return episodes
    }

    /// `none`, or the first `limit` episodes as `HH:MM:SS.mmm UTC +0.42 s: 98 sends, worst 423 ms`.
    static func describe(_ episodes: [SlowEpisode], origin: (monotonic: UInt64, wall: Date), limit: Int = 5) -> String {
        guard !episodes.isEmpty else { return "none" }
        let shown = episodes.prefix(limit).map { episode in
            let wall = origin.wall.addingTimeInterval((Double(episode.firstSent) - Double(origin.monotonic)) / 1e9)
            let ms = (Int64((wall.timeIntervalSince1970 * 1000).rounded()) % 86_400_000 + 86_400_000) % 86_400_000
            return String(format: "%02d:%02d:%02d.%03d UTC +%.2f s: %d send%@, worst %.0f ms", ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000,
                          Double(episode.lastSent - episode.firstSent) / 1e9, episode.count, episode.count == 1 ? "" : "s", Double(episode.worst) / 1000)
        }
        let more = episodes.count > limit ? "; \(episodes.count - limit) more" : ""
        return "\(episodes.count): " + shown.joined(separator: "; ") + more
    }
}

/// `b|<sender user>|<n>|<send time ns>`: what every bench message carries as its content.
enum BenchContent {
    static func make(sender: Int, n: Int, at time: UInt64) -> String { "b|\(sender)|\(n)|\(time)" }

    /// The event name of a `42["name",...]` packet.
    static func eventName(_ packet: String) -> Substring? {
        let utf8 = packet.utf8
        guard utf8.count > 5 else { return nil }
        let start = packet.index(packet.startIndex, offsetBy: 4)
        guard let end = packet[start...].firstIndex(of: "\"") else { return nil }
        return packet[start..<end]
    }

    /// (sender, n, sent at) from the packet's `"content":"b|..."`.
    static func parse(_ packet: String) -> (sender: Int, n: Int, sentAt: UInt64)? {
        bytes(of: packet) { bytes in
            guard var index = after(#""content":"b|"#, in: bytes) else { return nil }
            var fields: [UInt64] = []
            var value: UInt64 = 0
            while index < bytes.count {
                let byte = bytes[index]
                index += 1
                if byte >= 48 && byte <= 57 {
                    value = value &* 10 &+ UInt64(byte - 48)
                } else {
                    fields.append(value)
                    value = 0
                    if byte != UInt8(ascii: "|") { break }
                }
            }
            guard fields.count == 3 else { return nil }
            return (Int(fields[0]), Int(fields[1]), fields[2])
        }
    }

    /// The `conversation_id` and `seq` of a message event.
    static func position(_ packet: String) -> (conversation: String, seq: Int64)? {
        bytes(of: packet) { bytes in
            guard let c = after(#""conversation_id":""#, in: bytes), let s = after(#""seq":"#, in: bytes) else { return nil }
            let conversation = String(decoding: UnsafeBufferPointer(rebasing: bytes[c...].prefix { $0 != UInt8(ascii: "\"") }), as: UTF8.self)
            var seq: Int64 = 0
            var digits = 0
            for byte in bytes[s...] {
                guard byte >= 48 && byte <= 57 else { break }
                seq = seq &* 10 &+ Int64(byte - 48)
                digits += 1
            }
            return digits > 0 ? (conversation, seq) : nil
        }
    }

    /// The `code` of an `error` event.
    static func errorCode(_ packet: String) -> String {
        bytes(of: packet) { bytes in
            guard let c = after(#""code":""#, in: bytes) else { return "?" }
            return String(decoding: UnsafeBufferPointer(rebasing: bytes[c...].prefix { $0 != UInt8(ascii: "\"") }), as: UTF8.self)
        }
    }

    /// Runs `body` on the packet's UTF-8 bytes (in place for a native string). The tool reads
    /// every packet it receives this way: Foundation's `range(of:)` took about 40 % of its event loop.
    private static func bytes<R>(of packet: String, _ body: (UnsafeBufferPointer<UInt8>) -> R) -> R {
        if let result = packet.utf8.withContiguousStorageIfAvailable(body) { return result }
        return Array(packet.utf8).withUnsafeBufferPointer(body)
    }

    /// The offset just past the first `needle` in `bytes`.
    private static func after(_ needle: StaticString, in bytes: UnsafeBufferPointer<UInt8>) -> Int? {
        let pattern = UnsafeBufferPointer(start: needle.utf8Start, count: needle.utf8CodeUnitCount)
        guard let first = pattern.first, bytes.count >= pattern.count else { return nil }
        var index = 0
        let last = bytes.count - pattern.count
        while index <= last {
            if bytes[index] == first {
                var match = 1
                while match < pattern.count && bytes[index + match] == pattern[match] { match += 1 }
                if match == pattern.count { return index + pattern.count }
            }
            index += 1
        }
        return nil
    }
}

/// CPU seconds and memory of the processes under test, from /proc.
struct ProcessSample {
    var name: String
    var pid: Int32
    var cpuSeconds: Double
    var residentBytes: Int
    var peakResidentBytes: Int

    static func read(name: String, pid: Int32) -> ProcessSample? {
        ProcessStatus.read(pid: pid).map {
            ProcessSample(name: name, pid: pid, cpuSeconds: $0.cpuSeconds, residentBytes: $0.residentBytes, peakResidentBytes: $0.peakResidentBytes)
        }
    }

    /// The processes in the launcher's `pids` file, and this tool.
    static func all(runDir: String?) -> [ProcessSample] {
        var samples: [ProcessSample] = []
        if let runDir, let text = try? String(contentsOfFile: runDir + "/pids", encoding: .utf8) {
            var counts: [String: Int] = [:]
            for line in text.split(separator: "\n") {
                let parts = line.split(separator: " ")
                guard parts.count == 2, let pid = Int32(parts[1]) else { continue }
                let name = String(parts[0])
                counts[name, default: 0] += 1
                let label = name == "chat-gateway" ? "\(name)-\(counts[name]!)" : name
                if let sample = read(name: label, pid: pid) { samples.append(sample) }
            }
        }
        if let me = read(name: "chat-bench", pid: getpid()) { samples.append(me) }
        return samples
    }
}

/// The report of one run, printed as Markdown.
struct LoadReport {
    var workload: String
    var command: String
    var seconds: Double
    var rows: [(String, String)] = []

    mutating func add(_ name: String, _ value: String) { rows.append((name, value)) }

    mutating func latency(_ name: String, _ histogram: Histogram<UInt64>) {
        guard histogram.totalCount > 0 else {
            add(name, "none")
            return
        }
        func ms(_ microseconds: UInt64) -> String { String(format: "%.2f", Double(microseconds) / 1000) }
        add(name, "p50 \(ms(histogram.valueAtPercentile(50))) · p90 \(ms(histogram.valueAtPercentile(90))) · p99 \(ms(histogram.valueAtPercentile(99))) · p99.9 \(ms(histogram.valueAtPercentile(99.9))) · max \(ms(histogram.max)) ms (n = \(histogram.totalCount))")
    }

    mutating func processes(before: [ProcessSample], after: [ProcessSample]) {
        for end in after {
            guard let start = before.first(where: { $0.pid == end.pid }) else { continue }
            add("\(end.name)", String(format: "%.2f CPU s (%.0f%% of a core), RSS %.1f MiB, peak %.1f MiB",
                                      end.cpuSeconds - start.cpuSeconds, (end.cpuSeconds - start.cpuSeconds) / max(seconds, 0.001) * 100,
                                      Double(end.residentBytes) / 1_048_576, Double(end.peakResidentBytes) / 1_048_576))
        }
    }

    func print() {
        Swift.print("### \(workload)\n")
        Swift.print("`\(command)`\n")
        Swift.print("| measure | value |\n|---|---|")
        for (name, value) in rows { Swift.print("| \(name) | \(value) |") }
        Swift.print("")
    }
}

/// Opens `count` sockets for `users` (socket i is user `user(i)`), `rate` per second at most.
func openSockets(_ count: Int, options: LoadOptions, group: EventLoopGroup, tokens: [String], user: (Int) -> Int,
                 delegate: any VirtualSocketDelegate, rate: Int = 2000) async throws -> [VirtualSocket] {
    var sockets: [VirtualSocket] = []
    sockets.reserveCapacity(count)
    let started = ContinuousClock.now
    var futures: [EventLoopFuture<Void>] = []
    for index in 0..<count {
        let socket = VirtualSocket(index: index, user: user(index), delegate: delegate)
        sockets.append(socket)
        futures.append(socket.connect(group: group, host: options.host, port: options.port, token: tokens[socket.user]))
        let due = started + .milliseconds(Int64((index + 1) * 1000 / max(rate, 1)))
        if ContinuousClock.now < due { try await Task.sleep(until: due) }
    }
    for future in futures { try await future.get() }
    return sockets
}

/// A progress line on standard error (the report goes to standard output).
func progress(_ text: String) {
    FileHandle.standardError.write(Data("chat-bench: \(text)\n".utf8))
}
