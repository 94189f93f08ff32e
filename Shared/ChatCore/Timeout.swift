import Foundation
import Synchronization

/// Runs `operation`, throwing ``TimeoutError`` if it takes longer than `timeout`.
///
/// On a timeout (or when the caller is cancelled) the operation is cancelled and left to
/// end by itself: the caller does not wait for it. An operation that ignores cancellation
/// (a reply that never comes on a half-open connection, a task's `value`) therefore
/// cannot hold its caller past the timeout, as it did while this waited for it in a task
/// group.
public func withTimeout<T: Sendable>(_ timeout: Duration, _ operation: @escaping @Sendable () async throws -> T) async throws -> T {
    let outcome = FirstOutcome<T>()
    return try await withTaskCancellationHandler {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
            // Already cancelled: answered, and the operation never starts.
            guard outcome.start(continuation) else { return }
            let work = Task {
                do { outcome.finish(.success(try await operation())) } catch { outcome.finish(.failure(error)) }
            }
            let timer = Task {
                try? await Task.sleep(for: timeout)
                outcome.finish(.failure(TimeoutError(timeout: timeout)))
            }
            outcome.onFinish { work.cancel(); timer.cancel() }
        }
    } onCancel: {
        outcome.finish(.failure(CancellationError()))
    }
}

/// The first of an operation's result, its timeout or its caller's cancellation, handed to
/// the waiting caller once.
private final class FirstOutcome<T: Sendable>: Sendable {
    private struct State {
        var continuation: CheckedContinuation<T, any Error>?
        /// Came before the continuation was there (a cancellation before the start).
        var early: Result<T, any Error>?
        var finished = false
        var cleanup: (@Sendable () -> Void)?
    }
    private let state = Mutex(State())

    /// Hands over the caller's continuation: `false` if the outcome came first (it is resumed with it).
    func start(_ continuation: CheckedContinuation<T, any Error>) -> Bool {
        let early = state.withLock { state -> Result<T, any Error>? in
            guard let early = state.early else {
                state.continuation = continuation
                return nil
            }
            return early
        }
        guard let early else { return true }
        continuation.resume(with: early)
        return false
    }

    /// Runs `cleanup` once the outcome is known (at once if it is already).
    func onFinish(_ cleanup: @escaping @Sendable () -> Void) {
        let now = state.withLock { state -> Bool in
            if state.finished { return true }
            state.cleanup = cleanup
            return false
        }
        if now { cleanup() }
    }

    func finish(_ result: Result<T, any Error>) {
        let (continuation, cleanup) = state.withLock { state -> (CheckedContinuation<T, any Error>?, (@Sendable () -> Void)?) in
            guard !state.finished else { return (nil, nil) }
            state.finished = true
            defer { state.continuation = nil; state.cleanup = nil }
            if state.continuation == nil { state.early = result }
            return (state.continuation, state.cleanup)
        }
        continuation?.resume(with: result)
        cleanup?()
    }
}

/// An operation did not finish in time.
public struct TimeoutError: Error, CustomStringConvertible {
    public let timeout: Duration
    public var description: String { "timed out after \(timeout)" }
}
