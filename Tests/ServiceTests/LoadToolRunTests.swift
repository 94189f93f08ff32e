import ChatCore
import ChatTesting
import Foundation
import Testing

/// `chat-bench` against the real services (built executables, a real redis-server): its
/// workloads run to the end and their reports add up. The figures themselves are speed and
/// are not checked; the counts are.
@Suite("The load tool against the services", .redisServer)
struct LoadToolRunTests {
    /// Runs `chat-bench` with `arguments`; its exit status and standard output.
    func bench(_ arguments: [String], timeout: Duration = .seconds(120)) async throws -> (Int32?, String) {
        let output = FileManager.default.temporaryDirectory.appendingPathComponent("chat-bench-\(UUID().uuidString.prefix(8)).out")
        defer { try? FileManager.default.removeItem(at: output) }
        let process = try ChildProcess(executable: try executablePath("chat-bench"), arguments: arguments, outputPath: output.path)
        let status = await process.wait(timeout: timeout)
        if status == nil { process.signal(SIGKILL) }
        return (status, contents(output))
    }

    /// The value column of the report's row named `measure`.
    func row(_ report: String, _ measure: String) -> String? {
        report.split(separator: "\n").first { $0.hasPrefix("| \(measure) |") }
            .map { $0.split(separator: "|").map { $0.trimmingCharacters(in: .whitespaces) } }
            .flatMap { $0.count >= 2 ? $0[1] : nil }
    }

    /// "a / b / c" as numbers.
    func counts(_ text: String?) -> [Int] {
        (text ?? "").split(separator: "/").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
    }

    /// Every whole number in `text`, in order.
    func numbers(_ text: String?) -> [Int] {
        (text ?? "").split { !$0.isNumber }.compactMap { Int($0) }
    }

