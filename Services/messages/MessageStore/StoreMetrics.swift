import ChatCore
import Prometheus

/// The messages service's metrics: commands applied by type, batch sizes, and how long
/// each batch's transaction took to commit. Stream lag comes from ``StreamMetrics``.
public struct StoreMetrics: Sendable {
    private let registry: PrometheusCollectorRegistry
    private let batchSize: ValueHistogram
    private let commitLatency: DurationHistogram
    private let malformed: Counter

    public init(registry: PrometheusCollectorRegistry) {
        self.registry = registry
        batchSize = registry.valueHistogram("chat_store_batch_size", help: "Commands applied per batch (one SQLite transaction each).",
                                           buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256, 512])
        commitLatency = registry.durationHistogram("chat_store_commit_latency_seconds", help: "Time to apply and commit one batch.",
                                                   buckets: PrometheusCollectorRegistry.latencyBuckets)
        malformed = registry.counter("chat_store_commands_malformed_total", help: "Stream entries dropped because they were not a command.")
        for type in StoreCommandType.allCases { _ = applied(type) }
    }

    private func applied(_ type: StoreCommandType) -> Counter {
        // The registry hands back the same counter for the same name and labels.
        registry.counter("chat_store_commands_applied_total", help: "Commands applied to the store, by type.", labels: [("type", type.rawValue)])
    }

    /// Entries dropped because they are not commands.
    func dropped(_ count: Int) {
        malformed.increment(by: Int64(count))
    }

    /// One transaction: its commands and how long applying and committing them took.
    func record(batch commands: [StoreCommand], duration: Duration) {
        batchSize.record(Double(commands.count))
        commitLatency.record(duration)
        var counts: [StoreCommandType: Int64] = [:]
        for command in commands { counts[command.type, default: 0] += 1 }
        for (type, count) in counts { applied(type).increment(by: count) }
    }
}
