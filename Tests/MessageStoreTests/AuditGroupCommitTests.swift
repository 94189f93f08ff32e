import ChatCore
import ChatTesting
import Dispatch
import Foundation
import Synchronization
import Testing
@testable import MessageStore

/// `AuditGroupCommit`: the audit lines of queries answered at the same time share a
/// transaction, and none is answered before its line is committed. (The query responder's
/// audit of reads through it: `CommandProcessorTests.queries`.)
@Suite("Audit lines of reads in shared transactions")
struct AuditGroupCommitTests {
    func entry(_ n: Int) -> AuditEntry {
        AuditEntry(at: Date(), context: RequestContext(actor: "reader\(n)@clinic.com", gateway: "gw", requestID: "r\(n)"), action: "history", target: nil, outcome: "ok")
    }

    /// Runs `body` on a thread of the global queue (callers of `record` block).
    func spawn(_ body: @escaping @Sendable () -> Void) {
        DispatchQueue.global().async(execute: body)
    }

    @Test("lines that arrive while a transaction commits wait and go together in the next one; each caller returns once its line is written")
    func grouped() async throws {
        let store = try makeStore()
        let held = DispatchSemaphore(value: 0)
        let transactions = Mutex<[[String]]>([])
        let audit = AuditGroupCommit { entries in
            let first = transactions.withLock { list -> Bool in
                list.append(entries.compactMap(\.actor))
                return list.count == 1
            }
            if first { held.wait() }
            try store.write { db in try store.record(db, entries) }
        }
        let returned = Mutex(0)
        spawn { try? audit.record([entry(0)]); returned.withLock { $0 += 1 } }
        #expect(await eventually { transactions.withLock { $0.count } == 1 })
        for n in 1...5 { spawn { try? audit.record([entry(n)]); returned.withLock { $0 += 1 } } }
        #expect(await eventually { audit.waiting == 5 })
        #expect(returned.withLock { $0 } == 0, "nobody is answered before its line is committed")
        #expect(try store.auditLog().isEmpty)
        held.signal()
        #expect(await eventually { returned.withLock { $0 } == 6 })
        #expect(returned.withLock { $0 } == 6)
        #expect(audit.commits == 2)
        let written = transactions.withLock { $0 }
        #expect(written.count == 2)
        #expect(written.first == ["reader0@clinic.com"])
        #expect(Set(written.last ?? []) == Set((1...5).map { "reader\($0)@clinic.com" }))
        #expect(try store.auditLog().compactMap(\.actor).sorted() == (0...5).map { "reader\($0)@clinic.com" }.sorted())
        // Alone, a line is its own transaction, at once.
        try audit.record([entry(6)])
        #expect(audit.commits == 3)
        #expect(audit.waiting == 0)
    }

    @Test("a transaction that fails fails every caller whose line it held, and the next one is written")
    func failures() async throws {
        let store = try makeStore()
        let held = DispatchSemaphore(value: 0)
        let calls = Mutex(0)
        let audit = AuditGroupCommit { entries in
            let call = calls.withLock { $0 += 1; return $0 }
            if call == 1 { held.wait() }
            if call == 2 { throw ChatError(.internal, "disk full") }
            try store.write { db in try store.record(db, entries) }
        }
        let failed = Mutex(0), returned = Mutex(0)
        @Sendable func call(_ n: Int) {
            do { try audit.record([entry(n)]) } catch { failed.withLock { $0 += 1 } }
            returned.withLock { $0 += 1 }
        }
        spawn { call(0) }
        #expect(await eventually { calls.withLock { $0 } == 1 })
        for n in 1...3 { spawn { call(n) } }
        #expect(await eventually { audit.waiting == 3 })
        held.signal()
        #expect(await eventually { returned.withLock { $0 } == 4 })
        #expect(failed.withLock { $0 } == 3)
        #expect(try store.auditLog().compactMap(\.actor) == ["reader0@clinic.com"])
        try audit.record([entry(4)])
        #expect(try store.auditLog().compactMap(\.actor).sorted() == ["reader0@clinic.com", "reader4@clinic.com"])
        #expect(audit.commits == 2)
    }
}
