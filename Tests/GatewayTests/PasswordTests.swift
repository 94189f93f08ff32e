import ChatCore
import ChatTesting
import Foundation
import Gateway
import MessageStore
import Testing

/// `redis-cli MONITOR` on the test's Redis, written to a file: every command any client
/// sends, as Redis received it.
final class RedisMonitor: Sendable {
    let process: ChildProcess
    let log: URL

    init(url: String) async throws {
        log = FileManager.default.temporaryDirectory.appendingPathComponent("monitor-\(UUID().uuidString.prefix(8)).log")
        process = try ChildProcess(executable: "/usr/bin/env", arguments: ["redis-cli", "-u", url, "MONITOR"], outputPath: log.path)
        try #require(await eventually { self.text.hasPrefix("OK") }, "redis-cli MONITOR did not start: \(text)")
    }

    var text: String { (try? String(contentsOf: log, encoding: .utf8)) ?? "" }

    /// The lines of the commands named `command` that mention `key` (the test's prefix).
    func lines(_ command: String, mentioning key: String) -> [Substring] {
        text.split(separator: "\n").filter { $0.contains("\"\(command)\"") && $0.contains(key) }
    }

    /// The commands on the keys of `keys` (tests share the server) that carried `secret`, but
    /// for the queries published on its query channel (a login's, which pub/sub delivers
    /// and Redis keeps nowhere).
    func carriers(of secret: String, keys: RedisKeys) -> [Substring] {
        text.split(separator: "\n").filter {
            $0.contains(secret) && $0.contains(keys.prefix) && !$0.contains("\"PUBLISH\" \"\(keys.storeQueries)\"")
        }
    }

    func stop() {
        process.signal(SIGTERM)
        _ = process.waitBlocking()
        try? FileManager.default.removeItem(at: log)
    }
}

@Suite("Passwords and sessions", .redisServer)
struct PasswordTests {
    let doctor = "doctor@clinic.com"
    let admin = "admin@clinic.com"

