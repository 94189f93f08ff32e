import Foundation
import Logging
import RedisClient

/// Every setting of every service, read once at start from the environment.
///
/// Each field documents its variable and default; ``init(environment:)`` rejects a
/// bad value with a ``ConfigurationError`` naming the variable.
public struct ChatConfiguration: Sendable {
    /// `CHAT_REDIS_URL`, default `redis://127.0.0.1:6379`.
    public var redisURL: String
    /// Parsed from ``redisURL``.
    public var redis: RedisConfiguration
    /// `CHAT_REDIS_PREFIX`, default empty: prepended to every Redis key and channel, so
    /// several deployments (or tests) can share one Redis.
    public var redisPrefix: String
    /// `CHAT_HTTP_HOST`, default `127.0.0.1`.
    public var httpHost: String
    /// `CHAT_HTTP_PORT`, default `8080`.
    public var httpPort: Int
    /// `CHAT_TLS_CERT` and `CHAT_TLS_KEY`: PEM files; HTTPS is served when both are set.
    public var tlsCertificatePath: String?
    public var tlsKeyPath: String?
    /// `CHAT_DB_PATH`, default `chat.sqlite` (the messages service's database).
    public var databasePath: String
    /// `CHAT_JWT_SECRET`: the key that signs access tokens; no default (the gateway and store require it).
    public var jwtSecret: String?
    /// `CHAT_TOKEN_TTL`, default `12h`.
    public var tokenTTL: Duration
    /// `CHAT_RETENTION`, default `90d`: how long a message lives.
    public var retention: Duration
    /// `CHAT_AUDIT_RETENTION`, default `2190d` (6 years): how long audit entries are kept.
    public var auditRetention: Duration
    /// `CHAT_SWEEP_INTERVAL`, default `1m`: how often retention looks for expired messages.
    public var sweepInterval: Duration
    /// `CHAT_PRESENCE_TTL`, default `30s`: how long a connection counts as alive without a heartbeat.
    public var presenceTTL: Duration
    /// `CHAT_PRESENCE_GRACE`, default `3s`: how long after a user's last socket closes they
    /// are announced offline, unless a socket is back by then (a gateway's restart, a page
    /// reload or a network blip announces nothing).
    public var presenceGrace: Duration
    /// `CHAT_GATEWAY_ID`, default `gw-<hostname>-<pid>`: names this gateway's reply channel.
    public var gatewayID: String
    /// `CHAT_CONSUMER_NAME`, default `messages-<hostname>`: the messages service's name in its
    /// consumer group; keep it stable so a restarted instance finds its own pending commands.
    public var consumerName: String
    /// `CHAT_WRITER_LEASE`, default `5s`: how long the messages service's writer lease
    /// (`messages:writer`) lasts without renewal. One instance applies commands; another
    /// waits as a standby and takes over within this time after the first dies (at once
    /// after a graceful stop). At least `1s`.
    public var writerLease: Duration
    /// `LOG_LEVEL`, default `info` (trace, debug, info, notice, warning, error, critical).
    public var logLevel: Logger.Level
    /// `CHAT_MESSAGE_RATE` / `CHAT_MESSAGE_BURST`, default 20 / 40: sends per second per user on one gateway
    /// (shared by all of that user's sockets there), and the burst allowed above it.
    public var messageRate: Double
    public var messageBurst: Double
    /// `CHAT_TYPING_RATE` / `CHAT_TYPING_BURST`, default 5 / 10: typing events per second per user.
    public var typingRate: Double
    public var typingBurst: Double
    /// `CHAT_PING_INTERVAL` / `CHAT_PING_TIMEOUT`, default 25s / 20s: Engine.IO heartbeat.
    public var pingInterval: Duration
    public var pingTimeout: Duration
    /// `CHAT_SOCKET_QUEUE`, default 1000: packets one socket may have waiting before it is closed.
    public var socketQueue: Int
    /// `CHAT_ADMISSION_LIMIT`, default 16: CONNECTs one gateway works on at once (the
    /// token, the subscription, presence, audit; the replay a CONNECT asks for is sent
    /// after its turn, and its answer holds no turn);
    /// the others wait their turn, so sockets coming back in a herd do not stall the sends
    /// of those still connected.
    public var admissionLimit: Int
    /// `CHAT_RELEASE_MEMORY_AFTER`, default 256: after at least this many CONNECTs waited
    /// their turn, once none waits, and each time this many sockets have left, the gateway
    /// gives the memory they used back to the system (`malloc_trim`, at most every 10 s);
    /// 0: never.
    public var releaseMemoryAfter: Int
    /// `CHAT_PUBLIC_DIR`, default `Services/gateway/Public`: the web client the gateway serves at `/`.
    public var publicDirectory: String
    /// `CHAT_ALLOW_PLAINTEXT`, default off: `1` lets the gateway serve plain HTTP on a
    /// non-loopback address (behind a proxy or ingress that terminates TLS).
    public var allowPlaintext: Bool
    /// `CHAT_ADMIN_HOST`, default `127.0.0.1`: where `/healthz`, `/readyz` and `/metrics` listen
    /// for the services without HTTP of their own.
    public var adminHost: String
    /// `CHAT_ADMIN_PORT`: their port; defaults messages 9091, presence 9092, retention 9093
    /// (the gateway serves them on `CHAT_HTTP_PORT`); `off` disables, `0` picks a free port.
    public var adminPort: AdminPort
    /// `CHAT_SHUTDOWN_GRACE`, default `10s`: how long a stopping gateway waits for sends in
    /// flight to be confirmed before it closes its sockets.
    public var shutdownGrace: Duration
    /// `CHAT_PUBLISH_BATCHES`, default on: the messages service publishes one message per
    /// channel for a batch of commands (``PublishBatch``); `0` publishes every event alone,
    /// for gateways older than batches (2026-12-03) during a rolling upgrade.
    public var publishBatches: Bool

