import ArgumentParser
import ChatCore
import Foundation
import Histogram
import MessageStore
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// Sockets that only connect, answer pings and (for churn) leave.
final class ConnectionLoad: VirtualSocketDelegate, @unchecked Sendable {
    private let lock = NIOLock()
    private var connectedCount = 0
    private var closedCount = 0
    private var lastPing: [Int: UInt64] = [:]
    private var gaps = Histogram<UInt64>(highestTrackableValue: 600_000, numberOfSignificantValueDigits: .three)
    private var opened: [Int: UInt64] = [:]
    private var connectLatency = Histogram<UInt64>(highestTrackableValue: 120_000_000, numberOfSignificantValueDigits: .three)
    /// How sockets ended.
    private var reasons: [String: Int] = [:]
    var closeOnConnect = false

    var connected: Int { lock.withLock { connectedCount } }
    var closed: Int { lock.withLock { closedCount } }

    func opening(_ index: Int) { lock.withLock { opened[index] = nowNanoseconds() } }

    func connected(_ socket: VirtualSocket) {
        let now = nowNanoseconds()
        lock.withLock {
            connectedCount += 1
            lastPing[socket.index] = now
            if let start = opened.removeValue(forKey: socket.index) { connectLatency.recordClamped((now - start) / 1000) }
        }
        if closeOnConnect { socket.close() }
    }

    func pinged(_ socket: VirtualSocket) {
        let now = nowNanoseconds()
        lock.withLock {
            if let last = lastPing[socket.index] { gaps.recordClamped((now - last) / 1_000_000) }
            lastPing[socket.index] = now
        }
    }

    func event(_ socket: VirtualSocket, packet: String) {}

    func closed(_ socket: VirtualSocket, reason: String) {
        lock.withLock {
            closedCount += 1
            reasons[reason, default: 0] += 1
        }
    }

    /// How the sockets ended, and how many each way.
    func endings() -> [String: Int] { lock.withLock { reasons } }

    /// Gaps between pings (ms), and how long CONNECTs took (µs).
    func histograms() -> (gaps: Histogram<UInt64>, connect: Histogram<UInt64>) { lock.withLock { (gaps, connectLatency) } }
}

struct IdleBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "idle",
        abstract: "C sockets that do nothing but answer heartbeats: the gateway's memory per socket, and whether pings come on time.")

    @OptionGroup var options: LoadOptions
    @Option(help: "Sockets.") var sockets = 20_000
    @Option(help: "Users they belong to (socket i is user i mod U).") var users = 200
    @Option(help: "Seconds to hold them after all connected.") var duration: Double = 30
    @Option(help: "Connects per second while opening.") var connectRate = 2000
    @Option(help: "The gateway's ping interval, in seconds (CHAT_PING_INTERVAL of the stack).") var pingInterval: Double = 25

    func run() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: options.threads)
        let tokens = try await REST(base: options.gateway).login((0..<users).map(options.email), password: options.password)
        let load = ConnectionLoad()
        let gatewayBefore = ProcessSample.all(runDir: options.runDir).first { $0.name.hasPrefix("chat-gateway") }
        // Watched from the opening: that is when CONNECTs queue.
        let watch = await MetricsWatch.start(options)
        let opening = ContinuousClock.now
        let opened = try await openSockets(sockets, options: options, group: group, tokens: tokens, user: { $0 % users }, delegate: load, rate: connectRate)
        try await settle(timeout: 60) { load.connected + load.closed >= sockets }
        let openSeconds = Double((ContinuousClock.now - opening).components.seconds)
        let before = ProcessSample.all(runDir: options.runDir)
        let gatewayConnected = before.first { $0.name.hasPrefix("chat-gateway") }
        try await Task.sleep(for: .seconds(duration))
        let after = ProcessSample.all(runDir: options.runDir)
        let servicesSide = await watch?.stop()
        let (gaps, connect) = load.histograms()
        var report = LoadReport(workload: "idle sockets", command: "chat-bench idle --sockets \(sockets) --users \(users) --duration \(Int(duration))", seconds: duration)
        report.add("connected / closed", "\(load.connected) / \(load.closed) (opened in about \(Int(openSeconds)) s)")
        if let start = gatewayBefore, let end = gatewayConnected, load.connected > 0 {
            report.add("gateway memory per socket", String(format: "%.1f KiB (RSS %.1f → %.1f MiB)",
                                                           Double(end.residentBytes - start.residentBytes) / 1024 / Double(load.connected),
                                                           Double(start.residentBytes) / 1_048_576, Double(end.residentBytes) / 1_048_576))
        }
        _ = connect
        if gaps.totalCount > 0 {
            // The gateway looks for sessions due a ping once a second, so a gap of up to the
            // interval plus a second is on time; more is late.
            let allowed = (pingInterval + 1) * 1000
            let late = Double(gaps.valueAtPercentile(99)) > allowed
            report.add("gaps between pings", "p50 \(gaps.valueAtPercentile(50)) · p99 \(gaps.valueAtPercentile(99)) · max \(gaps.max) ms over \(gaps.totalCount) pings (on time: ≤ \(Int(allowed)) ms; p99 \(late ? "LATE" : "on time"))")
        }
        let endings = load.endings()
        if !endings.isEmpty { report.add("closes", endings.sorted { $0.key < $1.key }.map { "\($0.key) × \($0.value)" }.joined(separator: ", ")) }
        report.watched(servicesSide)
        report.processes(before: before, after: after)
        report.print()
        for socket in opened { socket.close() }
    }
}

