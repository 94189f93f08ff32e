import ChatTesting
import Foundation
import Synchronization

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// What the services' own `/metrics` say about a run: how much their counters grew and the
/// highest their queues were seen, read every `interval` while the run goes on. The report
/// then shows what the servers did about the load, not only what the clients saw.
///
/// The gateway is read at its HTTP port (reads held, sessions closed and why, events
/// refused by rate limits, memory given back; CONNECTs waiting their turn, store requests
/// pending, late writes); the store (the messages service) at the admin address its log
/// in the run folder names (`logs/messages.log`, as the launcher writes it): commands
/// applied and malformed; commands in the stream not yet read, and read but not yet
/// applied. Each read of the gateway's `/metrics` also pings the store
/// (`chat_gateway_store_up`, 2 s at most), so the reads are half a second apart, and a
/// queue's highest is the highest seen at those moments, not necessarily its peak.
final class MetricsWatch: Sendable {
    /// A service watched: what its rows are called, and which of its metrics they show.
    struct Subject: Sendable {
        /// "the gateway's", "the store's".
        let owner: String
        /// Counters reported as growth over the run (by label where they have them), each
        /// with the byte counter whose growth is shown beside it, if any.
        let counters: [(prefix: String, name: String, bytes: String?)]
        /// Gauges reported as the highest seen (over all their series).
        let gauges: [(prefix: String, name: String)]
    }

    static let gateway = Subject(owner: "the gateway's", counters: [
        ("chat_gateway_reads_held_total", "reads held", nil),
        ("chat_gateway_sessions_closed_total", "sessions closed", nil),
        ("chat_gateway_rate_limited_total", "rate limited", nil),
        ("chat_gateway_memory_releases_total", "memory given back", "chat_gateway_memory_released_bytes_total"),
    ], gauges: [
        ("chat_gateway_admission_waiting", "CONNECTs waiting their turn"),
        ("chat_gateway_store_requests_pending", "store requests pending"),
        ("chat_gateway_store_late_writes", "late writes"),
    ])

    static let store = Subject(owner: "the store's", counters: [
        ("chat_store_commands_applied_total", "commands applied", nil),
        ("chat_store_commands_malformed_total", "malformed", nil),
    ], gauges: [
        ("chat_stream_lag", "commands not yet read"),
        ("chat_stream_pending", "read, not yet applied"),
    ])

    private struct Watched: Sendable {
        let subject: Subject
        let url: URL
        let first: [String: Double]
    }

    private let watched: [Watched]
    private let highest = Mutex<[String: [String: Double]]>([:])
    private let reading = Mutex<Task<Void, Never>?>(nil)

    private init(watched: [Watched]) { self.watched = watched }

    /// Whether the gateway's `/metrics` answered (the store's alone may have).
    var watchesGateway: Bool { watched.contains { $0.subject.owner == Self.gateway.owner } }

    /// Starts watching the gateway at `options.gateway` and, when the run folder's log names
    /// its admin address, the store; nil if neither answers.
    static func start(_ options: LoadOptions, interval: Duration = .milliseconds(500)) async -> MetricsWatch? {
        var candidates: [(Subject, URL)] = []
        if let url = URL(string: options.gateway + "/metrics") { candidates.append((gateway, url)) }
        if let address = options.runDir.flatMap(storeAddress(runDir:)), let url = URL(string: "http://\(address)/metrics") { candidates.append((store, url)) }
        var watched: [Watched] = []
        for (subject, url) in candidates {
            if let first = await read(url) { watched.append(Watched(subject: subject, url: url, first: first)) }
        }
        guard !watched.isEmpty else { return nil }
        let watch = MetricsWatch(watched: watched)
        for item in watched { watch.note(item.subject, item.first) }
        let task = Task {
            while (try? await Task.sleep(for: interval)) != nil {
                for item in watched { if let samples = await read(item.url) { watch.note(item.subject, samples) } }
            }
        }
        watch.reading.withLock { $0 = task }
        return watch
    }

    /// The messages service's admin address (`host:port`) from its log's "admin endpoints
    /// listening" line, as the launcher (`deploy/local/run.sh`) reads it.
    static func storeAddress(runDir: String) -> String? {
        guard let log = try? String(contentsOfFile: runDir + "/logs/messages.log", encoding: .utf8),
              let line = log.split(separator: "\n").first(where: { $0.contains("admin endpoints listening") }),
              let field = line.split(separator: " ").first(where: { $0.hasPrefix("http.address=") }) else { return nil }
        // `http.address=[IPv4]127.0.0.1/127.0.0.1:40693`
        let address = field.dropFirst("http.address=".count).split(separator: "/").last.map(String.init) ?? ""
        return address.contains(":") ? address : nil
    }

