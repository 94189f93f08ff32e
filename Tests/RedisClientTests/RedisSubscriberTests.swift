import ChatTesting
import Foundation
import Testing
import RedisClient
import Synchronization

/// Collects a subscriber's events in the background so tests can wait for them.
final class EventRecorder: @unchecked Sendable {
    private let lock = NSLock()
    private var events: [RedisSubscriber.Event] = []
    private var task: Task<Void, Never>?

    init(_ subscriber: RedisSubscriber) {
        task = Task { [weak self] in
            for await event in subscriber.events { self?.append(event) }
        }
    }

    private func append(_ event: RedisSubscriber.Event) { lock.withLock { events.append(event) } }

    var all: [RedisSubscriber.Event] { lock.withLock { events } }

    var messages: [RedisPubSubMessage] {
        all.compactMap { if case .message(let m) = $0 { return m } else { return nil } }
    }

    var resubscriptions: Int { all.filter { $0 == .resubscribed }.count }

    deinit { task?.cancel() }
}

/// Runs a subscriber and a client against `server` for the duration of `body`.
func withSubscriber(_ server: RedisServer, _ body: @Sendable (RedisSubscriber, EventRecorder, RedisClient) async throws -> Void) async throws {
    let subscriber = RedisSubscriber(configuration: server.configuration)
    let recorder = EventRecorder(subscriber)
    try await withRunning(subscriber) { subscriber in
        try await server.withClient { redis in
            try await body(subscriber, recorder, redis)
        }
    }
}

@Suite("RedisSubscriber against a real redis-server", .redisServer)
struct RedisSubscriberTests {
    @Test("a published message reaches the subscriber with its channel and payload")
    func delivery() async throws {
        let keys = uniqueKeys()
        try await withSubscriber(RedisServer.required()) { subscriber, recorder, redis in
            try await subscriber.subscribe([keys.user("doctor@clinic.com"), keys.user("admin@clinic.com")])
            #expect(try await redis.publish("{\"event\":\"receive_message\"}", to: keys.user("doctor@clinic.com")) == 1)
            #expect(try await redis.publish("second", to: keys.user("admin@clinic.com")) == 1)
            #expect(await eventually { recorder.messages.count == 2 })
            #expect(recorder.messages.map(\.channel) == [keys.user("doctor@clinic.com"), keys.user("admin@clinic.com")])
            #expect(recorder.messages.map(\.text) == ["{\"event\":\"receive_message\"}", "second"])
            #expect(recorder.messages.first?.pattern == nil)

            try await subscriber.unsubscribe([keys.user("doctor@clinic.com")])
            #expect(try await redis.publish("gone", to: keys.user("doctor@clinic.com")) == 0)
            #expect(subscriber.channels == [keys.user("admin@clinic.com")])
        }
    }

    @Test("subscribing before the connection is up waits for it, and returns once the subscription is live")
    func subscribeBeforeRun() async throws {
        let server = try RedisServer.required()
        let keys = uniqueKeys()
        let subscriber = RedisSubscriber(configuration: server.configuration)
        let recorder = EventRecorder(subscriber)
        let early = Task { try await subscriber.subscribe([keys.user("early@clinic.com")]) }
        try await Task.sleep(for: .milliseconds(50))
        try await withRunning(subscriber) { _ in
            try await early.value
            try await server.withClient { redis in
                let receivers = try await redis.publish("hello", to: keys.user("early@clinic.com"))
                #expect(receivers == 1)
                #expect(await eventually { recorder.messages.map(\.text).contains("hello") })
                #expect(recorder.resubscriptions == 0)
            }
        }
    }

    @Test("pattern subscriptions receive matching channels with the pattern")
    func patterns() async throws {
        let keys = uniqueKeys()
        try await withSubscriber(RedisServer.required()) { subscriber, recorder, redis in
            try await subscriber.psubscribe([keys.user("*")])
            #expect(try await redis.publish("hi", to: keys.user("a@clinic.com")) == 1)
            #expect(await eventually { recorder.messages.count == 1 })
            #expect(recorder.messages.first?.pattern == keys.user("*"))
            #expect(recorder.messages.first?.channel == keys.user("a@clinic.com"))
            try await subscriber.punsubscribe([keys.user("*")])
            #expect(try await redis.publish("no", to: keys.user("a@clinic.com")) == 0)
        }
    }

