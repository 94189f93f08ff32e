import ChatCore
import ChatTesting
import Foundation
import Gateway
import HTTPTypes
import MessageStore
import NIOCore
import Testing

@Suite("REST API against the real services", .redisServer)
struct RESTTests {
    @Test("admin↔doctor, doctor↔doctor, admin↔admin and a group of 5: create, send, list, history, unread falls to 0", arguments: [
        ["admin@clinic.com", "doctor@clinic.com"], ["doctor@clinic.com", "dr.patel@clinic.com"], ["admin@clinic.com", "admin2@clinic.com"],
        ["admin@clinic.com", "doctor@clinic.com", "dr.patel@clinic.com", "dr.okafor@clinic.com", "admin2@clinic.com"],
    ])
    func flow(people: [String]) async throws {
        try await withGateway { gw in
            var tokens: [String: String] = [:]
            for person in people + ["dr.novak@clinic.com"] { tokens[person] = try await gw.login(person) }
            let sender = people[0]
            let create = try await gw.call(.post, "/api/conversations", token: tokens[sender],
                                           body: CreateConversationRequest(participants: Array(people.dropFirst()), title: people.count > 2 ? "Ward 3" : nil))
            #expect(create.status == .created)
            let conversation = try #require((create.json as? [String: Any])?["id"] as? String)
            if people.count == 2 {
                let again = try await gw.call(.post, "/api/conversations", token: tokens[people[1]], body: CreateConversationRequest(participants: [sender]))
                #expect((again.json as? [String: Any])?["id"] as? String == conversation)
            }
            let other = try await gw.call(.post, "/api/messages", token: tokens[sender], body: SendMessageRequest(receiverEmail: "dr.novak@clinic.com", content: "older", clientID: "o1"))
            #expect(other.status == .created)
            for i in 1...3 {
                let sent = try await gw.call(.post, "/api/messages", token: tokens[sender], body: SendMessageRequest(conversationID: conversation, content: "note \(i)", clientID: "n\(i)"))
                #expect(sent.status == .created)
                #expect((sent.json as? [String: Any])?["seq"] as? Int == i)
            }
            let list = try await gw.call(.get, "/api/conversations", token: tokens[sender])
            #expect((list.json as? [[String: Any]])?.compactMap { $0["id"] as? String }.first == conversation)
            #expect((list.json as? [[String: Any]])?.count == 2)
            for reader in people.dropFirst() {
                let unread = try await gw.call(.get, "/api/messages/unread-count", token: tokens[reader])
                #expect((unread.json as? [String: Any])?["total"] as? Int == 3)
                let history = try await gw.call(.get, "/api/conversations/\(conversation)/messages?limit=30", token: tokens[reader])
                #expect((history.json as? [[String: Any]])?.compactMap { $0["content"] as? String } == ["note 1", "note 2", "note 3"])
                let read = try await gw.call(.post, "/api/conversations/\(conversation)/read", token: tokens[reader], body: ["up_to_seq": 3])
                #expect(read.status == .ok)
                #expect((read.json as? [String: Any])?["up_to_seq"] as? Int == 3)
                let after = try await gw.call(.get, "/api/messages/unread-count", token: tokens[reader])
                #expect((after.json as? [String: Any])?["total"] as? Int == 0)
            }
        }
    }

