import ChatCore
import ChatTesting
import Foundation
import Gateway
import MessageStore
import RedisClient
import Testing

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// A Socket.IO client over Engine.IO long-polling with plain HTTP requests (it answers pings).
struct PollingClient: Sendable {
    let base: String
    let sid: String

    static func open(port: Int) async throws -> PollingClient {
        let (_, body) = try await request("GET", "http://127.0.0.1:\(port)/socket.io/?EIO=4&transport=polling")
        let open = try #require(JSONValue(parsing: body.dropFirst())?["sid"]?.stringValue, "handshake: \(body)")
        return PollingClient(base: "http://127.0.0.1:\(port)/socket.io/?EIO=4&transport=polling&sid=\(open)", sid: open)
    }

    /// A handshake that may be refused (a stopping gateway answers 503): nil then.
    static func handshake(port: Int) async throws -> PollingClient? {
        let (status, body) = try await request("GET", "http://127.0.0.1:\(port)/socket.io/?EIO=4&transport=polling")
        guard status == 200, let sid = JSONValue(parsing: body.dropFirst())?["sid"]?.stringValue else { return nil }
        return PollingClient(base: "http://127.0.0.1:\(port)/socket.io/?EIO=4&transport=polling&sid=\(sid)", sid: sid)
    }

    static func request(_ method: String, _ url: String, body: String? = nil) async throws -> (Int, String) {
        var request = URLRequest(url: URL(string: url)!)
        request.httpMethod = method
        request.timeoutInterval = 30
        if let body { request.httpBody = Data(body.utf8) }
        let (data, response) = try await URLSession.shared.dataIgnoringCancellation(for: request)
        return ((response as? HTTPURLResponse)?.statusCode ?? 0, String(decoding: data, as: UTF8.self))
    }

    func post(_ packets: [String]) async throws {
        let (status, _) = try await Self.request("POST", base, body: packets.joined(separator: "\u{1e}"))
        guard status == 200 else { throw ChatError(.unavailable, "POST answered \(status)") }
    }

    /// One long poll: the packets it brought (pings answered).
    func poll() async throws -> [String] {
        let (status, body) = try await Self.request("GET", base)
        guard status == 200 else { throw ChatError(.unavailable, "GET answered \(status)") }
        let packets = body.split(separator: "\u{1e}").map(String.init)
        if packets.contains("2") { try await post(["3"]) }
        return packets
    }

    func connect(token: String) async throws {
        try await post([#"40{"token":"\#(token)"}"#])
        for _ in 0..<10 where try await poll().contains(where: { $0.hasPrefix("40{") }) { return }
        throw ChatError(.unauthorized, "no CONNECT answer")
    }

    /// The data of every event called `name` in the polls made until `deadline`, or until `stop` says so.
    func collect(_ name: String, until deadline: ContinuousClock.Instant, stop: ([JSONValue]) -> Bool = { _ in false }) async throws -> [JSONValue] {
        var found: [JSONValue] = []
        let prefix = "42[\"\(name)\","
        while ContinuousClock.now < deadline {
            for packet in try await poll() where packet.hasPrefix(prefix) {
                if case .array(let items)? = JSONValue(parsing: packet.dropFirst(2)), items.count == 2 { found.append(items[1]) }
            }
            if stop(found) { break }
        }
        return found
    }
}

@Suite("A gateway killed with -9", .redisServer)
struct GatewayCrashTests {
    @Test("its users go offline for their partners (on another gateway) within the presence TTL + 5 s, exactly once")
    func killNine() async throws {
        let server = try RedisServer.required()
        let keys = uniqueKeys("gwcrash")
        let database = temporaryDatabasePath("gwcrash")
        defer { removeDatabase(at: database) }
        try {
            let store = try MessageStore.open(path: database, retention: .seconds(86400), bcryptCost: 4)
            try store.createUser(email: "admin@clinic.com", name: "Alex Admin", role: .admin, password: "password1")
            try store.createUser(email: "doctor@clinic.com", name: "Dr. Sarah Kim", role: .doctor, password: "password1")
            _ = try store.openDirectConversation("admin@clinic.com", "doctor@clinic.com")
        }()
        let secret = String(repeating: "k", count: 40)
        let ttl = 2.0
        let environment = [
            "CHAT_REDIS_URL": server.url, "CHAT_REDIS_PREFIX": keys.prefix, "CHAT_DB_PATH": database, "CHAT_JWT_SECRET": secret,
            "CHAT_PRESENCE_TTL": "2s", "CHAT_PING_INTERVAL": "1s", "CHAT_PING_TIMEOUT": "5s", "CHAT_HTTP_PORT": "0",
            "CHAT_CONSUMER_NAME": "messages-gwcrash",
        ]
        var processes: [(ChildProcess, URL)] = []
        defer { for (process, log) in processes { process.signal(SIGKILL); try? FileManager.default.removeItem(at: log) } }
        for (name, extra) in [("chat-messages", [:]), ("chat-presence", [:]), ("chat-gateway", ["CHAT_GATEWAY_ID": "gw-doomed"]),
                              ("chat-gateway", ["CHAT_GATEWAY_ID": "gw-survivor"])] as [(String, [String: String])] {
            let (process, log) = try launch(name, environment: environment.merging(extra) { $1 })
            processes.append((process, log))
            #expect(await eventually(timeout: .seconds(20)) { contents(log).contains("] ready") }, "\(name): \(contents(log))")
        }
        func port(_ index: Int) throws -> Int { try #require(gatewayPort(processes[index].1), "\(contents(processes[index].1))") }

        let tokens = try await server.withClient { redis in
            let service = TokenService(secret: secret, lifetime: .seconds(3600), redis: redis, keys: keys)
            return (service.issue(for: User(email: "admin@clinic.com", name: "Alex Admin", role: .admin)).token,
                    service.issue(for: User(email: "doctor@clinic.com", name: "Dr. Sarah Kim", role: .doctor)).token)
        }
        let partner = try await PollingClient.open(port: try port(3))
        try await partner.connect(token: tokens.0)
        let user = try await PollingClient.open(port: try port(2))
        try await user.connect(token: tokens.1)
        let online = try await partner.collect("user_online", until: .now + .seconds(15)) { !$0.isEmpty }
        #expect(online.first?["email"] == .string("doctor@clinic.com"))

        // No disconnect, no goodbye: the doomed gateway just stops.
        processes[2].0.signal(SIGKILL)
        let killed = ContinuousClock.now
        let offline = try await partner.collect("user_offline", until: .now + .seconds(ttl + 5)) { !$0.isEmpty }
        #expect(offline.first?["email"] == .string("doctor@clinic.com"), "no user_offline within TTL + 5 s")
        #expect(ContinuousClock.now - killed < .seconds(ttl + 5))
        // Exactly once.
        let again = try await partner.collect("user_offline", until: .now + .seconds(3))
        #expect(again.isEmpty, "\(again)")
        let (doctorOnline, adminOnline) = try await server.withClient { redis in
            (try await redis.exists([keys.presenceUser("doctor@clinic.com")]), try await redis.exists([keys.presenceUser("admin@clinic.com")]))
        }
        #expect(doctorOnline == 0)
        #expect(adminOnline == 1)
    }
}