    @Test("a user changes their password: a wrong current one is 403 and counts as a failed login, a weak or unchanged one 422; then every older token is refused on every gateway and its sockets end, a socket with the new token stays, the old password no longer logs in; audited; neither password is ever in a stream")
    func changeOwn() async throws {
        try await withRealtimeStack(gateways: 2) { stack in
            let monitor = try await RedisMonitor(url: stack.redisURL)
            defer { monitor.stop() }
            let current = password(doctor)
            let old = try await stack.login(doctor)
            let oldSockets = [try await SocketTestClient.connect(port: stack.ports[0], token: old),
                              try await SocketTestClient.connect(port: stack.ports[1], token: try await stack.login(doctor, gateway: 1))]
            let partner = try await stack.connect(admin)

            func change(_ currentPassword: String, _ newPassword: String, token: String = old) async throws -> (Int, JSONValue?) {
                try await stack.http("POST", "/api/me/password", gateway: 0, token: token,
                                     body: ["current_password": currentPassword, "new_password": newPassword])
            }
            let wrong = try await change("not-the-password", "a-new-long-password")
            #expect(wrong.0 == 403 && wrong.1?["error"]?["message"] == .string("the current password is wrong"), "\(wrong)")
            // It counts as a failed login of the account (five in a minute and its logins, and changes, are throttled).
            #expect(try await stack.redis.send(["GET", stack.keys.loginFailuresByAccount(doctor)]).string == "1")
            let short = try await change(current, "short")
            #expect(short.0 == 422 && short.1?["error"]?["code"] == .string("invalid_content"), "\(short)")
            let same = try await change(current, current)
            #expect(same.0 == 422, "\(same)")
            for guessable in ["Password123", "qwerty123!", "DOCTOR@clinic.com", "doctor12"] {
                let refused = try await change(current, guessable)
                #expect(refused.0 == 422, "\(guessable): \(refused)")
            }
            let missing = try await stack.http("POST", "/api/me/password", gateway: 0, token: old, body: ["new_password": "a-new-long-password"])
            #expect(missing.0 == 400, "\(missing)")
            #expect(try await stack.http("POST", "/api/me/password", body: ["current_password": current, "new_password": "a-new-long-password"]).0 == 401)
            // Nothing changed so far: the old token and password still work.
            #expect(try await stack.http("GET", "/api/me", gateway: 1, token: old).0 == 200)

            let newPassword = "correct horse battery staple"
            let changed = try await change(current, newPassword)
            #expect(changed.0 == 200, "\(changed)")
            let fresh = try #require(changed.1?["token"]?.stringValue)
            #expect(changed.1?["user"]?["email"] == .string(doctor))
            for gateway in [0, 1] {
                let refused = try await stack.http("GET", "/api/me", gateway: gateway, token: old)
                #expect(refused.0 == 401 && refused.1?["error"]?["message"]?.stringValue?.contains("sessions were ended") == true, "\(refused)")
                #expect(try await stack.http("GET", "/api/me", gateway: gateway, token: fresh).0 == 200)
            }
            for socket in oldSockets {
                let ended = try await socket.event("error")
                #expect(ended["message"]?.stringValue?.contains("password was changed") == true, "\(ended)")
                _ = try await socket.next { $0 == "41" }
            }
            let kept = try await SocketTestClient.connect(port: stack.ports[1], token: fresh)
            _ = try await partner.call("send_message", .object(["receiver_email": .string(doctor), "content": .string("after the change"),
                                                                "client_id": .string("pw-1")]), ack: 1)
            #expect(try await kept.event("receive_message")["content"] == .string("after the change"))
            #expect(!kept.isClosed)

            #expect(try await stack.http("POST", "/api/auth/login", body: ["email": doctor, "password": current]).0 == 401)
            let again = try await stack.http("POST", "/api/auth/login", body: ["email": doctor, "password": newPassword])
            #expect(again.0 == 200)

            let actions = try stack.store.auditLog().filter { $0.target == doctor }.map { "\($0.action) \($0.outcome)" }
            #expect(actions.contains("password_change ok") && actions.contains("password_check denied") && actions.contains("password_check ok"), "\(actions)")

            // What went through Redis: the new password's hash on the stream, neither password in any stream entry.
            let commands = monitor.lines("XADD", mentioning: stack.keys.commands)
            #expect(commands.contains { $0.contains("set_password") && $0.contains("password_hash") }, "the monitor saw the change: \(commands.count) XADDs")
            #expect(!commands.contains { $0.contains(newPassword) || $0.contains(current) })
            for secret in [current, newPassword] {
                #expect(monitor.carriers(of: secret, keys: stack.keys).isEmpty, "only a login's query carries a password")
            }
            for client in oldSockets + [kept, partner] { await client.close() }
        }
    }

