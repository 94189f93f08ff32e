import ChatCore
import Foundation
import Testing
@testable import MessageStore

/// `MessageStore.sync`: what a (re)connecting client is replayed.
@Suite("Sync: what a reconnecting client missed")
struct SyncTests {
    let admin = "admin@clinic.com", doctor = "doctor@clinic.com", patel = "dr.patel@clinic.com", okafor = "dr.okafor@clinic.com"
    let t0 = Date(timeIntervalSince1970: 1_800_000_000)

    @Test("after the client's seq, in seq order, each 1:1 message naming its receiver; a conversation with nothing new is left out")
    func missed() throws {
        let store = try makeStore()
        let direct = try store.openDirectConversation(admin, doctor)
        let group = try store.createGroup(creator: admin, title: "Ward 3", members: [doctor, patel])
        for i in 1...5 { try store.send(i % 2 == 0 ? doctor : admin, to: direct.id, "d\(i)", now: t0 + Double(i)) }
        for i in 1...3 { try store.send(patel, to: group.id, "g\(i)", now: t0 + Double(i)) }

        let result = try store.sync(for: doctor, since: [direct.id: 2, group.id: 3], now: t0 + 60)
        #expect(result.conversations.map(\.id) == [direct.id])
        let replayed = try #require(result.conversations.first)
        #expect(replayed.lastSeq == 5)
        #expect(replayed.truncated == false)
        #expect(replayed.receipts.isEmpty)
        #expect(replayed.messages.map(\.seq) == [3, 4, 5])
        #expect(replayed.messages.map(\.content) == ["d3", "d4", "d5"])
        #expect(replayed.messages.map(\.receiverEmail) == [doctor, admin, doctor])

        // The group's messages name no receiver; a seq past the end replays nothing but its last_seq.
        let fromGroup = try store.sync(for: doctor, since: [direct.id: 5, group.id: 1], now: t0 + 60).conversations
        #expect(fromGroup.map(\.id) == [group.id])
        #expect(fromGroup.first?.messages.map(\.content) == ["g2", "g3"])
        #expect(fromGroup.first?.messages.allSatisfy { $0.receiverEmail == nil } == true)
        #expect(try store.sync(for: okafor, since: [:], now: t0 + 60).conversations.isEmpty, "not a participant of either")
    }

    @Test("a conversation missing from since is new to the client: all of it, or what was stored from `after` on")
    func newConversations() throws {
        let store = try makeStore()
        let direct = try store.openDirectConversation(admin, doctor)
        for i in 1...4 { try store.send(admin, to: direct.id, "m\(i)", now: t0 + Double(i * 10)) }
        #expect(try store.sync(for: doctor, since: [:], now: t0 + 60).conversations.first?.messages.map(\.seq) == [1, 2, 3, 4])
        let after = try store.sync(for: doctor, since: [:], after: t0 + 25, now: t0 + 60).conversations
        #expect(after.first?.messages.map(\.seq) == [3, 4])
        // `after` is only for conversations the client does not name.
        #expect(try store.sync(for: doctor, since: [direct.id: 1], after: t0 + 25, now: t0 + 60).conversations.first?.messages.map(\.seq) == [2, 3, 4])
    }

    @Test("the newest 100 of a conversation, oldest first, truncated beyond; `limit` in all, the most recently active conversation first")
    func limits() throws {
        let store = try makeStore()
        let busy = try store.openDirectConversation(admin, doctor)
        let recent = try store.createGroup(creator: patel, title: "On call", members: [doctor])
        for i in 1...150 { try store.send(admin, to: busy.id, "b\(i)", now: t0 + Double(i)) }
        for i in 1...10 { try store.send(patel, to: recent.id, "r\(i)", now: t0 + 200 + Double(i)) }

        let all = try store.sync(for: doctor, since: [:], now: t0 + 600).conversations
        #expect(all.map(\.id) == [recent.id, busy.id])
        #expect(all.map(\.messages.count) == [10, 100])
        #expect(all[1].messages.first?.seq == 51 && all[1].messages.last?.seq == 150)
        #expect(all.map(\.truncated) == [false, true])

        let limited = try store.sync(for: doctor, since: [:], limit: 105, now: t0 + 600).conversations
        #expect(limited.map(\.messages.count) == [10, 95])
        #expect(limited[1].messages.map(\.seq) == Array(56...150))
        #expect(limited[1].truncated)
        // Nothing left for a conversation: it still comes, with its last_seq, as truncated.
        let none = try store.sync(for: doctor, since: [:], limit: 10, now: t0 + 600).conversations
        #expect(none.map(\.messages.count) == [10, 0])
        #expect(none.map(\.truncated) == [false, true])
        #expect(none.map(\.lastSeq) == [10, 150])
    }

