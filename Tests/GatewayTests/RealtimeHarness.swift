import ChatCore
import ChatTesting
import Foundation
import Gateway
import HummingbirdWSClient
import Logging
import MessageStore
import Presence
import NIOCore
import NIOSSL
import NIOWebSocket
import RedisClient
import Synchronization
import Testing

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// A real WebSocket client speaking Engine.IO/Socket.IO by hand, so tests see every packet.
/// It answers server pings unless told not to.
final class SocketTestClient: Sendable {
    private struct State {
        var received: [String] = []
        var outbound: WebSocketOutboundWriter?
        var closed = false
        var closeCode: WebSocketErrorCode?
    }

    private let state = Mutex(State())
    private let task = Mutex<Task<Void, Never>?>(nil)
    /// Running totals kept by `drainCount`.
    let counter = Mutex<[String: Int]>([:])
    let answersPings: Bool
    let port: Int

    private init(port: Int, answersPings: Bool) {
        self.port = port
        self.answersPings = answersPings
    }

    /// Opens a WebSocket to `/socket.io/` and waits for the Engine.IO open packet.
    static func open(port: Int, query: String = "EIO=4&transport=websocket", answersPings: Bool = true,
                     maxFrameSize: Int = 1 << 20, expectOpenPacket: Bool = true, tls: TLSConfiguration? = nil) async throws -> SocketTestClient {
        let client = SocketTestClient(port: port, answersPings: answersPings)
        let task = Task {
            do {
                let frame = try await WebSocketClient.connect(
                    url: tls == nil ? "ws://127.0.0.1:\(port)/socket.io/?\(query)" : "wss://localhost:\(port)/socket.io/?\(query)", configuration: .init(maxFrameSize: maxFrameSize),
                    tlsConfiguration: tls, logger: Logger(label: "ws-test")
                ) { inbound, outbound, _ in
                    client.state.withLock { $0.outbound = outbound }
                    for try await message in inbound.messages(maxSize: 1 << 24) {
                        guard case .text(let text) = message else { continue }
                        if text == "2", client.answersPings { try await outbound.write(.text("3")) }
                        client.state.withLock { $0.received.append(text) }
                    }
                }
                client.state.withLock {
                    $0.closed = true
                    $0.closeCode = frame?.closeCode
                }
            } catch {
                client.state.withLock { $0.closed = true }
            }
        }
        client.task.withLock { $0 = task }
        guard await eventually({ client.state.withLock { $0.outbound != nil || $0.closed } }), !client.isClosed else {
            throw ChatError(.unavailable, "the WebSocket did not open")
        }
        if expectOpenPacket { _ = try await client.next { $0.hasPrefix("0{") } }
        return client
    }

    /// Opens a WebSocket and connects the default namespace with `token`; returns the socket id.
    static func connect(port: Int, token: String, since: [String: Int64]? = nil, tls: TLSConfiguration? = nil) async throws -> SocketTestClient {
        let client = try await open(port: port, tls: tls)
        var auth: [String: JSONValue] = ["token": .string(token)]
        if let since { auth["since"] = .object(since.mapValues { .number(Double($0)) }) }
        try await client.send("40" + JSONValue.object(auth).text)
        let reply = try await client.next { $0.hasPrefix("40") || $0.hasPrefix("44") }
        guard reply.hasPrefix("40{\"sid\"") else { throw ChatError(.unauthorized, "CONNECT refused: \(reply)") }
        return client
    }

    func send(_ text: String) async throws {
        guard let outbound = state.withLock({ $0.outbound }) else { throw ChatError(.unavailable, "not open") }
        try await outbound.write(.text(text))
    }

    /// Sends one text message in several frames (a first frame and continuations).
    func sendFragmented(_ parts: [String]) async throws {
        guard let outbound = state.withLock({ $0.outbound }) else { throw ChatError(.unavailable, "not open") }
        for (index, part) in parts.enumerated() {
            try await outbound.write(.custom(WebSocketFrame(fin: index == parts.count - 1, opcode: index == 0 ? .text : .continuation,
                                                            data: ByteBuffer(string: part))))
        }
    }

    func sendBinary(_ bytes: [UInt8]) async throws {
        guard let outbound = state.withLock({ $0.outbound }) else { throw ChatError(.unavailable, "not open") }
        try await outbound.write(.binary(ByteBuffer(bytes: bytes)))
    }

    /// Emits a Socket.IO event (`42[name,data]`, or `42<ack>[...]`).
    func emit(_ name: String, _ data: JSONValue, ack: Int? = nil) async throws {
        try await send("42" + (ack.map(String.init) ?? "") + JSONValue.array([.string(name), data]).text)
    }

