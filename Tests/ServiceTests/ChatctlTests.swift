import ChatCore
import ChatTesting
import Foundation
import MessageStore
import Testing

/// Runs chatctl to completion and returns its exit status and output.
func chatctl(_ arguments: [String], environment: [String: String]) async throws -> (status: Int32?, output: String) {
    let log = FileManager.default.temporaryDirectory.appendingPathComponent("chatctl-\(UUID().uuidString.prefix(8)).log")
    defer { try? FileManager.default.removeItem(at: log) }
    let env = ProcessInfo.processInfo.environment.merging(environment) { $1 }
    let process = try ChildProcess(executable: try executablePath("chatctl"), arguments: arguments, environment: env, outputPath: log.path)
    let status = await process.wait(timeout: .seconds(30))
    return (status, contents(log))
}

@Suite("chatctl against the real messages service", .redisServer)
struct ChatctlTests {
    @Test("user add, list, set-role, disable, enable, set-password, logout and seed-demo work through Redis; bad input fails with a clear message")
    func userAdministration() async throws {
        let server = try RedisServer.required()
        let database = temporaryDatabasePath("chatctl")
        defer { removeDatabase(at: database) }
        let environment = ["CHAT_REDIS_URL": server.url, "CHAT_REDIS_PREFIX": uniqueKeys("ctl").prefix, "CHAT_DB_PATH": database]
        // Three messages that expire tomorrow, for the retention preview.
        let conversation = try {
            let store = try MessageStore.open(path: database, retention: .seconds(86400), bcryptCost: 4)
            try store.createUser(email: "a@ward.org", name: "A", role: .doctor, password: "password1")
            try store.createUser(email: "b@ward.org", name: "B", role: .doctor, password: "password1")
            let id = try store.openDirectConversation("a@ward.org", "b@ward.org").id
            _ = try store.append((0..<3).map { SendRequest(sender: "a@ward.org", conversationID: id, content: "m\($0)", clientID: nil) })
            return id
        }()
        let (messages, log) = try launch("chat-messages", environment: environment)
        defer { messages.signal(SIGKILL); try? FileManager.default.removeItem(at: log) }
        #expect(await eventually(timeout: .seconds(20)) { contents(log).contains("] ready") })

        let added = try await chatctl(["user", "add", "--email", "Dr.Lee@clinic.com", "--name", "Dr. Min Lee", "--role", "doctor"], environment: environment)
        #expect(added.status == 0, "\(added.output)")
        #expect(added.output.contains("added dr.lee@clinic.com (Dr. Min Lee, doctor)"))
        let generated = added.output.split(separator: "\n").first { $0.hasPrefix("password: ") }?.dropFirst("password: ".count)
        #expect(generated?.count == 16)

        #expect(try await chatctl(["user", "set-role", "dr.lee@clinic.com", "admin"], environment: environment).output.contains("is now admin"))
        #expect(try await chatctl(["user", "disable", "dr.lee@clinic.com"], environment: environment).status == 0)
        let listed = try await chatctl(["user", "list"], environment: environment)
        #expect(listed.output.contains("dr.lee@clinic.com\tadmin\tdisabled\tDr. Min Lee"), "\(listed.output)")
        #expect(try await chatctl(["user", "enable", "dr.lee@clinic.com"], environment: environment).status == 0)

        // A forgotten password: a new one generated (printed once), or the one given; the old one no longer works.
        let reading = try MessageStore.open(path: database, retention: .seconds(86400))
        #expect(try reading.authenticate(email: "dr.lee@clinic.com", password: String(generated ?? "")) != nil)
        let reset = try await chatctl(["user", "set-password", "dr.lee@clinic.com"], environment: environment)
        #expect(reset.status == 0 && reset.output.contains("set the password of dr.lee@clinic.com"), "\(reset.output)")
        let made = try #require(reset.output.split(separator: "\n").first { $0.hasPrefix("password: ") }?.dropFirst("password: ".count))
        #expect(made.count == 16 && made != generated)
        #expect(try reading.authenticate(email: "dr.lee@clinic.com", password: String(made)) != nil)
        #expect(try reading.authenticate(email: "dr.lee@clinic.com", password: String(generated ?? "")) == nil)
        let given = try await chatctl(["user", "set-password", "dr.lee@clinic.com", "--password", "given-by-the-operator"], environment: environment)
        #expect(given.status == 0 && !given.output.contains("password: "), "\(given.output)")
        #expect(try reading.authenticate(email: "dr.lee@clinic.com", password: "given-by-the-operator") != nil)
        let tooShort = try await chatctl(["user", "set-password", "dr.lee@clinic.com", "--password", "short"], environment: environment)
        #expect(tooShort.status == 1 && tooShort.output.contains("a password has at least 8 characters") && !tooShort.output.contains("Usage:"), "\(tooShort.output)")
        let loggedOut = try await chatctl(["user", "logout", "dr.lee@clinic.com"], environment: environment)
        #expect(loggedOut.status == 0 && loggedOut.output.contains("ended every session of dr.lee@clinic.com"), "\(loggedOut.output)")
        #expect(try reading.authenticate(email: "dr.lee@clinic.com", password: "given-by-the-operator") != nil, "the password stays")
        let nobody = try await chatctl(["user", "set-password", "ghost@clinic.com"], environment: environment)
        #expect(nobody.status == 1 && nobody.output.contains("no such user"), "\(nobody.output)")
        // The gateways now refuse the user's tokens issued before the reset.
        let cutoff = try await server.withClient { redis in try await redis.send(["GET", RedisKeys(prefix: environment["CHAT_REDIS_PREFIX"]!).tokensBefore("dr.lee@clinic.com")]).string }
        #expect(cutoff.flatMap { Int64($0) }.map { abs($0 - Date().epochMilliseconds) < 60_000 } == true, "\(cutoff ?? "nil")")

        let seeded = try await chatctl(["seed-demo", "--demo-password"], environment: environment)
        #expect(seeded.status == 0)
        #expect(seeded.output.contains("admin@clinic.com\tadmin\tpassword"))
        #expect(seeded.output.contains("doctor@clinic.com\tdoctor\tpassword"))
        let again = try await chatctl(["seed-demo"], environment: environment)
        #expect(again.output.contains("doctor@clinic.com\texists"))

        let short = try await chatctl(["user", "add", "--email", "x@clinic.com", "--name", "X", "--role", "doctor", "--password", "short"], environment: environment)
        #expect(short.status != 0)
        #expect(short.output.contains("a password has at least 8 characters"))
        let unknown = try await chatctl(["user", "disable", "ghost@clinic.com"], environment: environment)
        #expect(unknown.status == 1 && unknown.output.contains("no such user") && !unknown.output.contains("Usage:"), "\(unknown.output)")

        let now = try await chatctl(["retention", "preview", "--days", "0"], environment: environment)
        #expect(now.status == 0 && now.output.contains("total\t\t0"), "\(now.output)")
        let soon = try await chatctl(["retention", "preview", "--days", "2"], environment: environment)
        #expect(soon.output.contains("\t\(conversation)\t3"), "\(soon.output)")
        #expect(soon.output.contains("total\t\t3"))

        // Legal holds: a person's conversations (no content), one held, listed as held, released; refusals plain.
        let theirs = try await chatctl(["retention", "conversations", "--participant", "A@ward.org"], environment: environment)
        #expect(theirs.status == 0 && theirs.output.contains("\(conversation)\tdirect\t\ta@ward.org,b@ward.org\t3\t0\toff"), "\(theirs.output)")
        #expect(!theirs.output.contains("m0"))
        let held = try await chatctl(["retention", "hold", conversation], environment: environment)
        #expect(held.status == 0 && held.output.contains("\(conversation) is on legal hold"), "\(held.output)")
        let listedHeld = try await chatctl(["retention", "conversations", "--held"], environment: environment)
        #expect(listedHeld.output.contains("\(conversation)\tdirect") && listedHeld.output.hasSuffix("\ton\n"), "\(listedHeld.output)")
        #expect(try await chatctl(["retention", "release", conversation], environment: environment).output.contains("released the legal hold on \(conversation)"))
        let noneHeld = try await chatctl(["retention", "conversations", "--held"], environment: environment)
        #expect(noneHeld.status == 0 && !noneHeld.output.contains(conversation), "\(noneHeld.output)")
        let unknownConversation = try await chatctl(["retention", "hold", "no-such-id"], environment: environment)
        #expect(unknownConversation.status == 1 && unknownConversation.output.contains("conversation not found"), "\(unknownConversation.output)")
        let ghost = try await chatctl(["retention", "conversations", "--participant", "ghost@ward.org"], environment: environment)
        #expect(ghost.status == 1 && ghost.output.contains("no such user"), "\(ghost.output)")
        let neither = try await chatctl(["retention", "conversations"], environment: environment)
        #expect(neither.status != 0 && neither.output.contains("--participant"), "\(neither.output)")
        let audit = try reading.auditLog().map { "\($0.actor ?? "-") \($0.action) \($0.target ?? "-") \($0.outcome)" }
        #expect(audit.contains("- admin.set_legal_hold \(conversation) ok"), "\(audit)")
        #expect(audit.contains("- admin.list_conversations a@ward.org ok"), "\(audit)")
    }

    @Test("a fault while it runs (Redis not there, a bad variable, the store refusing) is one error line and exit status 1, without the usage; bad arguments still get it")
    func faultsWithoutUsage() async throws {
        let port = try freePort()
        let (status, output) = try await chatctl(["user", "list"], environment: ["CHAT_REDIS_URL": "redis://127.0.0.1:\(port)"])
        #expect(status == 1, "\(output)")
        #expect(output.hasPrefix("Error: cannot reach Redis at redis://127.0.0.1:\(port)"), "\(output)")
        #expect(!output.contains("Usage:"), "\(output)")
        let (configStatus, config) = try await chatctl(["user", "list"], environment: ["CHAT_REDIS_URL": "http://127.0.0.1:\(port)"])
        #expect(configStatus == 1 && config.hasPrefix("Error: CHAT_REDIS_URL: expected ") && !config.contains("Usage:"), "\(config)")
        let (badStatus, bad) = try await chatctl(["user", "remove", "x@clinic.com"], environment: ["CHAT_REDIS_URL": "redis://127.0.0.1:\(port)"])
        #expect(badStatus != 0 && bad.contains("Usage: chatctl user"), "\(bad)")
    }
}
