import ChatCore
import Operations
import Presence
import RedisClient

await ServiceMain.run("chat-presence", adminPort: 9092) { runtime in
    var configuration = runtime.configuration.redis
    configuration.clientName = "chat-presence-subscriber"
    let subscriber = RedisSubscriber(configuration: configuration, logger: runtime.logger)
    return [subscriber, PresenceService(runtime: runtime, subscriber: subscriber)]
}