    /// Emits with an acknowledgement id and returns the acknowledgement's argument.
    func call(_ name: String, _ data: JSONValue, ack: Int) async throws -> JSONValue {
        try await emit(name, data, ack: ack)
        let text = try await next { $0.hasPrefix("43\(ack)[") }
        guard case .array(let items)? = JSONValue(parsing: text.dropFirst(2 + String(ack).count)), let first = items.first else {
            throw ChatError(.internal, "bad ack \(text)")
        }
        return first
    }

    /// Takes the first received packet not taken yet that matches, waiting up to `timeout`.
    func next(timeout: Duration = .seconds(10), _ matches: @Sendable (String) -> Bool) async throws -> String {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            let found = state.withLock { s -> String? in
                guard let index = s.received.firstIndex(where: matches) else { return nil }
                return s.received.remove(at: index)
            }
            if let found { return found }
            try await Task.sleep(for: .milliseconds(10))
        }
        throw ChatError(.unavailable, "no matching packet within \(timeout); received: \(state.withLock { $0.received })")
    }

    /// The data of the next event called `name`.
    func event(_ name: String, timeout: Duration = .seconds(10)) async throws -> JSONValue {
        let prefix = "42[" + ChatJSON.text(name) + ","
        let text = try await next(timeout: timeout) { $0.hasPrefix(prefix) }
        guard case .array(let items)? = JSONValue(parsing: text.dropFirst(2)), items.count >= 2 else { throw ChatError(.internal, "bad event \(text)") }
        return items[1]
    }

    /// Every event called `name` received so far (taken).
    func drain(_ name: String) -> [JSONValue] {
        let prefix = "42[" + ChatJSON.text(name) + ","
        return state.withLock { s in
            defer { s.received.removeAll { $0.hasPrefix(prefix) } }
            return Self.data(of: s.received, prefix: prefix)
        }
    }

    /// Every event called `name` received so far, left in place.
    func events(_ name: String) -> [JSONValue] {
        let prefix = "42[" + ChatJSON.text(name) + ","
        return state.withLock { s in Self.data(of: s.received, prefix: prefix) }
    }

    /// The data of the packets that start with `prefix` (an event's).
    private static func data(of packets: [String], prefix: String) -> [JSONValue] {
        packets.filter { $0.hasPrefix(prefix) }.compactMap { text in
            guard case .array(let items)? = JSONValue(parsing: text.dropFirst(2)), items.count >= 2 else { return nil }
            return items[1]
        }
    }

    var isClosed: Bool { state.withLock { $0.closed } }
    var receivedSnapshot: [String] { state.withLock { $0.received } }
    var closeCode: WebSocketErrorCode? { state.withLock { $0.closeCode } }

    func waitClosed(timeout: Duration = .seconds(10)) async -> Bool {
        await eventually(timeout: timeout) { self.isClosed }
    }

    func close() async {
        if let outbound = state.withLock({ $0.outbound }) { try? await outbound.close(.normalClosure, reason: nil) }
        _ = await waitClosed(timeout: .seconds(3))
        task.withLock { $0 }?.cancel()
    }
}

/// The whole system in process: a real redis-server (the suites' shared one unless the
/// test passes its own), the messages service on a SQLite file, and `gateways` gateways
/// each listening on its own port.
struct RealtimeStack: Sendable {
    let ports: [Int]
    let redisURL: String
    let store: MessageStore
    let keys: RedisKeys
    let redis: RedisClient
    let tokens: TokenService
    let services: [GatewayService]
    let storeControl: StoreControl
    /// Starts and stops the presence service (running from the start when asked for).
    let presenceControl: StoreControl

    /// Logs in over real HTTP and returns the token.
    func login(_ email: String, gateway: Int = 0) async throws -> String {
        let (status, json) = try await http("POST", "/api/auth/login", gateway: gateway, body: ["email": email, "password": password(email)])
        guard status == 200, let token = json?["token"]?.stringValue else { throw ChatError(.unauthorized, "login \(email): \(status)") }
        return token
    }

    func http(_ method: String, _ path: String, gateway: Int = 0, token: String? = nil, body: [String: String]? = nil, raw: String? = nil) async throws -> (Int, JSONValue?) {
        let (status, data) = try await httpRaw(method, path, gateway: gateway, token: token, body: body.map { JSONValue.object($0.mapValues(JSONValue.string)).text } ?? raw)
        return (status, JSONValue(parsing: String(decoding: data, as: UTF8.self)))
    }

