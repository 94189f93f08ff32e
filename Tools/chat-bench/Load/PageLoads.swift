import ArgumentParser
import ChatCore
import Foundation
import Histogram
import NIOConcurrencyHelpers
import NIOCore

/// Page loads next to a workload's live traffic: a new socket of a user with a backlog
/// connects and asks `sync` for everything (`since` empty, what a client without local
/// state asks: a new device; the web client asked it every time it was opened until the
/// fourteenth round of BENCHMARKS.md), counts the messages and receipts replayed to it,
/// and leaves once the acknowledgement came. What a morning of clinicians opening the app
/// costs the live deliveries meanwhile.
///
/// `returning`: what the web client does when opened (fifteenth round): it loads the
/// conversation list over REST first, then asks `sync` with `since` naming every
/// conversation at its newest message and `receipts_after` at the list's newest read
/// version, so only what changed after the list is replayed. Timed from the list's request.
///
/// `reconnect`: sockets dropped at once (their gateway went away) coming back as the web
/// client does (``drop(_:after:backoff:users:tokens:options:group:)``): each after its
/// backoff asks `sync` of what is newer than the list its user had (``prepare(users:tokens:options:)``),
/// reloads the list only if the acknowledgement says the replay was cut, and stays
/// connected. Timed from the drop.
final class PageLoads: VirtualSocketDelegate, @unchecked Sendable {
    enum Kind { case newDevice, returning, reconnect }
    private let lock = NIOLock()
    private var asked: [Int: UInt64] = [:]
    private var replayed: [Int: (messages: Int, receipts: Int)] = [:]
    private var sockets: [Int: VirtualSocket] = [:]
    private var latency = Histogram<UInt64>(highestTrackableValue: 120_000_000, numberOfSignificantValueDigits: .three)
    private var answered = 0
    private var failures: [String: Int] = [:]
    private var messages = 0
    private var receipts = 0
    private var opened = 0
    /// Returning page loads whose list came: when it was asked for, and the `sync` to send.
    private var listed: [Int: (start: UInt64, sync: String)] = [:]
    /// Reconnected sockets, kept open until ``closeKept()``.
    private var kept: [VirtualSocket] = []
    /// `reconnect`: each user's `sync` (from the list it had), and lists reloaded after a cut replay.
    private var prepared: [Int: (sync: String, token: String)] = [:]
    private var gateway = ""
    private var reloads = 0
    private let kind: Kind
    private var returning: Bool { kind != .newDevice }

    init(_ kind: Kind = .newDevice) { self.kind = kind }

    /// Page loads opened so far, and those answered or failed.
    var started: Int { lock.withLock { opened } }
    var finished: Int { lock.withLock { answered + failures.values.reduce(0, +) } }

    func connected(_ socket: VirtualSocket) {
        let payload = lock.withLock {
            let list = listed.removeValue(forKey: socket.index)
            asked[socket.index] = list?.start ?? nowNanoseconds()
            return list?.sync ?? #"{"since":{}}"#
        }
        socket.send("421[\"sync\"," + payload + "]")
    }

    /// The web client's `sync` after loading `list` (GET /api/conversations): every
    /// conversation at its newest message, receipts after the newest read version listed.
    static func returningSync(_ list: [[String: Any]]) -> String {
        var since: [String: Any] = [:]
        var version: Int64 = 0
        for conversation in list {
            guard let id = conversation["id"] as? String else { continue }
            since[id] = ((conversation["last_message"] as? [String: Any])?["seq"] as? NSNumber)?.int64Value ?? 0
            version = max(version, (conversation["read_version"] as? NSNumber)?.int64Value ?? 0)
        }
        let body: [String: Any] = ["since": since, "receipts_after": version]
        return String(decoding: try! JSONSerialization.data(withJSONObject: body), as: UTF8.self)
    }