    /// The defaults, with a gateway id made from this host and process.
    public init() {
        self.redisURL = "redis://127.0.0.1:6379"
        self.redis = RedisConfiguration(endpoint: .tcp(host: "127.0.0.1", port: 6379))
        self.redisPrefix = ""
        self.httpHost = "127.0.0.1"
        self.httpPort = 8080
        self.databasePath = "chat.sqlite"
        self.tokenTTL = .seconds(12 * 3600)
        self.retention = .seconds(90 * 86400)
        self.sweepInterval = .seconds(60)
        self.auditRetention = .seconds(2190 * 86400)
        self.presenceTTL = .seconds(30)
        self.presenceGrace = .seconds(3)
        self.gatewayID = "gw-\(ProcessInfo.processInfo.hostName)-\(ProcessInfo.processInfo.processIdentifier)"
        self.consumerName = "messages-\(ProcessInfo.processInfo.hostName)"
        self.writerLease = .seconds(5)
        self.logLevel = .info
        self.messageRate = 20
        self.messageBurst = 40
        self.typingRate = 5
        self.typingBurst = 10
        self.pingInterval = .seconds(25)
        self.pingTimeout = .seconds(20)
        self.socketQueue = 1000
        self.admissionLimit = 16
        self.releaseMemoryAfter = 256
        self.publicDirectory = "Services/gateway/Public"
        self.allowPlaintext = false
        self.adminHost = "127.0.0.1"
        self.adminPort = .serviceDefault
        self.shutdownGrace = .seconds(10)
        self.publishBatches = true
    }

