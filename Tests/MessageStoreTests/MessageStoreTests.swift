import ChatCore
import Foundation
import ChatTesting
import GRDB
import Logging
import Testing
@testable import MessageStore

@Suite("Users and login")
struct UserTests {
    @Test("a user logs in with the right password only; unknown and disabled users look the same as a wrong password")
    func authentication() throws {
        let store = try makeStore()
        #expect(try store.authenticate(email: "Doctor@Clinic.com ", password: "password-doctor@clinic.com")?.name == "Dr. Sarah Kim")
        #expect(try store.authenticate(email: "doctor@clinic.com", password: "wrong-password") == nil)
        #expect(try store.authenticate(email: "nobody@clinic.com", password: "password-doctor@clinic.com") == nil)
        try store.setDisabled("doctor@clinic.com", true)
        #expect(try store.authenticate(email: "doctor@clinic.com", password: "password-doctor@clinic.com") == nil)
        #expect(try store.user("doctor@clinic.com")?.disabled == true)
    }

    @Test("passwords are stored as bcrypt hashes, never as text")
    func passwordsAreHashed() throws {
        let store = try makeStore()
        let hash = try store.read { db in try String.fetchOne(db, sql: "SELECT password_hash FROM users WHERE email = 'admin@clinic.com'") }
        #expect(hash?.hasPrefix("$2") == true)
        #expect(hash?.contains("password-admin") == false)
    }

    @Test("emails are unique regardless of case; bad input is refused with a reason")
    func creationRules() throws {
        let store = try makeStore()
        #expect(throws: ChatError(.conflict, "a user with this email already exists")) {
            try store.createUser(email: "ADMIN@clinic.com", name: "Again", role: .admin, password: "longenough")
        }
        for (email, name, password) in [("not-an-email", "N", "longenough"), ("a@b.co", " ", "longenough"), ("a@b.co", "N", "short")] {
            let error = #expect(throws: ChatError.self) { try store.createUser(email: email, name: name, role: .doctor, password: password) }
            #expect(error?.code == .invalidContent)
        }
    }

    @Test("roles change, and user search matches name or email, filters by role, and leaves out disabled users and the caller")
    func searchAndRoles() throws {
        let store = try makeStore()
        #expect(try store.searchUsers("dr.", role: nil).map(\.email) == ["dr.okafor@clinic.com", "dr.novak@clinic.com", "dr.garcia@clinic.com", "dr.patel@clinic.com", "doctor@clinic.com"])
        #expect(try store.searchUsers("kim", role: .doctor).map(\.email) == ["doctor@clinic.com"])
        #expect(try store.searchUsers("kim", role: .admin).isEmpty)
        #expect(try store.searchUsers("clinic", role: .admin, excluding: "admin@clinic.com").map(\.email) == ["admin2@clinic.com"])
        try store.setDisabled("dr.novak@clinic.com", true)
        #expect(try store.searchUsers("novak", role: nil).isEmpty)
        #expect(try store.searchUsers("%", role: nil).isEmpty)
        try store.setRole("dr.patel@clinic.com", .admin)
        #expect(try store.user("dr.patel@clinic.com")?.role == .admin)
        #expect(throws: ChatError.self) { try store.setRole("ghost@clinic.com", .admin) }
    }
}

@Suite("Conversations and messages")
struct ConversationTests {
    @Test("a 1:1 conversation is the same whoever opens it", arguments: [
        ("admin@clinic.com", "doctor@clinic.com"), ("doctor@clinic.com", "dr.patel@clinic.com"), ("admin@clinic.com", "admin2@clinic.com"),
    ])
    func directIsIdempotent(a: String, b: String) throws {
        let store = try makeStore()
        let first = try store.openDirectConversation(a, b)
        let second = try store.openDirectConversation(b.uppercased(), a)
        #expect(first.id == second.id)
        #expect(first.kind == .direct)
        #expect(first.participants == [a, b].sorted())
        #expect(throws: ChatError.self) { try store.openDirectConversation(a, a) }
        #expect(throws: ChatError(.notFound, "no such user: ghost@clinic.com")) { try store.openDirectConversation(a, "ghost@clinic.com") }
    }

    @Test("a send by email to or from a disabled user opens no conversation and stores nothing")
    func disabledUsersGetNoNewConversation() throws {
        let store = try makeStore()
        try store.setDisabled("dr.novak@clinic.com", true)
        #expect(throws: ChatError(.notFound, "no such user: dr.novak@clinic.com")) { try store.send("admin@clinic.com", receiver: "dr.novak@clinic.com", "hello") }
        #expect(throws: ChatError(.notFound, "no such user: dr.novak@clinic.com")) { try store.send("dr.novak@clinic.com", receiver: "admin@clinic.com", "hello") }
        #expect(try store.conversations(for: "admin@clinic.com").isEmpty)
        try store.setDisabled("dr.novak@clinic.com", false)
        #expect(try store.send("admin@clinic.com", receiver: "dr.novak@clinic.com", "hello").message.seq == 1)
    }

    @Test("the flow for every pairing and a group of 5: send, list by last activity, history, unread falls to 0 after reading", arguments: [
        ["admin@clinic.com", "doctor@clinic.com"], ["doctor@clinic.com", "dr.patel@clinic.com"], ["admin@clinic.com", "admin2@clinic.com"],
        ["admin@clinic.com", "doctor@clinic.com", "dr.patel@clinic.com", "dr.okafor@clinic.com", "admin2@clinic.com"],
    ])
    func flow(people: [String]) throws {
        let store = try makeStore()
        let sender = people[0]
        let conversation = people.count == 2
            ? try store.openDirectConversation(sender, people[1])
            : try store.createGroup(creator: sender, title: "Ward 3 handover", members: Array(people.dropFirst()))
        let other = try store.openDirectConversation(sender, "dr.novak@clinic.com")
        let t0 = Date(timeIntervalSince1970: 1_800_000_000)
        try store.send(sender, to: other.id, "earlier elsewhere", now: t0)
        for i in 1...3 { try store.send(sender, to: conversation.id, "message \(i)", now: t0 + Double(i)) }

        let list = try store.conversations(for: sender)
        #expect(list.map(\.id) == [conversation.id, other.id])
        #expect(list[0].lastMessage?.content == "message 3")
        #expect(list[0].unreadCount == 0)

        for reader in people.dropFirst() {
            #expect(try store.unreadCounts(for: reader).total == 3)
            #expect(try store.conversations(for: reader).first { $0.id == conversation.id }?.unreadCount == 3)
            let history = try store.history(for: reader, conversationID: conversation.id)
            #expect(history.map(\.content) == ["message 1", "message 2", "message 3"])
            #expect(history.map(\.seq) == [1, 2, 3])
            #expect(history.allSatisfy { $0.receiverEmail == (people.count == 2 ? reader : nil) })
            let update = try store.markRead(reader: reader, conversationID: conversation.id, upToSeq: 3)
            #expect(update.advanced)
            #expect(update.receipt.upToSeq == 3)
            #expect(update.receipt.messageID == history.last?.id)
            #expect(try store.unreadCounts(for: reader).total == 0)
        }
        #expect(try store.history(for: sender, conversationID: conversation.id).allSatisfy { $0.read && $0.readAt != nil })
    }