    func event(_ socket: VirtualSocket, packet: String) {
        switch BenchContent.eventName(packet) {
        case "receive_message": lock.withLock { replayed[socket.index, default: (0, 0)].messages += 1 }
        case "message_read_receipt": lock.withLock { replayed[socket.index, default: (0, 0)].receipts += 1 }
        case "error":
            // The gateway refused something of this page load without an acknowledgement.
            lock.withLock {
                guard asked.removeValue(forKey: socket.index) != nil else { return }
                replayed[socket.index] = nil
                sockets[socket.index] = nil
                failures["error event: \(packet.prefix(160))", default: 0] += 1
            }
            socket.close()
        default: break
        }
    }

    func acknowledged(_ socket: VirtualSocket, packet: String) {
        let now = nowNanoseconds()
        let ok = packet.contains("\"ok\":true")
        lock.withLock {
            guard let start = asked.removeValue(forKey: socket.index) else { return }
            let counts = replayed.removeValue(forKey: socket.index) ?? (0, 0)
            if ok {
                answered += 1
                messages += counts.messages
                receipts += counts.receipts
                latency.recordClamped((now - start) / 1000)
            } else {
                failures["sync answered \(packet.prefix(120))", default: 0] += 1
            }
            sockets[socket.index] = nil
            if ok && kind == .reconnect { kept.append(socket) }
        }
        guard ok && kind == .reconnect else { return socket.close() }
        // As the web client: the list again only when the replay could not carry everything.
        if packet.contains("\"truncated\":true") || packet.contains("\"receipts_truncated\":true") {
            let (token, gateway) = lock.withLock {
                reloads += 1
                return (prepared[socket.user]?.token, self.gateway)
            }
            Task { _ = try? await REST(base: gateway).call("GET", "/api/conversations", token: token) }
        }
    }

    /// `reconnect`: each user's list as it is before the drop (what its pages have), for the
    /// `sync` they ask when back.
    func prepare(users: [Int], tokens: [String], options: LoadOptions) async throws {
        for (index, user) in users.enumerated() {
            let (status, json) = try await REST(base: options.gateway).call("GET", "/api/conversations", token: tokens[index])
            guard status == 200, let list = json as? [[String: Any]] else { throw CommandFailure("the conversation list answered \(status)") }
            lock.withLock { prepared[user] = (Self.returningSync(list), tokens[index]) }
        }
        lock.withLock { gateway = options.gateway }
    }

    /// Closes the reconnected sockets.
    func closeKept() {
        for socket in lock.withLock({ kept }) { socket.close() }
    }

    func pinged(_ socket: VirtualSocket) {}

    func closed(_ socket: VirtualSocket, reason: String) {
        lock.withLock {
            // Closed before its sync was answered (or before it connected).
            guard sockets.removeValue(forKey: socket.index) != nil else { return }
            asked[socket.index] = nil
            replayed[socket.index] = nil
            listed[socket.index] = nil
            failures[reason, default: 0] += 1
        }
    }

    /// Opens `rate` page loads per second for `duration` seconds, socket k for user
    /// `users[k % users.count]`, whose token is `tokens[k % users.count]`.
    func run(rate: Double, duration: Double, users: [Int], tokens: [String], options: LoadOptions, group: EventLoopGroup) async throws {
        let total = Int((rate * duration).rounded())
        let start = ContinuousClock.now
        for k in 0..<total {
            let due = start + .nanoseconds(Int64(Double(k) / rate * 1e9))
            if ContinuousClock.now < due { try await Task.sleep(until: due) }
            load(k, users: users, tokens: tokens, origin: nil, options: options, group: group)
        }
    }

    /// `after` seconds from now, closes `sockets` at once (as when their gateway goes away)
    /// and brings each back as the web client does: after its backoff, a random time in
    /// `backoff` seconds (the web client's first retry: 1 s, from 0.75 to 1.25 of it),
    /// a new socket asking `sync` of what is newer than its user's list had, which stays
    /// (the list again only if the replay was cut).
    /// Socket k is user `users[k % users.count]` (as `sockets` were opened).
    func drop(_ sockets: [VirtualSocket], after: Double, backoff: ClosedRange<Double>, users: [Int], tokens: [String],
              options: LoadOptions, group: EventLoopGroup) async throws {
        try await Task.sleep(for: .seconds(after))
        let origin = nowNanoseconds()
        let dropped = ContinuousClock.now
        for socket in sockets { socket.close() }
        let delays = sockets.indices.map { _ in Double.random(in: backoff) }.sorted()
        for (k, delay) in delays.enumerated() {
            let due = dropped + .nanoseconds(Int64(delay * 1e9))
            if ContinuousClock.now < due { try await Task.sleep(until: due) }
            load(k, users: users, tokens: tokens, origin: origin, options: options, group: group)
        }
    }

