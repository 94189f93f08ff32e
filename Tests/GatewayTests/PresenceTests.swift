import ChatCore
import ChatTesting
import Foundation
import Gateway
import Logging
import MessageStore
import Presence
import RedisClient
import Synchronization
import Testing

private let doctor = "doctor@clinic.com"
private let admin = "admin@clinic.com"
private let patel = "dr.patel@clinic.com"
private let okafor = "dr.okafor@clinic.com"

/// Doctor and admin share a 1:1; patel shares nothing with doctor.
private func shareConversation(_ stack: RealtimeStack, _ a: String = doctor, _ b: String = admin) throws -> String {
    try stack.store.openDirectConversation(a, b).id
}

private func reader(_ stack: RealtimeStack) -> PresenceReader { PresenceReader(redis: stack.redis, keys: stack.keys) }

@Suite("Presence and typing through the presence service", .redisServer)
struct PresenceTests {
    @Test("a batch's stops of typing: one call, each pair that was typing once, in order; the others stay typing")
    func stopTypingBatch() async throws {
        let server = try RedisServer.required()
        try await server.withClient { redis in
            let tracker = PresenceTracker(redis: redis, keys: uniqueKeys(), ttl: .seconds(30))
            for (conversation, user) in [("c1", doctor), ("c1", admin), ("c2", doctor)] {
                try await tracker.startTyping(conversation: conversation, user: user, expiry: .seconds(30))
            }
            let stopped = try await tracker.stopTyping([("c2", doctor), ("c1", doctor), ("c2", doctor), ("c3", patel)])
            #expect(stopped.map { "\($0.conversation) \($0.user)" } == ["c2 \(doctor)", "c1 \(doctor)"])
            #expect(try await tracker.stopTyping([]).isEmpty)
            // Only admin was still typing.
            let still = try await tracker.stopTyping([("c1", admin), ("c1", doctor)])
            #expect(still.map(\.user) == [admin])
        }
    }

    @Test("with a grace: a user whose last connection closes stays online; back within the grace, nothing to announce; gone past it, offline once with the time it closed")
    func grace() async throws {
        let server = try RedisServer.required()
        try await server.withClient { redis in
            let keys = uniqueKeys()
            let tracker = PresenceTracker(redis: redis, keys: keys, ttl: .seconds(30), grace: .milliseconds(300))
            let states = PresenceReader(redis: redis, keys: keys)
            #expect(try await tracker.connect([("c1", doctor)]) == [doctor])
            #expect(try await tracker.disconnect(conn: "c1", user: doctor) == nil, "not offline yet")
            #expect(try await states.states([doctor])[doctor]?.online == true)
            #expect(try await tracker.leave().isEmpty)
            // Back within the grace (a gateway's restart, a reload): not a new online either.
            #expect(try await tracker.connect([("c2", doctor)]).isEmpty)
            try await Task.sleep(for: .milliseconds(400))
            #expect(try await tracker.leave().isEmpty, "a connection is back")
            // Gone for good: offline once the grace is over, last seen when it closed.
            let closed = Date()
            #expect(try await tracker.disconnect(conn: "c2", user: doctor) == nil)
            #expect(try await tracker.leave().isEmpty)
            try await Task.sleep(for: .milliseconds(400))
            let gone = try await tracker.leave()
            #expect(gone.map(\.user) == [doctor])
            #expect(abs((gone.first?.lastSeen ?? .distantPast).timeIntervalSince(closed)) < 0.2)
            #expect(try await tracker.leave().isEmpty, "once")
            let state = try #require(try await states.states([doctor])[doctor])
            #expect(state.online == false && state.lastSeen != nil)
            // Online again afterwards is announced.
            #expect(try await tracker.connect([("c3", doctor)]) == [doctor])
            // Without a grace, offline at once (as before).
            let now = PresenceTracker(redis: redis, keys: uniqueKeys(), ttl: .seconds(30))
            _ = try await now.connect([("c4", admin)])
            #expect(try await now.disconnect(conn: "c4", user: admin) != nil)
        }
    }

