import ArgumentParser
import ChatCore
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import RedisClient

/// The sockets of a messaging workload: senders keep a window of unconfirmed sends (or
/// are paced from outside), receivers record what arrives.
final class MessagingLoad: VirtualSocketDelegate, @unchecked Sendable {
    let recorder: Recorder
    private let lock = NIOLock()
    private var connectedCount = 0
    private var closedCount = 0
    private var nextN: [Int: Int] = [:]
    /// Closed loop: messages per sender and window; 0 = paced from outside.
    var perSender = 0
    var window = 0
    /// Where a sender's message goes: a receiver's email, or a conversation id.
    var target: (Int) -> (receiver: String?, conversation: String?) = { _ in (nil, nil) }
    /// Which sockets expect which messages (filled as messages are sent).
    private(set) var expected: [Int: Set<UInt64>] = [:]
    var recipients: (Int) -> [Int] = { _ in [] }
    /// Members marking the conversation read as messages arrive (`group --readers`).
    var reads: ReadMarks?

    /// `slowMs`: confirmations this slow are reported as episodes (`--slow-ms`).
    init(slowMs: Double = 100) { recorder = Recorder(slowThreshold: UInt64(max(0, slowMs) * 1000)) }

    var connected: Int { lock.withLock { connectedCount } }
    var closed: Int { lock.withLock { closedCount } }

    func connected(_ socket: VirtualSocket) { lock.withLock { connectedCount += 1 } }

    func closed(_ socket: VirtualSocket, reason: String) {
        lock.withLock { closedCount += 1 }
        recorder.error("closed: \(reason)")
    }

    func pinged(_ socket: VirtualSocket) {}

    static let trace = ProcessInfo.processInfo.environment["BENCH_TRACE"] != nil

    func event(_ socket: VirtualSocket, packet: String) {
        if Self.trace { progress("socket \(socket.index) (user \(socket.user)): \(packet.prefix(300))") }
        guard let name = BenchContent.eventName(packet) else { return }
        switch name {
        case "receive_message":
            if let (sender, n, sentAt) = BenchContent.parse(packet) {
                let position = BenchContent.position(packet)
                recorder.receive(socket: socket.index, sender: sender, n: n, sentAt: sentAt, conversation: position?.conversation, seq: position?.seq)
                if let reads, let position { reads.received(socket, conversation: position.conversation, seq: position.seq) }
            }
        case "message_read_receipt":
            reads?.receipt()
        case "message_sent_confirmed":
            guard let (sender, n, sentAt) = BenchContent.parse(packet) else { return }
            recorder.confirm(sender: sender, n: n, sentAt: sentAt)
            guard perSender > 0 else { return }
            let more = lock.withLock { (nextN[socket.index] ?? 0) < perSender }
            if more { send(from: socket) }
        case "error":
            recorder.error(BenchContent.errorCode(packet))
        default:
            break
        }
    }

    func acknowledged(_ socket: VirtualSocket, packet: String) { reads?.acknowledged(socket, packet: packet) }

    /// Sends the sender's next message (closed loop: up to the window). Its client id is a
    /// time-ordered UUID, as the web client's: unique across runs, and what the store's index
    /// of client ids is cheapest for.
    func send(from socket: VirtualSocket, at scheduled: UInt64? = nil) {
        let n = lock.withLock { () -> Int? in
            let n = (nextN[socket.index] ?? 0) + 1
            if perSender > 0 && n > perSender { return nil }
            nextN[socket.index] = n
            let key = UInt64(socket.user) << 32 | UInt64(n)
            for recipient in recipients(socket.index) { expected[recipient, default: []].insert(key) }
            return n
        }
        guard let n else { return }
        let time = scheduled ?? nowNanoseconds()
        let (receiver, conversation) = target(socket.index)
        let address = receiver.map { "\"receiver_email\":\"\($0)\"" } ?? "\"conversation_id\":\"\(conversation ?? "")\""
        socket.emit("send_message", json: "{\(address),\"content\":\"\(BenchContent.make(sender: socket.user, n: n, at: time))\",\"client_id\":\"\(TimeOrderedID.make())\"}")
    }