    @Test("receipts: where each other participant has read up to, with the id of that message while it is visible")
    func receipts() throws {
        let store = try makeStore()
        let group = try store.createGroup(creator: admin, title: "Ward 3", members: [doctor, patel, okafor])
        var ids: [String] = []
        for i in 1...3 { ids.append(try store.send(admin, to: group.id, "g\(i)", now: t0 + Double(i)).message.id) }
        _ = try store.markRead(reader: doctor, conversationID: group.id, upToSeq: 2, now: t0 + 10)
        _ = try store.markRead(reader: patel, conversationID: group.id, upToSeq: 3, now: t0 + 20)

        let synced = try #require(try store.sync(for: admin, since: [group.id: 3], now: t0 + 60).conversations.first)
        #expect(synced.messages.isEmpty)
        let receipts = synced.receipts.sorted { $0.readerEmail < $1.readerEmail }
        #expect(receipts.map(\.readerEmail) == [doctor, patel], "no one who read nothing, not the user")
        #expect(receipts.map(\.upToSeq) == [2, 3])
        #expect(receipts.map(\.messageID) == [ids[1], ids[2]])
        #expect(receipts.map(\.readAt) == [t0 + 10, t0 + 20])
        #expect(receipts.allSatisfy { $0.conversationID == group.id })
        // A sender's own messages move no read position of theirs: the doctor sees patel's only.
        let doctorsView = try #require(try store.sync(for: doctor, since: [group.id: 3], now: t0 + 60).conversations.first)
        #expect(doctorsView.receipts.map(\.readerEmail) == [patel])
    }

    @Test("expired messages are not replayed, and a receipt naming one has no message id")
    func expired() throws {
        let store = try makeStore(retention: .seconds(3600))
        let direct = try store.openDirectConversation(admin, doctor)
        try store.send(admin, to: direct.id, "old", now: t0)
        let fresh = try store.send(admin, to: direct.id, "fresh", now: t0 + 3000)
        _ = try store.markRead(reader: doctor, conversationID: direct.id, upToSeq: 1, now: t0 + 3100)
        let later = t0 + 3700  // the first expired, the second not yet
        let synced = try #require(try store.sync(for: admin, since: [:], now: later).conversations.first)
        #expect(synced.messages.map(\.id) == [fresh.message.id])
        #expect(synced.lastSeq == 2)
        #expect(synced.receipts.map(\.upToSeq) == [1])
        #expect(synced.receipts.first?.messageID == nil)
        _ = try store.markRead(reader: doctor, conversationID: direct.id, upToSeq: 2, now: t0 + 3200)
        #expect(try store.sync(for: admin, since: [:], now: later).conversations.first?.receipts.first?.messageID == fresh.message.id)
    }