    func httpRaw(_ method: String, _ path: String, gateway: Int = 0, token: String? = nil, body: String? = nil) async throws -> (Int, Data) {
        var request = URLRequest(url: URL(string: "http://127.0.0.1:\(ports[gateway])\(path)")!)
        request.httpMethod = method
        if let token { request.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization") }
        if let body {
            request.httpBody = Data(body.utf8)
            request.setValue("application/json", forHTTPHeaderField: "Content-Type")
        }
        let (data, response) = try await URLSession.shared.dataIgnoringCancellation(for: request)
        return ((response as? HTTPURLResponse)?.statusCode ?? 0, data)
    }

    /// A token as login would issue it (without a bcrypt round per socket; login itself is tested over HTTP).
    func token(_ email: String) -> String {
        let (_, name, role) = cast.first { $0.email == email }!
        return tokens.issue(for: User(email: email, name: name, role: role, disabled: false)).token
    }

    /// Kills one gateway's pub/sub connection (only this stack's: tests share the redis-server).
    func killSubscriber(gateway: Int) async throws {
        let clients = try await redis.send(["CLIENT", "LIST"]).string ?? ""
        let name = "name=\(keys.prefix)gw-\(gateway + 1)-subscriber "
        let line = try #require(clients.split(separator: "\n").first { $0.contains(name) })
        let id = try #require(line.split(separator: " ").first { $0.hasPrefix("id=") }?.dropFirst(3))
        _ = try await redis.send(["CLIENT", "KILL", "ID", String(id)])
    }

    func connect(_ email: String, gateway: Int = 0, since: [String: Int64]? = nil) async throws -> SocketTestClient {
        try await SocketTestClient.connect(port: ports[gateway], token: token(email), since: since)
    }
}

/// Starts and stops the messages service inside a stack.
final class StoreControl: Sendable {
    private let start: @Sendable () -> Task<Void, Never>
    private let task = Mutex<Task<Void, Never>?>(nil)

    init(start: @escaping @Sendable () -> Task<Void, Never>) { self.start = start }

    func run() { task.withLock { if $0 == nil { $0 = start() } } }