    func startWindow(_ senders: [VirtualSocket]) {
        for socket in senders { for _ in 0..<window { send(from: socket) } }
    }

    var totalSent: Int { lock.withLock { nextN.values.reduce(0, +) } }
}

/// When the open loop's sends are due: send k at `start + k / rate`, `duration × rate` of them.
struct PaceSchedule: Sendable {
    let start: UInt64
    let rate: Double
    let total: Int

    init(start: UInt64, rate: Double, duration: Double) {
        (self.start, self.rate, self.total) = (start, rate, Int((duration * rate).rounded()))
    }

    func due(_ k: Int) -> UInt64 { start + UInt64((Double(k) / rate * 1e9).rounded()) }

    /// Sends every send as soon as it is due, stamped with the time it was due, and sleeps
    /// until the next one is due. `now` and `sleep` are the clock (nanoseconds).
    func run(now: () -> UInt64, sleep: (UInt64) async throws -> Void, send: (_ k: Int, _ stamp: UInt64) -> Void) async throws {
        var sent = 0
        while sent < total {
            let time = now()
            while sent < total, due(sent) <= time {
                send(sent, due(sent))
                sent += 1
            }
            if sent < total {
                let next = due(sent), time = now()
                if next > time { try await sleep(next - time) }
            }
        }
    }
}

/// Paces sends at `rate` per second across `senders` (round robin) for `duration`, each
/// stamped with its scheduled time, so a stall shows as latency (no coordinated omission).
/// The pacing runs on the first sender's event loop (the tool's only one unless `--threads`
/// says more), sleeping on its timers: the sends are written on the loop, not handed to it
/// from another thread one by one.
func pace(_ load: MessagingLoad, senders: [VirtualSocket], rate: Double, duration: Double) async throws {
    guard let loop = senders.first?.channel?.eventLoop else { return }
    try await withTaskExecutorPreference(EventLoopExecutor(loop)) {
        let schedule = PaceSchedule(start: nowNanoseconds(), rate: rate, duration: duration)
        try await schedule.run(now: nowNanoseconds, sleep: { try await loop.scheduleTask(in: .nanoseconds(Int64($0))) {}.futureResult.get() }) { k, stamp in
            load.send(from: senders[k % senders.count], at: stamp)
        }
    }
}

/// Waits until `done` or `timeout` seconds; `status` is printed every 2 s meanwhile.
func settle(timeout: Double, status: (() -> String)? = nil, _ done: () -> Bool) async throws {
    let deadline = ContinuousClock.now + .milliseconds(Int64(timeout * 1000))
    var lastStatus = ContinuousClock.now
    while !done(), ContinuousClock.now < deadline {
        try await Task.sleep(for: .milliseconds(20))
        if let status, ContinuousClock.now - lastStatus > .seconds(2) {
            lastStatus = .now
            progress(status())
        }
    }
}

extension MessagingLoad {
    var status: String {
        "sent \(totalSent), confirmed \(recorder.confirmedCount), delivered \(recorder.deliveredCount), closed \(closed), errors \(recorder.errors)"
    }
}

