import ChatCore
import ChatTesting
import Foundation
import GRDB
import Gateway
import MessageStore
import RedisClient
import Synchronization
import Testing

/// A client as a real one behaves across a restart: it keeps one Socket.IO session over
/// long-polling on whichever gateway answers, reconnects (to the next gateway) when its
/// session ends, and sends again, with the same client id, whatever was not confirmed.
final class ResilientClient: Sendable {
    struct State {
        var session: PollingClient?
        var generation = 0
        var sent: [String: String] = [:]  // client_id → payload
        var confirmed: [String: String] = [:]  // client_id → message id
        var received: [String: Int] = [:]  // message id → times
        var maxSeq: [String: Int64] = [:]
        var reconnects = 0
        var retried = 0
        var errors: [String] = []
    }

    let ports: [Int]
    let token: String
    let state = Mutex(State())

    init(ports: [Int], token: String) {
        self.ports = ports
        self.token = token
    }

    /// A session on the first gateway that accepts one, starting after the one that failed;
    /// `since` asks the gateway to replay what was missed.
    func reconnect(after failed: Int) async {
        var attempt = 0
        while !Task.isCancelled {
            let port = ports[(attempt + failed + 1) % ports.count]
            attempt += 1
            do {
                guard let client = try await PollingClient.handshake(port: port) else { throw ChatError(.unavailable, "refused") }
                let since = state.withLock { $0.maxSeq }
                try await client.post(["40" + JSONValue.object(["token": .string(token), "since": .object(since.mapValues { .number(Double($0)) })]).text])
                let unconfirmed = state.withLock { s in
                    s.session = client
                    s.generation += 1
                    s.reconnects += 1
                    return s.sent.filter { s.confirmed[$0.key] == nil }
                }
                for (_, payload) in unconfirmed.sorted(by: { $0.key < $1.key }) {
                    try await client.post([payload])
                    state.withLock { $0.retried += 1 }
                }
                return
            } catch {
                try? await Task.sleep(for: .milliseconds(100))
            }
        }
    }

    var current: (PollingClient, Int)? { state.withLock { s in s.session.map { ($0, s.generation) } } }

    /// Marks the session dead (once per generation) and finds another.
    func sessionFailed(_ generation: Int) async {
        let port = state.withLock { s -> Int? in
            guard s.generation == generation, let session = s.session else { return nil }
            s.session = nil
            return ports.firstIndex { session.base.contains(":\($0)/") }
        }
        if let port { await reconnect(after: port) }
    }

    func send(_ number: Int, to receiver: String) async {
        let clientID = String(format: "r-%06d", number)
        let payload = "42" + JSONValue.array([.string("send_message"), .object([
            "receiver_email": .string(receiver), "content": .string("rolling \(number)"), "client_id": .string(clientID),
        ])]).text
        state.withLock { $0.sent[clientID] = payload }
        guard let (session, generation) = current else { return }  // sent again on reconnect
        do { try await session.post([payload]) } catch { await sessionFailed(generation) }
    }

    /// Sends again what is still unconfirmed (on the current session).
    func retryUnconfirmed() async {
        guard let (session, generation) = current else { return }
        let payloads = state.withLock { s in s.sent.filter { s.confirmed[$0.key] == nil }.map(\.value) }
        for payload in payloads {
            do { try await session.post([payload]) } catch {
                await sessionFailed(generation)
                return
            }
        }
    }

    /// Long-polls until cancelled, recording confirmations, deliveries and errors.
    func receive() async {
        while !Task.isCancelled {
            guard let (session, generation) = current else {
                try? await Task.sleep(for: .milliseconds(20))
                continue
            }
            do {
                let packets = try await session.poll()
                for packet in packets { record(packet) }
                if packets.contains("1") { await sessionFailed(generation) }
            } catch {
                if Task.isCancelled { return }
                await sessionFailed(generation)
            }
        }
    }