    @Test("a gateway's sockets closed and back within the grace: the partner is told nothing; closed for good, offline after the grace")
    func reconnectWithinTheGrace() async throws {
        try await withRealtimeStack(gateways: 2, presence: true, environment: ["CHAT_PRESENCE_GRACE": "1500ms"]) { stack in
            _ = try shareConversation(stack)
            let partner = try await stack.connect(admin, gateway: 1)
            let first = try await stack.connect(doctor, gateway: 0)
            #expect(try await partner.event("user_online")["email"] == .string(doctor))
            await first.close()
            let back = try await stack.connect(doctor, gateway: 1)
            try await Task.sleep(for: .milliseconds(2500))
            #expect(partner.drain("user_offline").isEmpty, "back within the grace")
            #expect(partner.drain("user_online").isEmpty, "never announced offline, so not online again")
            let closed = Date()
            await back.close()
            let offline = try await partner.event("user_offline")
            #expect(offline["email"] == .string(doctor))
            let lastSeen = try #require(offline["last_seen"]?.stringValue.flatMap(ChatJSON.parseTimestamp))
            #expect(abs(lastSeen.timeIntervalSince(closed)) < 1)
            #expect(Date().timeIntervalSince(closed) >= 1.4, "not before the grace")
            await partner.close()
        }
    }

    @Test("a partner sees online and offline with last_seen; someone sharing no conversation sees nothing; two tabs stay online until the last closes")
    func onlineOffline() async throws {
        try await withRealtimeStack(gateways: 2, presence: true, environment: ["CHAT_PRESENCE_TTL": "3s"]) { stack in
            _ = try shareConversation(stack)
            let partner = try await stack.connect(admin, gateway: 1)
            let stranger = try await stack.connect(patel, gateway: 1)
            let tab1 = try await stack.connect(doctor, gateway: 0)
            let online = try await partner.event("user_online")
            #expect(online["email"] == .string(doctor))
            #expect(online["name"] == .string("Dr. Sarah Kim"))
            #expect(try await reader(stack).states([doctor])[doctor]?.online == true)

            let tab2 = try await stack.connect(doctor, gateway: 1)
            await tab1.close()
            try await Task.sleep(for: .seconds(1))
            #expect(partner.drain("user_offline").isEmpty, "one tab closed, the other is open")
            #expect(partner.drain("user_online").isEmpty, "a second tab is not a new online")
            #expect(try await reader(stack).states([doctor])[doctor]?.online == true)

            await tab2.close()
            let offline = try await partner.event("user_offline")
            #expect(offline["email"] == .string(doctor))
            let lastSeen = try #require(offline["last_seen"]?.stringValue.flatMap(ChatJSON.parseTimestamp))
            #expect(abs(lastSeen.timeIntervalSinceNow) < 10)
            let state = try #require(try await reader(stack).states([doctor])[doctor])
            #expect(state.online == false)
            #expect(state.lastSeen != nil)
            #expect(stranger.drain("user_online").isEmpty && stranger.drain("user_offline").isEmpty)

            // The conversation list and user search carry presence.
            let token = stack.token(admin)
            let (_, list) = try await stack.http("GET", "/api/conversations", token: token)
            #expect(list?.arrayValue?.first?["presence"]?[doctor]?["online"] == .bool(false))
            #expect(list?.arrayValue?.first?["presence"]?[admin]?["online"] == .bool(true))
            let (_, found) = try await stack.http("GET", "/api/users/search?q=sarah", token: token)
            #expect(found?.arrayValue?.first?["online"] == .bool(false))
            #expect(found?.arrayValue?.first?["last_seen"]?.stringValue != nil)
            for client in [partner, stranger] { await client.close() }
        }
    }