    /// Page load `k`, for user `users[k % users.count]`; timed from `origin` if given (else
    /// from the list's request, or the socket's CONNECT for a new device).
    private func load(_ k: Int, users: [Int], tokens: [String], origin: UInt64?, options: LoadOptions, group: EventLoopGroup) {
        let socket = VirtualSocket(index: k, user: users[k % users.count], delegate: self)
        lock.withLock {
            sockets[k] = socket
            opened += 1
        }
        let token = tokens[k % users.count]
        if kind == .reconnect {
            // What the page had: no list first.
            lock.withLock { listed[k] = (origin ?? nowNanoseconds(), prepared[users[k % users.count]]?.sync ?? #"{"since":{}}"#) }
            open(socket, token: token, options: options, group: group)
        } else if returning {
            // The list first, as the web client does; the page load waits for it, the pacer does not.
            Task {
                let start = origin ?? nowNanoseconds()
                let (status, json) = (try? await REST(base: options.gateway).call("GET", "/api/conversations", token: token)) ?? (0, nil)
                guard status == 200, let list = json as? [[String: Any]] else {
                    return self.closed(socket, reason: "the conversation list answered \(status)")
                }
                self.lock.withLock {
                    self.listed[k] = (start, Self.returningSync(list))
                }
                self.open(socket, token: token, options: options, group: group)
            }
        } else {
            open(socket, token: token, options: options, group: group)
        }
    }

    private func open(_ socket: VirtualSocket, token: String, options: LoadOptions, group: EventLoopGroup) {
        socket.connect(group: group, host: options.host, port: options.port, token: token).whenFailure { _ in
            self.closed(socket, reason: "connect failed")
        }
    }

    /// The page loads' rows of a report.
    func report(into report: inout LoadReport) {
        let (answered, failures, messages, receipts, latency, started, reloads) = lock.withLock {
            // Those still open when the run reports: where each one stopped.
            var failures = self.failures
            for k in sockets.keys {
                let stage = asked[k] != nil ? "sync sent, not acknowledged"
                    : returning && listed[k] == nil ? "the conversation list not answered" : "not connected"
                failures["unfinished at the end: \(stage)", default: 0] += 1
            }
            return (self.answered, failures, self.messages, self.receipts, self.latency, self.opened, self.reloads)
        }
        var counts = "\(answered) / \(started)"
        if answered > 0 {
            counts += String(format: ", %.0f messages and %.0f receipts replayed to each", Double(messages) / Double(answered), Double(receipts) / Double(answered))
        }
        let (counted, failed, timed) = switch kind {
        case .newDevice: ("page loads (a new socket, `sync` of everything) answered / started", "page loads failed",
                          "page load: `sync` → acknowledged (after its replay)")
        case .returning: ("page loads (the list, a new socket, `sync` of what is newer) answered / started", "page loads failed",
                          "page load: list → `sync` acknowledged (after its replay)")
        case .reconnect: ("sockets dropped at once and back (after the backoff: a new socket, `sync` of what is newer; the list again if the replay was cut) / dropped",
                          "reconnects failed", "reconnect: drop → `sync` acknowledged (backoff included)")
        }
        report.add(counted, counts + (kind == .reconnect ? ", \(reloads) lists reloaded" : ""))
        if !failures.isEmpty { report.add(failed, failures.sorted { $0.key < $1.key }.map { "\($0.key) × \($0.value)" }.joined(separator: ", ")) }
        if latency.totalCount > 0 { report.latency(timed, latency) }
    }
}
