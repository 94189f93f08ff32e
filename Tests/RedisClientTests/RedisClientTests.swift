import ChatTesting
import Foundation
import Testing
@testable import RedisClient

@Suite("RedisClient against a real redis-server", .redisServer)
struct RedisClientTests {
    @Test("strings, expiry and counters round-trip")
    func stringsAndExpiry() async throws {
        let k = uniqueKeys().prefix
        try await RedisServer.required().withClient { redis in
            #expect(try await redis.set(k + "a", to: "1"))
            #expect(try await redis.set(k + "a", to: "2", condition: .ifNotExists) == false)
            #expect(try await redis.set(k + "missing", to: "x", condition: .ifExists) == false)
            #expect(try await redis.get(k + "a") == "1")
            #expect(try await redis.get(k + "missing") == nil)
            #expect(try await redis.set(k + "ttl", to: "v", expiration: .seconds(100)))
            #expect((1...100).contains(try await redis.ttl(k + "ttl")))
            #expect(try await redis.set(k + "pttl", to: "v", expiration: .milliseconds(100_000)))
            #expect(try await redis.ttl(k + "a") == -1)
            #expect(try await redis.ttl(k + "missing") == -2)
            #expect(try await redis.expire(k + "a", seconds: 50))
            #expect(try await redis.pexpire(k + "a", milliseconds: 50_000))
            #expect(try await redis.expire(k + "missing", seconds: 5) == false)
            #expect(try await redis.increment(k + "n") == 1)
            #expect(try await redis.increment(k + "n") == 2)
            #expect(try await redis.exists([k + "a", k + "n", k + "missing"]) == 2)
            #expect(try await redis.delete([k + "a", k + "missing"]) == 1)
            #expect(try await redis.get(k + "a") == nil)
            // TIME in microseconds: this machine's clock, as the server shares it.
            let local = Int64(Date().timeIntervalSince1970 * 1_000_000)
            #expect(abs(try await redis.time() - local) < 5_000_000)
            let unicode = "héllo 👋\r\n\0end"
            try await redis.set(k + "u", to: unicode)
            #expect(try await redis.get(k + "u") == unicode)
        }
    }

    @Test("hashes, sets and sorted sets round-trip")
    func collections() async throws {
        let k = uniqueKeys().prefix
        try await RedisServer.required().withClient { redis in
            #expect(try await redis.hset(k + "h", ["name": "Dr. Kim", "role": "doctor"]) == 2)
            #expect(try await redis.hget(k + "h", "name") == "Dr. Kim")
            #expect(try await redis.hgetall(k + "h") == ["name": "Dr. Kim", "role": "doctor"])
            #expect(try await redis.hdel(k + "h", ["role", "nope"]) == 1)
            #expect(try await redis.hgetall(k + "none") == [:])

            #expect(try await redis.sadd(k + "s", ["a", "b", "c", "a"]) == 3)
            #expect(try await redis.srem(k + "s", ["b"]) == 1)
            #expect(try await redis.smembers(k + "s") == ["a", "c"])
            #expect(try await redis.scard(k + "s") == 2)

            #expect(try await redis.zadd(k + "z", [(3, "c"), (1, "a"), (2.5, "b")]) == 3)
            #expect(try await redis.zrangeByScore(k + "z", min: "-inf", max: "2.5") == ["a", "b"])
            #expect(try await redis.zrangeByScore(k + "z", min: "(1", max: "+inf", limit: 1) == ["b"])
            let scored = try await redis.zrangeByScoreWithScores(k + "z", min: "-inf", max: "+inf")
            #expect(scored.map(\.member) == ["a", "b", "c"])
            #expect(scored.map(\.score) == [1, 2.5, 3])
            #expect(try await redis.zrem(k + "z", ["a"]) == 1)
            #expect(try await redis.zcard(k + "z") == 2)
        }
    }