    @Test("a client whose side of the connection ends without a close frame (a FIN: its process ended) is gone at once: the gateway closes the connection and the session, and the partner sees it offline after the grace, not after the ping timeout")
    func connectionEndedWithoutCloseFrame() async throws {
        // Pings 25 s apart and 20 s to answer (the defaults), and this client still reads:
        // were the FIN not noticed, the session would stay until its ping timed out, and
        // the partner would see nothing within the wait below.
        try await withRealtimeStack(presence: true, environment: ["CHAT_PRESENCE_TTL": "3s", "CHAT_PRESENCE_GRACE": "1s"]) { stack in
            _ = try shareConversation(stack)
            let partner = try await stack.connect(admin)
            let gone = try RawWebSocket.open(port: stack.ports[0])
            defer { gone.close() }
            try gone.sendText("40" + JSONValue.object(["token": .string(stack.token(doctor))]).text)
            #expect(String(decoding: gone.read { String(decoding: $0, as: UTF8.self).contains("40{\"sid\"") }, as: UTF8.self).contains("40{\"sid\""))
            #expect(try await partner.event("user_online")["email"] == .string(doctor))
            #expect(stack.services[0].realtime.socketCount(of: doctor) == 1)

            gone.finish()
            #expect(gone.waitForServerClose(timeout: .seconds(5)), "the gateway kept the connection open")
            #expect(await eventually(timeout: .seconds(5)) { stack.services[0].realtime.socketCount(of: doctor) == 0 })
            #expect(try await partner.event("user_offline", timeout: .seconds(8))["email"] == .string(doctor))
            await partner.close()
        }
    }

    @Test("typing across two gateways in a 1:1 and in a group: start, stop, stop on send, and the 3 s expiry")
    func typing() async throws {
        try await withRealtimeStack(gateways: 2, presence: true) { stack in
            let direct = try shareConversation(stack)
            let group = try stack.store.createGroup(creator: doctor, title: "Ward 3", members: [admin, patel]).id
            let typist = try await stack.connect(doctor, gateway: 0)
            let partner = try await stack.connect(admin, gateway: 1)
            let colleague = try await stack.connect(patel, gateway: 0)

            try await typist.emit("user_typing", .object(["receiver_email": .string(admin), "is_typing": .bool(true)]))
            let started = try await partner.event("user_typing")
            #expect(started == .object(["sender_email": .string(doctor), "conversation_id": .string(direct), "is_typing": .bool(true)]))
            try await typist.emit("user_typing", .object(["conversation_id": .string(direct), "is_typing": .bool(false)]))
            #expect(try await partner.event("user_typing")["is_typing"] == .bool(false))

            // A group: everyone but the typist.
            try await typist.emit("user_typing", .object(["conversation_id": .string(group), "is_typing": .bool(true)]))
            #expect(try await partner.event("user_typing")["conversation_id"] == .string(group))
            #expect(try await colleague.event("user_typing")["conversation_id"] == .string(group))
            // Sending stops it.
            _ = try await typist.call("send_message", .object(["conversation_id": .string(group), "content": .string("done"), "client_id": .string("t1")]), ack: 1)
            let stopped = try await colleague.event("user_typing")
            #expect(stopped["is_typing"] == .bool(false))
            #expect(try await partner.event("user_typing") == .object(["sender_email": .string(doctor), "conversation_id": .string(group), "is_typing": .bool(false)]))

            // No refresh: it stops by itself after 3 s.
            try await typist.emit("user_typing", .object(["receiver_email": .string(admin), "is_typing": .bool(true)]))
            #expect(try await partner.event("user_typing")["is_typing"] == .bool(true))
            let began = ContinuousClock.now
            #expect(try await partner.event("user_typing", timeout: .seconds(8))["is_typing"] == .bool(false))
            #expect(ContinuousClock.now - began >= .seconds(2))
            #expect(typist.drain("user_typing").isEmpty, "the typist is not told about itself")
            // Never stored.
            #expect(try stack.store.sync(for: admin, since: [:]).conversations.flatMap(\.messages).map(\.content) == ["done"])
            // Someone else's conversation: dropped.
            let outsider = try await stack.connect(okafor, gateway: 1)
            try await outsider.emit("user_typing", .object(["conversation_id": .string(direct), "is_typing": .bool(true)]))
            try await Task.sleep(for: .milliseconds(500))
            #expect(partner.drain("user_typing").isEmpty)
            for client in [typist, partner, colleague, outsider] { await client.close() }
        }
    }