    @Test("95 messages read in pages of 30, by before and by skip: each exactly once, in order")
    func paging() throws {
        let store = try makeStore()
        let conversation = try store.openDirectConversation("admin@clinic.com", "doctor@clinic.com")
        let t0 = Date(timeIntervalSince1970: 1_800_000_000)
        let sends = (1...95).map { SendRequest(sender: $0 % 2 == 0 ? "admin@clinic.com" : "doctor@clinic.com", conversationID: conversation.id, content: "m\($0)", clientID: nil) }
        _ = try store.append(sends, now: t0)

        var byCursor: [String] = []
        var before: Int64? = nil
        while true {
            let page = try store.history(for: "admin@clinic.com", conversationID: conversation.id, limit: 30, before: before)
            if page.isEmpty { break }
            #expect(page.count <= 30)
            byCursor = page.map(\.content) + byCursor
            before = page.first?.seq
        }
        var bySkip: [String] = []
        for skip in stride(from: 0, to: 120, by: 30) {
            bySkip = try store.history(for: "doctor@clinic.com", conversationID: conversation.id, limit: 30, skip: skip).map(\.content) + bySkip
        }
        let expected = (1...95).map { "m\($0)" }
        #expect(byCursor == expected)
        #expect(bySkip == expected)
    }

    @Test("the same client_id sent three times is stored once and answered the same each time")
    func retriedSendsStoreOnce() throws {
        let store = try makeStore()
        let first = try store.send("doctor@clinic.com", receiver: "admin@clinic.com", "BP 120/80", clientID: "c-42")
        let second = try store.send("doctor@clinic.com", receiver: "admin@clinic.com", "BP 120/80", clientID: "c-42")
        let batch = try store.append([
            SendRequest(sender: "doctor@clinic.com", receiverEmail: "admin@clinic.com", content: "BP 120/80", clientID: "c-42"),
        ])[0].get()
        #expect(!first.duplicate && second.duplicate && batch.duplicate)
        #expect(second.message == first.message && batch.message == first.message)
        #expect(try store.history(for: "admin@clinic.com", conversationID: first.message.conversationID).count == 1)
        // Another sender may use the same client_id.
        #expect(try store.send("admin@clinic.com", receiver: "doctor@clinic.com", "ok", clientID: "c-42").duplicate == false)
    }

    @Test("seq is gap-free per conversation within one batch across conversations")
    func seqIsGapFree() throws {
        let store = try makeStore()
        let a = try store.openDirectConversation("admin@clinic.com", "doctor@clinic.com")
        let b = try store.openDirectConversation("admin@clinic.com", "dr.patel@clinic.com")
        let results = try store.append((0..<10).map { SendRequest(sender: "admin@clinic.com", conversationID: $0 % 2 == 0 ? a.id : b.id, content: "x\($0)", clientID: nil) })
        let stored = try results.map { try $0.get().message }
        #expect(stored.filter { $0.conversationID == a.id }.map(\.seq) == [1, 2, 3, 4, 5])
        #expect(stored.filter { $0.conversationID == b.id }.map(\.seq) == [1, 2, 3, 4, 5])
    }

    @Test("bad content gets a clear error and the rest of the batch is stored")
    func badContentInABatch() throws {
        let store = try makeStore()
        let c = try store.openDirectConversation("admin@clinic.com", "doctor@clinic.com")
        let results = try store.append([
            SendRequest(sender: "admin@clinic.com", conversationID: c.id, content: "   \n ", clientID: nil),
            SendRequest(sender: "admin@clinic.com", conversationID: c.id, content: String(repeating: "a", count: 10_001), clientID: nil),
            SendRequest(sender: "admin@clinic.com", conversationID: c.id, content: "bell \u{07}", clientID: nil),
            SendRequest(sender: "admin@clinic.com", conversationID: c.id, content: String(repeating: "é", count: 10_000), clientID: nil),
            SendRequest(sender: "admin@clinic.com", content: "to nobody", clientID: nil),
            SendRequest(sender: "admin@clinic.com", conversationID: c.id, content: "  fine  ", clientID: nil),
        ])
        let codes = results.map { result -> ChatError.Code? in if case .failure(let e) = result { return e.code } else { return nil } }
        #expect(codes == [.invalidContent, .invalidContent, .invalidContent, nil, .badRequest, nil])
        #expect(try store.history(for: "doctor@clinic.com", conversationID: c.id).map { $0.content.count } == [10_000, 4])
        #expect(try results[5].get().message.seq == 2)
    }

    @Test("someone else's conversation does not exist for them: history, send, read marks and search")
    func nonParticipantsSeeNothing() throws {
        let store = try makeStore()
        let c = try store.openDirectConversation("admin@clinic.com", "doctor@clinic.com")
        let m = try store.send("admin@clinic.com", to: c.id, "lab results for bed 4")
        let outsider = "dr.patel@clinic.com"
        let notFound = ChatError(.notFound, "conversation not found")
        #expect(throws: notFound) { try store.history(for: outsider, conversationID: c.id) }
        #expect(throws: notFound) { try store.conversation(c.id, for: outsider) }
        #expect(throws: notFound) { try store.send(outsider, to: c.id, "hi") }
        #expect(throws: notFound) { try store.markRead(reader: outsider, conversationID: c.id, upToSeq: 1) }
        #expect(throws: notFound) { try store.markMessageRead(reader: outsider, messageID: m.message.id) }
        #expect(throws: notFound) { try store.history(for: outsider, conversationID: "no-such-id") }
        #expect(throws: ChatError(.notFound, "message not found")) { try store.markMessageRead(reader: "doctor@clinic.com", messageID: "no-such-id") }
        #expect(try store.searchMessages(for: outsider, query: "lab").isEmpty)
        #expect(try store.searchMessages(for: "doctor@clinic.com", query: "lab").map(\.id) == [m.message.id])
        #expect(try store.conversations(for: outsider).isEmpty)
    }

    @Test("read markers only move forward, stop at the last message, and mark only others' messages read")
    func readMarkers() throws {
        let store = try makeStore()
        let c = try store.openDirectConversation("admin@clinic.com", "doctor@clinic.com")
        let mine = try store.send("doctor@clinic.com", to: c.id, "mine")
        let theirs = try store.send("admin@clinic.com", to: c.id, "theirs")
        let update = try store.markMessageRead(reader: "doctor@clinic.com", messageID: theirs.message.id)
        #expect(update.receipt.upToSeq == 2 && update.advanced)
        #expect(try store.markRead(reader: "doctor@clinic.com", conversationID: c.id, upToSeq: 1).advanced == false)
        #expect(try store.markRead(reader: "doctor@clinic.com", conversationID: c.id, upToSeq: 1).receipt.upToSeq == 2)
        #expect(try store.markRead(reader: "doctor@clinic.com", conversationID: c.id, upToSeq: 99).receipt.upToSeq == 2)
        let history = try store.history(for: "admin@clinic.com", conversationID: c.id)
        #expect(history.first { $0.id == mine.message.id }?.read == false)
        #expect(history.first { $0.id == theirs.message.id }?.read == true)
        #expect(throws: ChatError.self) { try store.markRead(reader: "doctor@clinic.com", conversationID: c.id, upToSeq: -1) }
    }

    @Test("a group's conversation carries every participant's read marker, so 'read by everyone' can be told from 'read by someone'")
    func groupReadPositions() throws {
        let store = try makeStore()
        let group = try store.createGroup(creator: "admin@clinic.com", title: "Night shift", members: ["dr.okafor@clinic.com", "dr.novak@clinic.com"])
        #expect(group.readPositions == ["admin@clinic.com": 0, "dr.novak@clinic.com": 0, "dr.okafor@clinic.com": 0])
        for i in 1...3 { try store.send("admin@clinic.com", to: group.id, "round \(i)") }
        _ = try store.markRead(reader: "dr.okafor@clinic.com", conversationID: group.id, upToSeq: 3)
        _ = try store.markRead(reader: "dr.novak@clinic.com", conversationID: group.id, upToSeq: 1)
        // Someone has read all three; only seq 1 is read by everyone.
        #expect(try store.history(for: "admin@clinic.com", conversationID: group.id).map(\.read) == [true, true, true])
        let expected = ["admin@clinic.com": 0, "dr.novak@clinic.com": 1, "dr.okafor@clinic.com": 3]
        #expect(try store.conversation(group.id, for: "admin@clinic.com").readPositions == expected)
        #expect(try store.conversations(for: "dr.novak@clinic.com").first { $0.id == group.id }?.readPositions == expected)
        // On the wire as read_positions, next to the participants.
        let json = try JSONValue(encoding: try store.conversation(group.id, for: "admin@clinic.com"))
        #expect(json["read_positions"]?["dr.novak@clinic.com"] == .number(1))
    }

