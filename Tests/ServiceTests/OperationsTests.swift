import ChatCore
import ChatTesting
import Foundation
import Gateway
import MessageStore
import RedisClient
import Testing

/// One sample of a Prometheus text page: `name{labels} value`, or nil.
func sample(_ page: String, _ name: String, _ labels: String = "") -> Double? {
    let key = labels.isEmpty ? name : "\(name){\(labels)}"
    for line in page.split(separator: "\n") where !line.hasPrefix("#") {
        guard let space = line.lastIndex(of: " ") else { continue }
        if line[..<space] == key { return Double(line[line.index(after: space)...]) }
    }
    return nil
}

/// The port a gateway logged when it was ready (`CHAT_HTTP_PORT=0` picks one).
func gatewayPort(_ log: URL) -> Int? {
    guard let address = contents(log).split(separator: " ").first(where: { $0.hasPrefix("http.address=") }) else { return nil }
    return Int(address.split(separator: ":").last ?? "")
}

/// The address a service logged for its admin endpoints (`CHAT_ADMIN_PORT=0` picks one).
func adminPort(_ log: URL) -> Int? {
    guard let line = contents(log).split(separator: "\n").first(where: { $0.contains("admin endpoints listening") }),
          let address = line.split(separator: " ").first(where: { $0.hasPrefix("http.address=") }) else { return nil }
    return Int(address.split(separator: ":").last ?? "")
}

