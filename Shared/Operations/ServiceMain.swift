import ChatCore
import Foundation
import Logging
import Prometheus
import RedisClient
import ServiceLifecycle

/// The body of every executable: read the configuration, start logging and Redis,
/// run the services in one `ServiceGroup`, stop gracefully on SIGTERM or SIGINT.
public enum ServiceMain {
    /// Runs until a signal; exits 0 after a graceful stop, 1 after a failure,
    /// 2 (with one line on stderr naming the variable) for a bad configuration.
    ///
    /// `adminPort` is the service's default `CHAT_ADMIN_PORT` (nil for the gateway, which
    /// serves `/healthz`, `/readyz` and `/metrics` on its own port unless the variable is set).
    public static func run(
        _ name: String,
        adminPort defaultAdminPort: Int?,
        environment: [String: String] = ProcessInfo.processInfo.environment,
        makeServices: (ChatRuntime) throws -> [any Service]
    ) async -> Never {
        let configuration: ChatConfiguration
        do {
            configuration = try ChatConfiguration(environment: environment)
        } catch {
            FileHandle.standardError.write(Data("\(name): \(error)\n".utf8))
            exit(2)
        }

        let level = configuration.logLevel
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        var logger = Logger(label: name)
        logger[metadataKey: "service"] = "\(name)"

        var redisConfiguration = configuration.redis
        redisConfiguration.clientName = name
        let redis = RedisClient(configuration: redisConfiguration, logger: logger)
        let runtime = ChatRuntime(configuration: configuration, redis: redis, logger: logger)
        let process = ProcessMetrics(registry: runtime.metrics)
        runtime.scrape.add { process.update() }

        do {
            let services = try makeServices(runtime)
            var admin: [any Service] = []
            if let port = configuration.adminPort.port(default: defaultAdminPort) {
                admin.append(AdminServer(endpoints: OperationsEndpoints(runtime: runtime), host: configuration.adminHost, port: port, logger: logger))
            }
            // Shut down in reverse: first /readyz turns 503 (DrainSignal), then the services
            // finish their work, then the admin endpoints, and the Redis client last.
            let group = ServiceGroup(configuration: .init(
                services: ([redis] + admin + services + [DrainSignal(health: runtime.health)]).map { .init(service: $0) },
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: logger
            ))
            try await group.run()
            logger.info("stopped")
            exit(0)
        } catch {
            logger.error("failed", metadata: ["error": "\(error)"])
            exit(1)
        }
    }
}

/// Marks the service draining the moment a stop is requested (it is the first service
/// the group tells), so `/readyz` answers 503 while the others wind down.
struct DrainSignal: Service {
    let health: ServiceHealth

    func run() async throws {
        try? await gracefulShutdown()
        health.startDraining()
    }
}