    @Test("a group's receipt goes to the reader and the senders of the messages the move newly covers; a 1:1's to both; a long move's to everyone; an unmoved marker's to nobody")
    func receiptRecipients() throws {
        let store = try makeStore()
        let (admin, okafor, novak, patel) = ("admin@clinic.com", "dr.okafor@clinic.com", "dr.novak@clinic.com", "dr.patel@clinic.com")
        let group = try store.createGroup(creator: admin, title: "Night shift", members: [okafor, novak, patel])
        try store.send(novak, to: group.id, "bed 4")                       // 1
        try store.send(admin, to: group.id, "on it")                       // 2
        try store.send(patel, to: group.id, "me too")                      // 3
        try store.send(okafor, to: group.id, "thanks")                     // 4
        try store.send(admin, to: group.id, "done")                        // 5
        #expect(try store.markRead(reader: okafor, conversationID: group.id, upToSeq: 2).recipients == [okafor, admin, novak])
        // From 2 to 5: Patel's, Okafor's own and the admin's (the admin again, for seq 5).
        #expect(try store.markRead(reader: okafor, conversationID: group.id, upToSeq: 5).recipients == [okafor, admin, patel])
        #expect(try store.markRead(reader: okafor, conversationID: group.id, upToSeq: 5).recipients == [])
        // Only the reader's own message newly covered: the reader's devices alone.
        try store.send(novak, to: group.id, "and bed 6")                   // 6
        _ = try store.markRead(reader: novak, conversationID: group.id, upToSeq: 5)
        #expect(try store.markRead(reader: novak, conversationID: group.id, upToSeq: 6).recipients == [novak])
        // A 1:1: both, even when only the reader's messages are covered.
        let direct = try store.openDirectConversation(admin, okafor)
        try store.send(okafor, to: direct.id, "labs are back")
        #expect(try store.markRead(reader: okafor, conversationID: direct.id, upToSeq: 1).recipients == [admin, okafor])
        // A move longer than the scan (a reader back after a long time): every member.
        let busy = try store.createGroup(creator: admin, title: "Busy", members: [okafor, novak])
        _ = try store.append((0...MessageStore.receiptRecipientScan).map { _ in SendRequest(sender: admin, conversationID: busy.id, content: "update", clientID: nil) })
        #expect(try store.markRead(reader: novak, conversationID: busy.id, upToSeq: .max).recipients == [admin, novak, okafor])
    }

    @Test("search matches words and prefixes; FTS syntax in the query is plain text")
    func search() throws {
        let store = try makeStore()
        let c = try store.openDirectConversation("admin@clinic.com", "doctor@clinic.com")
        try store.send("admin@clinic.com", to: c.id, "Potassium is 5.9, please recheck")
        try store.send("doctor@clinic.com", to: c.id, "Rechecking potassium now")
        try store.send("doctor@clinic.com", to: c.id, "Patient in bed 4 is stable")
        #expect(try store.searchMessages(for: "admin@clinic.com", query: "potassium").count == 2)
        #expect(try store.searchMessages(for: "admin@clinic.com", query: "potass rech").count == 2)
        #expect(try store.searchMessages(for: "admin@clinic.com", query: "bed stable").map(\.content) == ["Patient in bed 4 is stable"])
        for hostile in ["\"", "NEAR(a b", "a OR", "*", "content:x", "AND AND", ")("] {
            _ = try store.searchMessages(for: "admin@clinic.com", query: hostile)
        }
        #expect(try store.searchMessages(for: "admin@clinic.com", query: "   ").isEmpty)
    }

    @Test("a batch's sends are searchable together, sends rolled back in it are not, and the search index stays consistent through a purge")
    func searchIndexPerBatch() throws {
        let store = try makeStore()
        let c = try store.openDirectConversation("admin@clinic.com", "doctor@clinic.com")
        func send(_ content: String, _ conversation: String = c.id) throws -> (id: String, command: StoreCommand) {
            (UUID().uuidString, try StoreCommand(type: .send, user: "admin@clinic.com", body: SendMessageRequest(conversationID: conversation, content: content, clientID: nil)))
        }
        let outcomes = try store.apply([try send("heparin drip started"), try send("   "), try send("heparin for nobody", "no-such-conversation"),
                                        try send("heparin paused for surgery"), try send("bell \u{07} heparin")])
        let stored = outcomes.compactMap { outcome -> Message? in if case .sent(let s) = outcome { return s.message } else { return nil } }
        #expect(stored.map(\.content) == ["heparin drip started", "heparin paused for surgery"])
        #expect(Set(try store.searchMessages(for: "doctor@clinic.com", query: "heparin").map(\.id)) == Set(stored.map(\.id)))
        func indexIsConsistent() throws -> Bool {
            // FTS5 compares the index with the messages table; a row indexed twice or not at all fails it.
            (try? store.write { db in try db.execute(sql: "INSERT INTO messages_fts(messages_fts, rank) VALUES ('integrity-check', 1)") }) != nil
        }
        #expect(try indexIsConsistent())
        _ = try store.write { db in try store.purge(db, ids: [stored[0].id], now: Date().addingTimeInterval(91 * 86400)) }
        #expect(try store.searchMessages(for: "doctor@clinic.com", query: "heparin").map(\.id) == [stored[1].id])
        #expect(try indexIsConsistent())
    }

    @Test("a command's savepoint: what a failed command wrote is rolled back alone, the batch goes on; when SQLite ends the transaction the batch fails")
    func commandSavepoints() throws {
        let store = try makeStore()
        let c = try store.openDirectConversation("admin@clinic.com", "doctor@clinic.com")
        @Sendable func note(_ text: String) -> AuditEntry {
            AuditEntry(at: Date(), context: RequestContext(actor: "admin@clinic.com", gateway: nil, requestID: nil), action: "test.note", target: text, outcome: "ok")
        }
        func notes() throws -> [String] { try store.auditLog().filter { $0.action == "test.note" }.compactMap(\.target).sorted() }
        let answered: [String] = try store.write { db in
            var answered: [String] = []
            for text in ["first", "failed", "third"] {
                do {
                    try MessageStore.inSavepoint(db) {
                        try store.record(db, [note(text)])
                        if text == "failed" { throw ChatError(.invalidContent, "refused after writing") }
                    }
                    answered.append(text)
                } catch let error as ChatError {
                    answered.append(error.message)
                }
            }
            return answered
        }
        #expect(answered == ["first", "refused after writing", "third"])
        #expect(try notes() == ["first", "third"])

        // A statement that ends the whole transaction (RAISE(ROLLBACK)), its error turned into
        // a command's own: there is no savepoint to roll back to, so the batch fails and keeps nothing.
        _ = try store.write { db in
            try db.execute(sql: "CREATE TEMP TRIGGER end_all BEFORE INSERT ON audit_log WHEN NEW.target = 'ends it' BEGIN SELECT RAISE(ROLLBACK, 'ended'); END")
        }
        #expect(throws: DatabaseError.self) {
            try store.write { db in
                try store.record(db, [note("before it")])
                try MessageStore.inSavepoint(db) {
                    do { try store.record(db, [note("ends it")]) } catch { throw ChatError(.invalidContent, "answered as the command's") }
                }
            }
        }
        #expect(try notes() == ["first", "third"])
        // The next batch is applied as usual.
        let sent = try store.apply([("9-1", try StoreCommand(type: .send, user: "admin@clinic.com", body: SendMessageRequest(conversationID: c.id, content: "after", clientID: nil)))])
        if case .sent(let stored)? = sent.first { #expect(stored.message.content == "after") } else { Issue.record("not sent: \(sent)") }
    }

