import ChatTesting
import RedisClient
import Foundation

let server = try await RedisServer.start()
FileHandle.standardError.write(Data(("started \(server.port)" + "\n").utf8))
try await server.withClient { redis in
    await withTaskGroup(of: Void.self) { g in
        for i in 0..<100 { g.addTask { _ = try? await redis.set("k\(i)", to: "v") } }
    }
    FileHandle.standardError.write(Data(("body done" + "\n").utf8))
}
FileHandle.standardError.write(Data(("client done" + "\n").utf8))
server.stop()
FileHandle.standardError.write(Data(("stopped" + "\n").utf8))