    @Test("an admin resets a password (given or generated, shown once); the user's tokens and sockets end; doctors get 403, an unknown user 404, the admin's own 400; a created user's password never reaches Redis")
    func adminReset() async throws {
        try await withRealtimeStack { stack in
            let monitor = try await RedisMonitor(url: stack.redisURL)
            defer { monitor.stop() }
            let adminToken = try await stack.login(admin)
            let doctorToken = try await stack.login(doctor)
            let socket = try await SocketTestClient.connect(port: stack.ports[0], token: doctorToken)

            #expect(try await stack.http("POST", "/api/admin/users/dr.patel@clinic.com/password", token: doctorToken).0 == 403)
            #expect(try await stack.http("POST", "/api/admin/users/ghost@clinic.com/password", token: adminToken).0 == 404)
            #expect(try await stack.http("POST", "/api/admin/users/\(admin)/password", token: adminToken).0 == 400)
            #expect(try await stack.http("POST", "/api/admin/users/\(doctor)/password", token: adminToken, body: ["password": "short"]).0 == 422)
            #expect(try await stack.http("POST", "/api/admin/users/\(doctor)/password", token: adminToken, body: ["password": "iloveyou"]).0 == 422)

            let generated = try await stack.http("POST", "/api/admin/users/\(doctor)/password", token: adminToken)
            #expect(generated.0 == 200, "\(generated)")
            let made = try #require(generated.1?["password"]?.stringValue)
            #expect(made.count == 16 && generated.1?["user"]?["email"] == .string(doctor))
            #expect(try await stack.http("GET", "/api/me", token: doctorToken).0 == 401)
            _ = try await socket.next { $0 == "41" }
            #expect(try await stack.http("POST", "/api/auth/login", body: ["email": doctor, "password": password(doctor)]).0 == 401)
            let login = try await stack.http("POST", "/api/auth/login", body: ["email": doctor, "password": made])
            #expect(login.0 == 200)

            let chosen = "chosen-by-the-admin"
            let given = try await stack.http("POST", "/api/admin/users/\(doctor)/password", token: adminToken, body: ["password": chosen])
            #expect(given.0 == 200 && given.1?["password"] == nil, "\(given)")
            #expect(try await stack.http("POST", "/api/auth/login", body: ["email": doctor, "password": chosen]).0 == 200)
            // The admin's own token was never touched.
            #expect(try await stack.http("GET", "/api/admin/users", token: adminToken).0 == 200)

            let created = try await stack.http("POST", "/api/admin/users", token: adminToken,
                                               body: ["email": "dr.lee@clinic.com", "name": "Dr. Min Lee", "role": "doctor", "password": "lee-first-password"])
            #expect(created.0 == 201, "\(created)")
            #expect(try await stack.http("POST", "/api/auth/login", body: ["email": "dr.lee@clinic.com", "password": "lee-first-password"]).0 == 200)

            let audit = try stack.store.auditLog().map { "\($0.action) \($0.target ?? "") \($0.outcome)" }
            #expect(audit.contains("admin.set_password \(doctor) ok") && audit.contains("admin.set_password ghost@clinic.com not_found"), "\(audit)")
            for secret in [made, chosen, "lee-first-password"] {
                #expect(monitor.carriers(of: secret, keys: stack.keys).isEmpty, "\(secret): only a login's query carries it")
            }
            #expect(monitor.lines("XADD", mentioning: stack.keys.commands).contains { $0.contains("create_user") && $0.contains("password_hash") })
            await socket.close()
        }
    }

    @Test("log out everywhere: every token of the user issued until then is refused on every gateway and every socket ends, the caller's too; logging in again works; an admin ends a doctor's sessions (a lost device), a doctor cannot end another's; audited")
    func logoutEverywhere() async throws {
        try await withRealtimeStack(gateways: 2) { stack in
            let tokens = [try await stack.login(doctor), try await stack.login(doctor, gateway: 1)]
            let sockets = [try await SocketTestClient.connect(port: stack.ports[0], token: tokens[0]),
                           try await SocketTestClient.connect(port: stack.ports[1], token: tokens[1])]
            let adminToken = try await stack.login(admin)
            let adminSocket = try await SocketTestClient.connect(port: stack.ports[1], token: adminToken)
            #expect(try await stack.http("POST", "/api/auth/logout-everywhere").0 == 401)

            #expect(try await stack.http("POST", "/api/auth/logout-everywhere", gateway: 1, token: tokens[1]).0 == 204)
            for token in tokens {
                for gateway in [0, 1] { #expect(try await stack.http("GET", "/api/me", gateway: gateway, token: token).0 == 401) }
            }
            for socket in sockets {
                let ended = try await socket.event("error")
                #expect(ended["message"]?.stringValue?.contains("logged out everywhere") == true, "\(ended)")
                _ = try await socket.next { $0 == "41" }
            }
            // Nobody else's session is touched; the user logs in again as usual.
            #expect(try await stack.http("GET", "/api/me", token: adminToken).0 == 200)
            #expect(!adminSocket.isClosed)
            let again = try await stack.login(doctor)
            #expect(try await stack.http("GET", "/api/me", gateway: 1, token: again).0 == 200)

            // An admin ends them for the doctor (a lost phone); a doctor cannot do it to anyone.
            let doctorSocket = try await SocketTestClient.connect(port: stack.ports[0], token: again)
            #expect(try await stack.http("POST", "/api/admin/users/dr.patel@clinic.com/logout", token: again).0 == 403)
            #expect(try await stack.http("POST", "/api/admin/users/ghost@clinic.com/logout", token: adminToken).0 == 404)
            let ended = try await stack.http("POST", "/api/admin/users/\(doctor)/logout", token: adminToken)
            #expect(ended.0 == 200 && ended.1?["email"] == .string(doctor), "\(ended)")
            #expect(try await stack.http("GET", "/api/me", token: again).0 == 401)
            _ = try await doctorSocket.next { $0 == "41" }
            #expect(try await stack.http("POST", "/api/auth/login", body: ["email": doctor, "password": password(doctor)]).0 == 200, "the password is unchanged")

            let audit = try stack.store.auditLog().map { "\($0.action) \($0.actor ?? "-") \($0.target ?? "-") \($0.outcome)" }
            #expect(audit.contains("logout_everywhere \(doctor) \(doctor) ok") && audit.contains("admin.end_sessions \(admin) \(doctor) ok")
                    && audit.contains("admin.end_sessions \(admin) ghost@clinic.com not_found"), "\(audit)")
            for client in sockets + [adminSocket, doctorSocket] { await client.close() }
        }
    }