    @Test("a send refused in a batch writes nothing (sends run without a savepoint): no message, no seq, no conversation; the batch's other sends are stored; an entry twice in one batch is applied once")
    func refusedSendsWriteNothing() throws {
        let store = try makeStore()
        let c = try store.openDirectConversation("admin@clinic.com", "doctor@clinic.com")
        let theirs = try store.openDirectConversation("dr.patel@clinic.com", "dr.okafor@clinic.com")
        _ = try store.write { db in try db.execute(sql: "UPDATE users SET disabled = 1 WHERE email = 'dr.garcia@clinic.com'") }
        func send(_ id: String, _ body: SendMessageRequest, from user: String = "admin@clinic.com") throws -> (id: String, command: StoreCommand) {
            (id, try StoreCommand(type: .send, user: user, body: body))
        }
        func count(_ sql: String) throws -> Int { try store.read { db in try Int.fetchOne(db, sql: sql) ?? -1 } }
        let conversationsBefore = try count("SELECT COUNT(*) FROM conversations")
        let batch = [
            try send("5-1", SendMessageRequest(conversationID: c.id, content: "first", clientID: nil)),
            try send("5-2", SendMessageRequest(conversationID: theirs.id, content: "not my conversation", clientID: nil)),
            try send("5-3", SendMessageRequest(conversationID: "no-such-conversation", content: "nowhere", clientID: nil)),
            try send("5-4", SendMessageRequest(conversationID: c.id, content: "   ", clientID: nil)),
            try send("5-5", SendMessageRequest(conversationID: c.id, content: "long id", clientID: String(repeating: "x", count: 129))),
            try send("5-6", SendMessageRequest(receiverEmail: "nobody@clinic.com", content: "to nobody", clientID: nil)),
            try send("5-7", SendMessageRequest(receiverEmail: "dr.garcia@clinic.com", content: "to a disabled user", clientID: nil)),
            try send("5-8", SendMessageRequest(receiverEmail: "admin@clinic.com", content: "to myself", clientID: nil)),
            try send("5-10", SendMessageRequest(receiverEmail: "admin@clinic.com", content: "from a disabled user", clientID: nil), from: "dr.garcia@clinic.com"),
            try send("5-1", SendMessageRequest(conversationID: c.id, content: "first", clientID: nil)),
            try send("5-9", SendMessageRequest(conversationID: c.id, content: "second", clientID: nil)),
        ]
        let outcomes = try store.apply(batch)
        let codes = outcomes.map { outcome -> String in
            switch outcome {
            case .sent(let stored): "sent \(stored.message.seq)"
            case .failed(let error): error.code.rawValue
            default: "\(outcome)"
            }
        }
        #expect(codes == ["sent 1", "not_found", "not_found", "invalid_content", "bad_request", "not_found", "not_found", "bad_request", "not_found", "sent 1", "sent 2"])
        #expect(try store.history(for: "doctor@clinic.com", conversationID: c.id).map(\.content) == ["first", "second"])
        #expect(try count("SELECT last_seq FROM conversations WHERE id = '\(c.id)'") == 2)
        #expect(try count("SELECT last_seq FROM conversations WHERE id = '\(theirs.id)'") == 0)
        #expect(try count("SELECT COUNT(*) FROM conversations") == conversationsBefore)
        #expect(try count("SELECT COUNT(*) FROM messages") == 2)
        // Each entry recorded once, the refused with their errors; the batch given again changes nothing.
        #expect(try count("SELECT COUNT(*) FROM applied_commands WHERE entry_id LIKE '5-%'") == 10)
        #expect(try count("SELECT COUNT(*) FROM applied_commands WHERE entry_id LIKE '5-%' AND error IS NOT NULL") == 8)
        let again = try store.apply(batch)
        #expect(again.count == batch.count)
        #expect(try count("SELECT COUNT(*) FROM messages") == 2)
        #expect(try count("SELECT last_seq FROM conversations WHERE id = '\(c.id)'") == 2)
    }

    @Test("a send by receiver email names the pair as its participants, as stored, whether it opened the 1:1 or found it; a disabled sender is refused even into an existing 1:1, by email or by conversation id")
    func sendByReceiverParticipants() throws {
        let store = try makeStore()
        let opened = try store.send("Dr.Patel@clinic.com", receiver: "ADMIN@clinic.com", "first of a new 1:1")
        let found = try store.send("admin@clinic.com", receiver: "dr.patel@clinic.com", "second, same 1:1")
        #expect(opened.message.conversationID == found.message.conversationID)
        let stored = try store.read { db in try store.participants(db, found.message.conversationID) }
        #expect(stored == ["admin@clinic.com", "dr.patel@clinic.com"])
        #expect(opened.participants == stored && found.participants == stored)
        #expect(opened.message.receiverEmail == "admin@clinic.com" && found.message.receiverEmail == "dr.patel@clinic.com")
        // A disabled sender is refused, even into the 1:1 that exists (read with its flag).
        _ = try store.write { db in try db.execute(sql: "UPDATE users SET disabled = 1 WHERE email = 'dr.patel@clinic.com'") }
        let refused = try store.append([
            SendRequest(sender: "dr.patel@clinic.com", receiverEmail: "admin@clinic.com", content: "after", clientID: nil),
            // A send queued before the user was disabled, by conversation id.
            SendRequest(sender: "dr.patel@clinic.com", conversationID: found.message.conversationID, content: "queued before", clientID: nil),
            SendRequest(sender: "admin@clinic.com", conversationID: found.message.conversationID, content: "the other one still sends", clientID: nil),
        ])
        for result in refused.prefix(2) {
            let error = #expect(throws: ChatError.self) { try result.get() }
            #expect(error?.message == "no such user: dr.patel@clinic.com")
        }
        #expect(try refused[2].get().message.seq == 3)
        #expect(try store.history(for: "admin@clinic.com", conversationID: found.message.conversationID).count == 3)
    }

    @Test("message ids are UUIDs of version 7 that sort in the order the messages were stored")
    func timeOrderedIDs() throws {
        let store = try makeStore()
        let c = try store.openDirectConversation("admin@clinic.com", "doctor@clinic.com")
        let start = Date()
        var ids: [String] = []
        for minute in 0..<5 {
            let batch = try store.append((0..<20).map { SendRequest(sender: "admin@clinic.com", conversationID: c.id, content: "note \(minute).\($0)", clientID: nil) },
                                         now: start.addingTimeInterval(Double(minute) * 60))
            ids += try batch.map { try $0.get().message.id }
        }
        #expect(Set(ids).count == 100)
        for id in ids {
            let uuid = try #require(UUID(uuidString: id))
            #expect(uuid.uuid.6 >> 4 == 7 && uuid.uuid.8 >> 6 == 0b10, "\(id)")
            #expect(id == id.lowercased())
        }
        // Across milliseconds the order is the time order (within one millisecond it is random).
        let byMinute = stride(from: 0, to: 100, by: 20).map { ids[$0] }
        #expect(byMinute == byMinute.sorted())
        let firstMillisecond = Int64(ids[0].replacingOccurrences(of: "-", with: "").prefix(12), radix: 16)
        #expect(firstMillisecond == start.epochMilliseconds)
    }

