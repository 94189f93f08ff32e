import Prometheus
import RedisClient

/// How far a consumer group is behind, read with XINFO GROUPS and XLEN on each scrape:
/// `chat_stream_pending` (delivered, not yet acknowledged), `chat_stream_lag` (not yet
/// delivered) and `chat_stream_length`, labelled with the stream and group.
public enum StreamMetrics {
    public static func register(_ runtime: ChatRuntime, stream: String, group: String) {
        let labels = [("stream", stream), ("group", group)]
        let pending = runtime.metrics.gauge("chat_stream_pending", help: "Entries delivered to the consumer group and not yet acknowledged.", labels: labels)
        let lag = runtime.metrics.gauge("chat_stream_lag", help: "Entries in the stream not yet delivered to the consumer group.", labels: labels)
        let length = runtime.metrics.gauge("chat_stream_length", help: "Entries in the stream (XLEN).", labels: [("stream", stream)])
        let redis = runtime.redis
        runtime.scrape.add {
            guard let replies = try? await redis.pipeline([["XINFO", "GROUPS", stream], ["XLEN", stream]]), replies.count == 2 else { return }
            length.set(Double(replies[1].int ?? 0))
            for info in replies[0].array ?? [] {
                let fields = Self.fields(info)
                guard fields["name"]?.string == group else { continue }
                pending.set(Double(fields["pending"]?.int ?? 0))
                lag.set(Double(fields["lag"]?.int ?? 0))
            }
        }
    }

    /// A RESP2 flat map (`[k1, v1, k2, v2, ...]`) as a dictionary.
    static func fields(_ value: RESPValue) -> [String: RESPValue] {
        let items = value.array ?? []
        var fields: [String: RESPValue] = [:]
        for index in stride(from: 0, to: items.count - 1, by: 2) {
            if let key = items[index].string { fields[key] = items[index + 1] }
        }
        return fields
    }
}
