import Foundation
import Logging
import RedisClient
import ServiceLifecycle

/// What a service is built from: its configuration, a running Redis client and a logger.
public struct ChatRuntime: Sendable {
    public let configuration: ChatConfiguration
    public let redis: RedisClient
    public let logger: Logger

    public init(configuration: ChatConfiguration, redis: RedisClient, logger: Logger) {
        self.configuration = configuration
        self.redis = redis
        self.logger = logger
    }

    /// The key and channel names of this deployment.
    public var keys: RedisKeys { configuration.keys }
}

/// The body of every executable: read the configuration, start logging and Redis,
/// run the services in one `ServiceGroup`, stop gracefully on SIGTERM or SIGINT.
public enum ServiceMain {
    /// Runs until a signal; exits 0 after a graceful stop, 1 after a failure,
    /// 2 (with one line on stderr naming the variable) for a bad configuration.
    public static func run(
        _ name: String,
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

        do {
            let services = try makeServices(runtime)
            // The Redis client comes first so that it is shut down last.
            let group = ServiceGroup(configuration: .init(
                services: [.init(service: redis)] + services.map { .init(service: $0) },
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

/// Start-up steps every service shares.
public enum ServiceStartup {
    /// Waits for Redis (returning `false` if the service is stopped first) and creates
    /// the consumer groups the service reads, starting at the beginning of each stream.
    public static func prepare(_ runtime: ChatRuntime, groups: [(stream: String, group: String)]) async throws -> Bool {
        do {
            try await cancelWhenGracefulShutdown {
                try await runtime.redis.waitUntilReady()
            }
        } catch is CancellationError {
            return false
        } catch let error as RedisConnectionError where error.code == .shutdown {
            return false
        }
        for (stream, group) in groups {
            if try await runtime.redis.xgroupCreate(stream, group: group, startingAt: "0", makeStream: true) {
                runtime.logger.info("created consumer group", metadata: ["redis.stream": "\(stream)", "redis.group": "\(group)"])
            }
        }
        return true
    }
}