    @Test("an expired message is gone from history, previews, unread counts and search at once")
    func expiredMessagesAreInvisible() throws {
        let store = try makeStore(retention: .seconds(60))
        let c = try store.openDirectConversation("admin@clinic.com", "doctor@clinic.com")
        let t0 = Date(timeIntervalSince1970: 1_800_000_000)
        try store.send("admin@clinic.com", to: c.id, "old potassium note", now: t0)
        try store.send("admin@clinic.com", to: c.id, "new note", now: t0 + 30)
        let later = t0 + 61
        #expect(try store.history(for: "doctor@clinic.com", conversationID: c.id, now: later).map(\.content) == ["new note"])
        #expect(try store.unreadCounts(for: "doctor@clinic.com", now: later).total == 1)
        #expect(try store.searchMessages(for: "doctor@clinic.com", query: "potassium", now: later).isEmpty)
        #expect(try store.conversations(for: "doctor@clinic.com", now: t0 + 91).first?.lastMessage == nil)
        #expect(try store.history(for: "doctor@clinic.com", conversationID: c.id, now: t0).first?.expiresAt == t0 + 60)
    }

    @Test("groups need a title and at most 256 members, all of them real")
    func groupRules() throws {
        let store = try makeStore()
        #expect(throws: ChatError.self) { try store.createGroup(creator: "admin@clinic.com", title: "  ", members: ["doctor@clinic.com"]) }
        #expect(throws: ChatError.self) { try store.createGroup(creator: "admin@clinic.com", title: "Solo", members: []) }
        #expect(throws: ChatError.self) { try store.createGroup(creator: "admin@clinic.com", title: "G", members: ["ghost@clinic.com"]) }
        let big = (0..<256).map { "u\($0)@clinic.com" }
        for email in big { try store.createUser(email: email, name: email, role: .doctor, password: "password1") }
        #expect(throws: ChatError.self) { try store.createGroup(creator: "admin@clinic.com", title: "Too big", members: big) }
        let group = try store.createGroup(creator: "admin@clinic.com", title: "Everyone", members: Array(big.prefix(255)))
        #expect(group.participants.count == 256)
        #expect(group.title == "Everyone")
    }
}

@Suite("Audit log and the database file")
struct AuditAndFileTests {
    @Test("audit entries are listed newest first and cannot be edited")
    func auditIsAppendOnly() throws {
        let store = try makeStore()
        let context = RequestContext(actor: "admin@clinic.com", gateway: "gw-1", requestID: "r-1")
        try store.record([
            AuditEntry(at: Date(), context: context, action: "login", target: nil, outcome: "ok"),
            AuditEntry(at: Date(), context: context, action: "history", target: "c-1", outcome: "denied"),
        ])
        let log = try store.auditLog()
        #expect(log.map(\.action) == ["history", "login"])
        #expect(log[0].gateway == "gw-1" && log[0].requestID == "r-1" && log[0].actor == "admin@clinic.com")
        #expect(try store.auditLog(limit: 10, beforeID: log[0].id).map(\.action) == ["login"])
        #expect(throws: DatabaseError.self) { try store.write { db in try db.execute(sql: "UPDATE audit_log SET outcome = 'ok'") } }
    }

    @Test("every commit is synced: the writer of a file store runs with synchronous = FULL, not the NORMAL GRDB gives a pool, also after a purge step")
    func commitsAreSynced() throws {
        let path = temporaryDatabasePath("sync")
        defer { removeDatabase(at: path) }
        let store = try MessageStore.open(path: path, retention: .seconds(3600), bcryptCost: 4)
        #expect(try store.write { db in try Int.fetchOne(db, sql: "PRAGMA synchronous") } == 2)
        #expect(try store.write { db in try String.fetchOne(db, sql: "PRAGMA journal_mode") } == "wal")
        // A purge step commits without a sync, and leaves the writer syncing again.
        #expect(try store.purgeStep(ids: ["no-such-message"], entry: "1-0").count == 0)
        #expect(try store.write { db in try Int.fetchOne(db, sql: "PRAGMA synchronous") } == 2)
        #expect(!store.writerSync.isLowered)
        // A step whose reset failed (lowered, marked, not raised again): the next write raises it
        // before its own transaction.
        store.writerSync.lowered(true)
        try store.writer.writeWithoutTransaction { db in try db.execute(sql: "PRAGMA synchronous = NORMAL") }
        #expect(try store.writer.writeWithoutTransaction { db in try Int.fetchOne(db, sql: "PRAGMA synchronous") } == 1)
        #expect(try store.write { db in try Int.fetchOne(db, sql: "PRAGMA synchronous") } == 2)
        #expect(!store.writerSync.isLowered)
        // GRDB's own default, which this guards against.
        let plain = try DatabasePool(path: path)
        #expect(try plain.write { db in try Int.fetchOne(db, sql: "PRAGMA synchronous") } == 1)
        try plain.close()
    }

