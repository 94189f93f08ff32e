import ChatTesting
import Foundation
import NIOCore
import NIOPosix
import Testing
@testable import RedisClient

/// A server that stops answering without closing its connections: paused with SIGSTOP, its
/// kernel still accepts and acknowledges, as a hung Redis does (a host gone without a reset
/// looks the same to a caller waiting for a reply). Each test has its own server.
@Suite("A Redis that stops answering")
struct RedisStallTests {
    /// A server of the test's own (resumed, if paused, and stopped at the end) and a running
    /// client of it with `replyTimeout`, named so that reconnecting has a handshake to answer.
    static func withPausableServer(replyTimeout: Duration?, _ body: @Sendable (RedisServer, RedisClient) async throws -> Void) async throws {
        let server = try await RedisServer.start()
        defer { server.resume(); server.stop() }
        var configuration = server.configuration
        configuration.replyTimeout = replyTimeout
        configuration.clientName = "stall-test"
        try await withRunning(RedisClient(configuration: configuration)) { redis in
            try await redis.waitUntilReady(timeout: .seconds(10))
            try await body(server, redis)
        }
    }

    @Test("calls to a paused server fail with timedOut after the reply timeout instead of waiting for ever; once it answers again the client reconnects and nothing was lost")
    func pausedServer() async throws {
        try await Self.withPausableServer(replyTimeout: .milliseconds(500)) { server, redis in
            _ = try await redis.set("kept", to: "yes")
            server.pause()
            let started = ContinuousClock.now
            // Two callers at once, a command and a pipeline: both are failed, neither hangs.
            let single = Task { try await redis.ping() }
            let pipelined = Task { try await redis.pipeline([["INCR", "n"], ["GET", "kept"]]) }
            let first = await #expect(throws: RedisConnectionError.self) { try await withTimeout(.seconds(10)) { try await single.value } }
            let second = await #expect(throws: RedisConnectionError.self) { _ = try await withTimeout(.seconds(10)) { try await pipelined.value } }
            #expect(first?.code == .timedOut, "\(first.map { "\($0)" } ?? "no error")")
            #expect(second?.code == .timedOut, "\(second.map { "\($0)" } ?? "no error")")
            #expect(first?.detail.contains("no reply from Redis in") == true, "\(first.map { "\($0)" } ?? "")")
            #expect(ContinuousClock.now - started < .seconds(8))
            // Still paused: a new call fails too (the reconnection's handshake is not answered either).
            await #expect(throws: RedisConnectionError.self) { try await withTimeout(.seconds(10)) { try await redis.ping() } }

            server.resume()
            #expect(await eventually { (try? await redis.ping()) != nil }, "the client works again once the server answers")
            #expect(try await redis.get("kept") == "yes")
            // The pipeline sent before the pause ended may have been applied when the server went on: at most once.
            let n = try await redis.get("n").flatMap { Int($0) } ?? 0
            #expect(n <= 1)
        }
    }