    /// Reads the variables above from `environment`; unset or empty variables keep their defaults.
    public init(environment: [String: String]) throws(ConfigurationError) {
        self.init()
        let env = environment.filter { !$0.value.isEmpty }

        if let url = env["CHAT_REDIS_URL"] {
            do {
                redis = try RedisConfiguration(url: url)
            } catch {
                throw ConfigurationError(variable: "CHAT_REDIS_URL", expected: "redis://[:password@]host:port/db or redis+unix:///path", value: url, reason: error.reason)
            }
            redisURL = url
        }
        redisPrefix = env["CHAT_REDIS_PREFIX"] ?? redisPrefix
        httpHost = env["CHAT_HTTP_HOST"] ?? httpHost
        if let port = env["CHAT_HTTP_PORT"] {
            guard let p = Int(port), (0...65535).contains(p) else {
                throw ConfigurationError(variable: "CHAT_HTTP_PORT", expected: "a port number from 0 to 65535", value: port)
            }
            httpPort = p
        }
        tlsCertificatePath = env["CHAT_TLS_CERT"]
        tlsKeyPath = env["CHAT_TLS_KEY"]
        if (tlsCertificatePath == nil) != (tlsKeyPath == nil) {
            let missing = tlsCertificatePath == nil ? "CHAT_TLS_CERT" : "CHAT_TLS_KEY"
            throw ConfigurationError(variable: missing, expected: "a PEM file path (CHAT_TLS_CERT and CHAT_TLS_KEY are set together)", value: "")
        }
        databasePath = env["CHAT_DB_PATH"] ?? databasePath
        jwtSecret = env["CHAT_JWT_SECRET"]
        tokenTTL = try Self.duration("CHAT_TOKEN_TTL", env, default: tokenTTL)
        retention = try Self.duration("CHAT_RETENTION", env, default: retention)
        sweepInterval = try Self.duration("CHAT_SWEEP_INTERVAL", env, default: sweepInterval)
        auditRetention = try Self.duration("CHAT_AUDIT_RETENTION", env, default: auditRetention)
        presenceTTL = try Self.duration("CHAT_PRESENCE_TTL", env, default: presenceTTL)
        presenceGrace = try Self.duration("CHAT_PRESENCE_GRACE", env, default: presenceGrace)
        gatewayID = env["CHAT_GATEWAY_ID"] ?? gatewayID
        guard gatewayID.allSatisfy({ $0.isLetter || $0.isNumber || "-_.".contains($0) }) else {
            throw ConfigurationError(variable: "CHAT_GATEWAY_ID", expected: "letters, digits, '-', '_' and '.'", value: gatewayID)
        }
        consumerName = env["CHAT_CONSUMER_NAME"] ?? consumerName
        writerLease = try Self.duration("CHAT_WRITER_LEASE", env, default: writerLease)
        guard writerLease >= .seconds(1) else {
            throw ConfigurationError(variable: "CHAT_WRITER_LEASE", expected: "a duration of at least 1s", value: env["CHAT_WRITER_LEASE"] ?? "")
        }
        messageRate = try Self.positive("CHAT_MESSAGE_RATE", env, default: messageRate)
        messageBurst = try Self.positive("CHAT_MESSAGE_BURST", env, default: messageBurst)
        typingRate = try Self.positive("CHAT_TYPING_RATE", env, default: typingRate)
        typingBurst = try Self.positive("CHAT_TYPING_BURST", env, default: typingBurst)
        pingInterval = try Self.duration("CHAT_PING_INTERVAL", env, default: pingInterval)
        pingTimeout = try Self.duration("CHAT_PING_TIMEOUT", env, default: pingTimeout)
        socketQueue = Int(try Self.positive("CHAT_SOCKET_QUEUE", env, default: Double(socketQueue)))
        admissionLimit = max(1, Int(try Self.positive("CHAT_ADMISSION_LIMIT", env, default: Double(admissionLimit))))
        releaseMemoryAfter = try Self.count("CHAT_RELEASE_MEMORY_AFTER", env, default: releaseMemoryAfter)
        publicDirectory = env["CHAT_PUBLIC_DIR"] ?? publicDirectory
        allowPlaintext = try Self.flag("CHAT_ALLOW_PLAINTEXT", env, default: allowPlaintext)
        publishBatches = try Self.flag("CHAT_PUBLISH_BATCHES", env, default: publishBatches)
        adminHost = env["CHAT_ADMIN_HOST"] ?? adminHost
        if let port = env["CHAT_ADMIN_PORT"] {
            if port == "off" {
                adminPort = .off
            } else if let p = Int(port), (0...65535).contains(p) {
                adminPort = .port(p)
            } else {
                throw ConfigurationError(variable: "CHAT_ADMIN_PORT", expected: "a port number from 0 to 65535, or off", value: port)
            }
        }
        shutdownGrace = try Self.duration("CHAT_SHUTDOWN_GRACE", env, default: shutdownGrace)
        if let level = env["LOG_LEVEL"] {
            guard let parsed = Logger.Level(rawValue: level.lowercased()) else {
                throw ConfigurationError(variable: "LOG_LEVEL", expected: "one of trace, debug, info, notice, warning, error, critical", value: level)
            }
            logLevel = parsed
        }
    }

