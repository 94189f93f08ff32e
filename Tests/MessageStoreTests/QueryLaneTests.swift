import ChatTesting
import Dispatch
import Foundation
import Testing
@testable import MessageStore

/// The order in which the lane ran the queries.
private final class RunOrder: @unchecked Sendable {
    private let lock = NSLock()
    private var ran: [Int] = []
    func append(_ n: Int) { lock.withLock { ran.append(n) } }
    var values: [Int] { lock.withLock { ran } }
}

@Suite("QueryLane")
struct QueryLaneTests {
    @Test("queries run `width` at a time; beyond the backlog one is refused at once, and every admitted one runs")
    func widthAndBacklog() async throws {
        let lane = QueryLane(width: 1, backlog: 2)
        let gate = DispatchSemaphore(value: 0)
        let order = RunOrder()
        // The first holds the lane's only thread until the gate opens; two more wait.
        let first = Task { await lane.run { gate.wait(); order.append(1); return 1 } }
        #expect(await eventually { lane.occupied == 1 })
        let second = Task { await lane.run { order.append(2); return 2 } }
        #expect(await eventually { lane.occupied == 2 })
        let third = Task { await lane.run { order.append(3); return 3 } }
        #expect(await eventually { lane.occupied == 3 })

        // Full: refused without waiting, and never run.
        let refused = await lane.run { order.append(4); return 4 }
        #expect(refused == nil)
        #expect(order.values.isEmpty)

        gate.signal()
        let results = [await first.value, await second.value, await third.value]
        #expect(results == [1, 2, 3])
        #expect(order.values == [1, 2, 3])
        #expect(lane.occupied == 0)
        // Room again.
        let again = await lane.run { 5 }
        #expect(again == 5)
    }
}
