import ChatCore
import Gateway
import RedisClient

await ServiceMain.run("chat-gateway") { runtime in
    var configuration = runtime.configuration.redis
    configuration.clientName = "chat-gateway-subscriber"
    let subscriber = RedisSubscriber(configuration: configuration, logger: runtime.logger)
    return [subscriber, GatewayService(runtime: runtime, subscriber: subscriber)]
}
