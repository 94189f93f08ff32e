import Foundation
import Synchronization

/// Where the store's queries run: on threads of their own, `width` at a time, with at most
/// `backlog` more waiting. Queries are synchronous SQLite reads (and a bcrypt check for a
/// login, tens of milliseconds); run on Swift's cooperative pool, which has one thread
/// per core, two of them would hold every thread and stall the command processor's sends
/// with them. A query that finds the backlog full is refused at once: the gateway would
/// give up on it before its turn came.
final class QueryLane: Sendable {
    private let operations: OperationQueue
    private let waiting = Mutex(0)
    let backlog: Int

    init(width: Int = 4, backlog: Int = 1000) {
        let operations = OperationQueue()
        operations.name = "store-queries"
        operations.maxConcurrentOperationCount = max(1, width)
        self.operations = operations
        self.backlog = max(0, backlog)
    }

    /// Queries running or waiting.
    var occupied: Int { waiting.withLock { $0 } }

    /// Runs `body` in its turn and returns its result, or nil at once if `backlog` queries
    /// are already waiting or running beyond the lane's width.
    func run<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T? {
        let admitted = waiting.withLock { count in
            guard count < operations.maxConcurrentOperationCount + backlog else { return false }
            count += 1
            return true
        }
        guard admitted else { return nil }
        return await withCheckedContinuation { continuation in
            operations.addOperation { [self] in
                let result = body()
                waiting.withLock { $0 -= 1 }
                continuation.resume(returning: result)
            }
        }
    }
}