struct ChurnBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "churn",
        abstract: "Sockets that connect and leave at once, R per second: how long a CONNECT takes under churn.")

    @OptionGroup var options: LoadOptions
    @Option(help: "Connects (and disconnects) per second.") var rate = 200
    @Option(help: "Seconds.") var duration: Double = 10
    @Option(help: "Users the sockets belong to.") var users = 100

    func run() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: options.threads)
        let tokens = try await REST(base: options.gateway).login((0..<users).map(options.email), password: options.password)
        let load = ConnectionLoad()
        load.closeOnConnect = true
        let watch = await MetricsWatch.start(options)
        let before = ProcessSample.all(runDir: options.runDir)
        let total = Int(Double(rate) * duration)
        let started = ContinuousClock.now
        // Kept until the end: a socket's handler holds it weakly, so one nobody held would be
        // freed once its TCP connect completed and would never CONNECT nor report its close
        // (that was the churn run's "1,639 of 2,000").
        var sockets: [VirtualSocket] = []
        sockets.reserveCapacity(total)
        for index in 0..<total {
            let socket = VirtualSocket(index: index, user: index % users, delegate: load)
            sockets.append(socket)
            load.opening(index)
            socket.connect(group: group, host: options.host, port: options.port, token: tokens[socket.user]).whenFailure { _ in
                load.closed(socket, reason: "connect failed")
            }
            let due = started + .milliseconds(Int64((index + 1) * 1000 / rate))
            if ContinuousClock.now < due { try await Task.sleep(until: due) }
        }
        try await settle(timeout: 30) { load.closed >= total }
        let elapsed = ContinuousClock.now - started
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        withExtendedLifetime(sockets) {}
        let after = ProcessSample.all(runDir: options.runDir)
        // Every socket left: the gateway should hold no session of theirs a moment later.
        let letGo = await watch?.waitUntilBack("chat_gateway_engine_sessions")
        let servicesSide = await watch?.stop()
        var report = LoadReport(workload: "churn", command: "chat-bench churn --rate \(rate) --duration \(Int(duration))", seconds: seconds)
        report.add("connected and left", "\(load.connected) of \(total)")
        report.add("how the sockets ended", load.endings().sorted { $0.key < $1.key }.map { "\($0.key) × \($0.value)" }.joined(separator: ", "))
        report.latency("socket opened → CONNECT answered", load.histograms().connect)
        if watch?.watchesGateway == true {
            report.add("the gateway's sessions back to where they were", letGo.map { "after \($0.milliseconds) ms" } ?? "NO: some still open 5 s after the last socket left")
        }
        report.watched(servicesSide)
        report.processes(before: before, after: after)
        report.print()
    }
}