@Suite("Health and metrics", .redisServer)
struct OperationsTests {
    @Test("every service answers /healthz, /readyz and /metrics, with real values after traffic")
    func metricsAfterTraffic() async throws {
        let server = try RedisServer.required()
        let keys = uniqueKeys("ops")
        let accounts = try TwoUserStore("ops")
        defer { accounts.remove() }
        let database = accounts.database
        let secret = String(repeating: "o", count: 40)
        let started = Date().timeIntervalSince1970
        let environment = [
            "CHAT_REDIS_URL": server.url, "CHAT_REDIS_PREFIX": keys.prefix, "CHAT_DB_PATH": database, "CHAT_JWT_SECRET": secret,
            "CHAT_CONSUMER_NAME": "messages-ops", "CHAT_HTTP_PORT": "0", "CHAT_RETENTION": "3s", "CHAT_SWEEP_INTERVAL": "500ms",
            "CHAT_MESSAGE_RATE": "1", "CHAT_MESSAGE_BURST": "5",
        ]
        var processes: [String: (ChildProcess, URL)] = [:]
        defer { for (process, log) in processes.values { process.signal(SIGKILL); try? FileManager.default.removeItem(at: log) } }
        for name in ["chat-messages", "chat-presence", "chat-retention", "chat-gateway"] {
            let (process, log) = try launch(name, environment: environment)
            processes[name] = (process, log)
            try #require(await eventually(timeout: .seconds(20)) { contents(log).contains("] ready") }, "\(name): \(contents(log))")
        }
        var found = ["chat-gateway": try #require(gatewayPort(processes["chat-gateway"]!.1), "\(contents(processes["chat-gateway"]!.1))")]
        for name in ["chat-messages", "chat-presence", "chat-retention"] {
            let port: Int = try #require(adminPort(processes[name]!.1), "\(name) logged no admin address: \(contents(processes[name]!.1))")
            found[name] = port
        }
        let ports = found
        @Sendable func get(_ service: String, _ path: String) async throws -> (Int, String) {
            try await PollingClient.request("GET", "http://127.0.0.1:\(ports[service]!)\(path)")
        }
        for service in ports.keys {
            #expect(try await get(service, "/healthz") == (200, #"{"status":"ok"}"#), "\(service)")
            let ready = await eventually { (try? await get(service, "/readyz").0) == 200 }
            let answer = try await get(service, "/readyz")
            #expect(ready, "\(service): \(answer)")
        }

        // Traffic: two users connected, eight sends of which the limit (burst 5) lets five through.
        let tokens = try await TwoUserStore.tokens(server: server, keys: keys, secret: secret)
        let doctor = try await PollingClient.open(port: ports["chat-gateway"]!)
        try await doctor.connect(token: tokens.1)
        let admin = try await PollingClient.open(port: ports["chat-gateway"]!)
        try await admin.connect(token: tokens.0)
        try await admin.post((1...8).map { #"42["send_message",{"receiver_email":"doctor@clinic.com","content":"m\#($0)","client_id":"c\#($0)"}]"# })
        let confirmed = try await admin.collect("message_sent_confirmed", until: .now + .seconds(10)) { $0.count == 5 }
        #expect(confirmed.count == 5)
        let received = try await doctor.collect("receive_message", until: .now + .seconds(10)) { $0.count == 5 }
        #expect(received.count == 5)

        let gateway = try await get("chat-gateway", "/metrics").1
        #expect(sample(gateway, "chat_gateway_connections") == 2, "\(gateway)")
        #expect(sample(gateway, "chat_gateway_users") == 2)
        #expect(sample(gateway, "chat_gateway_store_late_writes") == 0, "no send outlived the store timeout")
        #expect(sample(gateway, "chat_gateway_store_up") == 1)
        #expect(sample(gateway, "chat_gateway_events_in_total", #"event="send_message""#) == 8)
        #expect(sample(gateway, "chat_gateway_rate_limited_total", #"limit="send""#) == 3)
        #expect(sample(gateway, "chat_gateway_events_out_total", #"event="receive_message""#) == 5)
        #expect(sample(gateway, "chat_gateway_events_out_total", #"event="message_sent_confirmed""#) == 5)
        #expect(sample(gateway, "chat_gateway_confirm_latency_seconds_count") == 5)
        #expect(sample(gateway, "chat_gateway_delivery_latency_seconds_count") == 5)
        #expect((sample(gateway, "process_resident_memory_bytes") ?? 0) > 1_000_000)
        #expect((sample(gateway, "process_cpu_seconds_total") ?? 0) > 0)

        let store = try await get("chat-messages", "/metrics").1
        #expect(sample(store, "chat_store_commands_applied_total", #"type="send""#) == 5, "\(store)")
        #expect((sample(store, "chat_store_batch_size_count") ?? 0) >= 1)
        #expect((sample(store, "chat_store_commit_latency_seconds_count") ?? 0) >= 1)
        #expect(sample(store, "chat_stream_pending", #"stream="\#(keys.commands)",group="messages""#) == 0)
        #expect(sample(store, "chat_stream_lag", #"stream="\#(keys.commands)",group="messages""#) == 0)

        let presence = try await get("chat-presence", "/metrics").1
        let online = await eventually { (try? await sample(get("chat-presence", "/metrics").1, "chat_presence_online_users")) == 2 }
        #expect(online, "\(presence)")
        #expect(sample(presence, "chat_presence_connections") == 2)
        #expect(sample(presence, "chat_presence_transitions_total", #"to="online""#) == 2)

        // The five messages expire after 3 s; the sweep (every 500 ms) purges them.
        let purged = await eventually(timeout: .seconds(20)) {
            (try? await sample(get("chat-retention", "/metrics").1, "chat_retention_purged_total")) == 5
        }
        let retention = try await get("chat-retention", "/metrics").1
        #expect(purged, "\(retention)")
        #expect((sample(retention, "chat_retention_last_sweep_timestamp_seconds") ?? 0) >= started)
        #expect((sample(retention, "chat_retention_sweeps_total") ?? 0) >= 1)
        #expect(sample(retention, "chat_retention_due") == 0)

        // SIGTERM: the store finishes what it holds and exits cleanly.
        let (messages, _) = processes["chat-messages"]!
        messages.signal(SIGTERM)
        #expect(await messages.wait(timeout: .seconds(10)) == 0)
        // Without the store the gateway stays ready (it still queues sends) and says the store is down.
        #expect(try await get("chat-gateway", "/readyz").0 == 200)
        #expect(sample(try await get("chat-gateway", "/metrics").1, "chat_gateway_store_up") == 0)
    }
}

@Suite("Transport security", .redisServer)
struct TransportSecurityTests {
    @Test("without TLS the gateway refuses a non-loopback address, unless CHAT_ALLOW_PLAINTEXT=1")
    func plaintextRefused() async throws {
        let server = try RedisServer.required()
        let base = ["CHAT_REDIS_URL": server.url, "CHAT_REDIS_PREFIX": uniqueKeys("plain").prefix, "CHAT_HTTP_PORT": "0",
                    "CHAT_JWT_SECRET": String(repeating: "p", count: 32), "CHAT_HTTP_HOST": "0.0.0.0"]
        let (refused, log) = try launch("chat-gateway", environment: base)
        defer { try? FileManager.default.removeItem(at: log) }
        #expect(await refused.wait(timeout: .seconds(10)) == 2)
        let lines = contents(log).split(separator: "\n")
        #expect(lines.count == 1 && lines[0].hasPrefix("chat-gateway: CHAT_HTTP_HOST: expected a loopback address unless CHAT_TLS_CERT"), "\(lines)")

        let (allowed, allowedLog) = try launch("chat-gateway", environment: base.merging(["CHAT_ALLOW_PLAINTEXT": "1"]) { $1 })
        defer { allowed.signal(SIGKILL); try? FileManager.default.removeItem(at: allowedLog) }
        #expect(await eventually(timeout: .seconds(20)) { contents(allowedLog).contains("] ready") }, "\(contents(allowedLog))")
    }

    @Test("a certificate that cannot be read stops the gateway with one line naming CHAT_TLS_CERT")
    func unreadableCertificate() async throws {
        let (process, log) = try launch("chat-gateway", environment: [
            "CHAT_JWT_SECRET": String(repeating: "u", count: 32), "CHAT_TLS_CERT": "/nonexistent/tls.crt", "CHAT_TLS_KEY": "/nonexistent/tls.key",
        ])
        defer { try? FileManager.default.removeItem(at: log) }
        #expect(await process.wait(timeout: .seconds(10)) == 2)
        let lines = contents(log).split(separator: "\n")
        #expect(lines.count == 1 && lines[0].hasPrefix("chat-gateway: CHAT_TLS_CERT: expected a readable PEM certificate chain"), "\(lines)")
    }

    @Test("with CHAT_TLS_CERT/KEY the gateway serves HTTPS only, with HSTS, and Engine.IO over it")
    func https() async throws {
        let server = try RedisServer.required()
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("tls-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let (certificate, key) = try await makeSelfSignedCertificate(in: directory)
        // TLS makes a non-loopback address acceptable.
        let (process, log) = try launch("chat-gateway", environment: [
            "CHAT_REDIS_URL": server.url, "CHAT_REDIS_PREFIX": uniqueKeys("tls").prefix, "CHAT_HTTP_PORT": "0", "CHAT_HTTP_HOST": "0.0.0.0",
            "CHAT_JWT_SECRET": String(repeating: "t", count: 32), "CHAT_TLS_CERT": certificate, "CHAT_TLS_KEY": key,
        ])
        defer { process.signal(SIGKILL); try? FileManager.default.removeItem(at: log) }
        try #require(await eventually(timeout: .seconds(20)) { contents(log).contains("] ready") }, "\(contents(log))")
        let port = try #require(gatewayPort(log), "\(contents(log))")

        let (status, headers) = try await runCommand("/usr/bin/curl", ["-sS", "--cacert", certificate, "-D", "-", "-o", "/dev/null",
                                                                       "https://127.0.0.1:\(port)/api/openapi.json"])
        #expect(status == 0, "\(headers)")
        #expect(headers.hasPrefix("HTTP/1.1 200"), "\(headers)")
        #expect(headers.lowercased().contains("strict-transport-security: max-age=31536000"), "\(headers)")
        #expect(headers.lowercased().contains("cache-control: no-store"), "\(headers)")
        let (handshakeStatus, handshake) = try await runCommand("/usr/bin/curl", ["-sS", "--cacert", certificate,
                                                                                  "https://127.0.0.1:\(port)/socket.io/?EIO=4&transport=polling"])
        #expect(handshakeStatus == 0 && handshake.hasPrefix("0{") && handshake.contains(#""sid":"#), "\(handshake)")
        // An untrusted certificate is refused by a client that checks, and plain HTTP gets no answer.
        let (untrusted, _) = try await runCommand("/usr/bin/curl", ["-sS", "-o", "/dev/null", "https://127.0.0.1:\(port)/healthz"])
        #expect(untrusted != 0)
        let (plain, _) = try await runCommand("/usr/bin/curl", ["-sS", "-o", "/dev/null", "--max-time", "5", "http://127.0.0.1:\(port)/healthz"])
        #expect(plain != 0)
    }
}

/// A store in a temporary folder holding the admin and the doctor (password `password1`).
struct TwoUserStore {
    let directory: URL
    var database: String { directory.appendingPathComponent("chat.sqlite").path }

    init(_ label: String) throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("\(label)-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let store = try MessageStore.open(path: directory.appendingPathComponent("chat.sqlite").path, retention: .seconds(86400), bcryptCost: 4)
        try store.createUser(email: "admin@clinic.com", name: "Alex Admin", role: .admin, password: "password1")
        try store.createUser(email: "doctor@clinic.com", name: "Dr. Sarah Kim", role: .doctor, password: "password1")
    }

    func remove() { try? FileManager.default.removeItem(at: directory) }

    /// Access tokens for the admin and the doctor, as the gateways (sharing `secret`) issue them.
    static func tokens(server: RedisServer, keys: RedisKeys, secret: String) async throws -> (admin: String, doctor: String) {
        try await server.withClient { redis in
            let service = TokenService(secret: secret, lifetime: .seconds(3600), redis: redis, keys: keys)
            return (service.issue(for: User(email: "admin@clinic.com", name: "Alex Admin", role: .admin)).token,
                    service.issue(for: User(email: "doctor@clinic.com", name: "Dr. Sarah Kim", role: .doctor)).token)
        }
    }
}
