import ChatCore
import Operations
import RedisClient
import Retention

await ServiceMain.run("chat-retention", adminPort: 9093) { runtime in
    var configuration = runtime.configuration.redis
    configuration.clientName = "chat-retention-replies"
    let subscriber = RedisSubscriber(configuration: configuration, logger: runtime.logger)
    return [subscriber, RetentionService(runtime: runtime, subscriber: subscriber)]
}
