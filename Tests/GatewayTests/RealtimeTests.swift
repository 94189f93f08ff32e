import ChatCore
import ChatTesting
import Foundation
import Gateway
import MessageStore
import NIOWebSocket
import RedisClient
import Synchronization
import Testing

private let doctor = "doctor@clinic.com"
private let admin = "admin@clinic.com"
private let patel = "dr.patel@clinic.com"

private func send(_ to: String, _ content: String, _ clientID: String) -> JSONValue {
    .object(["receiver_email": .string(to), "content": .string(content), "client_id": .string(clientID)])
}

/// As a client does: each send (client id → text, to `receiver`) not confirmed yet is sent
/// again with its client id every half second, for up to 30 s; the ids of the messages
/// confirmed, by client id. Acknowledgement ids start after `ackFrom`.
private func sendUntilConfirmed(_ sender: SocketTestClient, to receiver: String, _ sends: [(clientID: String, content: String)],
                                ackFrom: Int) async throws -> [String: String] {
    var confirmed: [String: String] = [:]
    var ack = ackFrom
    let deadline = ContinuousClock.now + .seconds(30)
    while confirmed.count < sends.count && ContinuousClock.now < deadline {
        for (clientID, content) in sends where confirmed[clientID] == nil {
            ack += 1
            guard let reply = try? await sender.call("send_message", send(receiver, content, clientID), ack: ack),
                  let id = reply["message"]?["id"]?.stringValue else { continue }
            confirmed[clientID] = id
        }
        if confirmed.count < sends.count { try await Task.sleep(for: .milliseconds(500)) }
    }
    return confirmed
}

private func subscribers(_ stack: RealtimeStack, _ email: String) async throws -> Int {
    try await stack.redis.send(["PUBSUB", "NUMSUB", stack.keys.user(email)]).array?.last?.int ?? -1
}

/// A stack on a redis-server of its own (the test pauses its writes, which would stall
/// other suites on the shared one), with a 64-packet inbound buffer and the send rate
/// limit lifted, for the tests of a client sending faster than its packets are handled.
private func withSlowHandlingStack(_ body: @Sendable (RealtimeStack) async throws -> Void) async throws {
    let server = try await RedisServer.start()
    defer { server.stop() }
    var engine = EngineConfiguration()
    engine.inboundBuffer = 64
    try await withRealtimeStack(engine: engine, environment: ["CHAT_MESSAGE_RATE": "100000", "CHAT_MESSAGE_BURST": "100000"],
                                redisServer: server, body)
}

@Suite("Socket.IO gateway with a real WebSocket client, Redis and SQLite", .redisServer)
struct RealtimeTests {
    @Test("heartbeat: a client that answers pings stays; one that does not is closed after interval + timeout; CONNECT without a token is refused")
    func heartbeat() async throws {
        var engine = EngineConfiguration()
        engine.pingInterval = .milliseconds(1500)
        engine.pingTimeout = .milliseconds(700)
        try await withRealtimeStack(engine: engine) { stack in
            let client = try await SocketTestClient.open(port: stack.ports[0])
            let silent = try await SocketTestClient.open(port: stack.ports[0], answersPings: false)
            try await client.send("40{}")
            let refused = try await client.next { $0.hasPrefix("44") }
            let data = try #require(JSONValue(parsing: refused.dropFirst(2)))
            #expect(data["message"]?.stringValue?.contains("token") == true)
            #expect(data["data"]?["code"]?.stringValue == "unauthorized")
            #expect(await silent.waitClosed(timeout: .seconds(5)))
            try await Task.sleep(for: .seconds(3))
            #expect(!client.isClosed)
            await client.close()
        }
    }

