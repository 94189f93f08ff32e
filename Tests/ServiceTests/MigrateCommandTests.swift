import ChatTesting
import Foundation
import GRDB
@testable import MessageStore
import Testing

@Suite("chat-messages migrate")
struct MigrateCommandTests {
    /// Runs `chat-messages` with `arguments` against the file at `path`; its exit status and output.
    func run(_ arguments: [String], path: String) async throws -> (Int32?, String) {
        let log = FileManager.default.temporaryDirectory.appendingPathComponent("migrate-\(UUID().uuidString.prefix(8)).log")
        defer { try? FileManager.default.removeItem(at: log) }
        let environment = ProcessInfo.processInfo.environment.merging(["CHAT_DB_PATH": path, "CHAT_REDIS_URL": "redis://127.0.0.1:1"]) { $1 }
        let process = try ChildProcess(executable: try executablePath("chat-messages"), arguments: arguments, environment: environment, outputPath: log.path)
        let status = await process.wait(timeout: .seconds(60))
        if status == nil { process.signal(SIGKILL) }
        return (status, contents(log))
    }

    @Test("migrates a v4 file before the service starts, without Redis: --pending lists (all of them for no file) and changes nothing, the run keeps the rows and empties the WAL, a second run has nothing to do")
    func migratesAnOldFile() async throws {
        let path = temporaryDatabasePath("migrate")
        defer { removeDatabase(at: path) }
        // No file yet: it lists every migration and creates nothing.
        let (none, fresh) = try await run(["migrate", "--pending"], path: path)
        #expect(none == 0 && fresh.contains("does not exist yet; migrating creates it with \(Schema.migrator.migrations.count) migration(s)"), "\(fresh)")
        #expect(!FileManager.default.fileExists(atPath: path))
        let now = Date().epochMilliseconds
        let old = try DatabaseQueue(path: path)
        try Schema.migrator.migrate(old, upTo: "v4: purge steps")
        try await old.write { db in
            try db.execute(sql: "INSERT INTO users (email, name, role, password_hash, created_at) VALUES ('a@clinic.com', 'A', 'doctor', 'x', ?)", arguments: [now])
            try db.execute(sql: "INSERT INTO conversations (id, kind, created_by, created_at, last_seq) VALUES ('c1', 'group', 'a@clinic.com', ?, 1)", arguments: [now])
            try db.execute(sql: """
                INSERT INTO messages (rowid, id, conversation_id, seq, sender_email, content, created_at, expires_at, client_id)
                VALUES (7, 'm1', 'c1', 1, 'a@clinic.com', 'bed 4 stable', ?, ?, 'c-1')
                """, arguments: [now, now + 86_400_000])
        }
        try old.close()
        let v5 = "v5: client ids unique per sender, client id first", v6 = "v6: applied entries keep their error or created conversation"
        let v7 = "v7: applied purges keep what they deleted", v8 = "v8: read marker versions", v9 = "v9: markers by conversation and version"
        let v10 = "v10: revoked tokens, session cutoffs, passwords to change"

        let (listed, listing) = try await run(["migrate", "--pending"], path: path)
        #expect(listed == 0, "\(listing)")
        #expect(listing.contains("lacks 6 migration(s)") && [v5, v6, v7, v8, v9, v10].allSatisfy { listing.contains("  \($0)") }, "\(listing)")
        #expect(try MessageStore.pendingMigrations(path: path) == [v5, v6, v7, v8, v9, v10])

        let (migrated, output) = try await run(["migrate"], path: path)
        #expect(migrated == 0, "\(output)")
        #expect(output.contains("applying 6 migration(s) to \(path):") && [v5, v6, v7, v8, v9, v10].allSatisfy { output.contains("  \($0)") } && output.contains("done in"), "\(output)")
        #expect(try MessageStore.pendingMigrations(path: path) == [])
        let migratedFile = try DatabaseQueue(path: path)
        try await migratedFile.read { db in
            #expect(try Row.fetchAll(db, sql: "SELECT rowid, id, content FROM messages").map { "\($0[0] as Int) \($0[1] as String) \($0[2] as String)" } == ["7 m1 bed 4 stable"])
            let unique = try String.fetchAll(db, sql: """
                SELECT group_concat(info.name, ',') FROM pragma_index_list('messages') AS list, pragma_index_info(list.name) AS info
                WHERE list."unique" = 1 GROUP BY list.name
                """)
            #expect(unique.contains("client_id,sender_email") && !unique.contains("sender_email,client_id"), "\(unique)")
            #expect(try String.fetchAll(db, sql: "SELECT name FROM pragma_table_info('applied_commands')") == ["entry_id", "applied_at", "message_id", "conversation_id", "error", "purged"])
            #expect(try String.fetchAll(db, sql: "SELECT name FROM pragma_table_info('participants')").last == "read_version")
        }
        try migratedFile.close()
        let wal = (try? FileManager.default.attributesOfItem(atPath: path + "-wal")[.size] as? Int) ?? 0
        #expect(wal == 0, "the WAL still holds \(wal) bytes")

        let (again, second) = try await run(["migrate"], path: path)
        #expect(again == 0 && second.contains("\(path) is up to date"), "\(second)")
    }

    @Test("refuses unknown arguments with the usage (exit 2), and a file that is not a database with its error (exit 1), leaving it as it was")
    func badArgumentsAndFiles() async throws {
        let path = temporaryDatabasePath("not-a-database")
        defer { removeDatabase(at: path) }
        let text = String(repeating: "not sqlite ", count: 1000)
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        for arguments in [["serve"], ["migrate", "--force"], ["migrate", "--pending", "--pending"]] {
            let (status, output) = try await run(arguments, path: path)
            #expect(status == 2, "\(arguments): \(output)")
            #expect(output == MigrateCommand.usage + "\n", "\(arguments)")
        }
        let (status, output) = try await run(["migrate"], path: path)
        #expect(status == 1, "\(output)")
        #expect(output.hasPrefix("chat-messages migrate: \(path): ") && output.contains("not a database"), "\(output)")
        #expect(try String(contentsOfFile: path, encoding: .utf8) == text)
    }
}
