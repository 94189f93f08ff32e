import Foundation
import Logging
import RedisClient
import Testing
@testable import ChatCore

@Suite("Configuration from the environment")
struct ConfigurationTests {
    @Test("with nothing set, every variable has its documented default")
    func defaults() throws {
        let config = try ChatConfiguration(environment: [:])
        #expect(config.redisURL == "redis://127.0.0.1:6379")
        #expect(config.redis.endpoint == .tcp(host: "127.0.0.1", port: 6379))
        #expect(config.httpHost == "127.0.0.1")
        #expect(config.httpPort == 8080)
        #expect(config.tlsCertificatePath == nil)
        #expect(config.databasePath == "chat.sqlite")
        #expect(config.jwtSecret == nil)
        #expect(config.tokenTTL == .seconds(12 * 3600))
        #expect(config.retention == .seconds(90 * 86400))
        #expect(config.sweepInterval == .seconds(60))
        #expect(config.presenceTTL == .seconds(30))
        #expect(config.presenceGrace == .seconds(3))
        #expect(config.gatewayID.hasPrefix("gw-"))
        #expect(config.logLevel == .info)
        #expect(config.keys.commands == "chat:commands")
        #expect(config.allowPlaintext == false)
        #expect(config.publishBatches == true)
        #expect(config.admissionLimit == 16)
        #expect(config.releaseMemoryAfter == 256)
        #expect(config.writerLease == .seconds(5))
    }

    @Test("every variable is read")
    func everyVariable() throws {
        let config = try ChatConfiguration(environment: [
            "CHAT_REDIS_URL": "redis://:pw@cache:6380/1", "CHAT_REDIS_PREFIX": "staging:",
            "CHAT_HTTP_HOST": "0.0.0.0", "CHAT_HTTP_PORT": "8443",
            "CHAT_TLS_CERT": "/etc/chat/cert.pem", "CHAT_TLS_KEY": "/etc/chat/key.pem",
            "CHAT_DB_PATH": "/var/lib/chat/chat.sqlite", "CHAT_JWT_SECRET": "k",
            "CHAT_TOKEN_TTL": "30m", "CHAT_RETENTION": "5s", "CHAT_SWEEP_INTERVAL": "500ms",
            "CHAT_PRESENCE_TTL": "2s", "CHAT_GATEWAY_ID": "gw-a_1.x", "LOG_LEVEL": "DEBUG",
            "CHAT_ALLOW_PLAINTEXT": "1", "CHAT_PUBLISH_BATCHES": "0", "CHAT_PRESENCE_GRACE": "250ms",
            "CHAT_ADMISSION_LIMIT": "4", "CHAT_RELEASE_MEMORY_AFTER": "0", "CHAT_WRITER_LEASE": "1500ms",
        ])
        #expect(config.writerLease == .milliseconds(1500))
        #expect(config.releaseMemoryAfter == 0)
        #expect(config.presenceGrace == .milliseconds(250))
        #expect(config.admissionLimit == 4)
        #expect(config.redis.endpoint == .tcp(host: "cache", port: 6380))
        #expect(config.redis.password == "pw")
        #expect(config.redis.database == 1)
        #expect(config.keys.commands == "staging:chat:commands")
        #expect(config.httpHost == "0.0.0.0")
        #expect(config.httpPort == 8443)
        #expect(config.tlsCertificatePath == "/etc/chat/cert.pem")
        #expect(config.tlsKeyPath == "/etc/chat/key.pem")
        #expect(config.databasePath == "/var/lib/chat/chat.sqlite")
        #expect(config.jwtSecret == "k")
        #expect(config.tokenTTL == .seconds(1800))
        #expect(config.retention == .seconds(5))
        #expect(config.sweepInterval == .milliseconds(500))
        #expect(config.presenceTTL == .seconds(2))
        #expect(config.gatewayID == "gw-a_1.x")
        #expect(config.logLevel == .debug)
        #expect(config.allowPlaintext == true)
        #expect(config.publishBatches == false)
    }

