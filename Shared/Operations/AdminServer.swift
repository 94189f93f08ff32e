import ChatCore
import Hummingbird
import Logging
import NIOCore
import ServiceLifecycle

/// The small HTTP server of a service that has no other: `/healthz`, `/readyz` and
/// `/metrics` on `CHAT_ADMIN_HOST:CHAT_ADMIN_PORT`. It is the last thing to stop, so
/// `/readyz` reports "shutting down" while the service drains.
public struct AdminServer: Service {
    let endpoints: OperationsEndpoints
    let host: String
    let port: Int
    let logger: Logger
    let onListening: (@Sendable (Int) -> Void)?

    public init(endpoints: OperationsEndpoints, host: String, port: Int, logger: Logger, onListening: (@Sendable (Int) -> Void)? = nil) {
        self.endpoints = endpoints
        self.host = host
        self.port = port
        self.logger = logger
        self.onListening = onListening
    }

    public func run() async throws {
        let router = Router()
        endpoints.add(to: router)
        let logger = self.logger
        let onListening = self.onListening
        let app = Application(
            router: router,
            configuration: .init(address: .hostname(host, port: port), serverName: nil),
            onServerRunning: { channel in
                let port = channel.localAddress?.port ?? 0
                logger.info("admin endpoints listening", metadata: ["http.address": "\(channel.localAddress?.description ?? "?")",
                                                                     "http.paths": "/healthz /readyz /metrics"])
                onListening?(port)
            },
            logger: logger
        )
        // run(), not runService(): that would install its own signal handlers and stop before its turn.
        try await app.run()
    }
}