    func stop() async {
        let running = task.withLock { t -> Task<Void, Never>? in
            defer { t = nil }
            return t
        }
        running?.cancel()
        await running?.value
    }
}

func withRealtimeStack(gateways count: Int = 1, storeRunning: Bool = true, presence: Bool = false, storeTimeout: Duration = .seconds(5),
                       engine: EngineConfiguration = EngineConfiguration(), environment: [String: String] = [:],
                       redisServer: RedisServer? = nil,
                       _ body: @Sendable (RealtimeStack) async throws -> Void) async throws {
    let server = try redisServer ?? RedisServer.required()
    let keys = uniqueKeys("rt")
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("rt-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: directory) }
    let store = try MessageStore.open(path: directory.appendingPathComponent("chat.sqlite").path, retention: .seconds(90 * 86400), bcryptCost: 4)
    for (email, name, role) in cast { _ = try store.createUser(email: email, name: name, role: role, password: password(email)) }
    let secret = String(repeating: "s", count: 32)
    var configured = try ChatConfiguration(environment: ["CHAT_REDIS_URL": server.url, "CHAT_JWT_SECRET": secret].merging(environment) { $1 })
    configured.redisPrefix = keys.prefix
    let base = configured
    let redis = RedisClient(configuration: base.redis)
    let tokens = TokenService(secret: secret, lifetime: base.tokenTTL, redis: redis, keys: keys)

    try await withRunning(redis) { redis in
        try await redis.waitUntilReady()
        let storeRuntime = ChatRuntime(configuration: base, redis: redis, logger: Logger(label: "messages"))
        let storeControl = StoreControl {
            Task {
                let subscriber = RedisSubscriber(configuration: base.redis)
                await withDiscardingTaskGroup { group in
                    group.addTask { try? await subscriber.run() }
                    group.addTask { try? await MessagesService(runtime: storeRuntime, store: store, subscriber: subscriber, consumer: "m1").run() }
                }
            }
        }
        let presenceControl = StoreControl {
            Task {
                let subscriber = RedisSubscriber(configuration: base.redis)
                await withDiscardingTaskGroup { group in
                    group.addTask { try? await subscriber.run() }
                    group.addTask { try? await PresenceService(runtime: storeRuntime, subscriber: subscriber).run() }
                }
            }
        }
        if presence { presenceControl.run() }
        if storeRunning {
            storeControl.run()
            _ = await eventually { (try? await redis.send(["PUBSUB", "NUMSUB", keys.storeQueries]).array?.last?.int) == 1 }
        } else {
            // A Redis the store has run on holds the whole auth state (gateways take no token without it).
            _ = try await redis.send(["SET", keys.authState, "restored (a store ran before the test)"])
        }
        var services: [GatewayService] = []
        var subscribers: [RedisSubscriber] = []
        let ports = Mutex<[Int: Int]>([:])
        for index in 0..<count {
            var configuration = base
            configuration.gatewayID = "gw-\(index + 1)"
            configuration.httpPort = 0
            var subscriberConfiguration = configuration.redis
            subscriberConfiguration.clientName = "\(keys.prefix)gw-\(index + 1)-subscriber"
            let subscriber = RedisSubscriber(configuration: subscriberConfiguration)
            let runtime = ChatRuntime(configuration: configuration, redis: redis, logger: Logger(label: "gateway"))
            subscribers.append(subscriber)
            services.append(GatewayService(runtime: runtime, subscriber: subscriber, jwtSecret: secret, engineConfiguration: engine,
                                           storeTimeout: storeTimeout) { port in
                ports.withLock { $0[index] = port }
            })
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for (service, subscriber) in zip(services, subscribers) {
                group.addTask { try await subscriber.run() }
                group.addTask { try await service.run() }
            }
            #expect(await eventually { ports.withLock { $0.count } == count })
            let stack = RealtimeStack(ports: (0..<count).map { i in ports.withLock { $0[i]! } }, redisURL: server.url, store: store, keys: keys, redis: redis,
                                      tokens: tokens, services: services, storeControl: storeControl,
                                      presenceControl: presenceControl)
            try await body(stack)
            group.cancelAll()
        }
        await presenceControl.stop()
        await storeControl.stop()
    }
}

/// A WebSocket client on a bare POSIX socket, for what the NIO client cannot do: end its
/// side of the connection with a FIN and no close frame (`finish()`), as a client whose
/// process ends, or that drops the socket as it is, does, and see whether the server then
/// closes its side (`waitForServerClose`).
final class RawWebSocket: Sendable {
    let fd: Int32

    private init(fd: Int32) { self.fd = fd }

    /// Connects to 127.0.0.1:`port`, upgrades `/socket.io/` and reads the handshake's answer.
    static func open(port: Int) throws -> RawWebSocket {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw ChatError(.unavailable, "socket() failed") }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else {
            Glibc.close(fd)
            throw ChatError(.unavailable, "connect() failed")
        }
        var timeout = timeval(tv_sec: 0, tv_usec: 200_000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let raw = RawWebSocket(fd: fd)
        try raw.write(Array(("GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                             + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").utf8))
        let answer = String(decoding: raw.read(until: { String(decoding: $0, as: UTF8.self).contains("\r\n\r\n") }), as: UTF8.self)
        guard answer.hasPrefix("HTTP/1.1 101") else { throw ChatError(.unavailable, "no upgrade: \(answer)") }
        return raw
    }

    /// A masked text frame, as clients send them.
    func sendText(_ text: String) throws {
        let payload = Array(text.utf8)
        var frame: [UInt8] = [0x81]
        if payload.count < 126 {
            frame.append(0x80 | UInt8(payload.count))
        } else {
            precondition(payload.count < 1 << 16)
            frame += [0x80 | 126, UInt8(payload.count >> 8), UInt8(payload.count & 0xFF)]
        }
        let mask: [UInt8] = [0x21, 0x43, 0x65, 0x87]
        frame += mask
        frame += payload.enumerated().map { $0.element ^ mask[$0.offset % 4] }
        try write(frame)
    }

    /// Bytes read until `done` says they are enough, the peer closes, or 10 s pass.
    func read(until done: ([UInt8]) -> Bool) -> [UInt8] {
        var bytes: [UInt8] = []
        let deadline = ContinuousClock.now + .seconds(10)
        var buffer = [UInt8](repeating: 0, count: 4096)
        while !done(bytes), ContinuousClock.now < deadline {
            let count = recv(fd, &buffer, buffer.count, 0)
            if count == 0 { break }
            if count > 0 { bytes += buffer[..<count] }
        }
        return bytes
    }

    /// Ends this side with a FIN (no close frame); reading still works.
    func finish() { shutdown(fd, Int32(SHUT_WR)) }

    /// True once the server closed its side (a read finds the end), within `timeout`.
    func waitForServerClose(timeout: Duration) -> Bool {
        let deadline = ContinuousClock.now + timeout
        var buffer = [UInt8](repeating: 0, count: 4096)
        while ContinuousClock.now < deadline {
            let count = recv(fd, &buffer, buffer.count, 0)
            if count == 0 { return true }
            if count < 0, errno != EAGAIN, errno != EWOULDBLOCK, errno != EINTR { return true }
        }
        return false
    }

    func close() { Glibc.close(fd) }

    private func write(_ bytes: [UInt8]) throws {
        var sent = 0
        while sent < bytes.count {
            let count = bytes[sent...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard count > 0 else { throw ChatError(.unavailable, "send() failed") }
            sent += count
        }
    }
}
