import ChatCore
import Foundation
// Tests use the timeout the services use.
@_exported import func ChatCore.withTimeout
@_exported import struct ChatCore.TimeoutError
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


/// A fresh path for a SQLite file in the temporary directory (nothing is created there).
public func temporaryDatabasePath(_ label: String) -> String {
    FileManager.default.temporaryDirectory.appendingPathComponent("\(label)-\(UUID().uuidString.prefix(8)).sqlite").path
}

/// Removes a SQLite file with its `-wal` and `-shm` files, whichever exist.
public func removeDatabase(at path: String) {
    for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) }
}