    @Test("10,000 commands from 100 concurrent tasks each get their own answer")
    func concurrentCallersPipeline() async throws {
        let k = uniqueKeys().prefix
        let mismatches = try await RedisServer.required().withClient { redis in
            try await withThrowingTaskGroup(of: Int.self) { group in
                for task in 0..<100 {
                    group.addTask {
                        var wrong = 0
                        for i in 0..<50 {
                            let key = "\(k)\(task):\(i)"
                            let value = "value-\(task)-\(i)-" + String(repeating: "x", count: (task * 7 + i) % 300)
                            if try await !redis.set(key, to: value) { wrong += 1 }
                            if try await redis.get(key) != value { wrong += 1 }
                        }
                        return wrong
                    }
                }
                return try await group.reduce(0, +)
            }
        }
        #expect(mismatches == 0)
    }

    @Test("a pipeline returns every reply in order, with error replies as values")
    func pipelineKeepsOrderAndErrors() async throws {
        let k = uniqueKeys().prefix
        try await RedisServer.required().withClient { redis in
            let replies = try await redis.pipeline([
                ["SET", k + "p", "1"], ["LPUSH", k + "p", "x"], ["INCR", k + "p"], ["GET", k + "p"],
            ])
            #expect(replies.count == 4)
            #expect(replies[0] == .simpleString("OK"))
            guard case .error(let message) = replies[1] else { Issue.record("expected WRONGTYPE, got \(replies[1])"); return }
            #expect(message.hasPrefix("WRONGTYPE"))
            #expect(replies[2] == .integer(2))
            #expect(replies[3] == "2")
            #expect(try await redis.pipeline([]) == [])
        }
    }

    @Test("long pipelines from concurrent callers: each gets its own replies, all of them, in order")
    func longPipelines() async throws {
        let k = uniqueKeys().prefix
        try await RedisServer.required().withClient { redis in
            try await withThrowingTaskGroup(of: Void.self) { group in
                for caller in 0..<4 {
                    group.addTask {
                        let commands = (0..<3_000).map { ["ECHO", "\(caller)-\($0)"] }
                        let replies = try await redis.pipeline(commands)
                        #expect(replies == (0..<3_000).map { RESPValue.bulkString(Array("\(caller)-\($0)".utf8)) })
                        #expect(try await redis.send(["INCR", k + "n"]).int != nil)
                    }
                }
                try await group.waitForAll()
            }
            #expect(try await redis.send(["GET", k + "n"]) == "4")
        }
    }

