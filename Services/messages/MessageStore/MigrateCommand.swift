import ChatCore
import Foundation
import RedisClient

/// `chat-messages migrate`: brings the database file (`CHAT_DB_PATH`) to the current schema
/// and exits, so a long migration (v5 rebuilds the messages table, about 40 s per million
/// messages) runs on its own before the service starts, with no probe or start timeout
/// waiting on it. `chat-messages migrate --pending` lists what it would apply and changes
/// nothing. The service still migrates on start whatever this has not done.
public enum MigrateCommand {
    public static let usage = "usage: chat-messages [migrate [--pending]]"

    /// Exit status: 0 done (or, with `--pending`, listed); 1 a migration failed (nothing of
    /// the failed one is kept); 2 bad arguments or configuration.
    public static func run(arguments: [String], environment: [String: String],
                           output: (String) -> Void = { print($0) },
                           errors: (String) -> Void = { FileHandle.standardError.write(Data("\($0)\n".utf8)) }) -> Int32 {
        let name = "chat-messages migrate"
        guard arguments.count <= 1, arguments.allSatisfy({ $0 == "--pending" }) else {
            errors(usage)
            return 2
        }
        let path: String
        do {
            path = try ChatConfiguration(environment: environment).databasePath
        } catch {
            errors("\(name): \(error)")
            return 2
        }
        do {
            let exists = FileManager.default.fileExists(atPath: path)
            let pending = try MessageStore.pendingMigrations(path: path)
            let listing = arguments == ["--pending"]
            guard !pending.isEmpty else {
                output("\(name): \(path) is up to date")
                return 0
            }
            output(!listing ? "\(name): applying \(pending.count) migration(s) to \(path):"
                : exists ? "\(name): \(path) lacks \(pending.count) migration(s):"
                : "\(name): \(path) does not exist yet; migrating creates it with \(pending.count) migration(s):")
            for migration in pending { output("  \(migration)") }
            if listing { return 0 }
            let start = ContinuousClock.now
            try MessageStore.migrate(path: path)
            let elapsed = ContinuousClock.now - start
            output("\(name): done in \(String(format: "%.1f", Double(elapsed.milliseconds) / 1000)) s")
            return 0
        } catch {
            errors("\(name): \(path): \(error)")
            return 1
        }
    }
}