    @Test("a password an admin set must be changed first: the login says so; every route but /api/me, the change and logging out answers 403 password_change_required, and a socket is refused; once changed everything works and logins no longer say so")
    func changeRequired() async throws {
        try await withRealtimeStack { stack in
            let adminToken = try await stack.login(admin)
            let reset = try await stack.http("POST", "/api/admin/users/\(doctor)/password", token: adminToken, body: ["password": "set-by-the-admin"])
            #expect(reset.0 == 200 && reset.1?["user"]?["must_change_password"] == .bool(true), "\(reset)")
            let login = try await stack.http("POST", "/api/auth/login", body: ["email": doctor, "password": "set-by-the-admin"])
            #expect(login.0 == 200 && login.1?["user"]?["must_change_password"] == .bool(true), "\(login)")
            let restricted = try #require(login.1?["token"]?.stringValue)

            let refused = try await stack.http("GET", "/api/conversations", token: restricted)
            #expect(refused.0 == 403 && refused.1?["error"]?["code"] == .string("password_change_required"), "\(refused)")
            #expect(try await stack.http("POST", "/api/messages", token: restricted, body: ["receiver_email": admin, "content": "x"]).0 == 403)
            #expect(try await stack.http("GET", "/api/me", token: restricted).1?["must_change_password"] == .bool(true))
            do {
                _ = try await SocketTestClient.connect(port: stack.ports[0], token: restricted)
                Issue.record("a socket connected with a token that must change its password first")
            } catch {
                #expect("\(error)".contains("password_change_required") || "\(error)".contains("change your password"), "\(error)")
            }

            let changed = try await stack.http("POST", "/api/me/password", token: restricted,
                                               body: ["current_password": "set-by-the-admin", "new_password": "my-own-password"])
            #expect(changed.0 == 200 && changed.1?["user"]?["must_change_password"] == nil, "\(changed)")
            let own = try #require(changed.1?["token"]?.stringValue)
            #expect(try await stack.http("GET", "/api/conversations", token: own).0 == 200)
            let socket = try await SocketTestClient.connect(port: stack.ports[0], token: own)
            let again = try await stack.http("POST", "/api/auth/login", body: ["email": doctor, "password": "my-own-password"])
            #expect(again.0 == 200 && again.1?["user"]?["must_change_password"] == nil, "\(again)")
            // An admin's new user is in the same position; the admin's own account is not.
            let created = try await stack.http("POST", "/api/admin/users", token: adminToken,
                                               body: ["email": "dr.new@clinic.com", "name": "Dr. New", "role": "doctor", "password": "first-password-1"])
            #expect(created.1?["must_change_password"] == .bool(true), "\(String(describing: created.1))")
            #expect(try await stack.http("GET", "/api/admin/users", token: adminToken).0 == 200)
            await socket.close()
        }
    }
}
