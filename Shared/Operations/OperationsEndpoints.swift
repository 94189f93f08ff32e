import ChatCore
import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import Prometheus
import RedisClient

/// `/healthz`, `/readyz` and `/metrics`, added to the gateway's router or served alone by
/// ``AdminServer`` for the services without HTTP.
///
/// - `/healthz`: 200 while the process answers at all (a liveness probe).
/// - `/readyz`: 200 `{"status":"ready"}` once the service has started, can reach Redis
///   and passes its own check; 503 with the reason otherwise, and from the moment it
///   was asked to stop (so a load balancer takes it out before it closes).
/// - `/metrics`: the Prometheus text format, after the scrape hooks have refreshed the
///   gauges that are read on demand (process CPU and memory, stream lag, ...).
public struct OperationsEndpoints: Sendable {
    public typealias Check = @Sendable () async throws -> Void

    let runtime: ChatRuntime
    let check: Check?

    /// `check` is the service's own readiness test (it throws a reason).
    public init(runtime: ChatRuntime, check: Check? = nil) {
        self.runtime = runtime
        self.check = check
    }

    public func add<Context: RequestContext>(to router: Router<Context>) {
        router.get("/healthz") { _, _ in Self.json(#"{"status":"ok"}"#, status: .ok) }
        router.get("/readyz") { _, _ in await self.readiness() }
        router.get("/metrics") { _, _ in await self.metrics() }
    }

    /// Why the service is not ready, or nil.
    public func notReadyReason() async -> String? {
        switch runtime.health.phase {
        case .starting: return runtime.health.waitingFor.map { "starting: \($0)" } ?? "starting"
        case .draining: return "shutting down"
        case .ready: break
        }
        do {
            try await withTimeout(.seconds(2)) { try await runtime.redis.ping() }
        } catch {
            return "Redis is unreachable"
        }
        if let check {
            do { try await check() } catch let error as ChatError { return error.message } catch { return "\(error)" }
        }
        return nil
    }

    public func readiness() async -> Response {
        guard let reason = await notReadyReason() else { return Self.json(#"{"status":"ready"}"#, status: .ok) }
        let body = ChatJSON.text(ErrorBody(error: ChatError(.unavailable, "not ready: \(reason)")))
        return Self.json(body, status: .serviceUnavailable)
    }

    public func metrics() async -> Response {
        await runtime.scrape.run()
        var buffer: [UInt8] = []
        buffer.reserveCapacity(16_384)
        runtime.metrics.emit(into: &buffer)
        return Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8", .cacheControl: "no-store"],
                        body: .init(byteBuffer: ByteBuffer(bytes: buffer)))
    }

    static func json(_ body: String, status: HTTPResponse.Status) -> Response {
        Response(status: status, headers: [.contentType: "application/json; charset=utf-8", .cacheControl: "no-store"],
                 body: .init(byteBuffer: ByteBuffer(string: body)))
    }
}