    private func record(_ packet: String) {
        guard packet.hasPrefix("42"), case .array(let items)? = JSONValue(parsing: packet.dropFirst(2)), items.count == 2,
              let name = items[0].stringValue else { return }
        let data = items[1]
        state.withLock { s in
            switch name {
            case "message_sent_confirmed":
                if let clientID = data["client_id"]?.stringValue, let id = data["id"]?.stringValue { s.confirmed[clientID] = id }
            case "receive_message":
                if let id = data["id"]?.stringValue { s.received[id, default: 0] += 1 }
                if let conversation = data["conversation_id"]?.stringValue, case .number(let seq)? = data["seq"] {
                    s.maxSeq[conversation] = max(s.maxSeq[conversation] ?? 0, Int64(seq))
                }
            case "error":
                s.errors.append(data["code"]?.stringValue ?? "?")
            default:
                break
            }
        }
    }
}

@Suite("Rolling restart", .redisServer)
struct RollingRestartTests {
    @Test("each service restarted in turn (SIGTERM, start again) while a client sends every 10 ms: every send is confirmed, stored once and delivered")
    func rollingRestart() async throws {
        let server = try RedisServer.required()
        let keys = uniqueKeys("rolling")
        let accounts = try TwoUserStore("rolling")
        defer { accounts.remove() }
        let database = accounts.database
        let secret = String(repeating: "r", count: 40)
        let environment = [
            "CHAT_REDIS_URL": server.url, "CHAT_REDIS_PREFIX": keys.prefix, "CHAT_DB_PATH": database, "CHAT_JWT_SECRET": secret,
            "CHAT_CONSUMER_NAME": "messages-rolling", "CHAT_MESSAGE_RATE": "1000", "CHAT_MESSAGE_BURST": "1000",
            "CHAT_PING_INTERVAL": "2s", "CHAT_PING_TIMEOUT": "5s", "CHAT_SHUTDOWN_GRACE": "5s",
        ]
        // Fixed ports, so a restarted gateway comes back where clients look for it.
        let gatewayPorts = try [freePort(), freePort()]
        let services: [(name: String, extra: [String: String])] = [
            ("chat-messages", [:]), ("chat-presence", [:]), ("chat-retention", [:]),
            ("chat-gateway", ["CHAT_GATEWAY_ID": "gw-a", "CHAT_HTTP_PORT": String(gatewayPorts[0])]),
            ("chat-gateway", ["CHAT_GATEWAY_ID": "gw-b", "CHAT_HTTP_PORT": String(gatewayPorts[1])]),
        ]
        let running = Mutex<[Int: (ChildProcess, URL)]>([:])
        defer {
            for (process, log) in running.withLock({ Array($0.values) }) {
                process.signal(SIGKILL)
                try? FileManager.default.removeItem(at: log)
            }
        }
        func start(_ index: Int) async throws {
            let (name, extra) = services[index]
            let (process, log) = try launch(name, environment: environment.merging(extra) { $1 })
            running.withLock { $0[index] = (process, log) }
            try #require(await eventually(timeout: .seconds(20)) { contents(log).contains("] ready") }, "\(name): \(contents(log))")
        }
        for index in services.indices { try await start(index) }

        let tokens = try await TwoUserStore.tokens(server: server, keys: keys, secret: secret)
        let sender = ResilientClient(ports: gatewayPorts, token: tokens.0)
        let receiver = ResilientClient(ports: gatewayPorts.reversed(), token: tokens.1)
        await sender.reconnect(after: gatewayPorts.count - 1)
        await receiver.reconnect(after: gatewayPorts.count - 1)

        let sending = Locked(true)
        let count = Locked(0)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await sender.receive() }
            group.addTask { await receiver.receive() }
            group.addTask {
                var number = 0
                while sending.withLock({ $0 }) {
                    number += 1
                    await sender.send(number, to: "doctor@clinic.com")
                    count.withLock { $0 = number }
                    try await Task.sleep(for: .milliseconds(10))
                }
            }
            try await Task.sleep(for: .seconds(1))
            for index in services.indices {
                let (process, log) = try #require(running.withLock { $0[index] })
                process.signal(SIGTERM)
                let status = await process.wait(timeout: .seconds(15))
                #expect(status == 0, "\(services[index].name) did not stop cleanly: \(contents(log).suffix(2000))")
                if services[index].name == "chat-gateway" {
                    #expect(contents(log).contains("drained"), "\(contents(log).suffix(2000))")
                }
                try? FileManager.default.removeItem(at: log)
                try await start(index)
                try await Task.sleep(for: .milliseconds(700))
            }
            sending.withLock { $0 = false }
            // Whatever a restart left unconfirmed is sent again, as a client would, until all are confirmed.
            let allConfirmed = await eventually(timeout: .seconds(30), every: .milliseconds(500)) {
                await sender.retryUnconfirmed()
                return sender.state.withLock { s in s.sent.keys.allSatisfy { s.confirmed[$0] != nil } }
            }
            #expect(allConfirmed, "unconfirmed: \(sender.state.withLock { s in s.sent.keys.filter { s.confirmed[$0] == nil }.sorted().prefix(10) })")
            let confirmedIDs = Set(sender.state.withLock { $0.confirmed.values })
            let delivered = await eventually(timeout: .seconds(20)) { confirmedIDs.isSubset(of: Set(receiver.state.withLock { $0.received.keys })) }
            #expect(delivered, "missing at the receiver: \(confirmedIDs.subtracting(receiver.state.withLock { $0.received.keys }).count)")
            group.cancelAll()
        }

        let sent = count.withLock { $0 }
        let (senderState, receiverState) = (sender.state.withLock { $0 }, receiver.state.withLock { $0 })
        #expect(sent >= 100, "the sender managed only \(sent) sends")
        // Sessions: the first one, then a move for each restart of the gateway holding it
        // (the sender starts on gateway A, the receiver on B).
        #expect(senderState.reconnects >= 3, "the sender should have moved twice: \(senderState.reconnects) sessions")
        #expect(receiverState.reconnects >= 2, "the receiver should have moved once: \(receiverState.reconnects) sessions")
        // Stored exactly once each: one row per client id, and every confirmed id is a row.
        var readOnly = Configuration()
        readOnly.readonly = true
        let rows = try DatabaseQueue(path: database, configuration: readOnly).read { db in
            try Row.fetchAll(db, sql: "SELECT id, client_id FROM messages WHERE sender_email = 'admin@clinic.com'")
        }
        let stored = Dictionary(rows.map { (($0["client_id"] as String?) ?? "", $0["id"] as String) }, uniquingKeysWith: { first, _ in first })
        #expect(rows.count == sent, "rows \(rows.count), sends \(sent)")
        #expect(stored.count == rows.count, "a client id was stored twice")
        for (clientID, id) in senderState.confirmed where stored[clientID] != id {
            Issue.record("confirmed \(clientID) as \(id), stored as \(stored[clientID] ?? "nothing")")
        }
        // Nothing delivered that was not stored.
        #expect(Set(receiverState.received.keys).isSubset(of: Set(stored.values)))
        print("rolling restart: \(sent) sends, \(senderState.retried) resent after reconnects, \(senderState.reconnects)/\(receiverState.reconnects) sessions, errors \(Dictionary(grouping: senderState.errors, by: { $0 }).mapValues(\.count))")
    }
}

/// A value shared with child tasks.
final class Locked<Value: Sendable>: Sendable {
    private let mutex: Mutex<Value>
    init(_ value: Value) { mutex = Mutex(value) }
    func withLock<R: Sendable>(_ body: (inout Value) -> R) -> R { mutex.withLock { body(&$0) } }
}

/// A TCP port nothing listens on right now.
func freePort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = 0
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
    }
    guard bound else { throw ChatError(.internal, "no free port") }
    return Int(UInt16(bigEndian: address.sin_port))
}
