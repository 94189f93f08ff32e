import ChatCore
import Synchronization
import Testing

/// A wait that nothing but ``release()`` ends: it ignores cancellation, as a reply that
/// never comes on a half-open connection does.
private final class Stuck: Sendable {
    private let waiting = Mutex<[CheckedContinuation<Void, Never>]>([])
    private let released = Mutex(false)

    func wait() async {
        await withCheckedContinuation { continuation in
            let now = released.withLock { $0 }
            if now { continuation.resume() } else { waiting.withLock { $0.append(continuation) } }
        }
    }

    var waiters: Int { waiting.withLock { $0.count } }

    func release() {
        released.withLock { $0 = true }
        for continuation in waiting.withLock({ list in defer { list = [] }; return list }) { continuation.resume() }
    }
}

/// Polls `condition` every 10 ms for up to 10 s.
private func soon(_ condition: @Sendable () -> Bool) async -> Bool {
    for _ in 0..<1000 {
        if condition() { return true }
        try? await Task.sleep(for: .milliseconds(10))
    }
    return condition()
}

@Suite("withTimeout")
struct TimeoutTests {
    @Test("an operation that ignores cancellation does not hold its caller past the timeout: the caller gets TimeoutError and the operation is left to end by itself")
    func stuckOperation() async throws {
        let stuck = Stuck()
        defer { stuck.release() }
        let ended = Mutex<(any Error)??>(nil)
        let caller = Task {
            do {
                try await withTimeout(.milliseconds(100)) { await stuck.wait() }
                ended.withLock { $0 = .some(nil) }
            } catch {
                ended.withLock { $0 = .some(error) }
            }
        }
        defer { caller.cancel() }
        // Before, the timeout waited for the operation it had cancelled: the caller never returned.
        #expect(await soon { ended.withLock { $0 } != nil }, "the caller is still waiting for an operation that ignores cancellation")
        let outcome = ended.withLock { $0 }
        let timedOut: Bool
        if case .some(.some(let error)) = outcome { timedOut = error is TimeoutError } else { timedOut = false }
        #expect(timedOut, "\(String(describing: outcome))")
        #expect(stuck.waiters == 1, "the operation is still running, not awaited")
    }

    @Test("within the time, the operation's value or error comes back as it is")
    func valueAndError() async throws {
        #expect(try await withTimeout(.seconds(10)) { 42 } == 42)
        struct Refused: Error {}
        await #expect(throws: Refused.self) { try await withTimeout(.seconds(10)) { throw Refused() } }
        let slow = await #expect(throws: TimeoutError.self) { try await withTimeout(.milliseconds(50)) { try await Task.sleep(for: .seconds(30)) } }
        #expect(slow?.description == "timed out after 0.05 seconds")
    }

    @Test("a cancelled caller gets CancellationError at once, and the operation is cancelled")
    func callerCancelled() async throws {
        let sawCancellation = Mutex(false)
        let started = Mutex(false)
        let caller = Task {
            try await withTimeout(.seconds(30)) {
                started.withLock { $0 = true }
                do { try await Task.sleep(for: .seconds(30)) } catch { sawCancellation.withLock { $0 = true } }
            }
        }
        #expect(await soon { started.withLock { $0 } })
        caller.cancel()
        let result = await caller.result
        #expect(throws: CancellationError.self) { try result.get() }
        #expect(await soon { sawCancellation.withLock { $0 } }, "the operation was not cancelled")

        // Cancelled before it starts: the same, and the operation does not run at all.
        let ran = Mutex(false)
        let early = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            return try await withTimeout(.seconds(30)) { ran.withLock { $0 = true } }
        }
        let earlyResult = await early.result
        #expect(throws: CancellationError.self) { try earlyResult.get() }
        try await Task.sleep(for: .milliseconds(100))
        #expect(!ran.withLock { $0 })
    }
}
