import NIOCore
import NIOPosix
import Testing
@testable import RedisClient

@Suite("Tasks on an event loop")
struct EventLoopExecutorTests {
    @Test("a task preferring an EventLoopExecutor runs on that loop, and is resumed there after waiting on another loop and on Task.sleep")
    func runsOnItsLoop() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        let loops = Array(group.makeIterator())
        let (mine, other) = (loops[0], loops[1])
        let observed = try await Task(executorPreference: EventLoopExecutor(mine)) { () async throws -> [Bool] in
            var onMine = [mine.inEventLoop]
            // Completed on the other loop: the continuation must come back to ours.
            let fromOther = try await other.submit { other.inEventLoop }.get()
            onMine.append(fromOther && mine.inEventLoop)
            try await Task.sleep(for: .milliseconds(2))
            onMine.append(mine.inEventLoop)
            return onMine
        }.value
        #expect(observed == [true, true, true])
        // Without the preference the same code runs on Swift's pool, not on the loop.
        let elsewhere = await Task { mine.inEventLoop || other.inEventLoop }.value
        #expect(!elsewhere)
        try await group.shutdownGracefully()
    }
}