    @Test("with a handler, every event goes to it in order, the loss and the resubscription too, and the stream stays empty", .redisServer)
    func handler() async throws {
        let keys = uniqueKeys()
        let channel = keys.user("doctor@clinic.com")
        let server = try RedisServer.required()
        let subscriber = RedisSubscriber(configuration: server.configuration)
        let recorder = EventRecorder(subscriber)
        let handled = Mutex<[String]>([])
        subscriber.handleEvents { event in
            let mark = switch event {
            case .message(let message): message.text
            case .connectionLost: "lost"
            case .resubscribed: "resubscribed"
            }
            handled.withLock { $0.append(mark) }
        }
        try await withRunning(subscriber) { subscriber in
            try await subscriber.subscribe([channel])
            try await server.withClient { redis in
                for index in 1...50 { _ = try await redis.publish("m\(index)", to: channel) }
                #expect(await eventually { handled.withLock { $0.count == 50 } })
                #expect(handled.withLock { $0 } == (1...50).map { "m\($0)" })
                #expect(try await redis.send(["CLIENT", "KILL", "TYPE", "pubsub"]).int ?? 0 >= 1)
                #expect(await eventually { handled.withLock { $0.contains("resubscribed") } })
                #expect(try await redis.publish("after", to: channel) == 1)
                #expect(await eventually { handled.withLock { $0.last == "after" } })
                #expect(Array(handled.withLock { $0 }.suffix(3)) == ["lost", "resubscribed", "after"])
            }
        }
        #expect(recorder.all.isEmpty)
    }

    @Test("a handler takes 50,000 messages in order, each call as direct as the first", .redisServer)
    func handlerAtVolume() async throws {
        // A closure kept bare in the generic lock gained two reabstraction thunks per read,
        // so the n-th event went through 2n of them: this test then stalls (quadratic) or
        // overflows the event loop's stack.
        let channel = uniqueKeys().user("doctor@clinic.com")
        let server = try RedisServer.required()
        let subscriber = RedisSubscriber(configuration: server.configuration)
        let received = Mutex<(count: Int, inOrder: Bool)>((0, true))
        subscriber.handleEvents { event in
            guard case .message(let message) = event else { return }
            received.withLock { state in
                if message.text != String(state.count) { state.inOrder = false }
                state.count += 1
            }
        }
        let total = 50_000
        try await withRunning(subscriber) { subscriber in
            try await subscriber.subscribe([channel])
            try await server.withClient { redis in
                for start in stride(from: 0, to: total, by: 1_000) {
                    _ = try await redis.pipeline((start..<start + 1_000).map { ["PUBLISH", channel, String($0)] })
                }
            }
            #expect(await eventually(timeout: .seconds(60)) { received.withLock { $0.count == total } })
        }
        #expect(received.withLock { $0.count } == total)
        #expect(received.withLock { $0.inOrder })
    }

    // Its own server: CLIENT KILL TYPE pubsub would cut the other tests' subscribers too.
    @Test("after CLIENT KILL TYPE pubsub the subscriber resubscribes by itself and receives again", .redisServer)
    func resubscribesAfterKill() async throws {
        let keys = uniqueKeys()
        let channel = keys.user("doctor@clinic.com")
        try await withSubscriber(RedisServer.required()) { subscriber, recorder, redis in
            try await subscriber.subscribe([channel])
            try await subscriber.psubscribe([keys.gateway("*")])
            #expect(try await redis.send(["CLIENT", "KILL", "TYPE", "pubsub"]).int ?? 0 >= 1)
            #expect(await eventually { recorder.resubscriptions >= 1 })
            #expect(try await redis.publish("after-kill", to: channel) == 1)
            #expect(try await redis.publish("reply", to: keys.gateway("gw-1")) == 1)
            #expect(await eventually { recorder.messages.count == 2 })
            #expect(recorder.messages.map(\.text) == ["after-kill", "reply"])
            // The loss is announced once, before anything from the new connection.
            let marks = recorder.all.map { event -> String in
                switch event {
                case .message(let message): message.text
                case .connectionLost: "lost"
                case .resubscribed: "resubscribed"
                }
            }
            #expect(marks.filter { $0 == "lost" }.count == 1)
            #expect(marks.firstIndex(of: "lost")! < marks.firstIndex(of: "resubscribed")!)
            #expect(marks.firstIndex(of: "lost")! < marks.firstIndex(of: "after-kill")!)
        }
    }
}
