import ChatCore
import ChatTesting
import Foundation
import MessageStore
import Testing

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// Two gateway processes whose clocks disagree by an hour (one runs under libfaketime), and
/// the messages service: a password change or a log-out everywhere on one gateway cuts the
/// tokens the other issued, exactly at the change, because both read Redis's clock.
@Suite("Gateways whose clocks disagree", .redisServer)
struct ClockSkewTests {
    /// libfaketime, which `make deps` installs (apt: faketime).
    static func faketime() throws -> String {
        try #require(["x86_64-linux-gnu", "aarch64-linux-gnu"].map { "/usr/lib/\($0)/faketime/libfaketime.so.1" }
            .first { FileManager.default.fileExists(atPath: $0) }, "libfaketime is missing: `make deps` installs it (apt: faketime)")
    }

    static func call(_ method: String, port: Int, _ path: String, token: String? = nil, body: [String: String]? = nil) async throws -> (Int, [String: Any]) {
        var request = URLRequest(url: URL(string: "http://127.0.0.1:\(port)\(path)")!)
        request.httpMethod = method
        request.timeoutInterval = 30
        if let token { request.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization") }
        if let body {
            request.setValue("application/json", forHTTPHeaderField: "Content-Type")
            request.httpBody = try JSONSerialization.data(withJSONObject: body)
        }
        let (data, response) = try await URLSession.shared.dataIgnoringCancellation(for: request)
        return ((response as? HTTPURLResponse)?.statusCode ?? 0, (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] ?? [:])
    }

    @Test("a token issued on the gateway an hour ahead is refused after a log-out everywhere on the other; after a password change there, a login on the one behind is taken at once")
    func cutoffsAcrossSkewedGateways() async throws {
        let library = try Self.faketime()
        let server = try RedisServer.required()
        let keys = uniqueKeys("skew")
        let database = temporaryDatabasePath("skew")
        defer { removeDatabase(at: database) }
        try {
            let store = try MessageStore.open(path: database, retention: .seconds(86400), bcryptCost: 4)
            try store.createUser(email: "doctor@clinic.com", name: "Dr. Sarah Kim", role: .doctor, password: "password1")
        }()
        let environment = [
            "CHAT_REDIS_URL": server.url, "CHAT_REDIS_PREFIX": keys.prefix, "CHAT_DB_PATH": database,
            "CHAT_JWT_SECRET": String(repeating: "k", count: 40), "CHAT_HTTP_PORT": "0", "CHAT_CONSUMER_NAME": "messages-skew",
        ]
        let ahead = ["LD_PRELOAD": library, "FAKETIME": "+1h", "FAKETIME_DONT_FAKE_MONOTONIC": "1", "CHAT_GATEWAY_ID": "gw-ahead"]
        var processes: [(ChildProcess, URL)] = []
        defer { for (process, log) in processes { process.signal(SIGKILL); try? FileManager.default.removeItem(at: log) } }
        for (name, extra) in [("chat-messages", [:]), ("chat-gateway", ahead), ("chat-gateway", ["CHAT_GATEWAY_ID": "gw-local"])] as [(String, [String: String])] {
            let (process, log) = try launch(name, environment: environment.merging(extra) { $1 })
            processes.append((process, log))
            #expect(await eventually(timeout: .seconds(20)) { contents(log).contains("] ready") }, "\(name): \(contents(log))")
        }
        func port(_ index: Int) throws -> Int { try #require(gatewayPort(processes[index].1), "\(contents(processes[index].1))") }
        let (fast, local) = (try port(1), try port(2))
        // The faked clock is the gateway's own: its log's timestamps are an hour ahead.
        let hours = [3600.0, 3540].map { ISO8601DateFormatter().string(from: Date().addingTimeInterval($0)).prefix(13) }
        #expect(hours.contains { contents(processes[1].1).contains($0) }, "\(contents(processes[1].1).prefix(300))")
        func login(_ port: Int, _ password: String) async throws -> String {
            let (status, body) = try await Self.call("POST", port: port, "/api/auth/login", body: ["email": "doctor@clinic.com", "password": password])
            return try #require(body["token"] as? String, "login: \(status) \(body)")
        }

        // A token from the gateway ahead, then a log-out everywhere on the other: the token is cut.
        let early = try await login(fast, "password1")
        #expect(try await Self.call("GET", port: fast, "/api/me", token: early).0 == 200)
        #expect(try await Self.call("POST", port: local, "/api/auth/logout-everywhere", token: early).0 == 204)
        for port in [fast, local] {
            #expect(try await Self.call("GET", port: port, "/api/me", token: early).0 == 401, "the token issued before the log-out, on \(port)")
        }

        // A password change on the gateway ahead: a login on the other right after is taken.
        let before = try await login(local, "password1")
        let (changed, answer) = try await Self.call("POST", port: fast, "/api/me/password", token: before,
                                                    body: ["current_password": "password1", "new_password": "Wards-and-rounds-77"])
        #expect(changed == 200, "\(answer)")
        #expect(try await Self.call("GET", port: local, "/api/me", token: before).0 == 401)
        let fresh = try await login(local, "Wards-and-rounds-77")
        for port in [fast, local] {
            #expect(try await Self.call("GET", port: port, "/api/me", token: fresh).0 == 200, "a token issued after the change, on \(port)")
        }
        let given = try #require(answer["token"] as? String)
        #expect(try await Self.call("GET", port: local, "/api/me", token: given).0 == 200, "the change's own new token")
    }
}
