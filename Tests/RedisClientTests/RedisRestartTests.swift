import ChatTesting
import Foundation
import Testing
import RedisClient

/// Counts outcomes of calls made while the server goes away and comes back.
final class Outcomes: @unchecked Sendable {
    private let lock = NSLock()
    private(set) var successes = 0
    private(set) var connectionErrors = 0
    private(set) var otherErrors: [String] = []
    private var stopped = false

    func record(_ result: Result<Void, any Error>) {
        lock.withLock {
            switch result {
            case .success: successes += 1
            case .failure(let error as RedisConnectionError) where error.code != .notRunning: connectionErrors += 1
            case .failure(let error): otherErrors.append("\(error)")
            }
        }
    }

    var snapshot: (successes: Int, connectionErrors: Int, otherErrors: [String]) { lock.withLock { (successes, connectionErrors, otherErrors) } }
    var isStopped: Bool { lock.withLock { stopped } }
    func stop() { lock.withLock { stopped = true } }
}

@Suite("Redis restarts under traffic")
struct RedisRestartTests {
    @Test("redis-server restarted mid-traffic: calls in flight fail with a connection error, later calls succeed, nothing hangs", arguments: [false, true])
    func restartMidTraffic(killed: Bool) async throws {
        let server = try await RedisServer.start()
        defer { server.stop() }
        let keys = uniqueKeys()
        try await withSubscriber(server) { subscriber, recorder, redis in
            try await subscriber.subscribe([keys.user("a@clinic.com")])
            let outcomes = Outcomes()
            let traffic = Task {
                await withTaskGroup(of: Void.self) { group in
                    for task in 0..<16 {
                        group.addTask {
                            while !outcomes.isStopped {
                                do {
                                    _ = try await redis.pipeline([["INCR", keys.prefix + "n\(task)"], ["PING"]])
                                    outcomes.record(.success(()))
                                } catch {
                                    outcomes.record(.failure(error))
                                    try? await Task.sleep(for: .milliseconds(5))
                                }
                            }
                        }
                    }
                }
            }
            #expect(await eventually { outcomes.snapshot.successes > 200 })
            if killed { server.kill() } else { server.shutdown() }
            #expect(await eventually { outcomes.snapshot.connectionErrors > 0 })
            try await server.restart()
            let before = outcomes.snapshot.successes
            #expect(await eventually { outcomes.snapshot.successes > before + 200 })
            outcomes.stop()
            try await withTimeout(.seconds(10)) { await traffic.value }

            let final = outcomes.snapshot
            #expect(final.otherErrors == [])
            // The subscriber is back too: it resubscribed by itself.
            #expect(await eventually { recorder.resubscriptions >= 1 })
            #expect(await eventually { (try? await redis.publish("back", to: keys.user("a@clinic.com"))) == 1 })
            #expect(await eventually { recorder.messages.map(\.text).contains("back") })
        }
    }
}
