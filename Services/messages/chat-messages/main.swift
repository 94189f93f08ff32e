import ChatCore
import Foundation
import MessageStore
import Operations
import RedisClient

// `chat-messages migrate [--pending]` migrates the database file and exits (docs/operations.md, Upgrades).
let arguments = Array(CommandLine.arguments.dropFirst())
if let first = arguments.first {
    guard first == "migrate" else {
        FileHandle.standardError.write(Data("\(MigrateCommand.usage)\n".utf8))
        exit(2)
    }
    exit(MigrateCommand.run(arguments: Array(arguments.dropFirst()), environment: ProcessInfo.processInfo.environment))
}

await ServiceMain.run("chat-messages", adminPort: 9091) { runtime in
    let configuration = runtime.configuration
    // The service opens (and migrates) the store at CHAT_DB_PATH once it holds the writer lease.
    var subscriberConfiguration = configuration.redis
    subscriberConfiguration.clientName = "chat-messages-queries"
    let subscriber = RedisSubscriber(configuration: subscriberConfiguration, logger: runtime.logger)
    return [subscriber, MessagesService(runtime: runtime, subscriber: subscriber, consumer: configuration.consumerName)]
}