    /// True when ``httpHost`` can only be reached from this machine.
    public var listensOnLoopbackOnly: Bool {
        let host = httpHost.lowercased()
        return host == "localhost" || host == "::1" || host == "[::1]" || host.hasPrefix("127.")
    }

    /// Plain HTTP on an address others can reach is refused unless ``allowPlaintext``:
    /// message text is patient information.
    public func checkTransportSecurity() throws(ConfigurationError) {
        guard tlsCertificatePath == nil, !listensOnLoopbackOnly, !allowPlaintext else { return }
        throw ConfigurationError(variable: "CHAT_HTTP_HOST", expected: "a loopback address unless CHAT_TLS_CERT/CHAT_TLS_KEY are set (or CHAT_ALLOW_PLAINTEXT=1 behind a proxy that terminates TLS)", value: httpHost)
    }

    /// The key and channel names for ``redisPrefix``.
    public var keys: RedisKeys { RedisKeys(prefix: redisPrefix) }

    private static func positive(_ variable: String, _ env: [String: String], default value: Double) throws(ConfigurationError) -> Double {
        guard let text = env[variable] else { return value }
        guard let number = Double(text), number > 0, number.isFinite else {
            throw ConfigurationError(variable: variable, expected: "a positive number", value: text)
        }
        return number
    }

    /// A whole number, 0 or more.
    private static func count(_ variable: String, _ env: [String: String], default value: Int) throws(ConfigurationError) -> Int {
        guard let text = env[variable] else { return value }
        guard let number = Int(text), number >= 0 else {
            throw ConfigurationError(variable: variable, expected: "a whole number, 0 or more", value: text)
        }
        return number
    }

    /// `1`/`true` or `0`/`false`.
    private static func flag(_ variable: String, _ env: [String: String], default value: Bool) throws(ConfigurationError) -> Bool {
        guard let text = env[variable] else { return value }
        guard ["0", "1", "true", "false"].contains(text) else {
            throw ConfigurationError(variable: variable, expected: "1 or 0", value: text)
        }
        return text == "1" || text == "true"
    }

    private static func duration(_ variable: String, _ env: [String: String], default value: Duration) throws(ConfigurationError) -> Duration {
        guard let text = env[variable] else { return value }
        guard let duration = DurationParser.parse(text) else {
            throw ConfigurationError(variable: variable, expected: DurationParser.expected, value: text)
        }
        return duration
    }
}

/// `CHAT_ADMIN_PORT`: the service's default, a port, or none.
public enum AdminPort: Sendable, Hashable {
    case serviceDefault, off
    case port(Int)

    /// The port to listen on, given the service's default (nil: no admin server).
    public func port(default value: Int?) -> Int? {
        switch self {
        case .serviceDefault: value
        case .off: nil
        case .port(let port): port
        }
    }
}

/// A variable that is set to something the services cannot use.
public struct ConfigurationError: Error, Hashable, CustomStringConvertible {
    /// The environment variable, e.g. `CHAT_RETENTION`.
    public let variable: String
    /// What it should look like.
    public let expected: String
    /// What it was.
    public let value: String
    /// Why the value did not fit, when there is more to say than `expected`.
    public let reason: String?

    public init(variable: String, expected: String, value: String, reason: String? = nil) {
        self.variable = variable
        self.expected = expected
        self.value = value
        self.reason = reason
    }

    /// One line: `CHAT_RETENTION: expected a duration such as ..., got "abc"`.
    public var description: String {
        let why = reason.map { " (\($0))" } ?? ""
        return "\(variable): expected \(expected), got \"\(value)\"\(why)"
    }
}