    @Test("a server error reply and a connection failure are different error types")
    func errorTypes() async throws {
        let k = uniqueKeys().prefix
        try await RedisServer.required().withClient { redis in
            await #expect(throws: RedisServerError(message: "ERR unknown command 'NOSUCHCOMMAND', with args beginning with: ")) {
                try await redis.send(["NOSUCHCOMMAND"])
            }
            try await redis.sadd(k + "set", ["a"])
            let error = await #expect(throws: RedisServerError.self) { try await redis.get(k + "set") }
            #expect(error?.prefix == "WRONGTYPE")
            // The connection is still good after an error reply.
            try await redis.ping()
        }
        let stopped = try RedisClient(configuration: RedisServer.required().configuration)
        let refused = await #expect(throws: RedisConnectionError.self) { try await stopped.ping() }
        #expect(refused?.code == .notRunning)
    }

    @Test("a blocked XREADGROUP does not hold up other commands, and cancelling it returns at once")
    func blockingReadsUseTheirOwnConnection() async throws {
        let keys = uniqueKeys()
        try await RedisServer.required().withClient { redis in
            try await redis.xgroupCreate(keys.commands, group: "g")
            let blocked = Task {
                try await redis.xreadgroup(group: "g", consumer: "c1", streams: [(keys.commands, ">")], count: 10, block: .seconds(30))
            }
            try await Task.sleep(for: .milliseconds(100))
            // If these queued behind the blocked read they would wait until the XADD below, which comes after them.
            try await withTimeout(.seconds(10)) {
                for _ in 0..<200 { try await redis.ping() }
            }
            try await redis.xadd(keys.commands, fields: [("type", "wake")])
            let read = try await withTimeout(.seconds(10)) { try await blocked.value }
            #expect(read[keys.commands]?.map { $0.fields["type"] } == ["wake"])

            let cancelled = Task {
                try await redis.xreadgroup(group: "g", consumer: "c1", streams: [(keys.commands, ">")], block: .seconds(30))
            }
            try await Task.sleep(for: .milliseconds(100))
            cancelled.cancel()
            let outcome = try await withTimeout(.seconds(5)) { await cancelled.result }
            #expect(throws: RedisConnectionError.self) { try outcome.get() }
            // The blocking connection comes back for the next blocking call.
            let empty = try await redis.xreadgroup(group: "g", consumer: "c1", streams: [(keys.commands, ">")], block: .milliseconds(50))
            #expect(empty.isEmpty)
        }
    }

    @Test("two blocked readers wait side by side: the second gets its entry while the first still waits")
    func blockedReadersDoNotQueue() async throws {
        let keys = uniqueKeys()
        let (first, second) = (keys.commands, keys.events)
        try await RedisServer.required().withClient { redis in
            for stream in [first, second] { #expect(try await redis.xgroupCreate(stream, group: "g", startingAt: "$")) }
            let waiting = Task { try await redis.xreadgroup(group: "g", consumer: "a", streams: [(first, ">")], block: .seconds(60)) }
            try await Task.sleep(for: .milliseconds(200))
            let reader = Task { try await redis.xreadgroup(group: "g", consumer: "b", streams: [(second, ">")], block: .seconds(60)) }
            try await Task.sleep(for: .milliseconds(200))
            try await redis.xadd(second, fields: [("type", "typing")])
            // With one shared blocking connection this read would sit behind the first one's BLOCK.
            let read = try await withTimeout(.seconds(20)) { try await reader.value }
            #expect(read[second]?.map { $0.fields["type"] } == ["typing"])
            try await redis.xadd(first, fields: [("type", "wake")])
            #expect(try await withTimeout(.seconds(20)) { try await waiting.value }[first]?.count == 1)
        }
    }

    @Test("consumer group round trip: read, ack, and XAUTOCLAIM takes over a dead consumer's entries")
    func consumerGroupsAndAutoclaim() async throws {
        let keys = uniqueKeys()
        let stream = keys.commands
        try await RedisServer.required().withClient { redis in
            #expect(try await redis.xgroupCreate(stream, group: "messages", startingAt: "0"))
            #expect(try await redis.xgroupCreate(stream, group: "messages", startingAt: "0") == false)
            var added: [String] = []
            for i in 0..<5 {
                added.append(try await redis.xadd(stream, fields: [("type", "send"), ("payload", "{\"n\":\(i)}")], trim: .maxLength(1000)))
            }
            let ids = added
            #expect(try await redis.xlen(stream) == 5)

            // A consumer on its own connection reads everything, acknowledges two entries, and stops.
            try await RedisServer.required().withClient { doomed in
                let first = try await doomed.xreadgroup(group: "messages", consumer: "dead", streams: [(stream, ">")], count: 10)
                #expect(first[stream]?.map(\.id) == ids)
                #expect(first[stream]?[2].fields == ["type": "send", "payload": "{\"n\":2}"])
                #expect(try await doomed.xack(stream, group: "messages", ids: Array(ids.prefix(2))) == 2)
            }

            var pending = try await redis.xpending(stream, group: "messages")
            #expect(pending.count == 3)
            #expect(pending.consumers == ["dead": 3])
            #expect(pending.smallestID == ids[2])

            // It died holding 3 entries; one of them is deleted meanwhile.
            try await redis.xdel(stream, ids: [ids[4]])
            try await Task.sleep(for: .milliseconds(60))
            let claim = try await redis.xautoclaim(stream, group: "messages", consumer: "alive", minIdle: .milliseconds(50), count: 100)
            #expect(claim.entries.map(\.id) == [ids[2], ids[3]])
            #expect(claim.entries.map { $0.fields["payload"] } == ["{\"n\":2}", "{\"n\":3}"])
            #expect(claim.deletedIDs == [ids[4]])
            #expect(claim.nextStart == "0-0")

            let detail = try await redis.xpending(stream, group: "messages", count: 10)
            #expect(detail.map(\.consumer) == ["alive", "alive"])
            #expect(detail.allSatisfy { $0.deliveries == 2 })
            // What the claimer holds, it can re-read from its own history with id 0.
            let own = try await redis.xreadgroup(group: "messages", consumer: "alive", streams: [(stream, "0")])
            #expect(own[stream]?.map(\.id) == [ids[2], ids[3]])

            #expect(try await redis.xack(stream, group: "messages", ids: claim.entries.map(\.id)) == 2)
            pending = try await redis.xpending(stream, group: "messages")
            #expect(pending.count == 0)

            let groups = try await redis.xinfoGroups(stream)
            #expect(groups.first?["name"]?.string == "messages")
            #expect(groups.first?["pending"]?.int == 0)
            #expect(try await redis.xinfoStream(stream)["length"]?.int == 4)
            #expect(try await redis.xrange(stream, count: 2).map(\.id) == Array(ids.prefix(2)))
            #expect(try await redis.xtrim(stream, .maxLength(1, approximate: false)) == 3)
            #expect(try await redis.xrange(stream).map(\.id) == [ids[3]])
            #expect(try await redis.xtrim(stream, .minID("9999999999999-0", approximate: false)) == 1)
        }
    }

    @Test("trimming for all groups keeps what another group has not been given or not acknowledged; trimming for one group does not")
    func trimForAllGroups() async throws {
        let stream = uniqueKeys().events
        try await RedisServer.required().withClient { redis in
            for group in ["retention", "presence"] { #expect(try await redis.xgroupCreate(stream, group: group, startingAt: "0")) }
            var ids: [String] = []
            for i in 0..<10 { ids.append(try await redis.xadd(stream, fields: [("n", String(i))])) }
            #expect(StreamEntry.precedes(ids[0], ids[9]) && !StreamEntry.precedes(ids[9], ids[0]))
            #expect(StreamEntry.precedes("5-9", "5-10") && StreamEntry.precedes("5-10", "6-0") && !StreamEntry.precedes("6-0", "6-0"))

            // Presence has been given nothing yet: retention's trim keeps everything.
            let all = try await redis.xreadgroup(group: "retention", consumer: "r", streams: [(stream, ">")], count: 10)[stream] ?? []
            #expect(all.map(\.id) == ids)
            try await redis.acknowledgeAndTrim(stream, group: "retention", ids: Array(ids[..<4]), otherGroups: true)
            #expect(try await redis.xlen(stream) == 10)

            // Presence was given 6 and acknowledged 3: entries from its oldest pending one stay.
            _ = try await redis.xreadgroup(group: "presence", consumer: "p", streams: [(stream, ">")], count: 6)
            #expect(try await redis.xack(stream, group: "presence", ids: Array(ids[..<3])) == 3)
            try await redis.acknowledgeAndTrim(stream, group: "retention", ids: Array(ids[4...]), otherGroups: true)
            #expect(try await redis.xrange(stream).map(\.id) == Array(ids[3...]))

            // Presence acknowledges what it was given: everything it got goes, nothing it did not.
            #expect(try await redis.xack(stream, group: "presence", ids: Array(ids[3..<6])) == 3)
            try await redis.acknowledgeAndTrim(stream, group: "retention", ids: [ids[9]], otherGroups: true)
            #expect(try await redis.xrange(stream).map(\.id) == Array(ids[6...]))

            // Presence is given and acknowledges the rest: all of it goes.
            let rest = try await redis.xreadgroup(group: "presence", consumer: "p", streams: [(stream, ">")], count: 10)[stream] ?? []
            #expect(rest.map(\.id) == Array(ids[6...]))
            #expect(try await redis.xack(stream, group: "presence", ids: rest.map(\.id)) == 4)
            try await redis.acknowledgeAndTrim(stream, group: "retention", ids: [ids[9]], otherGroups: true)
            #expect(try await redis.xlen(stream) == 0)

            // Without otherGroups only the own group counts: presence, given nothing of
            // these, does not keep them (an operator's forgotten group cannot keep text).
            let more = [try await redis.xadd(stream, fields: [("n", "10")]), try await redis.xadd(stream, fields: [("n", "11")])]
            #expect(try await redis.xreadgroup(group: "retention", consumer: "r", streams: [(stream, ">")])[stream]?.map(\.id) == more)
            try await redis.acknowledgeAndTrim(stream, group: "retention", ids: more)
            #expect(try await redis.xlen(stream) == 0)
        }
    }

    @Test("scripts run by SHA and fall back to EVAL after the server forgot them")
    func scripts() async throws {
        let k = uniqueKeys().prefix
        let script = RedisScript("return redis.call('INCRBY', KEYS[1], ARGV[1])")
        try await RedisServer.required().withClient { redis in
            #expect(try await redis.run(script, keys: [k + "n"], arguments: ["5"]) == .integer(5))
            try await redis.send(["SCRIPT", "FLUSH"])
            #expect(try await redis.run(script, keys: [k + "n"], arguments: ["5"]) == .integer(10))
            #expect(try await redis.scriptLoad(script).count == 40)
        }
    }

    @Test("CONFIG SET changes the server's configuration")
    func configSet() async throws {
        try await RedisServer.required().withClient { redis in
            try await redis.configSet("notify-keyspace-events", "Ex")
            let reply = try await redis.send(["CONFIG", "GET", "notify-keyspace-events"])
            #expect(reply.array?.last?.string?.sorted() == Array("xE").sorted())
            await #expect(throws: RedisServerError.self) { try await redis.configSet("no-such-parameter", "1") }
        }
    }

    @Test("waitUntilReady waits for a server that is not up yet")
    func waitUntilReadyWaitsForTheServer() async throws {
        let port = try RedisServer.freePort()
        let client = RedisClient(configuration: RedisConfiguration(endpoint: .tcp(host: "127.0.0.1", port: port)))
        try await withRunning(client) { redis in
            let waiting = Task { try await redis.waitUntilReady(timeout: .seconds(20)) }
            try await Task.sleep(for: .milliseconds(300))
            await #expect(throws: RedisConnectionError.self) { try await redis.ping() }
            let server = try await RedisServer.start(port: port)
            defer { server.stop() }
            try await waiting.value
            try await redis.set("up", to: "yes")
            #expect(try await redis.get("up") == "yes")
        }
    }

    @Test("a redis+unix:// URL connects through the Unix socket")
    func unixSocket() async throws {
        let socket = FileManager.default.temporaryDirectory.appendingPathComponent("chat-\(UUID().uuidString.prefix(8)).sock").path
        let server = try await RedisServer.start(arguments: ["--unixsocket", socket, "--unixsocketperm", "700"])
        defer { server.stop() }
        try await withRunning(RedisClient(configuration: try RedisConfiguration(url: "redis+unix://" + socket))) { redis in
            try await redis.waitUntilReady(timeout: .seconds(10))
            try await redis.set("via", to: "unix")
            #expect(try await redis.get("via") == "unix")
            let clients = try await redis.send(["CLIENT", "LIST"]).string ?? ""
            #expect(clients.contains("addr=\(socket)") || clients.contains("addr=/"))
        }
    }

    @Test("AUTH and SELECT from the URL are applied on connect, and a wrong password is a connect failure")
    func authAndDatabase() async throws {
        let server = try await RedisServer.start(arguments: ["--requirepass", "s3cret"])
        defer { server.stop() }
        var configuration = try RedisConfiguration(url: "redis://:s3cret@127.0.0.1:\(server.port)/3")
        try await withRunning(RedisClient(configuration: configuration)) { redis in
            try await redis.waitUntilReady(timeout: .seconds(10))
            try await redis.set("k", to: "in-db-3")
            let reply = try await redis.pipeline([["SELECT", "0"], ["GET", "k"], ["SELECT", "3"], ["GET", "k"]])
            #expect(reply[1] == .null)
            #expect(reply[3] == "in-db-3")
        }
        configuration.password = "wrong"
        try await withRunning(RedisClient(configuration: configuration)) { redis in
            let ready = await eventually(timeout: .seconds(2)) { (try? await redis.ping()) != nil }
            #expect(!ready)
            let error = await #expect(throws: RedisConnectionError.self) { try await redis.ping() }
            #expect(error?.code == .connecting || error?.code == .connectFailed)
        }
    }
}