    @Test("a blocking read may block for its BLOCK time however short the reply timeout; on a paused server it fails once that and the timeout have passed")
    func blockingReads() async throws {
        try await Self.withPausableServer(replyTimeout: .milliseconds(300)) { server, redis in
            _ = try await redis.xgroupCreate("s", group: "g")
            // Blocked four times the reply timeout with nothing to read: an empty answer, not an error.
            let empty = try await redis.xreadgroup(group: "g", consumer: "c", streams: [("s", ">")], block: .milliseconds(1200))
            #expect(empty.isEmpty)
            // Woken after three reply timeouts by an entry.
            let woken = Task { try await redis.xreadgroup(group: "g", consumer: "c", streams: [("s", ">")], block: .seconds(5)) }
            try await Task.sleep(for: .milliseconds(900))
            _ = try await redis.xadd("s", fields: [("type", "wake")])
            let read = try await withTimeout(.seconds(10)) { try await woken.value }
            #expect(read["s"]?.map { $0.fields["type"] } == ["wake"])

            server.pause()
            let started = ContinuousClock.now
            let stalled = await #expect(throws: RedisConnectionError.self) {
                try await withTimeout(.seconds(10)) {
                    try await redis.xreadgroup(group: "g", consumer: "c", streams: [("s", ">")], block: .milliseconds(500))
                }
            }
            #expect(stalled?.code == .timedOut, "\(stalled.map { "\($0)" } ?? "no error")")
            #expect(ContinuousClock.now - started >= .milliseconds(800), "not before its BLOCK time and the timeout")
            // Resumed before the client stops: a client without the timeout would wait for ever in its reconnection's handshake.
            server.resume()
            #expect(await eventually { (try? await redis.ping()) != nil })
        }
    }

    @Test("without a reply timeout a call waits for a paused server and gets its answer when it goes on")
    func noTimeout() async throws {
        try await Self.withPausableServer(replyTimeout: nil) { server, redis in
            server.pause()
            let call = Task { try await redis.send(["ECHO", "late"]) }
            try await Task.sleep(for: .seconds(1))
            server.resume()
            #expect(try await withTimeout(.seconds(10)) { try await call.value }.string == "late")
        }
    }

    @Test("a subscriber to a paused server finds out by its PING: the connection is closed, and once the server answers it subscribes again and messages arrive")
    func silentSubscriber() async throws {
        let server = try await RedisServer.start()
        defer { server.resume(); server.stop() }
        var configuration = server.configuration
        configuration.replyTimeout = .milliseconds(400)
        configuration.keepAlive = .milliseconds(300)
        let subscriber = RedisSubscriber(configuration: configuration)
        let recorder = EventRecorder(subscriber)
        try await withRunning(subscriber) { subscriber in
            try await server.withClient { redis in
                try await subscriber.subscribe(["ward"])
                #expect(try await redis.publish("before", to: "ward") == 1)
                #expect(await eventually { recorder.messages.map(\.text) == ["before"] })
                // While the server answers, the PINGs (every 300 ms) are answered and change nothing.
                #expect(await eventually {
                    let clients = (try? await redis.send(["CLIENT", "LIST"]).string) ?? ""
                    return clients.split(separator: "\n").contains { $0.contains("sub=1") && $0.contains("cmd=ping") }
                }, "the subscriber pings")
                try await Task.sleep(for: .milliseconds(1200))
                #expect(!recorder.all.contains(.connectionLost), "\(recorder.all)")
                #expect(try await redis.publish("between", to: "ward") == 1)
                #expect(await eventually { recorder.messages.map(\.text) == ["before", "between"] })
                server.pause()
                // Nothing is published, nothing is read: only its PING can tell.
                #expect(await eventually { recorder.all.contains(.connectionLost) }, "\(recorder.all)")
                server.resume()
                #expect(await eventually { recorder.resubscriptions >= 1 }, "\(recorder.all)")
                #expect(await eventually { (try? await redis.publish("after", to: "ward")) == 1 })
                #expect(await eventually { recorder.messages.map(\.text).last == "after" })
            }
        }
    }

    @Test("a blocking read's allowance is its BLOCK time, given by the caller (BLOCK 0: no limit), not read back from the command, so a group or consumer named \"block\" changes nothing")
    func blockingTime() async throws {
        #expect(RedisClient.blockingTime(.milliseconds(2500)) == .milliseconds(2500))
        #expect(RedisClient.blockingTime(.zero) == nil)
        // A command read back for its BLOCK found the group's name here and gave the read no
        // allowance: it failed after the 300 ms timeout instead of blocking 1.2 s.
        try await Self.withPausableServer(replyTimeout: .milliseconds(300)) { _, redis in
            _ = try await redis.xgroupCreate("s", group: "block")
            let empty = try await redis.xreadgroup(group: "block", consumer: "BLOCK", streams: [("s", ">")], block: .milliseconds(1200))
            #expect(empty.isEmpty)
        }
    }

    @Test("TCP connections probe an idle peer: keepalive on, first probe after keepAlive, then every third of it, three probes; off when keepAlive is nil")
    func keepAlive() async throws {
        let server = try await RedisServer.start()
        defer { server.stop() }
        func option(_ connection: RedisConnection, _ level: NIOBSDSocket.OptionLevel, _ name: Int32) async throws -> Int {
            try await connection.channel.getOption(ChannelOptions.Types.SocketOption(level: level, name: .init(rawValue: name))).get()
        }
        var configuration = server.configuration
        configuration.keepAlive = .seconds(15)
        let probed = try await RedisConnection.connect(to: configuration, on: MultiThreadedEventLoopGroup.singleton)
        defer { probed.close() }
        #expect(try await option(probed, .socket, SO_KEEPALIVE) != 0)
        #expect(try await option(probed, .tcp, Int32(TCP_KEEPIDLE)) == 15)
        #expect(try await option(probed, .tcp, Int32(TCP_KEEPINTVL)) == 5)
        #expect(try await option(probed, .tcp, Int32(TCP_KEEPCNT)) == 3)
        #expect(RedisConfiguration(endpoint: .tcp(host: "h", port: 1)).keepAlive == .seconds(15), "on by default")

        configuration.keepAlive = nil
        let plain = try await RedisConnection.connect(to: configuration, on: MultiThreadedEventLoopGroup.singleton)
        defer { plain.close() }
        #expect(try await option(plain, .socket, SO_KEEPALIVE) == 0)
    }
}
