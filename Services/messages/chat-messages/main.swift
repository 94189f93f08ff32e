import ChatCore
import Foundation
import MessageStore
import Operations
import RedisClient

await ServiceMain.run("chat-messages", adminPort: 9091) { runtime in
    let configuration = runtime.configuration
    let store = try MessageStore.open(path: configuration.databasePath, retention: configuration.retention)
    var subscriberConfiguration = configuration.redis
    subscriberConfiguration.clientName = "chat-messages-queries"
    let subscriber = RedisSubscriber(configuration: subscriberConfiguration, logger: runtime.logger)
    return [subscriber, MessagesService(runtime: runtime, store: store, subscriber: subscriber, consumer: configuration.consumerName)]
}