    @Test("a bad value names its variable and what was expected", arguments: [
        ("CHAT_REDIS_URL", "http://localhost"), ("CHAT_HTTP_PORT", "eighty"), ("CHAT_HTTP_PORT", "70000"),
        ("CHAT_TOKEN_TTL", "12"), ("CHAT_RETENTION", "abc"), ("CHAT_SWEEP_INTERVAL", "-1s"),
        ("CHAT_PRESENCE_TTL", "0s"), ("CHAT_PRESENCE_GRACE", "soon"), ("CHAT_GATEWAY_ID", "gw one"), ("LOG_LEVEL", "loud"), ("CHAT_TLS_KEY", "/only/cert"),
        ("CHAT_ALLOW_PLAINTEXT", "yes"), ("CHAT_PUBLISH_BATCHES", "off"), ("CHAT_ADMISSION_LIMIT", "0"), ("CHAT_ADMISSION_LIMIT", "many"),
        ("CHAT_RELEASE_MEMORY_AFTER", "-1"), ("CHAT_RELEASE_MEMORY_AFTER", "2.5"), ("CHAT_WRITER_LEASE", "500ms"), ("CHAT_WRITER_LEASE", "soon"),
    ])
    func badValues(variable: String, value: String) {
        let environment = variable == "CHAT_TLS_KEY" ? ["CHAT_TLS_CERT": value] : [variable: value]
        let error = #expect(throws: ConfigurationError.self) { try ChatConfiguration(environment: environment) }
        #expect(error?.variable == variable)
        #expect(error?.description.hasPrefix("\(variable): expected ") == true)
        #expect(error?.description.contains("\n") == false)
    }
}

@Suite("Durations")
struct DurationParserTests {
    @Test("number and unit parse", arguments: [
        ("500ms", Duration.milliseconds(500)), ("3s", .seconds(3)), ("1.5m", .seconds(90)),
        ("12h", .seconds(43200)), ("90d", .seconds(7_776_000)), (" 2s ", .seconds(2)),
    ])
    func parses(text: String, expected: Duration) {
        #expect(DurationParser.parse(text) == expected)
    }

    @Test("anything else is refused", arguments: ["", "5", "s", "5 sec", "5S", "-1s", "0ms", "0.1ms", "1e3s", "1w", "9999999999999d"])
    func refused(text: String) {
        #expect(DurationParser.parse(text) == nil)
    }

    @Test("durations format back in their largest whole unit")
    func formats() {
        #expect(DurationParser.format(.seconds(7_776_000)) == "90d")
        #expect(DurationParser.format(.seconds(5)) == "5s")
        #expect(DurationParser.format(.milliseconds(1500)) == "1500ms")
        #expect(DurationParser.format(.seconds(3600)) == "1h")
    }
}

@Suite("Redis key names")
struct RedisKeysTests {
    @Test("names follow DESIGN.md and carry the prefix")
    func names() {
        let plain = RedisKeys()
        #expect(plain.commands == "chat:commands")
        #expect(plain.events == "chat:events")
        #expect(plain.presenceCommands == "presence:commands")
        #expect(plain.user("dr.kim@clinic.com") == "user:dr.kim@clinic.com")
        #expect(plain.gateway("gw-1") == "gateway:gw-1")
        #expect(plain.presenceUser("a@b") == "presence:user:a@b")
        #expect(plain.presenceConnection("c1") == "presence:conn:c1")
        #expect(plain.retentionDue == "retention:due")
        #expect(plain.storeWriter == "messages:writer")
        let prefixed = RedisKeys(prefix: "t1:")
        #expect(prefixed.commands == "t1:chat:commands")
        #expect(prefixed.user("a@b") == "t1:user:a@b")
        #expect([RedisKeys.messagesGroup, RedisKeys.presenceGroup, RedisKeys.retentionGroup] == ["messages", "presence", "retention"])
    }
}
