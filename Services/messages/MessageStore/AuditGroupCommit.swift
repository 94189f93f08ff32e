import ChatCore
import Dispatch
import Synchronization

/// The audit lines of queries (reads of history, search, sync, logins), written in shared
/// transactions: a query's line is committed before its answer goes out, as before, but
/// the lines that arrive while a transaction commits go together in the next one (group
/// commit), so concurrent reads cost one synced commit between them instead of one each,
/// and hold the store's one writer (which the sends need) that much less.
///
/// Callers are the query lane's threads and block until their line is written. The first
/// caller to find no transaction under way writes it (the leader); whoever arrives
/// meanwhile waits, and the first of them then writes everything that waited, its own line
/// included, and so on. A failed transaction fails every caller whose line it held.
final class AuditGroupCommit: Sendable {
    private let write: @Sendable ([AuditEntry]) throws -> Void
    private let state = Mutex(State())
    private let commitCount = Mutex(0)

    private struct State {
        var waiting: [Ticket] = []
        var writing = false
    }

    private final class Ticket: Sendable {
        enum Outcome { case written, failed(any Error), lead }
        let entries: [AuditEntry]
        let signal = DispatchSemaphore(value: 0)
        let outcome = Mutex<Outcome?>(nil)
        init(_ entries: [AuditEntry]) { self.entries = entries }

        func finish(_ outcome: Outcome) {
            self.outcome.withLock { $0 = outcome }
            signal.signal()
        }
    }

    init(store: MessageStore) {
        self.write = { entries in try store.write { db in try store.record(db, entries) } }
    }

    /// `write` stores one transaction's lines (tests slow it down to see lines wait).
    init(write: @escaping @Sendable ([AuditEntry]) throws -> Void) {
        self.write = write
    }

    /// Transactions written so far.
    var commits: Int { commitCount.withLock { $0 } }

    /// Lines waiting for the next transaction.
    var waiting: Int { state.withLock { $0.waiting.count } }

    /// Writes `entries` (in a transaction shared with whatever else waits) and returns once
    /// they are committed; throws if that transaction failed.
    func record(_ entries: [AuditEntry]) throws {
        guard !entries.isEmpty else { return }
        let ticket = Ticket(entries)
        let leads = state.withLock { s -> Bool in
            guard s.writing else {
                s.writing = true
                return true
            }
            s.waiting.append(ticket)
            return false
        }
        if !leads {
            ticket.signal.wait()
            switch ticket.outcome.withLock({ $0 }) {
            case .written?: return
            case .failed(let error)?: throw error
            case .lead?, nil: break  // its turn to write everything that waited, itself included
            }
        }
        try lead(ticket, first: leads)
    }

    /// Writes the leader's batch (its own line alone when it found nothing under way, else
    /// everything that waited), then hands the next batch to the first of those waiting.
    private func lead(_ ticket: Ticket, first: Bool) throws {
        let batch: [Ticket] = first ? [ticket] : state.withLock { s in
            defer { s.waiting.removeAll() }
            return s.waiting
        }
        var failure: (any Error)?
        do {
            try write(batch.flatMap(\.entries))
            commitCount.withLock { $0 += 1 }
        } catch {
            failure = error
        }
        for other in batch where other !== ticket { other.finish(failure.map { .failed($0) } ?? .written) }
        let next = state.withLock { s -> Ticket? in
            guard let next = s.waiting.first else {
                s.writing = false
                return nil
            }
            return next
        }
        next?.finish(.lead)
        if let failure { throw failure }
    }
}
