import ChatCore
import Foundation
import ServiceLifecycle

/// Runs `service` in the background for the duration of `body`, then cancels it and waits for it.
public func withRunning<S: Service, T: Sendable>(_ service: S, _ body: @Sendable (S) async throws -> T) async throws -> T {
    try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask { try await service.run() }
        do {
            let result = try await body(service)
            group.cancelAll()
            try? await group.waitForAll()
            return result
        } catch {
            group.cancelAll()
            try? await group.waitForAll()
            throw error
        }
    }
}

/// Key and channel names under a fresh prefix, so tests sharing one Redis never see each other's data.
public func uniqueKeys(_ label: String = "test") -> RedisKeys {
    RedisKeys(prefix: "\(label)-\(UUID().uuidString.prefix(8)):")
}

/// Polls `condition` until it holds or `timeout` passes; returns whether it held.
public func eventually(timeout: Duration = .seconds(10), every interval: Duration = .milliseconds(20), _ condition: @Sendable () async throws -> Bool) async rethrows -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if try await condition() { return true }
        try? await Task.sleep(for: interval)
    }
    return try await condition()
}

/// Runs `operation`, throwing ``TimeoutError`` if it takes longer than `timeout`.
public func withTimeout<T: Sendable>(_ timeout: Duration, _ operation: @escaping @Sendable () async throws -> T) async throws -> T {
    try await withThrowingTaskGroup(of: T.self) { group in
        group.addTask { try await operation() }
        group.addTask {
            try await Task.sleep(for: timeout)
            throw TimeoutError(timeout: timeout)
        }
        defer { group.cancelAll() }
        return try await group.next()!
    }
}

/// An operation did not finish in time.
public struct TimeoutError: Error, CustomStringConvertible {
    public let timeout: Duration
    public var description: String { "timed out after \(timeout)" }
}
