import ChatCore
import Foundation
import GRDB
import Testing
@testable import MessageStore

private let (kim, patel, okafor) = ("doctor@clinic.com", "dr.patel@clinic.com", "dr.okafor@clinic.com")

@Suite("A sender retracts a message")
struct RetractionTests {
    @Test("gone for everyone at once (history, search, previews, unread counts) and deleted with its search entry; only its sender may; a second try, another's message or an outsider: refused")
    func retract() throws {
        let store = try makeStore()
        let wrong = try store.send(kim, receiver: patel, "potassium 5.9 for the wrong patient").message
        let right = try store.send(kim, receiver: patel, "bed 4 is stable").message
        #expect(try store.unreadCounts(for: patel).total == 2)

        #expect(errorCode { try store.retractMessage(wrong.id, by: patel) } == .forbidden)
        #expect(errorCode { try store.retractMessage(wrong.id, by: okafor) } == .notFound)
        let retraction = try store.retractMessage(wrong.id, by: kim)
        #expect(retraction.conversationID == wrong.conversationID && !retraction.held)
        #expect(Set(retraction.participants) == [kim, patel])
        for user in [kim, patel] {
            #expect(try store.history(for: user, conversationID: wrong.conversationID).map(\.id) == [right.id])
            #expect(try store.searchMessages(for: user, query: "potassium").isEmpty)
        }
        #expect(try store.unreadCounts(for: patel).total == 1)
        #expect(try store.conversations(for: patel).first?.lastMessage?.id == right.id)
        // Deleted, with its words in the search index.
        #expect(try store.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM messages WHERE id = ?", arguments: [wrong.id]) } == 0)
        #expect(try store.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM messages_fts WHERE messages_fts MATCH 'potassium'") } == 0)
        #expect(errorCode { try store.retractMessage(wrong.id, by: kim) } == .notFound)
        #expect(errorCode { try store.retractMessage("no-such-id", by: kim) } == .notFound)
    }

    @Test("in a conversation on legal hold it is invisible at once but kept, and deleted by the sweep after the hold is released")
    func retractUnderHold() throws {
        let store = try makeStore()
        let message = try store.send(kim, receiver: patel, "kept for the lawyers").message
        try store.write { db in _ = try store.setLegalHold(db, conversationID: message.conversationID, held: true) }
        let retraction = try store.retractMessage(message.id, by: kim)
        #expect(retraction.held)
        #expect(try store.history(for: patel, conversationID: message.conversationID).isEmpty)
        #expect(try store.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM messages WHERE id = ?", arguments: [message.id]) } == 1)
        #expect(try store.dueMessages(before: Date(), includeHeld: true).map(\.id).contains(message.id))
        try store.write { db in _ = try store.setLegalHold(db, conversationID: message.conversationID, held: false) }
        let purged = try store.purgeStep(ids: [message.id], entry: "sweep-1")
        #expect(purged.deleted[message.conversationID] == [message.id])
    }
}
