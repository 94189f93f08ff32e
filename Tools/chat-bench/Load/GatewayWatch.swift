import Foundation
import FoundationNetworking
import Synchronization

/// What the gateway's own `/metrics` say about a run: how much its counters grew (reads
/// held, sessions closed and why, events refused by rate limits, memory given back) and
/// the highest its queues were seen (CONNECTs waiting their turn, store requests pending,
/// late writes), read from its HTTP port every `interval` while the run goes on. The
/// report then shows what the server did about the load, not only what the clients saw.
///
/// Each read of `/metrics` also pings the store (`chat_gateway_store_up`, 2 s at most), so
/// the reads are half a second apart, and a gauge's highest is the highest seen at those
/// moments, not necessarily its peak.
final class GatewayWatch: Sendable {
    /// Counters reported as growth over the run, with how the report names them.
    static let counters: [(prefix: String, name: String)] = [
        ("chat_gateway_reads_held_total", "reads held"),
        ("chat_gateway_sessions_closed_total", "sessions closed"),
        ("chat_gateway_rate_limited_total", "rate limited"),
        ("chat_gateway_memory_releases_total", "memory given back"),
    ]
    /// Gauges reported as the highest seen.
    static let gauges: [(metric: String, name: String)] = [
        ("chat_gateway_admission_waiting", "CONNECTs waiting their turn"),
        ("chat_gateway_store_requests_pending", "store requests pending"),
        ("chat_gateway_store_late_writes", "late writes"),
    ]

    private let url: URL
    private let first: [String: Double]
    private let highest = Mutex<[String: Double]>([:])
    private let reading = Mutex<Task<Void, Never>?>(nil)

    private init(url: URL, first: [String: Double]) {
        self.url = url
        self.first = first
    }

    /// Starts watching the gateway at `gateway` (its base URL); nil if its `/metrics` does not answer.
    static func start(gateway: String, interval: Duration = .milliseconds(500)) async -> GatewayWatch? {
        guard let url = URL(string: gateway + "/metrics"), let first = await read(url) else { return nil }
        let watch = GatewayWatch(url: url, first: first)
        watch.note(first)
        let task = Task {
            while (try? await Task.sleep(for: interval)) != nil {
                if let samples = await read(url) { watch.note(samples) }
            }
        }
        watch.reading.withLock { $0 = task }
        return watch
    }

    private func note(_ samples: [String: Double]) {
        highest.withLock { highest in
            for (metric, _) in Self.gauges { if let value = samples[metric] { highest[metric] = max(highest[metric] ?? value, value) } }
        }
    }

    /// Waits (up to `timeout`) until the gateway's `metric` is back at or below where it was
    /// when the watch started (the churn: every socket it opened has been let go of); how
    /// long that took, or nil if it never was.
    func waitUntilBack(_ metric: String, timeout: Duration = .seconds(5)) async -> Duration? {
        let started = ContinuousClock.now
        let start = first[metric] ?? 0
        while ContinuousClock.now - started < timeout {
            if let now = await Self.read(url)?[metric], now <= start { return ContinuousClock.now - started }
            try? await Task.sleep(for: .milliseconds(50))
        }
        return nil
    }

    /// Stops watching and reads the counters once more: the two rows of the report.
    func stop() async -> [(String, String)] {
        reading.withLock { $0?.cancel() }
        let last = await Self.read(url) ?? [:]
        note(last)
        return Self.rows(first: first, last: last, highest: highest.withLock { $0 })
    }

    private static func read(_ url: URL) async -> [String: Double]? {
        var request = URLRequest(url: url)
        request.timeoutInterval = 10
        guard let (data, response) = try? await URLSession.shared.data(for: request), (response as? HTTPURLResponse)?.statusCode == 200 else { return nil }
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

    /// The report's rows: each counter's growth (by label where it has them; those that
    /// did not grow left out) and each gauge's highest.
    static func rows(first: [String: Double], last: [String: Double], highest: [String: Double]) -> [(String, String)] {
        func count(_ value: Double) -> String { value == value.rounded() ? String(Int(value)) : String(format: "%.1f", value) }
        var grown: [String] = []
        for (prefix, name) in counters {
            let series = last.keys.filter { $0 == prefix || $0.hasPrefix(prefix + "{") }.sorted()
            let parts: [String] = series.compactMap { key in
                let growth = (last[key] ?? 0) - (first[key] ?? 0)
                guard growth > 0 else { return nil }
                guard let open = key.firstIndex(of: "{") else { return count(growth) }
                // `{reason="ping timeout"}` → `ping timeout × 3`
                let label = key[key.index(after: open)...].split(separator: "\"").dropFirst().first.map(String.init) ?? String(key[open...])
                return "\(label) × \(count(growth))"
            }
            if !parts.isEmpty { grown.append("\(name): " + parts.joined(separator: ", ")) }
        }
        let bytes = (last["chat_gateway_memory_released_bytes_total"] ?? 0) - (first["chat_gateway_memory_released_bytes_total"] ?? 0)
        if let index = grown.firstIndex(where: { $0.hasPrefix("memory given back: ") }) {
            grown[index] += String(format: " (%.1f MiB)", bytes / 1_048_576)
        }
        let seen = gauges.map { metric, name in "\(name) \(highest[metric].map(count) ?? "?")" }
        return [
            ("the gateway's counters over the run (its /metrics)", grown.isEmpty ? "none grew" : grown.joined(separator: " · ")),
            ("the gateway's queues, highest seen (its /metrics, every 0.5 s)", seen.joined(separator: " · ")),
        ]
    }
}

extension LoadReport {
    /// The gateway's side of the run (``GatewayWatch``), if it was watched.
    mutating func gateway(_ rows: [(String, String)]?) {
        for (name, value) in rows ?? [] { add(name, value) }
    }
}