    @Test("a socket that has gone is freed: its session, connection and WebSocket handler, whether the client closed it or the gateway did, over WebSocket or long-polling (they kept each other alive, about 1.5 KiB a socket for as long as the gateway ran)")
    func goneSocketsAreFreed() async throws {
        final class Held: @unchecked Sendable {
            weak var session: EngineSession?
            let how: String
            init(_ session: EngineSession, _ how: String) { self.session = session; self.how = how }
        }
        var engine = EngineConfiguration()
        engine.pingInterval = .milliseconds(500)
        engine.pingTimeout = .milliseconds(500)
        try await withRealtimeStack(engine: engine) { stack in
            var held: [Held] = []
            for (index, answersPings) in [true, false].enumerated() {
                let client = try await SocketTestClient.open(port: stack.ports[0], answersPings: answersPings, expectOpenPacket: false)
                let open = try await client.next { $0.hasPrefix("0{") }
                let sid = try #require(JSONValue(parsing: open.dropFirst())?["sid"]?.stringValue)
                try await client.send("40" + JSONValue.object(["token": .string(stack.token(admin))]).text)
                _ = try await client.next { $0.hasPrefix("40{\"sid\"") }
                // A send, so the session's consumer has run with the connection's closures.
                #expect(try await client.call("send_message", send(doctor, "freed \(index)", "freed-\(index)"), ack: 1)["ok"] == .bool(true))
                held.append(Held(try #require(stack.services[0].engine.session(sid)),
                                 answersPings ? "a WebSocket its client closed" : "a WebSocket closed for missed pings"))
                if answersPings {
                    await client.close()
                } else {
                    #expect(await client.waitClosed(timeout: .seconds(5)), "the gateway closes a client that does not answer pings")
                }
            }
            // A long-polling session, closed by its client's close packet.
            let (_, openData) = try await stack.httpRaw("GET", "/socket.io/?EIO=4&transport=polling")
            let sid = try #require(JSONValue(parsing: String(decoding: openData, as: UTF8.self).dropFirst())?["sid"]?.stringValue)
            let polling = "/socket.io/?EIO=4&transport=polling&sid=\(sid)"
            #expect(try await stack.httpRaw("POST", polling, body: #"40{"token":"\#(stack.token(admin))"}"#).0 == 200)
            #expect(String(decoding: try await stack.httpRaw("GET", polling).1, as: UTF8.self).hasPrefix("40{\"sid\""))
            held.append(Held(try #require(stack.services[0].engine.session(sid)), "a long-polling session its client closed"))
            #expect(try await stack.httpRaw("POST", polling, body: "1").0 == 200)
            #expect(await eventually { stack.services[0].engine.sessionCount == 0 })
            // The connection and the WebSocket handler each hold their session: it is freed only once they are.
            let gone = held
            let freed = await eventually { gone.allSatisfy { $0.session == nil } }
            #expect(freed, "still in memory: \(gone.filter { $0.session != nil }.map(\.how))")
        }
    }

    @Test("packets sent before the open packet arrived keep their order; a message in fragments is one packet")
    func earlyAndFragmentedPackets() async throws {
        try await withRealtimeStack { stack in
            let receiver = try await stack.connect(admin)
            // CONNECT and three sends straight after the upgrade, before reading anything: the
            // transport takes over the socket meanwhile, and must not reorder them.
            let client = try await SocketTestClient.open(port: stack.ports[0], expectOpenPacket: false)
            try await client.send("40" + JSONValue.object(["token": .string(stack.token(doctor))]).text)
            for index in 1...3 { try await client.emit("send_message", send(admin, "early \(index)", "early-\(index)"), ack: index) }
            try await client.sendFragmented(["42", "4[\"send_message\",", send(admin, "in pieces", "frag-1").text, "]"])
            _ = try await client.next { $0.hasPrefix("0{") }
            _ = try await client.next { $0.hasPrefix("40{\"sid\"") }
            for index in 1...3 {
                let ack = try await client.next { $0.hasPrefix("43\(index)[") }
                #expect(ack.contains("\"ok\":true"), "\(ack)")
            }
            #expect(try await client.next { $0.hasPrefix("434[") }.contains("\"ok\":true"))
            var contents: [String] = []
            for _ in 0..<4 { contents.append(try await receiver.event("receive_message")["content"]?.stringValue ?? "?") }
            #expect(contents == ["early 1", "early 2", "early 3", "in pieces"])
            await client.close()
            await receiver.close()
        }
    }

    @Test("a socket that connects no namespace in time is closed; a connected one stays")
    func connectTimeout() async throws {
        var engine = EngineConfiguration()
        engine.connectTimeout = .seconds(1)
        try await withRealtimeStack(engine: engine) { stack in
            let connected = try await stack.connect(doctor)
            let idle = try await SocketTestClient.open(port: stack.ports[0])
            #expect(await idle.waitClosed(timeout: .seconds(5)))
            #expect(idle.closeCode == .normalClosure)
            try await Task.sleep(for: .seconds(1))
            #expect(!connected.isClosed)
            #expect(try await connected.call("sync", .object(["since": .object([:])]), ack: 1)["ok"] == .bool(true))
            await connected.close()
        }
    }

    @Test("the open packet's fields")
    func openPacket() async throws {
        try await withRealtimeStack { stack in
            let (status, data) = try await stack.httpRaw("GET", "/socket.io/?EIO=4&transport=polling")
            #expect(status == 200)
            let text = String(decoding: data, as: UTF8.self)
            #expect(text.hasPrefix("0{"))
            let open = try #require(JSONValue(parsing: text.dropFirst()))
            #expect(open["sid"]?.stringValue?.count == 20)
            #expect(open["upgrades"] == .array([.string("websocket")]))
            #expect(open["pingInterval"] == .number(25000))
            #expect(open["pingTimeout"] == .number(20000))
            #expect(open["maxPayload"] == .number(100_000))
            // Protocol errors are the reference server's.
            let (badVersion, body) = try await stack.httpRaw("GET", "/socket.io/?EIO=3&transport=polling")
            #expect(badVersion == 400)
            #expect(String(decoding: body, as: UTF8.self) == #"{"code":5,"message":"Unsupported protocol version"}"#)
            let (unknown, unknownBody) = try await stack.httpRaw("GET", "/socket.io/?EIO=4&transport=polling&sid=nope")
            #expect(unknown == 400)
            #expect(String(decoding: unknownBody, as: UTF8.self) == #"{"code":1,"message":"Session ID unknown"}"#)
            let (transport, _) = try await stack.httpRaw("GET", "/socket.io/?EIO=4&transport=carrier-pigeon")
            #expect(transport == 400)
        }
    }

    @Test("long-polling upgraded to WebSocket, with a poll pending during the probe and without one")
    func upgrade() async throws {
        try await withRealtimeStack { stack in
            let token = try await stack.login(doctor)
            let receiver = try await stack.connect(admin)
            for pollPending in [true, false] {
                let (_, openData) = try await stack.httpRaw("GET", "/socket.io/?EIO=4&transport=polling")
                let open = JSONValue(parsing: String(decoding: openData, as: UTF8.self).dropFirst())
                guard let sid = open?["sid"]?.stringValue else { throw ChatError(.internal, "no sid in the open packet: \(String(decoding: openData, as: UTF8.self))") }
                let path = "/socket.io/?EIO=4&transport=polling&sid=\(sid)"
                #expect(try await stack.httpRaw("POST", path, body: #"40{"token":"\#(token)"}"#).0 == 200)
                #expect(String(decoding: try await stack.httpRaw("GET", path).1, as: UTF8.self).hasPrefix(#"40{"sid":"#))
                // A second poll at once is a protocol error that ends the session; keep to one.
                let poll = pollPending ? Task { try await stack.httpRaw("GET", path) } : nil
                if pollPending { try await Task.sleep(for: .milliseconds(100)) }
                let socket = try await SocketTestClient.open(port: stack.ports[0], query: "EIO=4&transport=websocket&sid=\(sid)", expectOpenPacket: false)
                try await socket.send("2probe")
                _ = try await socket.next { $0 == "3probe" }
                if let poll {
                    // The pending poll is released with a noop so the client can finish.
                    let (status, body) = try await poll.value
                    #expect(status == 200)
                    #expect(String(decoding: body, as: UTF8.self) == "6")
                }
                try await socket.send("5")
                let ack = try await socket.call("send_message", send(admin, "upgraded \(pollPending)", "up-\(pollPending)"), ack: 1)
                #expect(ack["ok"] == .bool(true))
                #expect(try await receiver.event("receive_message")["content"] == .string("upgraded \(pollPending)"))
                // Polling is over for this session.
                #expect(try await stack.httpRaw("GET", path).0 == 400)
                await socket.close()
            }
            await receiver.close()
        }
    }

    @Test("CONNECT_ERROR for a missing, garbage, forged, expired and revoked token; the transport stays and a good token then connects")
    func connectErrors() async throws {
        try await withRealtimeStack { stack in
            let user = User(email: doctor, name: "Dr. Sarah Kim", role: .doctor, disabled: false)
            let forger = TokenService(secret: String(repeating: "f", count: 32), lifetime: .seconds(3600), redis: stack.redis, keys: stack.keys)
            let revoked = stack.tokens.issue(for: user)
            try await stack.tokens.revoke(revoked.claims)
            let cases: [(String, String)] = [
                ("40", "authentication required"),
                (#"40{"token":"garbage"}"#, "not valid"),
                (#"40{"token":"\#(forger.issue(for: user).token)"}"#, "not valid"),
                (#"40{"token":"\#(stack.tokens.issue(for: user, now: Date().addingTimeInterval(-2 * 86400)).token)"}"#, "expired"),
                (#"40{"token":"\#(revoked.token)"}"#, "no longer valid"),
            ]
            for (index, (packet, words)) in cases.enumerated() {
                let client = try await SocketTestClient.open(port: stack.ports[0])
                try await client.send(packet)
                let refused = try await client.next { $0.hasPrefix("44") }
                let data = try #require(JSONValue(parsing: refused.dropFirst(2)))
                #expect(data["message"]?.stringValue?.contains(words) == true, "case \(index): \(refused)")
                #expect(data["data"]?["code"]?.stringValue == "unauthorized")
                // Events before CONNECT are ignored; a valid token then connects on the same transport.
                try await client.emit("send_message", send(admin, "too early", "early-\(index)"))
                try await client.send(#"40{"token":"\#(try await stack.login(doctor))"}"#)
                #expect(try await client.next { $0.hasPrefix("40") }.hasPrefix(#"40{"sid":""#))
                if index == cases.count - 1 {
                    // Another namespace is refused.
                    try await client.send("40/admin,")
                    #expect(try await client.next { $0.hasPrefix("44/admin,") }.contains("Invalid namespace"))
                }
                await client.close()
            }
            #expect(try stack.store.sync(for: doctor, since: [:]).conversations.isEmpty)
        }
    }

    @Test("five refused CONNECTs close the transport")
    func connectFlood() async throws {
        try await withRealtimeStack { stack in
            let client = try await SocketTestClient.open(port: stack.ports[0])
            for _ in 1...5 { try await client.send(#"40{"token":"x"}"#) }
            #expect(await client.waitClosed())
        }
    }

    @Test("across two gateways: confirmation and ack after commit, delivery to the receiver, the sender's other device sees it")
    func sendAcrossGateways() async throws {
        try await withRealtimeStack(gateways: 2) { stack in
            let sender = try await stack.connect(doctor, gateway: 0)
            let senderPhone = try await stack.connect(doctor, gateway: 1)
            let receiver = try await stack.connect(admin, gateway: 1)
            let ack = try await sender.call("send_message", send(admin, "BP 120/80, please review", "c-1"), ack: 7)
            #expect(ack["ok"] == .bool(true))
            let message = try #require(ack["message"])
            #expect(message["content"] == .string("BP 120/80, please review"))
            #expect(message["seq"] == .number(1))
            #expect(message["client_id"] == .string("c-1"))
            // Committed when acknowledged.
            let conversation = try #require(message["conversation_id"]?.stringValue)
            #expect(try stack.store.history(for: doctor, conversationID: conversation).map(\.content) == ["BP 120/80, please review"])
            let confirmed = try await sender.event("message_sent_confirmed")
            #expect(confirmed["id"] == message["id"])
            let received = try await receiver.event("receive_message")
            #expect(received["id"] == message["id"])
            #expect(received["sender_email"] == .string(doctor))
            let onPhone = try await senderPhone.event("message_sent_confirmed")
            #expect(onPhone["id"] == message["id"])
            // The sending socket got exactly one confirmation.
            try await Task.sleep(for: .milliseconds(200))
            #expect(sender.drain("message_sent_confirmed").isEmpty)
            #expect(receiver.drain("receive_message").isEmpty)
            // Replies and reads flow back the other way.
            let receipt = try await receiver.call("mark_conversation_read", .object(["conversation_id": .string(conversation), "up_to_seq": .number(1)]), ack: 1)
            #expect(receipt["ok"] == .bool(true))
            let seen = try await sender.event("message_read_receipt")
            #expect(seen["reader_email"] == .string(admin))
            #expect(seen["up_to_seq"] == .number(1))
            #expect(seen["message_id"] == message["id"])
            for client in [sender, senderPhone, receiver] { await client.close() }
        }
    }

    @Test("twenty marks while the first is at the store: the other nineteen go as one, each answered with a receipt at or past its seq; the sender hears of 1 and 20; a negative seq is refused alone")
    func marksInARow() async throws {
        try await withRealtimeStack { stack in
            let conversation = try stack.store.openDirectConversation(doctor, admin).id
            _ = try stack.store.append((1...20).map { SendRequest(sender: doctor, conversationID: conversation, content: "result \($0)", clientID: nil) }).map { try $0.get() }
            let sender = try await stack.connect(doctor)
            let reader = try await stack.connect(admin)
            // The store's writer held: the first mark stays at the store until the rest came.
            let held = DispatchSemaphore(value: 0), holding = DispatchSemaphore(value: 0)
            let store = stack.store
            DispatchQueue.global().async { _ = try? store.write { _ in holding.signal(); held.wait() } }
            holding.wait()
            var released = false
            defer { if !released { held.signal() } }
            for n in 1...20 {
                try await reader.emit("mark_conversation_read", .object(["conversation_id": .string(conversation), "up_to_seq": .number(Double(n))]), ack: n)
            }
            try await reader.emit("mark_conversation_read", .object(["conversation_id": .string(conversation), "up_to_seq": .number(-1)]), ack: 21)
            // Answered by the gateway at once, after it took the twenty (a socket's packets in order).
            _ = try await reader.next { $0.hasPrefix("4321[") && $0.contains("bad_request") }
            held.signal()
            released = true
            for n in 1...20 {
                let text = try await reader.next { $0.hasPrefix("43\(n)[") }
                guard case .array(let items)? = JSONValue(parsing: text.dropFirst(2 + String(n).count)), let ack = items.first else {
                    Issue.record("bad ack \(text)")
                    continue
                }
                #expect(ack["ok"] == .bool(true), "\(ack)")
                #expect(ack["receipt"]?["up_to_seq"] == .number(n == 1 ? 1 : 20), "mark \(n): \(ack)")
            }
            #expect(try stack.store.unreadCounts(for: admin).total == 0)
            // Two marks reached the store: the sender hears of 1, then of 20.
            var seqs: [JSONValue?] = []
            for _ in 0..<2 { seqs.append(try await sender.event("message_read_receipt")["up_to_seq"]) }
            #expect(seqs == [.number(1), .number(20)])
            try await Task.sleep(for: .milliseconds(300))
            #expect(sender.drain("message_read_receipt").isEmpty)
            for client in [sender, reader] { await client.close() }
        }
    }

    @Test("a group of four on two gateways: everyone else receives each message once")
    func group() async throws {
        try await withRealtimeStack(gateways: 2) { stack in
            let token = try await stack.login(doctor)
            let (status, created) = try await stack.http("POST", "/api/conversations", token: token,
                                                         raw: #"{"participants":["admin@clinic.com","dr.patel@clinic.com","dr.okafor@clinic.com"],"title":"Ward 3"}"#)
            #expect(status == 201)
            let id = try #require(created?["id"]?.stringValue)
            let members = [doctor, admin, patel, "dr.okafor@clinic.com"]
            var clients: [SocketTestClient] = []
            for (index, member) in members.enumerated() { clients.append(try await stack.connect(member, gateway: index % 2)) }
            for (index, client) in clients.enumerated() {
                let ack = try await client.call("send_message", .object(["conversation_id": .string(id), "content": .string("from \(index)"), "client_id": .string("g\(index)")]), ack: index + 1)
                #expect(ack["ok"] == .bool(true))
            }
            for (index, client) in clients.enumerated() {
                #expect(await eventually { client.drainCount("receive_message") >= 3 }, "member \(index)")
            }
            try await Task.sleep(for: .milliseconds(200))
            for client in clients {
                #expect(client.drain("receive_message").isEmpty)
                await client.close()
            }
        }
    }

    @Test("a group's read mark reaches the reader's other device and the sender of what it covers, not the other members; the next mark, over a member's message, reaches that member")
    func groupReceiptsGoToTheSenders() async throws {
        try await withRealtimeStack(gateways: 2) { stack in
            let okafor = "dr.okafor@clinic.com"
            let group = try stack.store.createGroup(creator: doctor, title: "Ward 4", members: [admin, patel, okafor]).id
            _ = try stack.store.append([SendRequest(sender: doctor, conversationID: group, content: "bed 2", clientID: nil)]).map { try $0.get() }
            let (sender, reader, readerPhone, other) = (try await stack.connect(doctor), try await stack.connect(admin, gateway: 1),
                                                        try await stack.connect(admin), try await stack.connect(patel, gateway: 1))
            let ack = try await reader.call("mark_conversation_read", .object(["conversation_id": .string(group), "up_to_seq": .number(1)]), ack: 1)
            #expect(ack["ok"] == .bool(true))
            #expect(try await sender.event("message_read_receipt")["reader_email"] == .string(admin))
            #expect(try await readerPhone.event("message_read_receipt")["up_to_seq"] == .number(1))
            _ = try await other.call("send_message", .object(["conversation_id": .string(group), "content": .string("bed 3"), "client_id": .string("b3")]), ack: 1)
            _ = try await reader.call("mark_conversation_read", .object(["conversation_id": .string(group), "up_to_seq": .number(2)]), ack: 2)
            let moved = try await other.event("message_read_receipt")
            #expect(moved["reader_email"] == .string(admin) && moved["up_to_seq"] == .number(2))
            try await Task.sleep(for: .milliseconds(300))
            #expect(other.drain("message_read_receipt").isEmpty, "Patel's message was not under the first mark")
            #expect(sender.drain("message_read_receipt").isEmpty, "the doctor's message was not under the second mark")
            #expect(readerPhone.drainCount("message_read_receipt") == 1, "the reader's other device hears of both")
            // Everyone still reads every marker in the list.
            #expect(try stack.store.conversation(group, for: okafor).readPositions?[admin] == 2)
            for client in [sender, reader, readerPhone, other] { await client.close() }
        }
    }

    @Test("a send repeated with its client_id is stored once and confirmed again with the same message; a send without one gets a time-ordered one")
    func idempotentSend() async throws {
        try await withRealtimeStack { stack in
            let sender = try await stack.connect(doctor)
            let receiver = try await stack.connect(admin)
            let first = try await sender.call("send_message", send(admin, "once", "same-id"), ack: 1)
            let second = try await sender.call("send_message", send(admin, "once", "same-id"), ack: 2)
            #expect(first["message"]?["id"] != nil)
            #expect(first["message"]?["id"] == second["message"]?["id"])
            _ = try await receiver.event("receive_message")
            try await Task.sleep(for: .milliseconds(200))
            #expect(receiver.drain("receive_message").isEmpty)
            let conversation = try #require(first["message"]?["conversation_id"]?.stringValue)
            #expect(try stack.store.history(for: doctor, conversationID: conversation).count == 1)

            // No client_id: the gateway gives the send a UUID of version 7 (time first, so the
            // store's index of client ids grows at its end), and the confirmation carries it.
            let before = Date().epochMilliseconds
            let third = try await sender.call("send_message", .object(["receiver_email": .string(admin), "content": .string("no id")]), ack: 3)
            let given = try #require(third["message"]?["client_id"]?.stringValue)
            let uuid = try #require(UUID(uuidString: given))
            #expect(uuid.uuid.6 >> 4 == 7 && uuid.uuid.8 >> 6 == 0b10 && given == given.lowercased(), "\(given)")
            let millisecond = try #require(Int64(given.replacingOccurrences(of: "-", with: "").prefix(12), radix: 16))
            #expect((before...Date().epochMilliseconds).contains(millisecond))
            #expect(try await receiver.event("receive_message")["client_id"]?.stringValue == given)
            await sender.close()
            await receiver.close()
        }
    }

    @Test("no confirmation while the store is down; it comes once the store has committed the queued send")
    func confirmationWaitsForCommit() async throws {
        try await withRealtimeStack(storeRunning: false, storeTimeout: .seconds(20)) { stack in
            let token = stack.tokens.issue(for: User(email: doctor, name: "Dr. Sarah Kim", role: .doctor, disabled: false)).token
            let sender = try await SocketTestClient.connect(port: stack.ports[0], token: token)
            try await sender.emit("send_message", send(admin, "queued while the store is down", "down-1"), ack: 3)
            try await Task.sleep(for: .seconds(1))
            #expect(sender.drain("message_sent_confirmed").isEmpty)
            #expect(try stack.store.sync(for: doctor, since: [:]).conversations.isEmpty)
            stack.storeControl.run()
            let ack = try await sender.next(timeout: .seconds(15)) { $0.hasPrefix("433[") }
            #expect(ack.contains(#""ok":true"#))
            let confirmed = try await sender.event("message_sent_confirmed")
            #expect(confirmed["content"] == .string("queued while the store is down"))
            #expect(try stack.store.sync(for: doctor, since: [:]).conversations.first?.messages.map(\.content) == ["queued while the store is down"])
            await sender.close()
        }
    }

    @Test("a send the store applies after the gateway's timeout: the ack says unavailable with the client_id, then the confirmation still reaches the socket, once; the recipient gets the message")
    func lateConfirmation() async throws {
        try await withRealtimeStack(storeRunning: false, storeTimeout: .milliseconds(500)) { stack in
            // Tokens issued here: logging in needs the store.
            let sender = try await SocketTestClient.connect(port: stack.ports[0], token: stack.tokens.issue(for: User(email: doctor, name: "Dr. Sarah Kim", role: .doctor, disabled: false)).token)
            let receiver = try await SocketTestClient.connect(port: stack.ports[0], token: stack.tokens.issue(for: User(email: admin, name: "Alex Admin", role: .admin, disabled: false)).token)
            try await sender.emit("send_message", send(admin, "applied late", "late-1"), ack: 7)
            let refused = try await sender.next(timeout: .seconds(10)) { $0.hasPrefix("437[") }
            #expect(refused.contains(#""code":"unavailable""#) && refused.contains(#""client_id":"late-1""#), "\(refused)")
            #expect(sender.drain("message_sent_confirmed").isEmpty)

            stack.storeControl.run()
            let confirmed = try await sender.event("message_sent_confirmed", timeout: .seconds(15))
            #expect(confirmed["client_id"] == .string("late-1"))
            #expect(confirmed["content"] == .string("applied late"))
            let received = try await receiver.event("receive_message")
            #expect(received["id"] == confirmed["id"])
            // The store's copy for the sender's channel is not shown again to this socket.
            try await Task.sleep(for: .milliseconds(500))
            #expect(sender.drain("message_sent_confirmed").isEmpty)

            // The client retries anyway (it was told unavailable): the stored message, once.
            let retried = try await sender.call("send_message", send(admin, "applied late", "late-1"), ack: 8)
            #expect(retried["message"]?["id"] == confirmed["id"])
            let conversation = try #require(confirmed["conversation_id"]?.stringValue)
            #expect(try stack.store.history(for: doctor, conversationID: conversation).map(\.content) == ["applied late"])
            #expect(receiver.drain("receive_message").isEmpty, "the retry delivers nothing new")
            await sender.close()
            await receiver.close()
        }
    }

    @Test("Redis stops answering for 12 s (SIGSTOP: past the Redis client's reply timeout and the store's writer lease) while a client sends: the sockets stay, every send is answered, and once Redis is back each send retried with its client id is confirmed, stored once and delivered once on the other gateway")
    func hungRedis() async throws {
        let server = try await RedisServer.start()
        defer { server.resume(); server.stop() }
        try await withRealtimeStack(gateways: 2, storeTimeout: .seconds(2), redisServer: server) { stack in
            let sender = try await stack.connect(doctor, gateway: 0)
            let receiver = try await stack.connect(admin, gateway: 1)
            let first = try await sender.call("send_message", send(admin, "before", "h-0"), ack: 1)
            let conversation = try #require(first["message"]?["conversation_id"]?.stringValue, "\(first)")
            let before = try await receiver.event("receive_message")
            #expect(before["id"] == first["message"]?["id"])

            server.pause()
            let paused = ContinuousClock.now
            for i in 1...5 { try await sender.emit("send_message", send(admin, "during \(i)", "h-\(i)"), ack: 10 + i) }
            // The first is answered unavailable after the gateway's store timeout; the socket's
            // next events wait behind its XADD until the Redis client gives up on the connection.
            let firstAnswer = try await sender.next(timeout: .seconds(5)) { $0.hasPrefix("4311[") }
            #expect(firstAnswer.contains(#""code":"unavailable""#), "\(firstAnswer)")
            try await Task.sleep(until: paused + .seconds(12))
            #expect(!sender.isClosed && !receiver.isClosed, "the sockets do not depend on Redis answering")
            server.resume()
            // Every send is answered: unavailable, or confirmed if its XADD reached Redis after all.
            for i in 2...5 {
                let answer = try await sender.next(timeout: .seconds(30)) { $0.hasPrefix("43\(10 + i)[") }
                #expect(answer.contains(#""code":"unavailable""#) || answer.contains(#""ok":true"#), "\(answer)")
            }

            // As a client does: each send not confirmed is sent again with its client id until it is.
            var confirmed = try await sendUntilConfirmed(sender, to: admin, (1...5).map { ("h-\($0)", "during \($0)") }, ackFrom: 100)
            confirmed["h-0"] = try #require(first["message"]?["id"]?.stringValue)
            #expect(confirmed.count == 6, "confirmed \(confirmed)")
            let stored = try stack.store.history(for: doctor, conversationID: conversation)
            #expect(stored.map(\.content).sorted() == ["before"] + (1...5).map { "during \($0)" }, "each stored once: \(stored.map(\.content))")
            #expect(Set(stored.map(\.id)) == Set(confirmed.values), "the confirmed ids are the stored ones")
            // Delivered live or replayed after the gateway's subscription came back; no message twice.
            // (The first was taken from the receiver's packets above.)
            let confirmedIDs = Set(confirmed.values).subtracting([confirmed["h-0"]!])
            let deliveredAll = await eventually(timeout: .seconds(15)) {
                Set(receiver.events("receive_message").compactMap { $0["id"]?.stringValue }).isSuperset(of: confirmedIDs)
            }
            let delivered = receiver.events("receive_message").compactMap { $0["id"]?.stringValue }
            #expect(!delivered.contains(confirmed["h-0"]!), "delivered again: \(delivered)")
            #expect(deliveredAll, "delivered \(delivered), confirmed \(confirmed)")
            #expect(delivered.count == Set(delivered).count, "a message delivered twice: \(delivered)")
            await sender.close()
            await receiver.close()
        }
    }

    @Test("Redis restarted without its data (no persistence): the services recreate their consumer groups by themselves; sends made after it are confirmed, stored once and delivered, with nothing restarted")
    func redisLostItsData() async throws {
        let server = try await RedisServer.start()
        defer { server.stop() }
        try await withRealtimeStack(gateways: 2, storeTimeout: .seconds(2), redisServer: server) { stack in
            let sender = try await stack.connect(doctor, gateway: 0)
            let receiver = try await stack.connect(admin, gateway: 1)
            let first = try await sender.call("send_message", send(admin, "before", "l-0"), ack: 1)
            let conversation = try #require(first["message"]?["conversation_id"]?.stringValue, "\(first)")
            _ = try await receiver.event("receive_message")

            let probe = stack.keys.prefix + "probe"
            _ = try await stack.redis.send(["SET", probe, "1"])
            server.kill()
            try await server.restart()
            #expect(await eventually { (try? await stack.redis.send(["EXISTS", probe]).int) == 0 }, "the restart lost Redis's data")
            let confirmed = try await sendUntilConfirmed(sender, to: admin, (1...3).map { ("l-\($0)", "after \($0)") }, ackFrom: 10)
            #expect(confirmed.count == 3, "confirmed \(confirmed)")
            let stored = try stack.store.history(for: doctor, conversationID: conversation)
            #expect(stored.map(\.content) == ["before", "after 1", "after 2", "after 3"], "each stored once, in order: \(stored.map(\.content))")
            let confirmedIDs = Set(confirmed.values)
            let delivered = await eventually(timeout: .seconds(15)) {
                Set(receiver.events("receive_message").compactMap { $0["id"]?.stringValue }).isSuperset(of: confirmedIDs)
            }
            #expect(delivered, "delivered \(receiver.events("receive_message").compactMap { $0["content"]?.stringValue })")
            let deliveredIDs = receiver.events("receive_message").compactMap { $0["id"]?.stringValue }
            #expect(deliveredIDs.count == Set(deliveredIDs).count, "a message delivered twice: \(deliveredIDs)")
            let groups = try await stack.redis.send(["XINFO", "GROUPS", stack.keys.commands]).array ?? []
            #expect(groups.count == 1, "the messages group is back: \(groups)")
            await sender.close()
            await receiver.close()
        }
    }

    @Test("Redis restarted without its data: a logged-out token, a disabled user's and one older than a password change are refused again once the store has put the auth state back; others work")
    func authStateAfterRedisLostItsData() async throws {
        let server = try await RedisServer.start()
        defer { server.stop() }
        try await withRealtimeStack(redisServer: server) { stack in
            let loggedOut = try await stack.login(doctor)
            #expect(try await stack.http("POST", "/api/auth/logout", token: loggedOut).0 == 204)
            let adminToken = try await stack.login(admin)
            let disabled = try await stack.login(patel)
            #expect(try await stack.http("POST", "/api/admin/users/\(patel)/disable", token: adminToken).0 == 200)
            let okafor = "dr.okafor@clinic.com"
            let older = try await stack.login(okafor)
            #expect(try await stack.http("POST", "/api/auth/logout-everywhere", token: older).0 == 204)
            for token in [loggedOut, disabled, older] { #expect(try await stack.http("GET", "/api/me", token: token).0 == 401) }
            // The store has recorded them all (the logout's record is sent after the gateway's own refusal).
            #expect(await eventually { (try? stack.store.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM revoked_tokens") }) == 1 })

            server.kill()
            try await server.restart()
            // Not one of them is taken meanwhile: the gateway takes no token until the state is back.
            let seen = Mutex<Set<Int>>([])
            let refused = await eventually(timeout: .seconds(20)) {
                var statuses: [Int] = []
                for token in [loggedOut, disabled, older] { statuses.append((try? await stack.http("GET", "/api/me", token: token).0) ?? 0) }
                seen.withLock { $0.formUnion(statuses) }
                return statuses == [401, 401, 401]
            }
            #expect(refused, "the auth state was put back")
            #expect(!seen.withLock { $0.contains(200) }, "a refused token was taken before the state was back: \(seen.withLock { $0 })")
            #expect(try await stack.http("GET", "/api/me", token: adminToken).0 == 200)
            let fresh = try await stack.login(doctor)
            #expect(try await stack.http("GET", "/api/me", token: fresh).0 == 200)
            #expect(try stack.store.auditLog().contains { $0.action == "auth.restore" })
        }
    }

    @Test("while Redis lacks the auth state (it lost its data; the store has not put it back, or is doing so), no token is taken: REST and CONNECT wait, then answer unavailable; a request waiting when the store puts it back is answered")
    func failsClosedWithoutAuthState() async throws {
        try await withRealtimeStack(storeRunning: false) { stack in
            let token = stack.tokens.issue(for: User(email: doctor, name: "Dr. Sarah Kim", role: .doctor)).token
            for state in [nil, "pending"] {
                _ = try await stack.redis.send(state.map { ["SET", stack.keys.authState, $0] } ?? ["DEL", stack.keys.authState])
                let client = try await SocketTestClient.open(port: stack.ports[0])
                try await client.send(#"40{"token":"\#(token)"}"#)
                let (status, body) = try await stack.http("GET", "/api/me", token: token)
                #expect(status == 503, "\(String(describing: state))")
                #expect(body?["error"]?["code"]?.stringValue == "unavailable")
                #expect(body?["error"]?["message"]?.stringValue?.contains("restores its security state") == true, "\(String(describing: body))")
                let refusal = try #require(JSONValue(parsing: try await client.next(timeout: .seconds(15)) { $0.hasPrefix("44") }.dropFirst(2)))
                #expect(refusal["data"]?["code"]?.stringValue == "unavailable")
                #expect(refusal["message"]?.stringValue?.contains("restores its security state") == true, "\(refusal)")
                await client.close()
            }
            // The store starts and puts the state back while a request waits for it: answered.
            _ = try await stack.redis.send(["DEL", stack.keys.authState])
            async let waiting = stack.http("GET", "/api/me", token: token)
            try await Task.sleep(for: .milliseconds(300))
            stack.storeControl.run()
            let (status, body) = try await waiting
            #expect(status == 200, "\(String(describing: body))")
            #expect(body?["email"]?.stringValue == doctor)
            #expect(try await stack.redis.send(["GET", stack.keys.authState]).string?.hasPrefix("restored") == true)
        }
    }

    @Test("checks waiting for the auth state share one poll of it: 40 CONNECTs waiting a second cost Redis a few reads, not ten a second each")
    func authStateWaitSharesOnePoll() async throws {
        let server = try await RedisServer.start()
        defer { server.stop() }
        try await withRealtimeStack(redisServer: server) { stack in
            _ = try await stack.redis.send(["DEL", stack.keys.authState])
            _ = try await stack.redis.send(["CONFIG", "RESETSTAT"])
            var clients: [SocketTestClient] = []
            for index in 0..<40 {
                let client = try await SocketTestClient.open(port: stack.ports[0])
                try await client.send(#"40{"token":"\#(stack.token(index % 2 == 0 ? doctor : admin))"}"#)
                clients.append(client)
            }
            try await Task.sleep(for: .seconds(1))
            _ = try await stack.redis.send(["SET", stack.keys.authState, "restored (test)"])
            for client in clients {
                #expect(try await client.next { $0.hasPrefix("40") || $0.hasPrefix("44") }.hasPrefix(#"40{"sid":""#), "connected once the state is back")
                await client.close()
            }
            let stats = try await stack.redis.send(["INFO", "commandstats"]).string ?? ""
            func calls(_ command: String) -> Int {
                let line = stats.split(whereSeparator: \.isNewline).first { $0.hasPrefix("cmdstat_\(command):") } ?? ""
                return Int(line.split(separator: ",").first?.split(separator: "=").last ?? "") ?? 0
            }
            #expect(calls("mget") <= 2 * 40 + 10, "each waiting check reads its keys twice, not every 100 ms: \(calls("mget")) MGETs")
            #expect((3...60).contains(calls("get")), "one poll, every 100 ms, for the gateway: \(calls("get")) GETs")
        }
    }

    @Test("reconnect with since: missed messages in seq order, no duplicates; a receipt made while the sender was away reaches it")
    func recovery() async throws {
        try await withRealtimeStack(gateways: 2) { stack in
            let sender = try await stack.connect(doctor, gateway: 0)
            var receiver = try await stack.connect(admin, gateway: 1)
            let first = try await sender.call("send_message", send(admin, "m1", "r1"), ack: 1)
            let conversation = try #require(first["message"]?["conversation_id"]?.stringValue)
            _ = try await receiver.event("receive_message")
            await receiver.close()
            // The replay forwards the store's JSON of each message as it is: one needs every escape.
            let awkward = "m3 \"quoted\" back\\slash\nline\ttab \r émigré 🩺 </script>"
            for i in 2...4 { _ = try await sender.call("send_message", send(admin, i == 3 ? awkward : "m\(i)", "r\(i)"), ack: i) }
            // Back, on the other gateway, saying it has seq 1.
            receiver = try await stack.connect(admin, gateway: 0, since: [conversation: 1])
            var replayed: [JSONValue] = []
            for _ in 2...4 { replayed.append(try await receiver.event("receive_message")) }
            #expect(replayed.map { $0["seq"] } == [.number(2), .number(3), .number(4)])
            #expect(replayed.map { $0["content"] } == [.string("m2"), .string(awkward), .string("m4")])
            try await Task.sleep(for: .milliseconds(200))
            #expect(receiver.drain("receive_message").isEmpty)

            // The sender goes away; the receiver reads everything; the sender comes back and syncs.
            await sender.close()
            let read = try await receiver.call("mark_conversation_read", .object(["conversation_id": .string(conversation), "up_to_seq": .number(4)]), ack: 9)
            #expect(read["receipt"]?["up_to_seq"] == .number(4))
            let back = try await stack.connect(doctor, gateway: 1)
            let summary = try await back.call("sync", .object(["since": .object([conversation: .number(4)])]), ack: 5)
            #expect(summary["ok"] == .bool(true))
            #expect(summary["conversations"]?[conversation]?["last_seq"] == .number(4))
            #expect(summary["conversations"]?[conversation]?["messages"] == .number(0))
            let receipt = try await back.event("message_read_receipt")
            #expect(receipt["reader_email"] == .string(admin))
            #expect(receipt["up_to_seq"] == .number(4))
            #expect(back.drain("receive_message").isEmpty)
            await back.close()
            await receiver.close()
        }
    }

    @Test("sync and CONNECT with receipts_after: only the receipts that moved after it; the acknowledgement carries the next cursor; a bad one is refused")
    func receiptsAfter() async throws {
        try await withRealtimeStack { stack in
            let group = try stack.store.createGroup(creator: admin, title: "Ward 3", members: [doctor, patel])
            _ = try stack.store.append((1...2).map { SendRequest(sender: admin, conversationID: group.id, receiverEmail: nil, content: "g\($0)", clientID: nil) }).map { try $0.get() }
            _ = try stack.store.markRead(reader: doctor, conversationID: group.id, upToSeq: 1)
            _ = try stack.store.markRead(reader: patel, conversationID: group.id, upToSeq: 2)
            let since: JSONValue = .object([group.id: .number(2)])
            let socket = try await stack.connect(admin)
            let all = try await socket.call("sync", .object(["since": since]), ack: 1)
            #expect(all["receipts_cursor"] == .number(2))
            #expect(await eventually { socket.drainCountPeek("message_read_receipt") == 2 })
            _ = socket.drain("message_read_receipt")

            let none = try await socket.call("sync", .object(["since": since, "receipts_after": .number(2)]), ack: 2)
            #expect(none["ok"] == .bool(true))
            #expect(none["receipts_cursor"] == .number(2))
            #expect(none["conversations"] == .object([:]))
            _ = try stack.store.markRead(reader: doctor, conversationID: group.id, upToSeq: 2)
            let moved = try await socket.call("sync", .object(["since": since, "receipts_after": .number(2)]), ack: 3)
            #expect(moved["receipts_cursor"] == .number(3))
            try await Task.sleep(for: .milliseconds(200))
            let receipts = socket.drain("message_read_receipt")
            #expect(receipts.map { $0["reader_email"] } == [.string(doctor)], "patel's marker did not move")
            #expect(receipts.first?["up_to_seq"] == .number(2))

            for bad: JSONValue in [.string("2"), .number(-1), .number(1.5), .number(1e300), .object([:])] {
                let refused = try await socket.call("sync", .object(["since": since, "receipts_after": bad]), ack: 4)
                #expect(refused["ok"] == .bool(false))
                #expect(refused["error"]?["code"] == .string("bad_request"), "\(bad)")
            }
            // A seq too large for a whole number of 64 bits is refused too (it stopped the gateway).
            let huge = try await socket.call("sync", .object(["since": .object([group.id: .number(1e300)])]), ack: 4)
            #expect(huge["error"]?["code"] == .string("bad_request"), "\(huge)")
            #expect(try await socket.call("sync", .object(["since": since, "receipts_after": .null]), ack: 5)["ok"] == .bool(true), "null: all of them")

            // In the CONNECT (as other clients may send it; the web client asks `sync`): nothing moved after 3, nothing replayed.
            for (cursor, expected) in [(3, 0), (1, 2)] {
                let client = try await SocketTestClient.open(port: stack.ports[0])
                try await client.send("40" + JSONValue.object(["token": .string(stack.token(admin)), "since": since, "receipts_after": .number(Double(cursor))]).text)
                _ = try await client.next { $0.hasPrefix("40{\"sid\"") }
                if expected > 0 { #expect(await eventually { client.drainCountPeek("message_read_receipt") == expected }) }
                try await Task.sleep(for: .milliseconds(300))
                #expect(client.drain("message_read_receipt").count == expected, "receipts_after \(cursor)")
                await client.close()
            }
            await socket.close()
        }
    }

    @Test("a replay keeps within half the socket's queue, receipts included: the acknowledgement says receipts_truncated, and a sync after its cursor brings the rest")
    func receiptsWithinTheQueue() async throws {
        // A queue of 10 packets: a replay of at most 5.
        var engine = EngineConfiguration()
        engine.queueCapacity = 10
        try await withRealtimeStack(engine: engine) { stack in
            let others = cast.map(\.email).filter { $0 != admin }
            let group = try stack.store.createGroup(creator: admin, title: "Everyone", members: others)
            _ = try stack.store.append([SendRequest(sender: admin, conversationID: group.id, receiverEmail: nil, content: "all hands", clientID: nil)]).map { try $0.get() }
            for reader in others { _ = try stack.store.markRead(reader: reader, conversationID: group.id, upToSeq: 1) }
            let socket = try await stack.connect(admin)
            let since: JSONValue = .object([group.id: .number(1)])
            let first = try await socket.call("sync", .object(["since": since]), ack: 1)
            #expect(first["receipts_truncated"] == .bool(true), "\(first)")
            #expect(first["receipts_cursor"] == .number(5))
            #expect(await eventually { socket.drainCountPeek("message_read_receipt") == 5 })
            let rest = try await socket.call("sync", .object(["since": since, "receipts_after": first["receipts_cursor"] ?? .null]), ack: 2)
            #expect(rest["receipts_truncated"] == nil)
            #expect(rest["receipts_cursor"] == .number(Double(others.count)))
            #expect(await eventually { socket.drainCountPeek("message_read_receipt") == others.count })
            let readers = socket.drain("message_read_receipt").compactMap { $0["reader_email"]?.stringValue }
            #expect(Set(readers) == Set(others) && readers.count == others.count)
            #expect(!socket.isClosed, "the replay did not overflow the queue")
            await socket.close()
        }
    }

    @Test("a lost subscription replays the receipts that moved while it was lost, not every marker of the socket's conversations")
    func lostSubscriptionReceipts() async throws {
        try await withRealtimeStack(gateways: 2) { stack in
            let group = try stack.store.createGroup(creator: admin, title: "Ward 3", members: [doctor, patel])
            _ = try stack.store.append((1...2).map { SendRequest(sender: admin, conversationID: group.id, receiverEmail: nil, content: "g\($0)", clientID: nil) }).map { try $0.get() }
            _ = try stack.store.markRead(reader: patel, conversationID: group.id, upToSeq: 2)
            let sender = try await stack.connect(admin, gateway: 0)
            let synced = try await sender.call("sync", .object(["since": .object([group.id: .number(2)])]), ack: 1)
            #expect(synced["receipts_cursor"] == .number(1))
            #expect(await eventually { sender.drainCountPeek("message_read_receipt") == 1 })
            _ = sender.drain("message_read_receipt")
            let reader = try await stack.connect(doctor, gateway: 1)
            try await stack.killSubscriber(gateway: 0)
            let read = try await reader.call("mark_conversation_read", .object(["conversation_id": .string(group.id), "up_to_seq": .number(2)]), ack: 2)
            #expect(read["receipt"]?["up_to_seq"] == .number(2))
            #expect(await eventually { sender.drainCountPeek("message_read_receipt") >= 1 })
            try await Task.sleep(for: .milliseconds(500))
            let receipts = sender.drain("message_read_receipt")
            // Live as well if the new subscription came first: the same receipt twice, never patel's.
            #expect(Set(receipts.compactMap { $0["reader_email"]?.stringValue }) == [doctor], "\(receipts)")
            await reader.close()
            await sender.close()
        }
    }

    @Test("one subscription per user per gateway, shared by their sockets, dropped with the last one")
    func subscriptions() async throws {
        try await withRealtimeStack { stack in
            #expect(try await subscribers(stack, doctor) == 0)
            let tab1 = try await stack.connect(doctor)
            let tab2 = try await stack.connect(doctor)
            let shared = try await subscribers(stack, doctor)
            #expect(shared == 1)
            #expect(stack.services[0].realtime.socketCount(of: doctor) == 2)
            await tab1.close()
            #expect(await eventually { stack.services[0].realtime.socketCount(of: doctor) == 1 })
            let remaining = try await subscribers(stack, doctor)
            #expect(remaining == 1)
            // The remaining tab still receives.
            let other = try await stack.connect(admin)
            _ = try await other.call("send_message", send(doctor, "still here?", "s1"), ack: 1)
            #expect(try await tab2.event("receive_message")["content"] == .string("still here?"))
            await tab2.close()
            #expect(await eventually { (try? await subscribers(stack, doctor)) == 0 })
            await other.close()
        }
    }

    @Test("rate limits per user, shared by their sockets: rate_limited with retry_after; typing too")
    func rateLimits() async throws {
        try await withRealtimeStack(environment: ["CHAT_MESSAGE_RATE": "0.1", "CHAT_MESSAGE_BURST": "3", "CHAT_TYPING_RATE": "0.1", "CHAT_TYPING_BURST": "2"]) { stack in
            let tab1 = try await stack.connect(doctor)
            let tab2 = try await stack.connect(doctor)
            // Five sends at once from the user's two tabs (acks collected after, so no refill in between).
            for i in 0..<5 { try await (i % 2 == 0 ? tab1 : tab2).emit("send_message", send(admin, "n\(i)", "rl\(i)"), ack: i + 1) }
            var outcomes: [String] = []
            for i in 0..<5 {
                let client = i % 2 == 0 ? tab1 : tab2
                let text = try await client.next { $0.hasPrefix("43\(i + 1)[") }
                guard case .array(let items)? = JSONValue(parsing: text.dropFirst(2 + String(i + 1).count)), let ack = items.first else {
                    Issue.record("bad ack \(text)")
                    continue
                }
                if ack["ok"] == .bool(true) {
                    outcomes.append("ok")
                } else {
                    #expect(ack["error"]?["code"] == .string("rate_limited"))
                    #expect(ack["error"]?["client_id"] == .string("rl\(i)"))
                    guard case .number(let retry)? = ack["error"]?["retry_after"] else { Issue.record("no retry_after: \(ack)"); continue }
                    #expect(retry > 0 && retry <= 10)
                    outcomes.append("limited")
                }
            }
            // Which two are refused depends on which tab's packet the gateway reads first.
            #expect(outcomes.filter { $0 == "ok" }.count == 3)
            #expect(outcomes.filter { $0 == "limited" }.count == 2)
            // Without an ack the refusal is an error event.
            try await tab1.emit("send_message", send(admin, "again", "rl-x"))
            #expect(try await tab1.event("error")["code"] == .string("rate_limited"))
            for i in 0..<3 { try await tab1.emit("user_typing", .object(["receiver_email": .string(admin), "is_typing": .bool(true)]), ack: 100 + i) }
            var typing: [String] = []
            for i in 0..<3 { typing.append(try await tab1.next { $0.hasPrefix("43\(100 + i)[") }) }
            #expect(typing.map { $0.contains(#""ok":true"#) } == [true, true, false])
            #expect(typing.last?.contains("rate_limited") == true)
            // Someone else is not limited.
            let other = try await stack.connect(patel)
            #expect(try await other.call("send_message", send(admin, "fine", "p1"), ack: 1)["ok"] == .bool(true))
            for client in [tab1, tab2, other] { await client.close() }
        }
    }

    @Test("bad input: malformed packets, unknown events, wrong shapes, binary, oversized frames; errors, and nothing else lost")
    func badInput() async throws {
        var engine = EngineConfiguration()
        engine.maxPayload = 4096
        try await withRealtimeStack(engine: engine) { stack in
            let client = try await stack.connect(doctor)
            let receiver = try await stack.connect(admin)
            for packet in ["2[", #"2{"not":"an array"}"#, "9", "2[42]"] {
                try await client.send("4" + packet)
                let error = try await client.event("error")
                #expect(error["code"] == .string("bad_request"), "\(packet)")
            }
            try await client.emit("no_such_event", .object([:]))
            #expect(try await client.event("error")["message"]?.stringValue?.contains("unknown event") == true)
            let wrong = try await client.call("send_message", .string("just text"), ack: 1)
            #expect(wrong["error"]?["code"] == .string("bad_request"))
            let empty = try await client.call("send_message", send(admin, "   ", "e1"), ack: 2)
            #expect(empty["error"]?["code"] == .string("invalid_content"))
            #expect(empty["error"]?["client_id"] == .string("e1"))
            let stranger = try await client.call("mark_conversation_read", .object(["conversation_id": .string("not-mine"), "up_to_seq": .number(1)]), ack: 3)
            #expect(stranger["error"]?["code"] == .string("not_found"))
            let noSuchUser = try await client.call("send_message", send("nobody@clinic.com", "hi", "e2"), ack: 4)
            #expect(noSuchUser["error"]?["code"] != nil)
            let impostor = try await client.call("user_joined", .object(["email": .string(admin)]), ack: 5)
            #expect(impostor["error"]?["code"] == .string("forbidden"))
            try await client.send(#"451-["send_message",{"_placeholder":true,"num":0}]"#)
            try await client.sendBinary([1, 2, 3])
            #expect(try await client.event("error")["message"]?.stringValue?.contains("binary") == true)
            // Still connected and working.
            let ok = try await client.call("send_message", send(admin, "after the noise", "ok-1"), ack: 6)
            #expect(ok["ok"] == .bool(true))
            #expect(try await receiver.event("receive_message")["content"] == .string("after the noise"))

            // An oversized frame is refused with close code 1009; the other socket is untouched.
            let big = try await stack.connect(patel)
            try await big.send("42" + JSONValue.array([.string("send_message"), send(admin, String(repeating: "x", count: 8000), "big")]).text)
            #expect(await big.waitClosed())
            #expect(big.closeCode == .messageTooLarge)
            // A garbage Engine.IO packet closes that transport, as the protocol prescribes.
            let garbage = try await stack.connect(patel)
            try await garbage.send("z")
            #expect(await garbage.waitClosed())
            let still = try await client.call("send_message", send(admin, "still fine", "ok-2"), ack: 7)
            #expect(still["ok"] == .bool(true))
            #expect(try await receiver.event("receive_message")["content"] == .string("still fine"))
            await client.close()
            await receiver.close()
        }
    }

    @Test("backpressure: a socket that stops reading is closed when its queue is full; others keep receiving; a reconnect replays what fits, newest first")
    func backpressure() async throws {
        var engine = EngineConfiguration()
        engine.queueCapacity = 30
        try await withRealtimeStack(engine: engine) { stack in
            // A polling client that connects and then never polls again.
            let token = stack.token(admin)
            let (_, openData) = try await stack.httpRaw("GET", "/socket.io/?EIO=4&transport=polling")
            let sid = try #require(JSONValue(parsing: String(decoding: openData, as: UTF8.self).dropFirst())?["sid"]?.stringValue)
            let (posted, _) = try await stack.httpRaw("POST", "/socket.io/?EIO=4&transport=polling&sid=\(sid)", body: #"40{"token":"\#(token)"}"#)
            #expect(posted == 200)
            let (_, connectData) = try await stack.httpRaw("GET", "/socket.io/?EIO=4&transport=polling&sid=\(sid)")
            #expect(String(decoding: connectData, as: UTF8.self).hasPrefix("40{\"sid\""))
            let healthy = try await stack.connect(admin)
            let sender = try await stack.connect(doctor)
            for i in 1...40 { _ = try await sender.call("send_message", send(admin, "flood \(i)", "f\(i)"), ack: i) }
            // The stalled session is gone; the healthy one has all 40.
            #expect(await eventually { stack.services[0].engine.session(sid) == nil })
            let (status, _) = try await stack.httpRaw("GET", "/socket.io/?EIO=4&transport=polling&sid=\(sid)")
            #expect(status == 400)
            #expect(await eventually { healthy.drainCount("receive_message") == 40 })
            // Back with nothing: a sync replays at most half a queue (15), the newest, and says it was truncated.
            let conversation = try #require(try stack.store.sync(for: admin, since: [:]).conversations.first?.id)
            let back = try await stack.connect(admin)
            let summary = try await back.call("sync", .object(["since": .object([conversation: .number(0)])]), ack: 1)
            #expect(summary["conversations"]?[conversation]?["truncated"] == .bool(true))
            #expect(summary["conversations"]?[conversation]?["messages"] == .number(15))
            let replayed = back.drain("receive_message").compactMap { $0["seq"] }
            #expect(replayed == (26...40).map { .number(Double($0)) })
            #expect(!back.isClosed)
            for client in [healthy, sender, back] { await client.close() }
        }
    }

    @Test("a client sending faster than its packets are handled is slowed down by TCP, not closed: 1,000 sends behind a Redis that takes no writes for 2 s, 16 times the inbound buffer, all confirmed in order and stored once; the socket stays open")
    func inboundBackpressure() async throws {
        try await withSlowHandlingStack { stack in
            let sender = try await stack.connect(doctor)
            let receiver = try await stack.connect(admin)
            // The socket's first send waits on its XADD; every later packet waits behind it.
            _ = try await stack.redis.send(["CLIENT", "PAUSE", "2000", "WRITE"])
            let padding = String(repeating: "x", count: 400)
            for i in 1...1000 { try await sender.emit("send_message", send(admin, "bp \(i) \(padding)", "bp\(i)")) }
            #expect(await eventually(timeout: .seconds(60)) { sender.drainCount("message_sent_confirmed") >= 1000 })
            #expect(await eventually(timeout: .seconds(30)) { receiver.drainCount("receive_message") >= 1000 })
            #expect(!sender.isClosed)
            #expect(stack.services[0].engine.readsHeldCount >= 1)
            let conversation = try #require(try stack.store.sync(for: doctor, since: [:]).conversations.first?.id)
            var stored: [Message] = []
            for page in 0..<10 { stored = try stack.store.history(for: doctor, conversationID: conversation, limit: 100, skip: page * 100) + stored }
            #expect(stored.map(\.clientID) == (1...1000).map { "bp\($0)" })
            // The socket still works both ways.
            let ack = try await sender.call("send_message", send(admin, "after", "bp-after"), ack: 1)
            #expect(ack["ok"] == .bool(true))
            for client in [sender, receiver] { await client.close() }
        }
    }

    @Test("a polling client is slowed down too: a POST of 300 sends behind a Redis that takes no writes is answered only when half of the waiting packets are handled, and all are confirmed; a POST sent while 64 packets wait closes that session as a flood")
    func pollingBackpressure() async throws {
        try await withSlowHandlingStack { stack in
            func openPolling(_ email: String) async throws -> String {
                let (_, openData) = try await stack.httpRaw("GET", "/socket.io/?EIO=4&transport=polling")
                let open = JSONValue(parsing: String(decoding: openData, as: UTF8.self).dropFirst())
                guard let sid = open?["sid"]?.stringValue else { throw ChatError(.internal, "no sid in the open packet: \(String(decoding: openData, as: UTF8.self))") }
                _ = try await stack.httpRaw("POST", "/socket.io/?EIO=4&transport=polling&sid=\(sid)", body: #"40{"token":"\#(stack.token(email))"}"#)
                let (_, connectData) = try await stack.httpRaw("GET", "/socket.io/?EIO=4&transport=polling&sid=\(sid)")
                #expect(String(decoding: connectData, as: UTF8.self).hasPrefix("40{\"sid\""))
                return sid
            }
            func sends(_ prefix: String, _ count: Int) -> String {
                (1...count).map { "42" + JSONValue.array([.string("send_message"), send(admin, "\(prefix)\($0)", "\(prefix)\($0)")]).text }
                    .joined(separator: "\u{1e}")
            }
            let steady = try await openPolling(doctor)
            let hasty = try await openPolling(patel)
            _ = try await stack.redis.send(["CLIENT", "PAUSE", "3000", "WRITE"])
            final class Answers: Sendable { let status = Mutex<[String: Int]>([:]) }
            let answers = Answers()
            for (sid, prefix) in [(steady, "p"), (hasty, "h")] {
                let body = sends(prefix, 300)
                Task {
                    let (status, _) = try await stack.httpRaw("POST", "/socket.io/?EIO=4&transport=polling&sid=\(sid)", body: body)
                    answers.status.withLock { $0[sid] = status }
                }
            }
            let engineServer = stack.services[0].engine
            #expect(await eventually { [steady, hasty].allSatisfy { engineServer.session($0)?.readsHeld == true } })
            // Redis takes no writes: nothing is handled, so neither POST is answered yet.
            #expect(answers.status.withLock { $0.isEmpty })
            // A POST that does not wait for the answer to the one before is a flood.
            let (overlap, _) = try await stack.httpRaw("POST", "/socket.io/?EIO=4&transport=polling&sid=\(hasty)", body: sends("x", 1))
            #expect(overlap == 400)
            #expect(await eventually { engineServer.session(hasty) == nil })
            // The steady client's POST is answered once Redis takes writes again, and every send is confirmed.
            #expect(await eventually(timeout: .seconds(30)) { answers.status.withLock { $0[steady] } == 200 })
            var confirmed = 0
            let deadline = ContinuousClock.now + .seconds(60)
            while confirmed < 300, ContinuousClock.now < deadline {
                let (status, data) = try await stack.httpRaw("GET", "/socket.io/?EIO=4&transport=polling&sid=\(steady)")
                try #require(status == 200)
                confirmed += String(decoding: data, as: UTF8.self).split(separator: "\u{1e}").filter { $0.hasPrefix(#"42["message_sent_confirmed""#) }.count
            }
            #expect(confirmed == 300)
            #expect(engineServer.session(steady) != nil)
            #expect(engineServer.readsHeldCount >= 2)
            let conversation = try stack.store.openDirectConversation(doctor, admin).id
            var stored: [Message] = []
            for page in 0..<3 { stored = try stack.store.history(for: doctor, conversationID: conversation, limit: 100, skip: page * 100) + stored }
            #expect(stored.map(\.clientID) == (1...300).map { "p\($0)" })
        }
    }

    @Test("an expired token or a logout ends the socket's session: error, then DISCONNECT")
    func sessionEnds() async throws {
        try await withRealtimeStack(environment: ["CHAT_TOKEN_TTL": "4s"]) { stack in
            let shortLived = try await stack.connect(doctor)
            let error = try await shortLived.event("error", timeout: .seconds(10))
            #expect(error["code"] == .string("unauthorized"))
            _ = try await shortLived.next { $0 == "41" }
            #expect(!shortLived.isClosed)
            await shortLived.close()
        }
        try await withRealtimeStack(gateways: 2) { stack in
            let token = try await stack.login(doctor)
            let socket = try await SocketTestClient.connect(port: stack.ports[1], token: token)
            let otherDevice = try await stack.connect(doctor, gateway: 1)
            let (status, _) = try await stack.http("POST", "/api/auth/logout", gateway: 0, token: token)
            #expect(status == 204)
            _ = try await socket.next { $0 == "41" }
            // Only the logged-out token's socket ends.
            let partner = try await stack.connect(admin)
            _ = try await partner.call("send_message", send(doctor, "still there?", "lo1"), ack: 1)
            #expect(try await otherDevice.event("receive_message")["content"] == .string("still there?"))
            for client in [socket, otherDevice, partner] { await client.close() }
        }
    }

    @Test("a batch published on a user's channel reaches the user's sockets event by event, in order, read the fast or the slow way; the same batch to another user too; a session revocation in a batch ends the session")
    func batchedUserEvents() async throws {
        try await withRealtimeStack { stack in
            let doctorSocket = try await stack.connect(doctor)
            let adminSocket = try await stack.connect(admin)
            func message(_ seq: Int, conversation: String = "c-batch") -> String {
                #"{"data":{"content":"note \#(seq)","conversation_id":"\#(conversation)","seq":\#(seq)},"event":"receive_message"}"#
            }
            let batch = PublishBatch.payload([
                message(1), #"{"data":{"conversation_id":"c-batch","is_typing":true,"sender_email":"x@clinic.com"},"event":"user_typing"}"#,
                message(2, conversation: #"c\u002dbatch"#), message(3),
            ])
            for user in [doctor, admin] { _ = try await stack.redis.publish(batch, to: stack.keys.user(user)) }
            for socket in [doctorSocket, adminSocket] {
                var got: [String] = []
                for _ in 0..<4 {
                    let text = try await socket.next { $0.hasPrefix("42[") }
                    guard case .array(let items)? = JSONValue(parsing: text.dropFirst(2)), items.count == 2 else { continue }
                    got.append("\(items[0].stringValue ?? "") \(items[1]["conversation_id"]?.stringValue ?? "") \(items[1]["seq"].map { $0.text } ?? "")")
                }
                #expect(got == ["receive_message c-batch 1", "user_typing c-batch ", "receive_message c-batch 2", "receive_message c-batch 3"])
            }
            _ = try await stack.redis.publish(PublishBatch.payload([message(4), #"{"data":{},"event":"session_revoked"}"#]), to: stack.keys.user(doctor))
            #expect(try await doctorSocket.event("receive_message")["seq"] == .number(4))
            #expect(try await doctorSocket.event("error")["code"] == .string("unauthorized"))
            _ = try await doctorSocket.next { $0 == "41" }
            // The other user's socket goes on.
            _ = try await stack.redis.publish(message(5), to: stack.keys.user(admin))
            #expect(try await adminSocket.event("receive_message")["seq"] == .number(5))
            for socket in [doctorSocket, adminSocket] { await socket.close() }
        }
    }

    @Test("a lost subscriber connection: the gateway resubscribes and replays what its sockets missed, once")
    func lostSubscription() async throws {
        try await withRealtimeStack(gateways: 2) { stack in
            let receiver = try await stack.connect(admin, gateway: 0)
            let sender = try await stack.connect(doctor, gateway: 1)
            _ = try await sender.call("send_message", send(admin, "before", "ls0"), ack: 1)
            _ = try await receiver.event("receive_message")
            try await stack.killSubscriber(gateway: 0)
            for i in 1...3 { _ = try await sender.call("send_message", send(admin, "during \(i)", "ls\(i)"), ack: i + 1) }
            #expect(await eventually { receiver.drainCountPeek("receive_message") >= 3 })
            try await Task.sleep(for: .milliseconds(500))
            let contents = receiver.drain("receive_message").compactMap { $0["content"]?.stringValue }
            #expect(Set(contents) == ["during 1", "during 2", "during 3"])
            #expect(contents.count == 3, "duplicates: \(contents)")
            // The socket is told that it was resynchronized, with the replay's summary.
            let summary = try await receiver.event("resynchronized")
            #expect(summary["ok"] == .bool(true))
            let conversation = try stack.store.openDirectConversation(doctor, admin).id
            // The conversation is in it if the replay was read after one of the three was stored
            // (a conversation with nothing new is left out), at its last seq of that moment.
            let listed = try #require(summary["conversations"]?.objectValue, "\(summary)")
            if let replayed = listed[conversation] {
                #expect([2, 3, 4].map { JSONValue.number($0) }.contains(replayed["last_seq"] ?? .null), "\(summary)")
                #expect(replayed["truncated"] == .bool(false), "\(summary)")
            }
            #expect(Set(listed.keys).isSubset(of: [conversation]), "\(summary)")
            #expect(sender.drain("resynchronized").isEmpty, "only the gateway that lost its subscription tells its sockets")
            await receiver.close()
            await sender.close()
        }
    }
}

extension SocketTestClient {
    /// Takes the events called `name` received so far and returns how many there were, adding to a running total.
    func drainCount(_ name: String) -> Int {
        let taken = drain(name).count
        return counter.withLock { counts in
            counts[name, default: 0] += taken
            return counts[name]!
        }
    }

    /// How many events called `name` are waiting (not taken).
    func drainCountPeek(_ name: String) -> Int {
        let prefix = "42[" + ChatJSON.text(name) + ","
        return receivedSnapshot.filter { $0.hasPrefix(prefix) }.count
    }
}
