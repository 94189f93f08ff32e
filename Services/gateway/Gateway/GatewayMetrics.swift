import ChatCore
import Foundation
import Prometheus

/// The gateway's metrics: sockets connected, Socket.IO events in and out by name,
/// confirmation and delivery latency, rate-limited events, and why sessions closed.
public struct GatewayMetrics: Sendable {
    let connections: Gauge
    let readsHeld: Counter
    let memoryReleases: Counter
    let memoryReleased: Counter
    let confirmLatency: DurationHistogram
    let deliveryLatency: ValueHistogram
    private let registry: PrometheusCollectorRegistry
    /// The labelled counters of every known name, made once: the registry takes a lock and
    /// builds a label key per lookup, too much for every message.
    private let eventsIn: [String: Counter]
    private let eventsOut: [String: Counter]
    private let rateLimitedBy: [String: Counter]

    public init(registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry()) {
        self.registry = registry
        connections = registry.gauge("chat_gateway_connections", help: "Socket.IO sockets connected (authenticated) on this gateway.")
        readsHeld = registry.counter("chat_gateway_reads_held_total",
                                     help: "Times a session had inboundBuffer packets waiting to be handled and held its client back (a WebSocket stopped reading, a polling POST's answer waited).")
        memoryReleases = registry.counter("chat_gateway_memory_releases_total",
                                          help: "Times the gateway gave the allocator's free memory back to the system after a burst of CONNECTs or of sockets leaving (CHAT_RELEASE_MEMORY_AFTER).")
        memoryReleased = registry.counter("chat_gateway_memory_released_bytes_total",
                                          help: "Resident bytes given back to the system after bursts of CONNECTs or of sockets leaving (malloc_trim).")
        confirmLatency = registry.durationHistogram(
            "chat_gateway_confirm_latency_seconds", help: "From a send_message received to its message_sent_confirmed (the store committed it).",
            buckets: PrometheusCollectorRegistry.latencyBuckets)
        deliveryLatency = registry.valueHistogram(
            "chat_gateway_delivery_latency_seconds", help: "From a message's commit time (its timestamp) to its hand-off to a recipient socket here.",
            buckets: PrometheusCollectorRegistry.latencyBuckets.map { Double($0.components.attoseconds) / 1e18 + Double($0.components.seconds) })
        func counters(_ names: [String], _ make: (String) -> Counter) -> [String: Counter] {
            Dictionary(uniqueKeysWithValues: names.map { ($0, make($0)) })
        }
        eventsIn = counters(ClientEventName.allCases.map(\.rawValue) + ["unknown"]) { Self.eventIn($0, registry) }
        eventsOut = counters(ServerEventName.allCases.map(\.rawValue)) { Self.eventOut($0, registry) }
        rateLimitedBy = counters(["send", "typing", "other"]) { Self.rateLimited($0, registry) }
    }

    func eventIn(_ name: String) -> Counter { eventsIn[name] ?? Self.eventIn(name, registry) }

    /// Events gateways read themselves (`session_revoked`) are made on first use.
    func eventOut(_ name: String) -> Counter { eventsOut[name] ?? Self.eventOut(name, registry) }

    func rateLimited(_ limit: String) -> Counter { rateLimitedBy[limit] ?? Self.rateLimited(limit, registry) }

    private static func eventIn(_ name: String, _ registry: PrometheusCollectorRegistry) -> Counter {
        registry.counter("chat_gateway_events_in_total", help: "Socket.IO events received from clients, by name.", labels: [("event", name)])
    }

    private static func eventOut(_ name: String, _ registry: PrometheusCollectorRegistry) -> Counter {
        registry.counter("chat_gateway_events_out_total", help: "Socket.IO events sent to clients, by name (one per socket).", labels: [("event", name)])
    }

    private static func rateLimited(_ limit: String, _ registry: PrometheusCollectorRegistry) -> Counter {
        registry.counter("chat_gateway_rate_limited_total", help: "Events refused with rate_limited, by limit (send, typing, other).",
                         labels: [("limit", limit)])
    }

    func sessionClosed(_ reason: String) -> Counter {
        registry.counter("chat_gateway_sessions_closed_total", help: "Engine.IO sessions closed, by reason (outbound queue full, ping timeout, ...).",
                         labels: [("reason", reason)])
    }

    /// A receive_message handed to sockets: how long after its commit.
    func delivered(sentAt: Date) {
        deliveryLatency.record(max(0, Date().timeIntervalSince(sentAt)))
    }

    /// Gauges read on each scrape.
    func register(on runtime: ChatRuntime, realtime: RealtimeServer, engine: EngineServer) {
        let users = registry.gauge("chat_gateway_users", help: "Distinct users with a socket on this gateway.")
        let sessions = registry.gauge("chat_gateway_engine_sessions", help: "Engine.IO sessions open (connected or not yet).")
        let pending = registry.gauge("chat_gateway_store_requests_pending", help: "Commands and queries waiting for the store's answer.")
        let late = registry.gauge("chat_gateway_store_late_writes",
                                  help: "Sends answered unavailable after the store timeout whose late answer is still awaited (it goes to the socket).")
        let up = registry.gauge("chat_gateway_store_up",
                                help: "1 if the messages service answered a ping within 2 s at this scrape, else 0 (readiness does not depend on it).")
        let admission = registry.gauge("chat_gateway_admission_waiting",
                                       help: "CONNECTs waiting their turn (CHAT_ADMISSION_LIMIT are worked on at once).")
        let store = realtime.store
        runtime.scrape.add {
            admission.set(Double(realtime.admission.waitingCount))
            users.set(Double(realtime.userCount))
            sessions.set(Double(engine.sessionCount))
            pending.set(Double(store.pendingRequests))
            late.set(Double(store.lateWrites))
            let answered = (try? await withTimeout(.seconds(2)) { _ = try store.result(await store.query(.ping, user: ""), as: [String: String].self) }) != nil
            up.set(Double(answered ? 1 : 0))
        }
    }
}
