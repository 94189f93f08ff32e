import ChatCore
import ChatTesting
import Foundation
import RedisClient
@testable import Gateway
import Testing

@Suite("The shared wait for the auth state", .redisServer)
struct AuthStateWatchTests {
    @Test("waits end true when the key is put back, false at their deadline while it is not; back to back, each still sees it (a poll that ended is started again)")
    func waitsRoundAfterRound() async throws {
        let key = uniqueKeys("watch").authState
        try await RedisServer.required().withClient { redis in
            let watch = AuthStateWatch()
            _ = try await redis.send(["DEL", key])
            #expect(await watch.waitUntilWhole(redis: redis, key: key, deadline: .now + .milliseconds(300)) == false)
            for round in 0..<10 {
                _ = try await redis.send(["DEL", key])
                async let whole = watch.waitUntilWhole(redis: redis, key: key, deadline: .now + .seconds(5))
                try await Task.sleep(for: .milliseconds(30))
                _ = try await redis.send(["SET", key, "restored (round \(round))"])
                #expect(await whole, "round \(round)")
                // Right after: the key is whole, and a check that read it missing a moment ago still gets through.
                #expect(await watch.waitUntilWhole(redis: redis, key: key, deadline: .now + .seconds(5)), "again, round \(round)")
            }
            _ = try await redis.send(["SET", key, "pending"])
            #expect(await watch.waitUntilWhole(redis: redis, key: key, deadline: .now + .milliseconds(300)) == false, "pending is not whole")
        }
    }
}