    @Test("95 messages read back in pages of 30 by before and by skip: each exactly once, in order")
    func paging() async throws {
        try await withGateway { gw in
            let token = try await gw.login("admin@clinic.com")
            let doctor = try await gw.login("doctor@clinic.com")
            let first = try await gw.call(.post, "/api/messages", token: token, body: SendMessageRequest(receiverEmail: "doctor@clinic.com", content: "m1", clientID: "p1"))
            let conversation = try #require((first.json as? [String: Any])?["conversation_id"] as? String)
            try await withThrowingTaskGroup(of: Void.self) { group in
                for i in 2...95 {
                    group.addTask {
                        // Sent concurrently; seq order is commit order, so read back by seq.
                        _ = try await gw.call(.post, "/api/messages", token: token, body: SendMessageRequest(conversationID: conversation, content: "m\(i)", clientID: "p\(i)"))
                    }
                }
                try await group.waitForAll()
            }
            func page(_ query: String) async throws -> [[String: Any]] {
                try #require(try await gw.call(.get, "/api/conversations/\(conversation)/messages?\(query)", token: doctor).json as? [[String: Any]])
            }
            var byCursor: [[String: Any]] = []
            var before: Int?
            repeat {
                let items = try await page("limit=30" + (before.map { "&before=\($0)" } ?? ""))
                byCursor = items + byCursor
                before = items.first?["seq"] as? Int
                if items.isEmpty { break }
            } while before != nil
            var bySkip: [[String: Any]] = []
            for skip in [0, 30, 60, 90, 120] { bySkip = try await page("limit=30&skip=\(skip)") + bySkip }
            #expect(byCursor.compactMap { $0["seq"] as? Int } == Array(1...95))
            #expect(bySkip.compactMap { $0["seq"] as? Int } == Array(1...95))
            #expect(Set(byCursor.compactMap { $0["content"] as? String }).count == 95)
        }
    }