struct PairsBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pairs",
        abstract: "P pairs of users; each sender sends to its partner, closed loop (window W) or open loop (total rate R).")

    @OptionGroup var options: LoadOptions
    @Option(help: "Pairs of users (users 0..2P-1).") var pairs = 100
    @Option(help: "Closed loop: messages per sender.") var messages = 200
    @Option(help: "Closed loop: unconfirmed sends per sender.") var window = 16
    @Option(help: "Open loop: total messages per second (0 = closed loop).") var rate: Double = 0
    @Option(help: "Open loop: seconds.") var duration: Double = 10

    func run() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: options.threads)
        let rest = REST(base: options.gateway)
        let tokens = try await rest.login((0..<2 * pairs).map(options.email), password: options.password)
        progress("\(tokens.count) users logged in")
        let load = MessagingLoad(slowMs: options.slowMs)
        load.target = { index in (options.email(index % pairs * 2 + 1), nil) }
        // Socket i < P sends (user 2i); socket P + i receives (user 2i + 1).
        load.recipients = { index in [index + pairs] }
        let sockets = try await openSockets(2 * pairs, options: options, group: group, tokens: tokens,
                                            user: { $0 < pairs ? $0 * 2 : ($0 - pairs) * 2 + 1 }, delegate: load)
        progress("\(sockets.count) sockets open")
        try await settle(timeout: 30) { load.connected == 2 * pairs }
        progress("\(load.connected) sockets connected; sending")
        let senders = Array(sockets[..<pairs])
        let watch = await MetricsWatch.start(options)
        let before = ProcessSample.all(runDir: options.runDir)
        let started = nowNanoseconds()
        var total: Int
        if rate > 0 {
            try await pace(load, senders: senders, rate: rate, duration: duration)
            total = load.totalSent
        } else {
            load.perSender = messages
            load.window = window
            load.startWindow(senders)
            total = pairs * messages
        }
        // Every socket closed (the gateway went away): nothing more can arrive, report now.
        try await settle(timeout: rate > 0 ? 15 : 600, status: { load.status }) {
            (load.recorder.deliveredCount >= total && load.recorder.confirmedCount >= total) || load.closed >= 2 * pairs
        }
        total = load.totalSent
        let cut = load.recorder.cut()
        let elapsed = Double(max(cut.lastReceive, started + 1) - started) / 1e9
        let after = ProcessSample.all(runDir: options.runDir)
        let servicesSide = await watch?.stop()
        var report = LoadReport(workload: rate > 0 ? "pairs, open loop \(Int(rate))/s" : "pairs, closed loop",
                                command: "chat-bench pairs --pairs \(pairs) " + (rate > 0 ? "--rate \(Int(rate)) --duration \(Int(duration))" : "--messages \(messages) --window \(window)"),
                                seconds: elapsed)
        let clean = try await summarize(&report, load: load, cut: cut, total: total, elapsed: elapsed)
        report.watched(servicesSide)
        report.processes(before: before, after: after)
        report.print()
        for socket in sockets { socket.close() }
        if !clean { throw ExitCode(1) }
    }
}

/// Adds the run's figures at its end (`cut`) to `report`; false when a message was lost,
/// duplicated or out of order (the command then exits with status 1 after printing the
/// report). A message confirmed by the end counts as lost if it has not reached every
/// recipient 5 s later.
func summarize(_ report: inout LoadReport, load: MessagingLoad, cut: Recorder.Cut, total: Int, elapsed: Double) async throws -> Bool {
    let recorder = load.recorder
    try await settle(timeout: 5) { recorder.lost(expected: load.expected) == 0 }
    let lost = recorder.lost(expected: load.expected)
    report.add("sent / confirmed / delivered", "\(total) / \(cut.confirmed) / \(cut.received)")
    report.add("delivered per second", String(format: "%.0f (over %.2f s)", Double(cut.received) / elapsed, elapsed))
    report.latency("send → receive", cut.delivery)
    report.latency("send → confirmed", cut.confirmation)
    report.add(String(format: "confirmations of %g ms or more (episodes)", Double(recorder.slowThreshold) / 1000),
               SlowEpisode.describe(SlowEpisode.episodes(cut.slow), origin: recorder.clockOrigin))
    report.add("lost / duplicated / out of order (seq per conversation)", "\(lost) / \(recorder.duplicates) / \(recorder.outOfOrder)")
    if recorder.sendOrderInversions > 0 { report.add("arrived before an earlier send of the same sender", "\(recorder.sendOrderInversions)") }
    if !recorder.errors.isEmpty { report.add("errors", recorder.errors.sorted { $0.key < $1.key }.map { "\($0.key) × \($0.value)" }.joined(separator: ", ")) }
    return lost == 0 && recorder.duplicates == 0 && recorder.outOfOrder == 0
}