struct HistoryBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "history",
        abstract: "REST paging: C clients page back through a conversation of M messages, 30 at a time.")

    @OptionGroup var options: LoadOptions
    @Option(help: "Messages in the conversation (sent over REST first).") var messages = 1000
    @Option(help: "Concurrent clients.") var clients = 8
    @Option(help: "Requests in all.") var requests = 2000

    func run() async throws {
        let rest = REST(base: options.gateway)
        let tokens = try await rest.login([options.email(0), options.email(1)], password: options.password)
        // A conversation of its own, so earlier workloads do not change what is measured.
        let (status, json) = try await rest.call("POST", "/api/conversations", token: tokens[0],
                                                 body: ["participants": [options.email(1)], "title": "history \(UUID().uuidString.prefix(6))"])
        guard status == 201 || status == 200, let conversation = (json as? [String: Any])?["id"] as? String else {
            throw CommandFailure("creating the conversation answered \(status)")
        }
        try await rest.fill(conversation, count: messages, tokens: [tokens[0]]) { "history \($0)" }
        let before = ProcessSample.all(runDir: options.runDir)
        let recorder = NIOLockedValueBox(Histogram<UInt64>(highestTrackableValue: 120_000_000, numberOfSignificantValueDigits: .three))
        let failures = NIOLockedValueBox(0)
        let started = ContinuousClock.now
        try await withThrowingTaskGroup(of: Void.self) { group in
            for client in 0..<clients {
                group.addTask {
                    var before: Int? = nil
                    for _ in stride(from: client, to: requests, by: clients) {
                        let path = "/api/conversations/\(conversation)/messages?limit=30" + (before.map { "&before=\($0)" } ?? "")
                        let start = nowNanoseconds()
                        let (status, json) = try await rest.call("GET", path, token: tokens[client % 2])
                        let elapsed = (nowNanoseconds() - start) / 1000
                        recorder.withLockedValue { $0.recordClamped(elapsed) }
                        let page = (json as? [String: Any])?["messages"] as? [[String: Any]] ?? (json as? [[String: Any]]) ?? []
                        if status != 200 { failures.withLockedValue { $0 += 1 } }
                        let oldest = page.compactMap { $0["seq"] as? Int }.min()
                        before = (oldest ?? 0) > 1 ? oldest : nil
                    }
                }
            }
            try await group.waitForAll()
        }
        let seconds = Double((ContinuousClock.now - started).components.attoseconds) / 1e18 + Double((ContinuousClock.now - started).components.seconds)
        let after = ProcessSample.all(runDir: options.runDir)
        var report = LoadReport(workload: "history paging", command: "chat-bench history --messages \(messages) --clients \(clients) --requests \(requests)", seconds: seconds)
        report.add("requests per second", String(format: "%.0f (%d failed)", Double(requests) / seconds, failures.withLockedValue { $0 }))
        report.latency("page of 30", recorder.withLockedValue { $0 })
        report.processes(before: before, after: after)
        report.print()
    }
}

struct SeedBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "seed",
        abstract: "Creates the virtual users (<prefix>-00000@bench.local ...) in a store's SQLite file, before the stack starts.")

    @Option(help: "The messages service's database (CHAT_DB_PATH).") var database: String
    @Option(help: "Users to create.") var users = 400
    @Option var userPrefix = "bench"
    @Option var password = "bench-password"

    func run() async throws {
        // A low bcrypt cost: the load tool logs in hundreds of users; nothing else uses these accounts.
        let store = try MessageStore.open(path: database, retention: .seconds(90 * 86400), bcryptCost: 4)
        var created = 0
        for user in 0..<users {
            let email = benchEmail(prefix: userPrefix, user: user)
            if (try? store.createUser(email: email, name: "Bench User \(user)", role: .doctor, password: password)) != nil { created += 1 }
        }
        print("seed: \(created) users created (\(users - created) already there) in \(database)")
    }
}