    @Test("the presence service restarted: states stay right and no spurious transitions")
    func restart() async throws {
        try await withRealtimeStack(presence: true, environment: ["CHAT_PRESENCE_TTL": "2s"]) { stack in
            _ = try shareConversation(stack)
            let partner = try await stack.connect(admin)
            let user = try await stack.connect(doctor)
            _ = try await partner.event("user_online")
            await stack.presenceControl.stop()
            try await Task.sleep(for: .seconds(3))  // longer than the TTL
            stack.presenceControl.run()
            try await Task.sleep(for: .seconds(5))
            #expect(partner.drain("user_offline").isEmpty)
            #expect(partner.drain("user_online").isEmpty)
            #expect(try await reader(stack).states([doctor, admin]).values.allSatisfy(\.online))
            await user.close()
            #expect(try await partner.event("user_offline")["email"] == .string(doctor))
            await partner.close()
        }
    }

    @Test("1,000 users connecting in one burst all show online; the service keeps up")
    func burst() async throws {
        try await withRealtimeStack(presence: true) { stack in
            let users = (0..<1000).map { "burst\($0)@clinic.com" }
            let commands = users.enumerated().map { index, user in
                RedisClient.xaddCommand(stack.keys.presenceCommands, fields: [("type", "connect"), ("user", user), ("conn", "conn-\(index)"), ("gateway", "gw-burst")])
            }
            _ = try await stack.redis.pipeline(commands)
            #expect(await eventually(timeout: .seconds(30)) {
                (try? await reader(stack).states(users).values.filter(\.online).count) == 1000
            })
            #expect(await eventually { (try? await stack.redis.xpending(stack.keys.presenceCommands, group: RedisKeys.presenceGroup).count) == 0 })
        }
    }

    @Test("connections nobody keeps alive expire: exactly one offline per user, also with two presence instances")
    func expiryWithTwoInstances() async throws {
        try await withRealtimeStack(presence: true, environment: ["CHAT_PRESENCE_TTL": "1s"]) { stack in
            _ = try shareConversation(stack)
            _ = try shareConversation(stack, patel, admin)
            // A second presence instance on the same streams.
            let second = StoreControl {
                Task {
                    var configuration = try! ChatConfiguration(environment: ["CHAT_REDIS_URL": stack.redisURL, "CHAT_PRESENCE_TTL": "1s",
                                                                              "CHAT_CONSUMER_NAME": "messages-second"])
                    configuration.redisPrefix = stack.keys.prefix
                    let runtime = ChatRuntime(configuration: configuration, redis: stack.redis, logger: Logger(label: "presence-2"))
                    let subscriber = RedisSubscriber(configuration: configuration.redis)
                    await withDiscardingTaskGroup { group in
                        group.addTask { try? await subscriber.run() }
                        group.addTask { try? await PresenceService(runtime: runtime, subscriber: subscriber).run() }
                    }
                }
            }
            second.run()
            let partner = try await stack.connect(admin)
            // Two users whose gateway "died": connected, never refreshed, never disconnected.
            _ = try await stack.redis.pipeline([doctor, patel].enumerated().map { index, user in
                RedisClient.xaddCommand(stack.keys.presenceCommands, fields: [("type", "connect"), ("user", user), ("conn", "dead-\(index)"), ("gateway", "gw-dead")])
            })
            #expect(await eventually { partner.drainCountPeek("user_online") == 2 })
            #expect(await eventually(timeout: .seconds(10)) { partner.drainCountPeek("user_offline") == 2 })
            try await Task.sleep(for: .seconds(3))
            let offline = partner.drain("user_offline").compactMap { $0["email"]?.stringValue }.sorted()
            #expect(offline == [doctor, patel])
            await second.stop()
            await partner.close()
        }
    }
}

extension JSONValue {
    var arrayValue: [JSONValue]? {
        if case .array(let items) = self { return items }
        return nil
    }
}
