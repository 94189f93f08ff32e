import ChatCore
import ChatTesting
import Foundation
import Gateway
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import MessageStore
import NIOCore
import RedisClient
import Testing

let cast = DemoAccounts.all

func password(_ email: String) -> String { "password-\(email)" }

/// The gateway's router in process, with the messages service, Redis and SQLite all real.
struct Gateway: Sendable {
    let client: any TestClientProtocol
    let store: MessageStore
    let keys: RedisKeys
    let redis: RedisClient
    let tokens: TokenService
    let registered: [String]

    /// Sends a request; `body` is encoded as JSON unless it is already a String.
    func call(_ method: HTTPRequest.Method, _ uri: String, token: String? = nil, body: (any Encodable & Sendable)? = nil, raw: String? = nil) async throws -> (status: HTTPResponse.Status, json: Any?, headers: HTTPFields) {
        var headers: HTTPFields = [:]
        if let token { headers[.authorization] = "Bearer \(token)" }
        var buffer: ByteBuffer?
        if let raw { buffer = ByteBuffer(string: raw) }
        if let body { buffer = ByteBuffer(bytes: try ChatJSON.makeEncoder().encode(body)) }
        if buffer != nil { headers[.contentType] = "application/json" }
        return try await client.execute(uri: uri, method: method, headers: headers, body: buffer) { response in
            let bytes = Data(response.body.readableBytesView)
            return (response.status, bytes.isEmpty ? nil : try? JSONSerialization.jsonObject(with: bytes), response.headers)
        }
    }

    func login(_ email: String) async throws -> String {
        let response = try await call(.post, "/api/auth/login", body: ["email": email, "password": password(email)])
        return try #require((response.json as? [String: Any])?["token"] as? String, "login \(email): \(response)")
    }
}

/// Runs `body` against a fresh gateway; `storeRunning: false` leaves the messages service down.
func withGateway(storeRunning: Bool = true, storeTimeout: Duration = .seconds(5), _ body: @Sendable (Gateway) async throws -> Void) async throws {
    let server = try RedisServer.required()
    let keys = uniqueKeys("gw")
    let store = try MessageStore.inMemory()
    for (email, name, role) in cast { try store.createUser(email: email, name: name, role: role, password: password(email)) }
    var configuration = try ChatConfiguration(environment: ["CHAT_REDIS_URL": server.url, "CHAT_GATEWAY_ID": "gw-test"])
    configuration.redisPrefix = keys.prefix
    let redis = RedisClient(configuration: configuration.redis)
    let runtime = ChatRuntime(configuration: configuration, redis: redis, logger: Logger(label: "test"))
    let gatewaySubscriber = RedisSubscriber(configuration: configuration.redis)
    let storeSubscriber = RedisSubscriber(configuration: configuration.redis)
    let storeClient = StoreClient(redis: redis, keys: keys, gatewayID: "gw-test", timeout: storeTimeout)
    let tokens = TokenService(secret: String(repeating: "x", count: 32), lifetime: .seconds(3600), redis: redis, keys: keys)
    let api = RESTAPI(store: storeClient, tokens: tokens, redis: redis, keys: keys, logger: Logger(label: "test"))
    let registered = api.makeRouter().registered

    try await withRunning(redis) { redis in
        try await redis.waitUntilReady()
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await gatewaySubscriber.run() }
            group.addTask { await storeClient.pumpReplies(from: gatewaySubscriber) }
            if storeRunning {
                group.addTask { try await storeSubscriber.run() }
                group.addTask { try await MessagesService(runtime: runtime, store: store, subscriber: storeSubscriber, consumer: "m1").run() }
            }
            try await gatewaySubscriber.subscribe([storeClient.replyChannel])
            _ = await eventually { (try? await redis.send(["PUBSUB", "NUMSUB", storeClient.replyChannel]).array?.last?.int) == 1 }
            if storeRunning {
                _ = await eventually { (try? await redis.send(["PUBSUB", "NUMSUB", keys.storeQueries]).array?.last?.int) == 1 }
            } else {
                // A Redis the store has run on holds the whole auth state (gateways take no token without it).
                _ = try await redis.send(["SET", keys.authState, "restored (a store ran before the test)"])
            }
            let app = Application(router: api.makeRouter().router)
            try await app.test(.router) { client in
                try await body(Gateway(client: client, store: store, keys: keys, redis: redis, tokens: tokens, registered: registered))
            }
            group.cancelAll()
        }
    }
}
