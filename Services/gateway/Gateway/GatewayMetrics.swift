import ChatCore
import Foundation
import Prometheus

/// The gateway's metrics: sockets connected, Socket.IO events in and out by name,
/// confirmation and delivery latency, rate-limited events, and why sessions closed.
public struct GatewayMetrics: Sendable {
    let connections: Gauge
    let confirmLatency: DurationHistogram
    let deliveryLatency: ValueHistogram
    private let registry: PrometheusCollectorRegistry

    public init(registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry()) {
        self.registry = registry
        connections = registry.gauge("chat_gateway_connections", help: "Socket.IO sockets connected (authenticated) on this gateway.")
        confirmLatency = registry.durationHistogram(
            "chat_gateway_confirm_latency_seconds", help: "From a send_message received to its message_sent_confirmed (the store committed it).",
            buckets: PrometheusCollectorRegistry.latencyBuckets)
        deliveryLatency = registry.valueHistogram(
            "chat_gateway_delivery_latency_seconds", help: "From a message's commit time (its timestamp) to its hand-off to a recipient socket here.",
            buckets: PrometheusCollectorRegistry.latencyBuckets.map { Double($0.components.attoseconds) / 1e18 + Double($0.components.seconds) })
        for name in ClientEventName.allCases.map(\.rawValue) + ["unknown"] { _ = eventIn(name) }
        for name in ServerEventName.allCases.map(\.rawValue) { _ = eventOut(name) }
        for limit in ["send", "typing", "other"] { _ = rateLimited(limit) }
    }

    func eventIn(_ name: String) -> Counter {
        registry.counter("chat_gateway_events_in_total", help: "Socket.IO events received from clients, by name.", labels: [("event", name)])
    }

    func eventOut(_ name: String) -> Counter {
        registry.counter("chat_gateway_events_out_total", help: "Socket.IO events sent to clients, by name (one per socket).", labels: [("event", name)])
    }

    func rateLimited(_ limit: String) -> Counter {
        registry.counter("chat_gateway_rate_limited_total", help: "Events refused with rate_limited, by limit (send, typing, other).",
                         labels: [("limit", limit)])
    }

    func sessionClosed(_ reason: String) -> Counter {
        registry.counter("chat_gateway_sessions_closed_total", help: "Engine.IO sessions closed, by reason (outbound queue full, ping timeout, ...).",
                         labels: [("reason", reason)])
    }

    /// A receive_message handed to sockets: how long after its commit.
    func delivered(timestamp: String?) {
        guard let timestamp, let date = ChatJSON.parseTimestamp(timestamp) else { return }
        deliveryLatency.record(max(0, Date().timeIntervalSince(date)))
    }

    /// Gauges read on each scrape.
    func register(on runtime: ChatRuntime, realtime: RealtimeServer, engine: EngineServer) {
        let users = registry.gauge("chat_gateway_users", help: "Distinct users with a socket on this gateway.")
        let sessions = registry.gauge("chat_gateway_engine_sessions", help: "Engine.IO sessions open (connected or not yet).")
        let pending = registry.gauge("chat_gateway_store_requests_pending", help: "Commands and queries waiting for the store's answer.")
        let store = realtime.store
        runtime.scrape.add {
            users.set(Double(realtime.userCount))
            sessions.set(Double(engine.sessionCount))
            pending.set(Double(store.pendingRequests))
        }
    }
}