    @Test("receipts_after: only markers moved after it for the conversations in since, all for a conversation new to the client; the answer's cursor is the next one")
    func receiptsAfter() throws {
        let store = try makeStore()
        let ward = try store.createGroup(creator: admin, title: "Ward 3", members: [doctor, patel, okafor])
        let direct = try store.openDirectConversation(admin, doctor)
        for i in 1...3 { try store.send(admin, to: ward.id, "g\(i)", now: t0 + Double(i)) }
        try store.send(admin, to: direct.id, "d1", now: t0 + 4)
        #expect(try store.sync(for: admin, since: [:], now: t0 + 5).receiptsCursor == 0, "no marker has moved")
        _ = try store.markRead(reader: doctor, conversationID: ward.id, upToSeq: 2, now: t0 + 10)
        _ = try store.markRead(reader: patel, conversationID: ward.id, upToSeq: 3, now: t0 + 11)

        let first = try store.sync(for: admin, since: [ward.id: 3, direct.id: 1], now: t0 + 20)
        #expect(first.receiptsCursor == 2)
        #expect(first.conversations.flatMap(\.receipts).map(\.readerEmail) == [doctor, patel], "without receipts_after: all of them")
        // Nothing moved since: nothing is replayed, and a conversation with nothing new is left out.
        let quiet = try store.sync(for: admin, since: [ward.id: 3, direct.id: 1], receiptsAfter: 2, now: t0 + 30)
        #expect(quiet.conversations.isEmpty)
        #expect(quiet.receiptsCursor == 2)

        _ = try store.markRead(reader: doctor, conversationID: ward.id, upToSeq: 3, now: t0 + 40)
        _ = try store.markRead(reader: doctor, conversationID: direct.id, upToSeq: 1, now: t0 + 41)
        _ = try store.markRead(reader: doctor, conversationID: direct.id, upToSeq: 1, now: t0 + 42)  // did not move: no new version
        let moved = try store.sync(for: admin, since: [ward.id: 3, direct.id: 1], receiptsAfter: 2, now: t0 + 50)
        #expect(moved.receiptsCursor == 4)
        let receipts = moved.conversations.flatMap(\.receipts)
        #expect(receipts.map(\.conversationID) == [direct.id, ward.id], "the direct conversation is the most recently active")
        #expect(receipts.map(\.readerEmail) == [doctor, doctor], "patel's marker did not move")
        #expect(receipts.map(\.upToSeq) == [1, 3])
        #expect(moved.conversations.allSatisfy { $0.messages.isEmpty })
        // A conversation the client does not name is new to it: all its markers, whatever the cursor.
        let unnamed = try store.sync(for: admin, since: [direct.id: 1], receiptsAfter: 4, now: t0 + 50)
        #expect(unnamed.conversations.map(\.id) == [ward.id])
        #expect(unnamed.conversations.first?.receipts.map(\.readerEmail) == [doctor, patel])
        #expect(unnamed.conversations.first?.messages.map(\.seq) == [1, 2, 3])
        // Someone else's cursor is the same store-wide counter; it only ever narrows the user's own conversations.
        #expect(try store.sync(for: okafor, since: [ward.id: 3], receiptsAfter: 2, now: t0 + 50).conversations.first?.receipts.map(\.readerEmail) == [doctor])
    }

    @Test("the conversation list carries each conversation's read_version, so its highest is a receipts_after that skips what the list already shows")
    func listVersions() throws {
        let store = try makeStore()
        let ward = try store.createGroup(creator: admin, title: "Ward 3", members: [doctor, patel])
        let direct = try store.openDirectConversation(admin, doctor)
        try store.send(admin, to: ward.id, "g1", now: t0 + 1)
        try store.send(admin, to: direct.id, "d1", now: t0 + 2)
        #expect(try store.conversations(for: admin, now: t0 + 3).map(\.readVersion) == [0, 0])
        _ = try store.markRead(reader: patel, conversationID: ward.id, upToSeq: 1, now: t0 + 4)
        _ = try store.markRead(reader: doctor, conversationID: direct.id, upToSeq: 1, now: t0 + 5)
        let list = try store.conversations(for: admin, now: t0 + 6)
        #expect(list.map(\.id) == [direct.id, ward.id])
        #expect(list.map(\.readVersion) == [2, 1])
        let since = Dictionary(uniqueKeysWithValues: list.map { ($0.id, Int64($0.lastMessage?.seq ?? 0)) })
        let cursor = list.compactMap(\.readVersion).max()
        #expect(try store.sync(for: admin, since: since, receiptsAfter: cursor, now: t0 + 7).conversations.isEmpty)
        _ = try store.markRead(reader: doctor, conversationID: ward.id, upToSeq: 1, now: t0 + 8)
        let after = try store.sync(for: admin, since: since, receiptsAfter: cursor, now: t0 + 9)
        #expect(after.conversations.flatMap(\.receipts).map(\.readerEmail) == [doctor])
        #expect(after.receiptsCursor == 3)
    }