    @Test("a purge killed between its steps and given again is answered and audited with every step, before and after the restart")
    func purgeStepsSurviveARestart() throws {
        let path = temporaryDatabasePath("steps")
        defer { removeDatabase(at: path) }
        let old = Date().addingTimeInterval(-2 * 3600)
        var store = try MessageStore.open(path: path, retention: .seconds(3600), bcryptCost: 4)
        for email in ["a@clinic.com", "b@clinic.com"] { try store.createUser(email: email, name: email, role: .doctor, password: "password1") }
        try store.createUser(email: "c@clinic.com", name: "C", role: .admin, password: "password1")
        let c = try store.openDirectConversation("a@clinic.com", "b@clinic.com")
        let ids = try (0..<8).map { try store.send("a@clinic.com", to: c.id, "old \($0)", now: old).message.id }
        let held = try store.openDirectConversation("a@clinic.com", "c@clinic.com")
        let kept = try store.send("a@clinic.com", to: held.id, "kept", now: old).message.id
        _ = try store.apply([("0-1", StoreCommand(type: .setLegalHold, user: "", body: LegalHoldRequest(conversationID: held.id, held: true)))])
        let all = [kept] + ids
        let command = try StoreCommand(type: .purge, user: "", body: PurgeRequest(messageIDs: all))
        let steps = stride(from: 0, to: 6, by: 3).map { Array(all[$0..<$0 + 3]) }  // the last three are the command's own

        // The first step runs, then the service is killed: nothing of the processor's memory survives.
        #expect(try store.purgeStep(ids: steps[0], entry: "5-1").count == 2)
        store = try MessageStore.open(path: path, retention: .seconds(3600), bcryptCost: 4)
        // Given the command again, the processor runs every step again, then the command.
        #expect(try store.purgeStep(ids: steps[0], entry: "5-1").count == 0)
        #expect(try store.purgeStep(ids: steps[1], entry: "5-1").count == 3)
        let outcome = try #require(try store.apply([("5-1", command)]).first)
        guard case .purged(let result) = outcome else { Issue.record("not purged: \(outcome)"); return }
        #expect(Set(result.deleted[c.id] ?? []) == Set(ids))
        #expect(result.held == [kept])  // seen by three passes, counted once
        #expect(result.participants[c.id] == ["a@clinic.com", "b@clinic.com"])
        #expect(try store.auditLog().first { $0.action == "retention.purge" }?.detail == "8 deleted, 1 held")
        #expect(try store.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM purge_steps") } == 0)

        // Given once more (killed after the commit, before XACK): answered (and so announced)
        // with what it deleted the first time, and the steps that ran again leave nothing behind.
        #expect(try store.purgeStep(ids: steps[0], entry: "5-1").held == [kept])
        let again = try store.apply([("5-1", command)])
        #expect(again.count == 1)
        if case .purged(let replayed)? = again.first { #expect(replayed == result) } else { Issue.record("not answered with the purge: \(again)") }
        #expect(try store.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM purge_steps") } == 0)
        #expect(try store.auditLog().filter { $0.action == "retention.purge" }.count == 1)
    }

    @Test("an entry applied before and given again (killed before XACK) is answered as the first time, as things are now, and nothing is applied twice")
    func replayedEntriesAnswerAsBefore() throws {
        let store = try makeStore(retention: .seconds(3600))
        let old = Date().addingTimeInterval(-2 * 3600)
        let c = try store.openDirectConversation("admin@clinic.com", "doctor@clinic.com")
        let due = try store.send("admin@clinic.com", to: c.id, "due", now: old).message
        let earlier = try store.send("admin@clinic.com", to: c.id, "earlier").message
        let last = try store.send("admin@clinic.com", to: c.id, "latest").message
        let batch: [(id: String, command: StoreCommand)] = [
            ("1-1", try StoreCommand(type: .send, user: "admin@clinic.com", body: SendMessageRequest(conversationID: c.id, content: "   ", clientID: "e1"))),
            ("1-2", try StoreCommand(type: .markConversationRead, user: "doctor@clinic.com", body: MarkConversationReadRequest(conversationID: c.id, upToSeq: last.seq))),
            ("1-3", try StoreCommand(type: .createConversation, user: "admin@clinic.com",
                                     body: CreateConversationRequest(participants: ["doctor@clinic.com", "dr.patel@clinic.com"], title: "Ward 4"))),
            ("1-4", try StoreCommand(type: .setUserDisabled, user: "admin@clinic.com", body: UpdateUserRequest(email: "dr.novak@clinic.com", disabled: true))),
            ("1-5", try StoreCommand(type: .setLegalHold, user: "admin@clinic.com", body: LegalHoldRequest(conversationID: c.id, held: false))),
            ("1-6", try StoreCommand(type: .markMessageRead, user: "doctor@clinic.com", body: MarkMessageReadRequest(messageID: earlier.id))),
            ("1-7", try StoreCommand(type: .audit, user: "admin@clinic.com", body: AuditRequest(action: "auth.login", outcome: "ok"))),
        ]
        let first = try store.apply(batch)
        let conversations = try store.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM conversations") }
        let auditLines = try store.auditLog().count
        // Given again: 1-6 (a read mark of an earlier message, after 1-2) moved nothing back,
        // and both replayed show the marker as it is.
        let again = try store.apply(batch)
        #expect(again.count == batch.count)

        guard case .failed(let refused) = again[0], case .failed(let refusedFirst) = first[0] else { Issue.record("send not refused again: \(again[0])"); return }
        #expect(refused == refusedFirst)
        guard case .read(let read) = again[1], case .read(let readFirst) = first[1] else { Issue.record("read mark: \(again[1])"); return }
        #expect(read.advanced, "announced again")
        #expect(read.receipt == readFirst.receipt && read.receipt.upToSeq == last.seq)
        guard case .conversation(let group) = again[2], case .conversation(let groupFirst) = first[2] else { Issue.record("group: \(again[2])"); return }
        #expect(group.id == groupFirst.id && group.title == "Ward 4")
        guard case .user(let user) = again[3] else { Issue.record("user: \(again[3])"); return }
        #expect(user.email == "dr.novak@clinic.com" && user.disabled)
        guard case .legalHold(let held, let isHeld, let released) = again[4] else { Issue.record("hold: \(again[4])"); return }
        #expect(held == c.id && !isHeld && released.map(\.id) == [due.id])
        guard case .read(let readMessage) = again[5] else { Issue.record("message read mark: \(again[5])"); return }
        #expect(readMessage.advanced && readMessage.receipt.upToSeq == last.seq, "the marker as it is, not moved back")
        if case .alreadyApplied = again[6] {} else { Issue.record("audit: \(again[6])") }

        #expect(try store.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM conversations") } == conversations, "no second group")
        #expect(try store.auditLog().count == auditLines, "no second audit line")
        #expect(try store.history(for: "admin@clinic.com", conversationID: c.id).map(\.content) == ["earlier", "latest"])

        // Things change after the first application: the replay says how they are now.
        try store.setDisabled("dr.novak@clinic.com", false)
        guard case .user(let enabled) = try store.apply([batch[3]])[0] else { Issue.record("user again"); return }
        #expect(!enabled.disabled)
    }

    @Test("records of applied entries are forgotten after the kept age, in chunks, oldest first; younger ones still stop a second application")
    func forgetAppliedCommands() throws {
        let store = try makeStore()
        let c = try store.openDirectConversation("admin@clinic.com", "doctor@clinic.com")
        let now = Date()
        let week: Duration = .seconds(7 * 86400)
        func send(_ text: String) throws -> StoreCommand {
            try StoreCommand(type: .send, user: "admin@clinic.com", body: SendMessageRequest(conversationID: c.id, content: text, clientID: nil))
        }
        func applied() throws -> [String] { try store.read { db in try String.fetchAll(db, sql: "SELECT entry_id FROM applied_commands ORDER BY entry_id") } }
        // Five entries from eight days ago, two from an hour ago; stream ids carry their time.
        let oldAt = now.addingTimeInterval(-8 * 86400), newAt = now.addingTimeInterval(-3600)
        let old = (0..<5).map { "\(oldAt.epochMilliseconds)-\($0)" }, young = (0..<2).map { "\(newAt.epochMilliseconds)-\($0)" }
        _ = try store.apply(try old.map { ($0, try send("old")) }, now: oldAt)
        _ = try store.apply(try young.map { ($0, try send("young")) }, now: newAt)
        try store.write { db in
            try db.execute(sql: "INSERT INTO purge_steps (entry_id, recorded_at, deleted, held) VALUES ('1-0', ?, '{}', '[]'), ('2-0', ?, '{}', '[]')",
                           arguments: [oldAt.epochMilliseconds, newAt.epochMilliseconds])
        }
        // At most two full chunks per call: four of the five, then the last.
        #expect(try store.forgetAppliedCommands(olderThan: week, now: now, chunk: 2, maxChunks: 2) == 4)
        #expect(try applied() == [old[4]] + young)
        #expect(try store.forgetAppliedCommands(olderThan: week, now: now, chunk: 2) == 1)
        #expect(try applied() == young)
        #expect(try store.read { db in try String.fetchAll(db, sql: "SELECT entry_id FROM purge_steps") } == ["2-0"])
        #expect(try store.forgetAppliedCommands(olderThan: week, now: now, chunk: 2) == 0)
        // A young entry given again is still applied once: answered with the message it stored (seq 6).
        let again = try store.apply([(young[0], try send("young"))], now: now)
        if case .sent(let stored)? = again.first { #expect(stored.message.seq == 6) } else { Issue.record("not answered as the stored send: \(again)") }
        #expect(try store.history(for: "doctor@clinic.com", conversationID: c.id).count == 7)
    }

    @Test("the service's hourly cleanup forgets a backlog larger than one round of chunks, and keeps the week's records")
    func forgetOldAppliedEntries() async throws {
        let store = try makeStore()
        let now = Date()
        let old = now.addingTimeInterval(-8 * 86400).epochMilliseconds, young = now.addingTimeInterval(-86400).epochMilliseconds
        try store.write { db in
            // 6,001 old records: more than ten chunks of 500, so the cleanup pauses and goes on.
            for i in 0..<6_001 {
                try db.execute(sql: "INSERT INTO applied_commands (entry_id, applied_at) VALUES (?, ?)", arguments: ["\(old)-\(i)", old])
            }
            for i in 0..<2 {
                try db.execute(sql: "INSERT INTO applied_commands (entry_id, applied_at) VALUES (?, ?)", arguments: ["\(young)-\(i)", young])
            }
        }
        #expect(await MessagesService.forgetOldAppliedEntries(store, logger: Logger(label: "test"), now: now) == 6_001)
        #expect(try store.read { db in try String.fetchAll(db, sql: "SELECT entry_id FROM applied_commands ORDER BY entry_id") } == ["\(young)-0", "\(young)-1"])
    }

    @Test("compaction after a purge empties the WAL, and says so when a reader's old snapshot stops it")
    func compactionEmptiesTheWAL() async throws {
        let path = temporaryDatabasePath("compact")
        defer { removeDatabase(at: path) }
        let store = try MessageStore.open(path: path, retention: .seconds(3600), bcryptCost: 4, busyTimeout: .milliseconds(100))
        try store.createUser(email: "a@clinic.com", name: "A", role: .admin, password: "password1")
        try store.createUser(email: "b@clinic.com", name: "B", role: .doctor, password: "password1")
        try store.send("a@clinic.com", receiver: "b@clinic.com", "first")
        @Sendable func walBytes() -> Int { (try? FileManager.default.attributesOfItem(atPath: path + "-wal")[.size] as? Int) ?? -1 }

        // Another connection in a read transaction that has read from the WAL, then a new commit:
        // its snapshot is old, and the WAL cannot be emptied under it.
        var open = Configuration()
        open.allowsUnsafeTransactions = true  // the read transaction outlives one access
        let reader = try DatabaseQueue(path: path, configuration: open)
        try await reader.writeWithoutTransaction { db in
            try db.execute(sql: "BEGIN DEFERRED")
            _ = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM messages")
        }
        try store.send("a@clinic.com", receiver: "b@clinic.com", "second")
        #expect(try store.compactAfterPurge() == false)
        #expect(walBytes() > 0)
        #expect(store.walTruncationPending)

        // Once the reader is done, the periodic checkpoint retries the truncation and empties the WAL.
        try await reader.writeWithoutTransaction { db in try db.execute(sql: "COMMIT") }
        #expect(await eventually(timeout: .seconds(5), every: .milliseconds(100)) { _ = try? await store.checkpoint(); return walBytes() == 0 })
        #expect(!store.walTruncationPending)
        // With no old snapshot, a compaction empties it at once.
        try store.send("a@clinic.com", receiver: "b@clinic.com", "third")
        #expect(walBytes() > 0)
        #expect(try store.compactAfterPurge() == true)
        #expect(walBytes() == 0)
    }

    @Test("a WAL truncation that failed is retried after 1 s, then 2, 4, ... at most a minute apart, and forgotten once it succeeds")
    func truncationRetrySchedule() {
        let retry = TruncationRetry()
        let start = ContinuousClock.now
        #expect(!retry.isPending && !retry.due(now: start))
        var waits: [Int] = []
        var now = start
        for _ in 0..<9 {
            retry.attempted(succeeded: false, now: now)
            #expect(retry.isPending && !retry.due(now: now))
            var wait = 0
            while !retry.due(now: now + .seconds(wait)) { wait += 1 }
            waits.append(wait)
            now = now + .seconds(wait)
        }
        #expect(waits == [1, 2, 4, 8, 16, 32, 60, 60, 60])
        retry.attempted(succeeded: true, now: now)
        #expect(!retry.isPending && !retry.due(now: now + .seconds(3600)))
    }

    @Test("the database file is in WAL mode with secure_delete on, is checkpointed beside the writer, and survives reopening")
    func fileDatabase() async throws {
        let path = temporaryDatabasePath("chat")
        defer { removeDatabase(at: path) }
        do {
            let store = try MessageStore.open(path: path, retention: .seconds(3600), bcryptCost: 4)
            try store.createUser(email: "a@clinic.com", name: "A", role: .admin, password: "password1")
            try store.createUser(email: "b@clinic.com", name: "B", role: .doctor, password: "password1")
            try store.send("a@clinic.com", receiver: "b@clinic.com", "kept")
            #expect(try store.read { db in try String.fetchOne(db, sql: "PRAGMA journal_mode") } == "wal")
            #expect(try store.read { db in try Int.fetchOne(db, sql: "PRAGMA secure_delete") } == 1)
            // Commits leave checkpoints to checkpoint(), which copies the WAL beside the writer.
            #expect(try store.write { db in try Int.fetchOne(db, sql: "PRAGMA wal_autocheckpoint") } == 16384)
            let checkpoint = try await store.checkpoint()
            #expect(checkpoint.walFrames > 0 && checkpoint.checkpointed == checkpoint.walFrames)
        }
        let reopened = try MessageStore.open(path: path, retention: .seconds(3600), bcryptCost: 4)
        let c = try #require(try reopened.conversations(for: "b@clinic.com").first)
        #expect(try reopened.history(for: "b@clinic.com", conversationID: c.id).map(\.content) == ["kept"])
    }
}

@Suite("Schema migrations")
struct MigrationTests {
    /// The columns of each unique index on `messages`, as SQLite lists them.
    static func uniqueIndexes(_ db: Database) throws -> Set<[String]> {
        var result = Set<[String]>()
        for index in try Row.fetchAll(db, sql: "PRAGMA index_list(messages)") where (index["unique"] as Int) == 1 {
            let name: String = index["name"]
            result.insert(try Row.fetchAll(db, sql: "PRAGMA index_info(\(name.quotedDatabaseIdentifier))").map { $0["name"] })
        }
        return result
    }

    @Test("v5 rebuilds the messages table with the client id first in its unique index: rows, rowids, search, deletes and retries are as before")
    func clientIDIndexRebuild() throws {
        let path = temporaryDatabasePath("v5")
        defer { removeDatabase(at: path) }
        let now = Date().epochMilliseconds
        // A store as v4 left it, with rowids that are not 1, 2, 3 and one send without a client id.
        let old = try DatabaseQueue(path: path)
        try Schema.migrator.migrate(old, upTo: "v4: purge steps")
        try old.write { db in
            for email in ["a@clinic.com", "b@clinic.com"] {
                try db.execute(sql: "INSERT INTO users (email, name, role, password_hash, created_at) VALUES (?, ?, 'doctor', 'x', ?)", arguments: [email, email, now])
            }
            try db.execute(sql: "INSERT INTO conversations (id, kind, direct_key, created_by, created_at, last_seq, last_message_at) VALUES ('c1', 'direct', 'a@clinic.com b@clinic.com', 'a@clinic.com', ?, 3, ?)",
                           arguments: [now, now])
            for email in ["a@clinic.com", "b@clinic.com"] {
                try db.execute(sql: "INSERT INTO participants (conversation_id, email, joined_at) VALUES ('c1', ?, ?)", arguments: [email, now])
            }
            for (rowid, seq, sender, content, clientID) in [(5, 1, "a@clinic.com", "potassium is 5.9", "c-1"), (9, 2, "b@clinic.com", "rechecking potassium", "c-1"),
                                                           (12, 3, "a@clinic.com", "bed 4 stable", nil)] as [(Int, Int, String, String, String?)] {
                try db.execute(sql: """
                    INSERT INTO messages (rowid, id, conversation_id, seq, sender_email, content, created_at, expires_at, client_id)
                    VALUES (?, ?, 'c1', ?, ?, ?, ?, ?, ?)
                    """, arguments: [rowid, "m\(seq)", seq, sender, content, now, now + 86_400_000, clientID])
            }
            try db.execute(sql: "INSERT INTO messages_fts(rowid, content) SELECT rowid, content FROM messages")
            #expect(try Self.uniqueIndexes(db).contains(["sender_email", "client_id"]))
        }
        try old.close()

        let store = try MessageStore.open(path: path, retention: .seconds(86400), bcryptCost: 4)
        try store.read { db in
            #expect(try Row.fetchAll(db, sql: "SELECT rowid, id FROM messages ORDER BY rowid").map { "\($0[0] as Int):\($0[1] as String)" } == ["5:m1", "9:m2", "12:m3"])
            let indexes = try Self.uniqueIndexes(db)
            #expect(indexes.contains(["client_id", "sender_email"]))
            #expect(!indexes.contains(["sender_email", "client_id"]))
            #expect(indexes.contains(["conversation_id", "seq"]) && indexes.contains(["id"]))
            #expect(try String.fetchAll(db, sql: "SELECT name FROM sqlite_master WHERE tbl_name = 'messages' AND type = 'index' AND sql IS NOT NULL") == ["messages_by_expiry"])
        }
        #expect(try store.history(for: "a@clinic.com", conversationID: "c1").map(\.content) == ["potassium is 5.9", "rechecking potassium", "bed 4 stable"])
        #expect(Set(try store.searchMessages(for: "a@clinic.com", query: "potassium").map(\.id)) == ["m1", "m2"])
        // A retry is still recognised per sender; the same client id from someone else is another message.
        #expect(try store.send("a@clinic.com", to: "c1", "potassium is 5.9", clientID: "c-1").message.id == "m1")
        #expect(try store.send("b@clinic.com", to: "c1", "rechecking potassium", clientID: "c-1").message.id == "m2")
        let fresh = try store.send("a@clinic.com", to: "c1", "potassium now 4.8", clientID: TimeOrderedID.make())
        #expect(fresh.duplicate == false && fresh.message.seq == 4)
        #expect(try store.searchMessages(for: "b@clinic.com", query: "potassium").count == 3)
        // The delete trigger is back: a purged message leaves the search index, which stays consistent.
        _ = try store.write { db in try store.purge(db, ids: ["m1"], now: Date().addingTimeInterval(2 * 86400)) }
        #expect(Set(try store.searchMessages(for: "a@clinic.com", query: "potassium").map(\.id)) == ["m2", fresh.message.id])
        _ = try store.write { db in try db.execute(sql: "INSERT INTO messages_fts(messages_fts, rank) VALUES ('integrity-check', 1)") }
        #expect(try store.read { db in try Row.fetchAll(db, sql: "PRAGMA foreign_key_check").count } == 0)
    }

    @Test("v9: sync reads the markers that moved after a version by conversation and version, not every member's marker; the answers are the same")
    func markersByConversationAndVersion() throws {
        let store = try MessageStore.open(path: temporaryDatabasePath("v9"), retention: .seconds(86400), bcryptCost: 4)
        let members = (0..<30).map { "m\($0)@clinic.com" }
        for email in members { _ = try store.createUser(email: email, name: email, role: .doctor, password: "password-\(email)") }
        let group = try store.createGroup(creator: members[0], title: "Ward", members: Array(members.dropFirst())).id
        _ = try store.append([SendRequest(sender: members[0], conversationID: group, content: "bed 4", clientID: "c1")])
        for email in members.dropFirst() { _ = try store.markRead(reader: email, conversationID: group, upToSeq: 1) }
        let cursor = try #require(try store.sync(for: members[0], since: [group: 1]).receiptsCursor)
        #expect(cursor == 29)
        let plan = try store.read { db in
            try Row.fetchAll(db, sql: "EXPLAIN QUERY PLAN SELECT \(MessageStore.markerColumns) FROM participants mine " +
                                "JOIN participants p ON p.conversation_id = mine.conversation_id AND p.email != mine.email \(MessageStore.markerMessage) " +
                                "WHERE mine.email = ? AND p.read_seq > 0 AND p.read_version > ?", arguments: [0, members[0], cursor]).map { $0["detail"] as String }.joined(separator: "\n")
        }
        #expect(plan.contains("participants_by_conversation_version (conversation_id=? AND read_version>?)"), "\(plan)")
        // Up to date: nothing; one marker moved since: that one alone.
        #expect(try store.sync(for: members[0], since: [group: 1], receiptsAfter: cursor).conversations.isEmpty)
        _ = try store.append([SendRequest(sender: members[0], conversationID: group, content: "bed 5", clientID: "c2")])
        _ = try store.markRead(reader: members[7], conversationID: group, upToSeq: 2)
        let synced = try store.sync(for: members[0], since: [group: 2], receiptsAfter: cursor)
        #expect(synced.conversations.first?.receipts.map(\.readerEmail) == [members[7]])
        #expect(synced.receiptsCursor == cursor + 1)
    }

    @Test("v8 numbers the markers that had moved 1, 2, ... in the order they were read, the rest 0; the next move gets the next version, and a sync after the list's replays only it")
    func readVersions() throws {
        let path = temporaryDatabasePath("v8")
        defer { removeDatabase(at: path) }
        let now = Date().epochMilliseconds
        // A store as v7 left it: a group of four with two messages, read by d and then b.
        let old = try DatabaseQueue(path: path)
        try Schema.migrator.migrate(old, upTo: "v7: applied purges keep what they deleted")
        try old.write { db in
            for email in ["a@clinic.com", "b@clinic.com", "c@clinic.com", "d@clinic.com"] {
                try db.execute(sql: "INSERT INTO users (email, name, role, password_hash, created_at) VALUES (?, ?, 'doctor', 'x', ?)", arguments: [email, email, now])
            }
            try db.execute(sql: "INSERT INTO conversations (id, kind, title, created_by, created_at, last_seq, last_message_at) VALUES ('g1', 'group', 'Ward', 'a@clinic.com', ?, 2, ?)",
                           arguments: [now, now])
            for (email, seq, readAt) in [("a@clinic.com", 0, nil), ("b@clinic.com", 2, now + 20), ("c@clinic.com", 0, nil), ("d@clinic.com", 1, now + 10)] as [(String, Int, Int64?)] {
                try db.execute(sql: "INSERT INTO participants (conversation_id, email, read_seq, read_at, joined_at) VALUES ('g1', ?, ?, ?, ?)",
                               arguments: [email, seq, readAt, now])
            }
            for seq in 1...2 {
                try db.execute(sql: """
                    INSERT INTO messages (id, conversation_id, seq, sender_email, content, created_at, expires_at, client_id)
                    VALUES (?, 'g1', ?, 'a@clinic.com', 'bed 4', ?, ?, NULL)
                    """, arguments: ["m\(seq)", seq, now, now + 86_400_000])
            }
        }
        try old.close()

        let store = try MessageStore.open(path: path, retention: .seconds(86400), bcryptCost: 4)
        #expect(try store.read { db in try Row.fetchAll(db, sql: "SELECT email, read_version FROM participants ORDER BY email").map { "\($0[0] as String)=\($0[1] as Int)" } }
                == ["a@clinic.com=0", "b@clinic.com=2", "c@clinic.com=0", "d@clinic.com=1"])
        #expect(try store.conversations(for: "a@clinic.com").first?.readVersion == 2)
        #expect(try store.sync(for: "a@clinic.com", since: ["g1": 2], receiptsAfter: 2).conversations.isEmpty)
        #expect(try store.sync(for: "a@clinic.com", since: ["g1": 2], receiptsAfter: 1).conversations.first?.receipts.map(\.readerEmail) == ["b@clinic.com"])
        _ = try store.markRead(reader: "c@clinic.com", conversationID: "g1", upToSeq: 1)
        let synced = try store.sync(for: "a@clinic.com", since: ["g1": 2], receiptsAfter: 2)
        #expect(synced.receiptsCursor == 3)
        #expect(synced.conversations.first?.receipts.map(\.readerEmail) == ["c@clinic.com"])
    }
}