    private func note(_ subject: Subject, _ samples: [String: Double]) {
        highest.withLock { highest in
            for (prefix, _) in subject.gauges {
                guard let value = Self.series(prefix, in: samples).compactMap({ samples[$0] }).max() else { continue }
                highest[subject.owner, default: [:]][prefix] = max(highest[subject.owner]?[prefix] ?? value, value)
            }
        }
    }

    /// Waits (up to `timeout`) until the gateway's `metric` is back at or below where it was
    /// when the watch started (the churn: every socket it opened has been let go of); how
    /// long that took, or nil if it never was (or the gateway is not watched).
    func waitUntilBack(_ metric: String, timeout: Duration = .seconds(5)) async -> Duration? {
        guard let gateway = watched.first(where: { $0.subject.owner == Self.gateway.owner }) else { return nil }
        let started = ContinuousClock.now
        let start = gateway.first[metric] ?? 0
        while ContinuousClock.now - started < timeout {
            if let now = await Self.read(gateway.url)?[metric], now <= start { return ContinuousClock.now - started }
            try? await Task.sleep(for: .milliseconds(50))
        }
        return nil
    }

    /// Stops watching and reads the counters once more: two rows per service watched.
    func stop() async -> [(String, String)] {
        reading.withLock { $0?.cancel() }
        var rows: [(String, String)] = []
        for item in watched {
            let last = await Self.read(item.url) ?? [:]
            note(item.subject, last)
            rows += Self.rows(item.subject, first: item.first, last: last, highest: highest.withLock { $0[item.subject.owner] ?? [:] })
        }
        return rows
    }

    /// The samples at `url`; nil if it did not answer 200 within 10 s. Through
    /// `dataIgnoringCancellation`, as the tool's REST calls: `stop()` cancels the reading
    /// task, and a cancelled `data(for:)` can deadlock on Linux (likely what once kept an
    /// open-loop run of the tool's test from ending, not proven; the twentieth round had
    /// moved these reads to a hand-written GET instead).
    private static func read(_ url: URL) async -> [String: Double]? {
        var request = URLRequest(url: url)
        request.timeoutInterval = 10
        guard let (data, response) = try? await URLSession.shared.dataIgnoringCancellation(for: request),
              (response as? HTTPURLResponse)?.statusCode == 200 else { return nil }
        return samples(String(decoding: data, as: UTF8.self))
    }

    /// Prometheus' text format: `name{labels} value` per line, `#` lines skipped; keyed by
    /// the name with its labels as written.
    static func samples(_ text: String) -> [String: Double] {
        var samples: [String: Double] = [:]
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            guard let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else { continue }
            samples[String(line[..<space])] = value
        }
        return samples
    }

    /// The series of the metric `name`: itself, or each of its label sets.
    private static func series(_ name: String, in samples: [String: Double]) -> [String] {
        samples.keys.filter { $0 == name || $0.hasPrefix(name + "{") }.sorted()
    }

    /// A service's two rows: each counter's growth (by label where it has them; those that
    /// did not grow left out) and each gauge's highest.
    static func rows(_ subject: Subject, first: [String: Double], last: [String: Double], highest: [String: Double]) -> [(String, String)] {
        func count(_ value: Double) -> String { value == value.rounded() ? String(Int(value)) : String(format: "%.1f", value) }
        var grown: [String] = []
        func growth(_ key: String) -> Double { (last[key] ?? 0) - (first[key] ?? 0) }
        for (prefix, name, bytes) in subject.counters {
            let parts: [String] = series(prefix, in: last).compactMap { key in
                let grew = growth(key)
                guard grew > 0 else { return nil }
                guard let open = key.firstIndex(of: "{") else { return count(grew) }
                // `{reason="ping timeout"}` → `ping timeout × 3`
                let label = key[key.index(after: open)...].split(separator: "\"").dropFirst().first.map(String.init) ?? String(key[open...])
                return "\(label) × \(count(grew))"
            }
            guard !parts.isEmpty else { continue }
            grown.append("\(name): " + parts.joined(separator: ", ") + (bytes.map { String(format: " (%.1f MiB)", growth($0) / 1_048_576) } ?? ""))
        }
        let seen = subject.gauges.map { prefix, name in "\(name) \(highest[prefix].map(count) ?? "?")" }
        return [
            ("\(subject.owner) counters over the run (its /metrics)", grown.isEmpty ? "none grew" : grown.joined(separator: " · ")),
            ("\(subject.owner) queues, highest seen (its /metrics, every 0.5 s)", seen.joined(separator: " · ")),
        ]
    }
}

extension LoadReport {
    /// The services' side of the run (``MetricsWatch``), if they were watched.
    mutating func watched(_ rows: [(String, String)]?) {
        for (name, value) in rows ?? [] { add(name, value) }
    }
}