struct GroupBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "group",
        abstract: "One group of G members; members take turns sending at a total rate R; every message fans out to G−1.")

    @OptionGroup var options: LoadOptions
    @Option(help: "Members (users 0..G-1).") var members = 50
    @Option(help: "Messages per second, all senders together.") var rate: Double = 200
    @Option(help: "Seconds.") var duration: Double = 10
    @Option(help: "Page loads per second meanwhile: a new socket of a user with a backlog connects, asks `sync` for everything (as a client without local state does: a new device) and leaves once answered; 0 = none.")
    var pageLoads: Double = 0
    @Option(help: "With --page-loads or --reconnects: the users who load pages or reconnect (users G..G+U-1, not members of the group).") var pageUsers = 20
    @Option(help: "With --page-loads or --reconnects: conversations of all those users with 100 messages each, each user's read position somewhere in it (a sync replays the newest 100 of each, 500 in all at most, and every other reader's position).")
    var backlogs = 5
    @Option(help: "With --page-loads or --reconnects: messages in each backlog conversation.") var backlogMessages = 100
    @Flag(help: "With --page-loads: each page load is a returning web client: it loads the conversation list over REST, then asks `sync` only for what is newer than the list (messages and receipts).")
    var returning = false
    @Option(help: "Sockets of the page users (--page-users: users G..G+U-1, each in the --backlogs conversations; socket k is user G + k mod U) connected from the start, all dropped at once a third into the run (as when their gateway goes away) and coming back as the web client does: each after 750-1250 ms (its first retry) opens a new socket asking `sync` of what is newer than its user's list had (and loads the list again only if the replay was cut); timed from the drop. 0 = none.")
    var reconnects = 0
    @Option(help: "Members with the conversation open (users 0..N-1), marking it read as messages arrive, as the web client does; each mark is a store write and a receipt to the reader and to the senders of what it covers. 0 = none.")
    var readers = 0
    @Option(help: "With --readers: the least time between one reader's marks, in ms, one in flight at a time, each after a random wait of up to a quarter more; by default the web client's for a conversation of G members (250 ms per 5 members, at most 3 s); 0 = a mark for every message as it arrives (the web client before the sixteenth round).")
    var readInterval: Double?

    func run() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: options.threads)
        let rest = REST(base: options.gateway)
        let emails = (0..<members).map(options.email)
        let tokens = try await rest.login(emails, password: options.password)
        let loaders = Array(members..<(members + (pageLoads > 0 || reconnects > 0 ? pageUsers : 0)))
        let loaderTokens = try await rest.login(loaders.map(options.email), password: options.password)
        if !loaders.isEmpty {
            for backlog in 0..<backlogs {
                let (status, json) = try await rest.call("POST", "/api/conversations", token: loaderTokens[0],
                                                         body: ["participants": loaders.dropFirst().map(options.email), "title": "backlog \(backlog) \(UUID().uuidString.prefix(6))"])
                guard status == 201 || status == 200, let id = (json as? [String: Any])?["id"] as? String else {
                    throw CommandFailure("creating a backlog conversation answered \(status): \(String(describing: json))")
                }
                try await rest.fill(id, count: backlogMessages, tokens: loaderTokens) { "Backlog \($0): seen in clinic today, vitals stable, bloods sent; review the results and call the family before Friday's round." }
                // Everyone has read some of it: a sync replays each other reader's position.
                for (index, token) in loaderTokens.enumerated() {
                    let (read, _) = try await rest.call("POST", "/api/conversations/\(id)/read", token: token, body: ["up_to_seq": backlogMessages / 2 + index])
                    guard read == 200 else { throw CommandFailure("marking a backlog read answered \(read)") }
                }
            }
            progress("\(backlogs) backlog conversations of \(loaders.count) users filled")
        }
        let (status, json) = try await rest.call("POST", "/api/conversations", token: tokens[0],
                                                 body: ["participants": Array(emails.dropFirst()), "title": "bench group \(UUID().uuidString.prefix(6))"])
        guard status == 201 || status == 200, let conversation = (json as? [String: Any])?["id"] as? String else {
            throw CommandFailure("creating the group answered \(status): \(String(describing: json))")
        }
        let load = MessagingLoad(slowMs: options.slowMs)
        load.target = { _ in (nil, conversation) }
        load.recipients = { index in (0..<members).filter { $0 != index } }
        let readInterval = readInterval ?? ReadMarks.webClientInterval(members: members)
        let reads = readers > 0 ? ReadMarks(intervalMs: readInterval) : nil
        load.reads = reads
        let sockets = try await openSockets(members, options: options, group: group, tokens: tokens, user: { $0 }, delegate: load)
        for socket in sockets.prefix(readers) { reads?.add(socket) }
        try await settle(timeout: 30) { load.connected == members }
        let idle = ConnectionLoad()
        let herdSockets = reconnects > 0
            ? try await openSockets(reconnects, options: options, group: group, tokens: loaderTokens, user: { $0 % loaders.count }, delegate: idle) : []
        try await settle(timeout: 60) { idle.connected + idle.closed >= reconnects }
        if idle.closed > 0 { throw CommandFailure("\(idle.closed) of the \(reconnects) sockets to drop did not connect") }
        let herd = PageLoads(.reconnect)
        if reconnects > 0 { try await herd.prepare(users: loaders, tokens: loaderTokens, options: options) }
        let watch = await MetricsWatch.start(options)
        let before = ProcessSample.all(runDir: options.runDir)
        let started = nowNanoseconds()
        let loads = PageLoads(returning ? .returning : .newDevice)
        async let loading: Void = pageLoads > 0
            ? loads.run(rate: pageLoads, duration: duration, users: loaders, tokens: loaderTokens, options: options, group: group) : ()
        async let dropping: Void = reconnects > 0
            ? herd.drop(herdSockets, after: duration / 3, backoff: 0.75...1.25, users: loaders, tokens: loaderTokens, options: options, group: group) : ()
        try await pace(load, senders: sockets, rate: rate, duration: duration)
        try await loading
        try await dropping
        let total = load.totalSent
        try await settle(timeout: 15, status: { load.status }) {
            (load.recorder.deliveredCount >= total * (members - 1) && load.recorder.confirmedCount >= total) || load.closed >= members
        }
        try await settle(timeout: 15) { loads.finished >= loads.started }
        try await settle(timeout: 30) { herd.finished >= herd.started }
        if let reads { try await settle(timeout: 15) { reads.idle } }
        let cut = load.recorder.cut()
        let elapsed = Double(max(cut.lastReceive, started + 1) - started) / 1e9
        let after = ProcessSample.all(runDir: options.runDir)
        let servicesSide = await watch?.stop()
        var report = LoadReport(workload: "group of \(members) at \(Int(rate)) messages/s" + (pageLoads > 0 ? String(format: returning ? ", %g returning page loads/s" : ", %g page loads/s", pageLoads) : "")
                                    + (readers > 0 ? ", \(readers) readers" + (readInterval > 0 ? "" : " marking every message") : "")
                                    + (reconnects > 0 ? ", \(reconnects) sockets dropped and back" : ""),
                                command: "chat-bench group --members \(members) --rate \(Int(rate)) --duration \(Int(duration))"
                                    + (pageLoads > 0 ? " --page-loads \(String(format: "%g", pageLoads)) --page-users \(pageUsers) --backlogs \(backlogs)" : "")
                                    + (reconnects > 0 ? " --reconnects \(reconnects)" + (pageLoads > 0 ? "" : " --page-users \(pageUsers) --backlogs \(backlogs)") : "")
                                    + (pageLoads + Double(reconnects) > 0 && backlogMessages != 100 ? " --backlog-messages \(backlogMessages)" : "")
                                    + (pageLoads > 0 && returning ? " --returning" : "")
                                    + (readers > 0 ? " --readers \(readers) --read-interval \(String(format: "%g", readInterval))" : ""), seconds: elapsed)
        let clean = try await summarize(&report, load: load, cut: cut, total: total, elapsed: elapsed)
        if pageLoads > 0 { loads.report(into: &report) }
        if reconnects > 0 { herd.report(into: &report) }
        reads?.report(into: &report, seconds: elapsed)
        report.watched(servicesSide)
        report.processes(before: before, after: after)
        report.print()
        for socket in sockets { socket.close() }
        herd.closeKept()
        if !clean { throw ExitCode(1) }
    }
}