    @Test("the same client_id sent three times gives one stored message and the same answer each time")
    func idempotentSend() async throws {
        try await withGateway { gw in
            let token = try await gw.login("doctor@clinic.com")
            var ids: [String] = []
            for _ in 0..<3 {
                let sent = try await gw.call(.post, "/api/messages", token: token, body: SendMessageRequest(receiverEmail: "admin@clinic.com", content: "K+ 5.9", clientID: "retry-1"))
                #expect(sent.status == .created)
                ids.append(try #require((sent.json as? [String: Any])?["id"] as? String))
            }
            #expect(Set(ids).count == 1)
            let conversation = try #require(try gw.store.conversations(for: "admin@clinic.com").first)
            #expect(try gw.store.history(for: "admin@clinic.com", conversationID: conversation.id).count == 1)
        }
    }

    @Test("an Idempotency-Key header is the send's client_id: retries with it give one message; a different client_id in the body is refused")
    func idempotencyKeyHeader() async throws {
        try await withGateway { gw in
            let token = try await gw.login("doctor@clinic.com")
            let body = ByteBuffer(bytes: try ChatJSON.makeEncoder().encode(SendMessageRequest(receiverEmail: "admin@clinic.com", content: "K+ 5.9", clientID: nil)))
            func send(key: String, body: ByteBuffer = body) async throws -> (status: HTTPResponse.Status, json: [String: Any]) {
                let headers: HTTPFields = [.authorization: "Bearer \(token)", .contentType: "application/json", HTTPField.Name("Idempotency-Key")!: key]
                return try await gw.client.execute(uri: "/api/messages", method: .post, headers: headers, body: body) { response in
                    (response.status, (try? JSONSerialization.jsonObject(with: Data(response.body.readableBytesView))) as? [String: Any] ?? [:])
                }
            }
            let first = try await send(key: "k-1")
            #expect(first.status == .created)
            #expect(first.json["client_id"] as? String == "k-1")
            let again = try await send(key: "k-1")
            #expect(again.status == .created && again.json["id"] as? String == first.json["id"] as? String)
            // The same key in the body and the header is one key; two different ones are a mistake.
            let both = ByteBuffer(bytes: try ChatJSON.makeEncoder().encode(SendMessageRequest(receiverEmail: "admin@clinic.com", content: "K+ 5.9", clientID: "k-1")))
            #expect(try await send(key: "k-1", body: both).json["id"] as? String == first.json["id"] as? String)
            let mismatch = try await send(key: "k-2", body: both)
            #expect(mismatch.status == .badRequest)
            #expect((mismatch.json["error"] as? [String: Any])?["message"] as? String == "Idempotency-Key and client_id differ; send one, or the same value")
            #expect(try await send(key: String(repeating: "k", count: 129)).status == .badRequest, "the client_id's limits apply")
            let conversation = try #require(try gw.store.conversations(for: "admin@clinic.com").first)
            #expect(try gw.store.history(for: "admin@clinic.com", conversationID: conversation.id).count == 1)
        }
    }

    @Test("every endpoint answers 401 to no token, a garbage token, a forged, altered or padded one, an expired token and a revoked token")
    func authenticationMatrix() async throws {
        try await withGateway { gw in
            let open: Set<String> = ["GET /healthz", "GET /readyz", "GET /metrics", "GET /api/openapi.json", "POST /api/auth/login"]
            let revoked = try await gw.login("admin@clinic.com")
            #expect(try await gw.call(.post, "/api/auth/logout", token: revoked).status == .noContent)
            let user = User(email: "admin@clinic.com", name: "Alex Admin", role: .admin)
            let expired = gw.tokens.issue(for: user, now: Date().addingTimeInterval(-7200)).token
            let forged = TokenService(secret: String(repeating: "y", count: 32), lifetime: .seconds(3600), redis: gw.redis, keys: gw.keys).issue(for: user).token
            // The same signature bytes written another way: an unused low bit of the last
            // character set (43 characters carry 258 bits for 256, so its value is a multiple
            // of 4, and the next character of the alphabet is the next byte), or padding added.
            let valid = gw.tokens.issue(for: user).token
            let altered = String(valid.dropLast()) + String(UnicodeScalar(valid.utf8.last! + 1))
            let padded = valid + "="
            #expect(try await gw.call(.get, "/api/conversations", token: valid).status == .ok)
            let protected = gw.registered.filter { !open.contains($0) }
            #expect(protected.count >= 15)
            for route in protected {
                let parts = route.split(separator: " ")
                let method = HTTPRequest.Method(String(parts[0]))!
                let path = String(parts[1]).replacingOccurrences(of: "{id}", with: "x").replacingOccurrences(of: "{email}", with: "doctor@clinic.com")
                for (name, token) in [("none", nil), ("garbage", "not.a.token"), ("forged", forged), ("altered", altered), ("padded", padded), ("expired", expired), ("revoked", revoked)] as [(String, String?)] {
                    let response = try await gw.call(method, path, token: token, body: ["content": "x"])
                    #expect(response.status == .unauthorized, "\(route) with \(name) token")
                    #expect(((response.json as? [String: Any])?["error"] as? [String: Any])?["code"] as? String == "unauthorized", "\(route) with \(name) token")
                }
            }
        }
    }

    @Test("a non-participant gets 404 for someone else's conversation and message; user_email of someone else is 403")
    func outsiders() async throws {
        try await withGateway { gw in
            let admin = try await gw.login("admin@clinic.com")
            let outsider = try await gw.login("dr.patel@clinic.com")
            let sent = try await gw.call(.post, "/api/messages", token: admin, body: SendMessageRequest(receiverEmail: "doctor@clinic.com", content: "bed 4 labs", clientID: "s1"))
            let message = try #require(sent.json as? [String: Any])
            let conversation = try #require(message["conversation_id"] as? String)
            let messageID = try #require(message["id"] as? String)
            let attempts: [(HTTPRequest.Method, String, (any Encodable & Sendable)?)] = [
                (.get, "/api/conversations/\(conversation)/messages", nil),
                (.post, "/api/conversations/\(conversation)/read", ["up_to_seq": 1]),
                (.post, "/api/messages/\(messageID)/read", nil),
                (.post, "/api/messages", SendMessageRequest(conversationID: conversation, content: "let me in", clientID: "x")),
            ]
            for (method, path, body) in attempts {
                let response = try await gw.call(method, path, token: outsider, body: body)
                #expect(response.status == .notFound, "\(method) \(path)")
            }
            let search = try await gw.call(.get, "/api/messages/search?q=labs", token: outsider)
            #expect((search.json as? [Any])?.isEmpty == true)
            let doctor = try await gw.login("doctor@clinic.com")
            let found = try await gw.call(.get, "/api/messages/search?q=labs", token: doctor)
            #expect((found.json as? [[String: Any]])?.compactMap { $0["id"] as? String } == [messageID])
            #expect(try await gw.call(.get, "/api/conversations?user_email=doctor@clinic.com", token: outsider).status == .forbidden)
            #expect(try await gw.call(.get, "/api/conversations?user_email=dr.patel@clinic.com", token: outsider).status == .ok)
            #expect(try await gw.call(.get, "/api/messages/unread-count?user_email=admin@clinic.com", token: outsider).status == .forbidden)
        }
    }

    @Test("bad input gets a clear JSON error and loses nothing else")
    func badInput() async throws {
        try await withGateway { gw in
            let token = try await gw.login("doctor@clinic.com")
            func code(_ r: (status: HTTPResponse.Status, json: Any?, headers: HTTPFields)) -> String? {
                ((r.json as? [String: Any])?["error"] as? [String: Any])?["code"] as? String
            }
            let invalid = try await gw.call(.post, "/api/messages", token: token, raw: "{\"content\": ")
            #expect(invalid.status == .badRequest && code(invalid) == "bad_request")
            let missing = try await gw.call(.post, "/api/messages", token: token, raw: "{}")
            #expect(missing.status == .badRequest)
            let huge = try await gw.call(.post, "/api/messages", token: token, raw: "{\"content\":\"" + String(repeating: "a", count: 70_000) + "\"}")
            #expect(huge.status == .contentTooLarge && code(huge) == "payload_too_large", "\(huge.status) \(String(describing: huge.json))")
            let empty = try await gw.call(.post, "/api/messages", token: token, body: SendMessageRequest(receiverEmail: "admin@clinic.com", content: "  \n ", clientID: "e"))
            #expect(empty.status == .unprocessableContent && code(empty) == "invalid_content")
            let long = try await gw.call(.post, "/api/messages", token: token, body: SendMessageRequest(receiverEmail: "admin@clinic.com", content: String(repeating: "b", count: 10_001), clientID: "l"))
            #expect(long.status == .unprocessableContent)
            let nobody = try await gw.call(.post, "/api/messages", token: token, body: SendMessageRequest(receiverEmail: "ghost@clinic.com", content: "hi", clientID: "g"))
            #expect(nobody.status == .notFound)
            #expect(try await gw.call(.post, "/api/messages/no-such-id/read", token: token).status == .notFound)
            #expect(try await gw.call(.get, "/api/conversations/no-such-id/messages?limit=abc", token: token).status == .badRequest)
            #expect(try await gw.call(.get, "/api/users/search?user_role=nurse", token: token).status == .badRequest)
            let route = try await gw.call(.get, "/api/no-such-route", token: token)
            #expect(route.status == .notFound && code(route) == "not_found")
            // Nothing else was lost: a good message after all that is stored.
            let good = try await gw.call(.post, "/api/messages", token: token, body: SendMessageRequest(receiverEmail: "admin@clinic.com", content: "fine", clientID: "ok"))
            #expect(good.status == .created && (good.json as? [String: Any])?["seq"] as? Int == 1)
            #expect(good.headers[.cacheControl] == "no-store")
            #expect(try await gw.call(.get, "/api/messages/search?q=fine&limit=many", token: token).status == .badRequest)
            // A read mark without a body marks everything read.
            let conversation = try #require((good.json as? [String: Any])?["conversation_id"] as? String)
            let admin = try await gw.login("admin@clinic.com")
            let readAll = try await gw.call(.post, "/api/conversations/\(conversation)/read", token: admin)
            #expect(readAll.status == .ok && (readAll.json as? [String: Any])?["up_to_seq"] as? Int == 1)
        }
    }

    @Test("login: the same 401 for an unknown user and a wrong password; more than 5 failures a minute → 429 with Retry-After")
    func loginRules() async throws {
        try await withGateway { gw in
            let wrong = try await gw.call(.post, "/api/auth/login", body: ["email": "doctor@clinic.com", "password": "nope-nope"])
            let unknown = try await gw.call(.post, "/api/auth/login", body: ["email": "ghost@clinic.com", "password": "nope-nope"])
            #expect(wrong.status == .unauthorized && unknown.status == .unauthorized)
            #expect(NSDictionary(dictionary: wrong.json as? [String: Any] ?? [:]) == NSDictionary(dictionary: unknown.json as? [String: Any] ?? ["x": 1]))
            for _ in 0..<4 { _ = try await gw.call(.post, "/api/auth/login", body: ["email": "doctor@clinic.com", "password": "nope-nope"]) }
            let throttled = try await gw.call(.post, "/api/auth/login", body: ["email": "doctor@clinic.com", "password": password("doctor@clinic.com")])
            #expect(throttled.status == .tooManyRequests)
            #expect(Int(throttled.headers[.retryAfter] ?? "") ?? 0 > 0)
            let audit = try gw.store.auditLog().map(\.action)
            #expect(audit.contains("login_failed"))
            #expect(await eventually { (try? gw.store.auditLog().contains { $0.action == "login_throttled" }) == true })
        }
    }

    @Test("admins manage users; a disabled user's token stops working; doctors get 403; the audit log shows it all")
    func administration() async throws {
        try await withGateway { gw in
            let admin = try await gw.login("admin@clinic.com")
            let doctor = try await gw.login("doctor@clinic.com")
            #expect(try await gw.call(.get, "/api/admin/users", token: doctor).status == .forbidden)
            let created = try await gw.call(.post, "/api/admin/users", token: admin, body: CreateUserRequest(email: "dr.lee@clinic.com", name: "Dr. Min Lee", role: .doctor, password: "a-good-password"))
            #expect(created.status == .created)
            #expect(try await gw.call(.get, "/api/admin/users", token: admin).json.map { ($0 as? [Any])?.count } == DemoAccounts.all.count + 1)
            #expect(try await gw.call(.put, "/api/admin/users/dr.lee@clinic.com/role", token: admin, body: ["role": "admin"]).status == .ok)
            // A client that percent-encodes the path (encodeURIComponent, as the web client does) names the same user.
            let encoded = try await gw.call(.put, "/api/admin/users/dr.lee%40clinic.com/role", token: admin, body: ["role": "admin"])
            #expect(encoded.status == .ok && (encoded.json as? [String: Any])?["email"] as? String == "dr.lee@clinic.com", "\(encoded)")
            let undecodable = try await gw.call(.put, "/api/admin/users/dr.lee%FFclinic.com/role", token: admin, body: ["role": "admin"])
            #expect(undecodable.status == .badRequest, "\(undecodable)")
            #expect(try await gw.call(.get, "/api/me", token: doctor).status == .ok)
            #expect(try await gw.call(.post, "/api/admin/users/doctor@clinic.com/disable", token: admin).status == .ok)
            #expect(try await gw.call(.get, "/api/me", token: doctor).status == .unauthorized)
            #expect(try await gw.call(.post, "/api/auth/login", body: ["email": "doctor@clinic.com", "password": password("doctor@clinic.com")]).status == .unauthorized)
            #expect(try await gw.call(.post, "/api/admin/users/doctor@clinic.com/enable", token: admin).status == .ok)
            #expect(try await gw.call(.get, "/api/me", token: doctor).status == .ok)
            let sent = try await gw.call(.post, "/api/messages", token: admin, body: SendMessageRequest(receiverEmail: "dr.patel@clinic.com", content: "x", clientID: "h"))
            let conversation = try #require((sent.json as? [String: Any])?["conversation_id"] as? String)
            #expect(try await gw.call(.post, "/api/admin/conversations/\(conversation)/hold", token: doctor).status == .forbidden)
            let held = try await gw.call(.post, "/api/admin/conversations/\(conversation)/hold", token: admin)
            #expect((held.json as? [String: Any])?["legal_hold"] as? String == "on")
            #expect(try await gw.call(.post, "/api/admin/conversations/no-such-id/release", token: admin).status == .notFound)
            let audit = try #require(try await gw.call(.get, "/api/admin/audit?limit=100", token: admin).json as? [[String: Any]])
            let actions = audit.compactMap { $0["action"] as? String }
            for action in ["login", "admin.create_user", "admin.set_user_role", "admin.set_user_disabled", "admin.set_legal_hold"] {
                #expect(actions.contains(action), "\(action) in \(actions)")
            }
        }
    }

    @Test("admins find the conversations to hold: a participant's, those on hold, or both; participants and counts, no content; audited; doctors get 403; bad parameters 400, an unknown participant 404")
    func conversationsForLegalHolds() async throws {
        try await withGateway { gw in
            let admin = try await gw.login("admin@clinic.com")
            let doctor = try await gw.login("doctor@clinic.com")
            let group = try gw.store.createGroup(creator: "dr.patel@clinic.com", title: "Ward 3", members: ["doctor@clinic.com", "dr.okafor@clinic.com"])
            let direct = try gw.store.openDirectConversation("doctor@clinic.com", "dr.okafor@clinic.com")
            _ = try gw.store.openDirectConversation("admin@clinic.com", "dr.okafor@clinic.com")
            // Two messages in the group, one of them past its expiry; one in the direct conversation.
            _ = try gw.store.append([SendRequest(sender: "dr.patel@clinic.com", conversationID: group.id, receiverEmail: nil, content: "old secret", clientID: nil)],
                                   now: Date().addingTimeInterval(-100 * 86400)).map { try $0.get() }
            _ = try gw.store.append([SendRequest(sender: "doctor@clinic.com", conversationID: group.id, receiverEmail: nil, content: "new secret", clientID: nil),
                                     SendRequest(sender: "doctor@clinic.com", conversationID: direct.id, receiverEmail: nil, content: "direct secret", clientID: nil)]).map { try $0.get() }

            #expect(try await gw.call(.get, "/api/admin/conversations?participant=doctor@clinic.com", token: doctor).status == .forbidden)
            for query in ["", "?held=false", "?held=maybe", "?participant=doctor@clinic.com&limit=0", "?participant=doctor@clinic.com&limit=x"] {
                #expect(try await gw.call(.get, "/api/admin/conversations\(query)", token: admin).status == .badRequest, "\(query)")
            }
            #expect(try await gw.call(.get, "/api/admin/conversations?participant=ghost@clinic.com", token: admin).status == .notFound)

            let found = try await gw.call(.get, "/api/admin/conversations?participant=Doctor%40clinic.com", token: admin)
            let rows = try #require(found.json as? [[String: Any]], "\(found)")
            #expect(Set(rows.compactMap { $0["id"] as? String }) == [group.id, direct.id], "only the conversations the doctor takes part in")
            let ward = try #require(rows.first { $0["id"] as? String == group.id })
            #expect(ward["kind"] as? String == "group" && ward["title"] as? String == "Ward 3")
            #expect(ward["participants"] as? [String] == ["doctor@clinic.com", "dr.okafor@clinic.com", "dr.patel@clinic.com"])
            #expect(ward["messages"] as? Int == 2 && ward["kept_past_expiry"] as? Int == 1 && ward["legal_hold"] as? Bool == false, "\(ward)")
            #expect(!String(decoding: try JSONSerialization.data(withJSONObject: rows), as: UTF8.self).contains("secret"), "no content")

            let none = try await gw.call(.get, "/api/admin/conversations?held=true", token: admin)
            #expect(none.status == .ok && (none.json as? [Any])?.isEmpty == true, "\(none)")
            #expect(try await gw.call(.post, "/api/admin/conversations/\(group.id)/hold", token: admin).status == .ok)
            let held = try #require(try await gw.call(.get, "/api/admin/conversations?held=true", token: admin).json as? [[String: Any]])
            #expect(held.map { $0["id"] as? String } == [group.id] && held.first?["legal_hold"] as? Bool == true)
            let both = try #require(try await gw.call(.get, "/api/admin/conversations?participant=admin@clinic.com&held=true", token: admin).json as? [Any])
            #expect(both.isEmpty, "the admin takes part in no held conversation")

            let audit = try gw.store.auditLog().filter { $0.action == "admin.list_conversations" }.map { "\($0.actor ?? "-") \($0.target ?? "-") \($0.outcome)" }
            #expect(audit.contains("admin@clinic.com doctor@clinic.com ok"), "\(audit)")
            #expect(audit.contains("admin@clinic.com legal_hold ok"), "\(audit)")
            #expect(audit.contains("admin@clinic.com ghost@clinic.com not_found"), "\(audit)")
        }
    }

    @Test("health, readiness and the OpenAPI document, whose paths are exactly the registered routes")
    func healthAndOpenAPI() async throws {
        try await withGateway { gw in
            #expect(try await gw.call(.get, "/healthz").status == .ok)
            #expect(try await gw.call(.get, "/readyz").status == .ok)
            let document = try #require(try await gw.call(.get, "/api/openapi.json").json as? [String: Any])
            let paths = try #require(document["paths"] as? [String: [String: Any]])
            let documented = Set(paths.flatMap { path, operations in operations.keys.map { "\($0.uppercased()) \(path)" } })
            #expect(documented == Set(gw.registered))
            // The Conversation schema names every member a listed conversation can carry.
            let schemas = try #require((document["components"] as? [String: Any])?["schemas"] as? [String: Any])
            let properties = try #require((schemas["Conversation"] as? [String: Any])?["properties"] as? [String: Any])
            var full = Conversation(id: "c1", kind: .group, title: "Ward", participants: ["a@clinic.com"], createdAt: Date(), lastMessageAt: Date(),
                                    lastMessage: nil, unreadCount: 1)
            full.presence = ["a@clinic.com": PresenceState(online: true, lastSeen: Date())]
            full.members = [User(email: "a@clinic.com", name: "A", role: .doctor)]
            full.readPositions = ["a@clinic.com": 1]
            full.readVersion = 3
            let written = try #require(try JSONSerialization.jsonObject(with: ChatJSON.makeEncoder().encode(full)) as? [String: Any])
            #expect(Set(written.keys).subtracting(properties.keys).isEmpty, "undocumented: \(Set(written.keys).subtracting(properties.keys))")
        }
    }

    @Test("with the store down, reads answer 503 at once and sends 503 after the timeout; nothing hangs")
    func storeDown() async throws {
        try await withGateway(storeRunning: false, storeTimeout: .milliseconds(500)) { gw in
            let token = gw.tokens.issue(for: User(email: "doctor@clinic.com", name: "Dr. Sarah Kim", role: .doctor)).token
            let list = try await gw.call(.get, "/api/conversations", token: token)
            #expect(list.status == .serviceUnavailable)
            let send = try await gw.call(.post, "/api/messages", token: token, body: SendMessageRequest(receiverEmail: "admin@clinic.com", content: "queued", clientID: "q1"))
            #expect(send.status == .serviceUnavailable)
            #expect(((send.json as? [String: Any])?["error"] as? [String: Any])?["code"] as? String == "unavailable")
            // The gateway stays ready: it still holds sockets and takes sends into the stream.
            #expect(try await gw.call(.get, "/readyz").status == .ok)
            // The send waits in the stream for the store to come back (the client retries with the same client_id).
            #expect(try await gw.redis.xlen(gw.keys.commands) == 1)
        }
    }
}
