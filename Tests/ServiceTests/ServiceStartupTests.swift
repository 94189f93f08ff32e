import ChatCore
import ChatTesting
import Foundation
import Gateway
import Logging
import MessageStore
import Presence
import RedisClient
import Retention
import ServiceLifecycle
import Testing

@Suite("Services start against a real redis-server", .redisServer)
struct ServiceStartupTests {
    func runtime(_ server: RedisServer, _ keys: RedisKeys) throws -> ChatRuntime {
        var configuration = try ChatConfiguration(environment: ["CHAT_REDIS_URL": server.url, "CHAT_GATEWAY_ID": "gw-test", "CHAT_HTTP_PORT": "0"])
        configuration.redisPrefix = keys.prefix
        return ChatRuntime(configuration: configuration, redis: RedisClient(configuration: configuration.redis), logger: Logger(label: "test"))
    }

    @Test("messages, presence and retention each create their consumer group on their stream")
    func consumerGroups() async throws {
        let server = try RedisServer.required()
        let keys = uniqueKeys()
        let rt = try runtime(server, keys)
        let subscriber = RedisSubscriber(configuration: rt.configuration.redis)
        let store = try MessageStore.inMemory()
        try await withRunning(rt.redis) { _ in
            try await withThrowingDiscardingTaskGroup { group in
                group.addTask { try await subscriber.run() }
                group.addTask { try await MessagesService(runtime: rt, store: store, subscriber: subscriber, consumer: "m1").run() }
                let presenceSubscriber = RedisSubscriber(configuration: rt.configuration.redis)
                group.addTask { try await presenceSubscriber.run() }
                group.addTask { try await PresenceService(runtime: rt, subscriber: presenceSubscriber).run() }
                let retentionSubscriber = RedisSubscriber(configuration: rt.configuration.redis)
                group.addTask { try await retentionSubscriber.run() }
                group.addTask { try await RetentionService(runtime: rt, subscriber: retentionSubscriber).run() }
                let expected = [(keys.commands, "messages"), (keys.presenceCommands, "presence"), (keys.events, "retention"), (keys.events, "presence")]
                try await server.withClient { redis in
                    for (stream, name) in expected {
                        let found = await eventually {
                            let groups = (try? await redis.xinfoGroups(stream)) ?? []
                            return groups.contains { $0["name"]?.string == name }
                        }
                        #expect(found, "group \(name) on \(stream)")
                    }
                }
                group.cancelAll()
            }
        }
    }

    @Test("the gateway subscribes to its reply channel gateway:{id}")
    func gatewayReplyChannel() async throws {
        let server = try RedisServer.required()
        let keys = uniqueKeys()
        let rt = try runtime(server, keys)
        let subscriber = RedisSubscriber(configuration: rt.configuration.redis)
        try await withRunning(rt.redis) { _ in
            try await withRunning(subscriber) { subscriber in
                try await withRunning(GatewayService(runtime: rt, subscriber: subscriber, jwtSecret: String(repeating: "k", count: 32))) { _ in
                    try await server.withClient { redis in
                        let subscribed = await eventually {
                            (try? await redis.send(["PUBSUB", "CHANNELS", keys.gateway("*")]).array?.compactMap(\.string)) == [keys.gateway("gw-test")]
                        }
                        #expect(subscribed)
                    }
                }
            }
        }
    }
}
