import ChatCore
import Foundation
import Gateway
import Operations
import RedisClient

await ServiceMain.run("chat-gateway", adminPort: nil) { runtime in
    guard let secret = runtime.configuration.jwtSecret, secret.count >= 32 else {
        FileHandle.standardError.write(Data("chat-gateway: CHAT_JWT_SECRET: expected a secret of at least 32 characters (it signs access tokens; every gateway needs the same one)\n".utf8))
        exit(2)
    }
    do {
        try runtime.configuration.checkTransportSecurity()
        _ = try GatewayService.tlsConfiguration(runtime.configuration)
    } catch {
        FileHandle.standardError.write(Data("chat-gateway: \(error)\n".utf8))
        exit(2)
    }
    var configuration = runtime.configuration.redis
    configuration.clientName = "chat-gateway-subscriber"
    let subscriber = RedisSubscriber(configuration: configuration, logger: runtime.logger)
    return [subscriber, GatewayService(runtime: runtime, subscriber: subscriber, jwtSecret: secret)]
}