    @Test("the conversation list reads all of a user's conversations at once: each one's own participants, members, markers, last message and unread count")
    func list() throws {
        let store = try makeStore()
        let ward = try store.createGroup(creator: admin, title: "Ward 3", members: [patel, okafor], now: t0)
        let direct = try store.openDirectConversation(admin, doctor, now: t0)
        let elsewhere = try store.openDirectConversation(patel, okafor, now: t0)  // not the admin's
        for i in 1...3 { try store.send(patel, to: ward.id, "w\(i)", now: t0 + Double(i)) }
        try store.send(admin, to: direct.id, "d1", now: t0 + 10)
        try store.send(okafor, to: elsewhere.id, "e1", now: t0 + 20)
        _ = try store.markRead(reader: admin, conversationID: ward.id, upToSeq: 1, now: t0 + 30)
        _ = try store.markRead(reader: okafor, conversationID: ward.id, upToSeq: 3, now: t0 + 31)
        _ = try store.setDisabled(doctor, true)

        let list = try store.conversations(for: admin, now: t0 + 60)
        #expect(list.map(\.id) == [direct.id, ward.id])
        #expect(list.map(\.participants) == [[admin, doctor], [admin, okafor, patel]])
        #expect(list.map { $0.members?.map(\.email) ?? [] } == [[admin, doctor], [admin, okafor, patel]])
        let names = Dictionary(uniqueKeysWithValues: cast.map { ($0.0, $0.1) })
        #expect(list.flatMap { $0.members ?? [] }.allSatisfy { $0.name == names[$0.email] })
        #expect(list[0].members?.map(\.disabled) == [false, true])
        #expect(list.map(\.readPositions) == [[admin: 0, doctor: 0], [admin: 1, okafor: 3, patel: 0]])
        #expect(list.map(\.readVersion) == [0, 2])
        #expect(list.map(\.unreadCount) == [0, 2])
        #expect(list.map { $0.lastMessage?.content } == ["d1", "w3"])
        #expect(list[0].lastMessage?.receiverEmail == doctor)
        #expect(list[1].lastMessage?.receiverEmail == nil)
        // The same as each conversation read on its own.
        #expect(try list.map { try store.conversation($0.id, for: admin, now: t0 + 60) } == list)
    }

    @Test("messages and receipts together stay within the limit: receipts take what is left, the earliest moves first; truncated, the cursor is the last one replayed and the next sync goes on from it")
    func receiptBudget() throws {
        let store = try makeStore()
        let others = [doctor, patel, okafor]
        let groups = try (1...3).map { try store.createGroup(creator: admin, title: "G\($0)", members: others, now: t0) }
        for (index, group) in groups.enumerated() { try store.send(admin, to: group.id, "m", now: t0 + Double(index)) }
        // Nine moves, versions 1...9: each reader of each group in turn.
        for group in groups { for reader in others { _ = try store.markRead(reader: reader, conversationID: group.id, upToSeq: 1, now: t0 + 10) } }
        let since = Dictionary(uniqueKeysWithValues: groups.map { ($0.id, Int64(1)) })
        func versions(_ result: SyncResult) -> [String] {
            result.conversations.flatMap { c in c.receipts.map { "\(groups.firstIndex { $0.id == c.id }! + 1):\($0.readerEmail.prefix(3))" } }.sorted()
        }
        let first = try store.sync(for: admin, since: since, limit: 4, now: t0 + 20)
        #expect(first.conversations.flatMap(\.receipts).count == 4)
        #expect(versions(first) == ["1:doc", "1:dr.", "1:dr.", "2:doc"], "the earliest four moves")
        #expect(first.receiptsTruncated == true)
        #expect(first.receiptsCursor == 4)
        let second = try store.sync(for: admin, since: since, receiptsAfter: first.receiptsCursor, limit: 4, now: t0 + 20)
        #expect(second.conversations.flatMap(\.receipts).count == 4)
        #expect(second.receiptsCursor == 8)
        let third = try store.sync(for: admin, since: since, receiptsAfter: second.receiptsCursor, limit: 4, now: t0 + 20)
        #expect(third.conversations.flatMap(\.receipts).map(\.readerEmail) == [okafor])
        #expect(third.receiptsTruncated == nil)
        #expect(third.receiptsCursor == 9)

        // Messages first: a new device (since empty) gets the 3 messages and 2 receipts of a limit of 5.
        let fresh = try store.sync(for: admin, since: [:], limit: 5, now: t0 + 20)
        #expect(fresh.conversations.flatMap(\.messages).count == 3)
        #expect(fresh.conversations.flatMap(\.receipts).count == 2)
        #expect(fresh.receiptsTruncated == true && fresh.receiptsCursor == 2)
        // Messages fill it: no receipt, and the cursor stays where the client was.
        let full = try store.sync(for: admin, since: [:], receiptsAfter: 0, limit: 3, now: t0 + 20)
        #expect(full.conversations.flatMap(\.receipts).isEmpty)
        #expect(full.receiptsTruncated == true && full.receiptsCursor == 0)
    }
}