    @Test("pairs (closed and open loop), group (with and without page loads, with readers, with a reconnect herd) and churn: every send confirmed and delivered to each recipient, none lost, duplicated or out of order; the run folder's processes are reported")
    func workloads() async throws {
        let server = try RedisServer.required()
        let keys = uniqueKeys("bench")
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("bench-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let database = directory.appendingPathComponent("chat.sqlite").path
        let (seedStatus, seeded) = try await bench(["seed", "--database", database, "--users", "8"])
        try #require(seedStatus == 0, "\(seeded)")
        #expect(seeded.contains("8 users created"))

        let port = try freePort()
        let environment = [
            "CHAT_REDIS_URL": server.url, "CHAT_REDIS_PREFIX": keys.prefix, "CHAT_DB_PATH": database,
            "CHAT_JWT_SECRET": String(repeating: "b", count: 40), "CHAT_CONSUMER_NAME": "messages-bench",
            "CHAT_MESSAGE_RATE": "100000", "CHAT_MESSAGE_BURST": "100000", "CHAT_HTTP_PORT": String(port),
        ]
        var running: [(ChildProcess, URL)] = []
        defer {
            for (process, log) in running {
                process.signal(SIGKILL)
                try? FileManager.default.removeItem(at: log)
            }
        }
        for name in ["chat-messages", "chat-presence", "chat-gateway"] {
            let (process, log) = try launch(name, environment: environment)
            running.append((process, log))
            try #require(await eventually(timeout: .seconds(20)) { contents(log).contains("] ready") }, "\(name): \(contents(log))")
        }
        // The tool reports the processes its run folder's `pids` file names (as the launcher writes it).
        try (["chat-messages", "chat-presence", "chat-gateway"].enumerated().map { "\($1) \(running[$0].0.pid)" }.joined(separator: "\n") + "\n")
            .write(to: directory.appendingPathComponent("pids"), atomically: true, encoding: .utf8)
        // And reads the store's /metrics at the admin address its log in the run folder names.
        try FileManager.default.createDirectory(at: directory.appendingPathComponent("logs"), withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(at: directory.appendingPathComponent("logs/messages.log"), withDestinationURL: running[0].1)
        let common = ["--gateway", "http://127.0.0.1:\(port)", "--run-dir", directory.path]

        let (closedStatus, closed) = try await bench(["pairs", "--pairs", "3", "--messages", "40", "--window", "4"] + common)
        #expect(closedStatus == 0, "\(closed)")
        #expect(counts(row(closed, "sent / confirmed / delivered")) == [120, 120, 120], "\(closed)")
        #expect(counts(row(closed, "lost / duplicated / out of order (seq per conversation)")) == [0, 0, 0], "\(closed)")
        for process in ["chat-messages", "chat-presence", "chat-gateway-1", "chat-bench"] {
            #expect(row(closed, process)?.contains("CPU s") == true, "\(process) is missing from the report: \(closed)")
        }
        // What the store says: the 120 sends applied (the sockets' CONNECT audits too).
        #expect(row(closed, "the store's counters over the run (its /metrics)")?.contains("send × 120") == true, "\(closed)")
        #expect(row(closed, "the store's queues, highest seen (its /metrics, every 0.5 s)")?.hasPrefix("commands not yet read ") == true, "\(closed)")
        #expect(row(closed, "the gateway's counters over the run (its /metrics)") != nil, "\(closed)")

        let (openStatus, open) = try await bench(["pairs", "--pairs", "2", "--rate", "100", "--duration", "1"] + common)
        #expect(openStatus == 0, "\(open)")
        #expect(counts(row(open, "sent / confirmed / delivered")) == [100, 100, 100], "\(open)")
        #expect(counts(row(open, "lost / duplicated / out of order (seq per conversation)")) == [0, 0, 0], "\(open)")

        // --slow-ms 0: every confirmation counts as slow, and 40 sends 25 ms apart make one episode.
        let (groupStatus, group) = try await bench(["group", "--members", "4", "--rate", "40", "--duration", "1", "--slow-ms", "0"] + common)
        #expect(groupStatus == 0, "\(group)")
        let episodes = try #require(row(group, "confirmations of 0 ms or more (episodes)"), "\(group)")
        #expect(episodes.hasPrefix("1: ") && episodes.contains(" UTC +") && episodes.contains(": 40 sends, worst "), "\(episodes)")
        #expect(row(open, "confirmations of 100 ms or more (episodes)") != nil, "the default threshold: \(open)")
        #expect(counts(row(group, "sent / confirmed / delivered")) == [40, 40, 120], "every message reaches the 3 other members: \(group)")
        #expect(counts(row(group, "lost / duplicated / out of order (seq per conversation)")) == [0, 0, 0], "\(group)")
        #expect(row(group, "send → receive")?.contains("(n = 120)") == true, "\(group)")

        // Readers: three members mark the group read as messages arrive, at most one mark in
        // flight and 100 ms apart (and up to 25 ms more); every mark is answered and its
        // receipt reaches the reader and the senders of what it covers (of the four members).
        let (readersStatus, readers) = try await bench(["group", "--members", "4", "--rate", "40", "--duration", "1", "--readers", "3", "--read-interval", "100"] + common)
        #expect(readersStatus == 0, "\(readers)")
        let marks = numbers(row(readers, "read marks (3 readers, one in flight, 100 ms apart and up to a quarter more): sent / answered"))
        #expect(marks.count == 3 && marks[0] == marks[1] && (3...40).contains(marks[0]), "fewer marks than messages, all answered: \(readers)")
        let receipts = numbers(row(readers, "read receipts delivered")).first ?? -1
        #expect(marks.count == 3 && (marks[0] + 1...4 * marks[0]).contains(receipts), "\(readers)")
        #expect(row(readers, "read marks refused") == nil, "\(readers)")
        #expect(row(readers, "read mark → answered")?.contains("(n = \(marks.first ?? -1))") == true, "\(readers)")

        // Page loads next to the group: each new socket of users 6 and 7 (in no group of the
        // members) asks `sync` for everything and is replayed the newest 100 of each backlog,
        // and the other user's read position in each.
        let (pagesStatus, pages) = try await bench(["group", "--members", "6", "--rate", "20", "--duration", "1",
                                                    "--page-loads", "4", "--page-users", "2", "--backlogs", "2"] + common)
        #expect(pagesStatus == 0, "\(pages)")
        #expect(counts(row(pages, "sent / confirmed / delivered")) == [20, 20, 100], "\(pages)")
        #expect(row(pages, "page loads (a new socket, `sync` of everything) answered / started") == "4 / 4, 200 messages and 2 receipts replayed to each", "\(pages)")
        #expect(row(pages, "page load: `sync` → acknowledged (after its replay)")?.contains("(n = 4)") == true, "\(pages)")
        // Returning page loads (the list first, then `sync` of what is newer, as the web client
        // does): the same users, now in 4 backlogs, are replayed nothing the list has.
        let (returningStatus, returning) = try await bench(["group", "--members", "6", "--rate", "20", "--duration", "1", "--page-loads", "4",
                                                            "--page-users", "2", "--backlogs", "2", "--backlog-messages", "3", "--returning"] + common)
        #expect(returningStatus == 0, "\(returning)")
        #expect(row(returning, "page loads (the list, a new socket, `sync` of what is newer) answered / started") == "4 / 4, 0 messages and 0 receipts replayed to each",
                "\(returning)")
        #expect(row(returning, "page load: list → `sync` acknowledged (after its replay)")?.contains("(n = 4)") == true, "\(returning)")
        // Six sockets of those users dropped at once a third into the run, each back after
        // its backoff with a `sync` of what is newer than its list: nothing to replay.
        let (herdStatus, herd) = try await bench(["group", "--members", "6", "--rate", "20", "--duration", "1", "--reconnects", "6",
                                                  "--page-users", "2", "--backlogs", "2", "--backlog-messages", "3"] + common)
        #expect(herdStatus == 0, "\(herd)")
        #expect(counts(row(herd, "sent / confirmed / delivered")) == [20, 20, 100], "\(herd)")
        #expect(row(herd, "sockets dropped at once and back (after the backoff: a new socket, `sync` of what is newer; the list again if the replay was cut) / dropped")
                == "6 / 6, 0 messages and 0 receipts replayed to each, 0 lists reloaded", "\(herd)")
        #expect(row(herd, "reconnect: drop → `sync` acknowledged (backoff included)")?.contains("(n = 6)") == true, "\(herd)")
        #expect(row(herd, "reconnects failed") == nil, "\(herd)")

        // Every socket of the churn connects and leaves (a socket the tool did not hold used to
        // be freed mid-handshake and was never counted either way).
        let (churnStatus, churn) = try await bench(["churn", "--rate", "100", "--duration", "1", "--users", "8"] + common)
        #expect(churnStatus == 0, "\(churn)")
        #expect(row(churn, "connected and left") == "100 of 100", "\(churn)")
        #expect(row(churn, "how the sockets ended") == "transport closed × 100", "\(churn)")
        // The gateway's own counters say the same (the tool reads its /metrics): each socket
        // closed its side, and the gateway closed the session at once (it used to keep them
        // until their pings timed out).
        #expect(row(churn, "the gateway's sessions back to where they were")?.hasPrefix("after ") == true, "\(churn)")
        #expect(row(churn, "the gateway's counters over the run (its /metrics)")?.contains("sessions closed: transport closed × 100") == true, "\(churn)")
        #expect(row(churn, "the gateway's queues, highest seen (its /metrics, every 0.5 s)")?.hasPrefix("CONNECTs waiting their turn ") == true, "\(churn)")

        // The gateway killed mid-run: the closed loop reports once every socket has closed,
        // instead of waiting (up to 10 minutes) for confirmations that cannot come.
        // Sends added to the commands stream (trimming does not lower it): the tool is sending once it grows.
        let endless = try await server.withClient { redis in
            @Sendable func added() async -> Int {
                let fields = (try? await redis.send(["XINFO", "STREAM", keys.commands]))?.array ?? []
                guard let index = fields.firstIndex(where: { $0.string == "entries-added" }), index + 1 < fields.count else { return 0 }
                return fields[index + 1].int ?? 0
            }
            let before = await added()
            let endless = Task { try await bench(["pairs", "--pairs", "3", "--messages", "1000000", "--window", "4"] + common) }
            #expect(await eventually(timeout: .seconds(30)) { await added() >= before + 100 }, "the tool never got to sending")
            return endless
        }
        try await Task.sleep(for: .milliseconds(500))
        running[2].0.signal(SIGKILL)
        let (killedStatus, killed) = try await endless.value
        #expect(killedStatus != nil, "the tool did not end within 120 s of the gateway's death: \(killed)")
        #expect(row(killed, "errors")?.contains("closed: ") == true, "\(killed)")
        #expect(counts(row(killed, "sent / confirmed / delivered")).first ?? 0 > 0, "\(killed)")
    }

    @Test("a gateway that is not there: the tool says so and exits, every time (its concurrent logins failing together hung it in URLSession four runs out of five), without its usage, which says nothing about the fault")
    func gatewayNotThere() async throws {
        let port = try freePort()
        for _ in 0..<5 {
            let (status, output) = try await bench(["pairs", "--pairs", "100", "--messages", "1", "--gateway", "http://127.0.0.1:\(port)"], timeout: .seconds(30))
            #expect(status != nil && status != 0, "the tool did not end within 30 s: \(output)")
            #expect(output.contains("Error: nothing answers at http://127.0.0.1:\(port)"), "\(output)")
            #expect(!output.contains("Usage:"), "\(output)")
        }
    }

    @Test("json: both ways read the same texts, and the report has a row for each")
    func jsonParsing() async throws {
        let (status, report) = try await bench(["json", "--iterations", "50", "--rounds", "1"])
        #expect(status == 0, "\(report)")
        #expect(row(report, "JSONDecoder").flatMap(Double.init) ?? 0 > 0, "\(report)")
        #expect(row(report, "JSONValue(parsing:), one pass")?.contains("faster") == true, "\(report)")
    }
}
