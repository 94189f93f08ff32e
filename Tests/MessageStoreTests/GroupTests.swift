import ChatCore
import Foundation
import Testing
@testable import MessageStore

private let (patel, kim, okafor, novak, garcia) = ("dr.patel@clinic.com", "doctor@clinic.com", "dr.okafor@clinic.com", "dr.novak@clinic.com", "dr.garcia@clinic.com")

@Suite("Groups change: members added, removed, leaving, renamed")
struct GroupTests {
    @Test("anyone in the group adds people, who see its history with nothing unread; removing others is the creator's or an admin's; anyone leaves; the removed are outsiders at once")
    func membership() throws {
        let store = try makeStore()
        let group = try store.createGroup(creator: patel, title: "Ward 3", members: [kim, okafor])
        for i in 1...3 { try store.send(patel, to: group.id, "handover \(i)") }

        // A member (not the creator) adds someone: they see the history, nothing unread.
        let added = try store.updateGroup(UpdateGroupRequest(conversationID: group.id, addMembers: ["Dr.Novak@clinic.com"]), by: kim)
        #expect(added.added == [novak] && added.removed.isEmpty && added.by == kim)
        #expect(added.participants == [kim, okafor, patel, novak].sorted())
        #expect(try store.history(for: novak, conversationID: group.id).map(\.content) == ["handover 1", "handover 2", "handover 3"])
        #expect(try store.unreadCounts(for: novak).total == 0)
        #expect(try store.conversations(for: novak).first?.id == group.id)
        try store.send(patel, to: group.id, "after joining")
        #expect(try store.unreadCounts(for: novak).total == 1)
        // The same addition again (a retry) changes nothing and is not refused.
        #expect(try store.updateGroup(UpdateGroupRequest(conversationID: group.id, addMembers: [novak]), by: kim).added.isEmpty)

        // Removing someone else: not for a member who is neither the creator nor an admin.
        #expect(errorCode { try store.updateGroup(UpdateGroupRequest(conversationID: group.id, removeMembers: [okafor]), by: kim) } == .forbidden)
        // The creator removes them: from then on the conversation does not exist for them.
        let removed = try store.updateGroup(UpdateGroupRequest(conversationID: group.id, removeMembers: [okafor]), by: patel)
        #expect(removed.removed == [okafor] && !removed.participants.contains(okafor))
        #expect(errorCode { try store.history(for: okafor, conversationID: group.id) } == .notFound)
        #expect(try store.searchMessages(for: okafor, query: "handover").isEmpty)
        #expect(try !store.conversations(for: okafor).contains { $0.id == group.id })
        #expect(errorCode { try store.updateGroup(UpdateGroupRequest(conversationID: group.id, title: "Mine now"), by: okafor) } == .notFound)
        #expect(errorCode { try store.send(okafor, to: group.id, "still here?") } == .notFound)

        // Anyone leaves by removing themselves.
        let left = try store.updateGroup(UpdateGroupRequest(conversationID: group.id, removeMembers: [kim]), by: kim)
        #expect(left.removed == [kim] && left.participants == [patel, novak].sorted())

        // An admin in the group removes others too.
        _ = try store.updateGroup(UpdateGroupRequest(conversationID: group.id, addMembers: ["admin@clinic.com", garcia]), by: novak)
        #expect(try store.updateGroup(UpdateGroupRequest(conversationID: group.id, removeMembers: [garcia]), by: "admin@clinic.com").removed == [garcia])
    }

    @Test("a title is renamed within 1 to 100 characters; a 1:1, an empty request, an unknown or disabled person, or too many members are refused, changing nothing")
    func refusals() throws {
        let store = try makeStore()
        let group = try store.createGroup(creator: patel, title: "Ward 3", members: [kim])
        #expect(try store.updateGroup(UpdateGroupRequest(conversationID: group.id, title: "  Ward 3 nights "), by: kim).title == "Ward 3 nights")
        #expect(try store.conversation(group.id, for: patel).title == "Ward 3 nights")
        #expect(errorCode { try store.updateGroup(UpdateGroupRequest(conversationID: group.id, title: "  "), by: kim) } == .invalidContent)
        #expect(errorCode { try store.updateGroup(UpdateGroupRequest(conversationID: group.id, title: String(repeating: "x", count: 101)), by: kim) } == .invalidContent)
        #expect(errorCode { try store.updateGroup(UpdateGroupRequest(conversationID: group.id), by: kim) } == .badRequest)
        #expect(errorCode { try store.updateGroup(UpdateGroupRequest(conversationID: group.id, addMembers: [], removeMembers: []), by: kim) } == .badRequest)
        let direct = try store.openDirectConversation(kim, okafor)
        #expect(errorCode { try store.updateGroup(UpdateGroupRequest(conversationID: direct.id, addMembers: [novak]), by: kim) } == .badRequest)
        #expect(errorCode { try store.updateGroup(UpdateGroupRequest(conversationID: "no-such-id", addMembers: [novak]), by: kim) } == .notFound)

        // One unknown person among several: nothing of the request is applied.
        #expect(errorCode { try store.updateGroup(UpdateGroupRequest(conversationID: group.id, title: "Renamed", addMembers: [novak, "ghost@clinic.com"]), by: kim) } == .notFound)
        try store.setDisabled(garcia, true)
        #expect(errorCode { try store.updateGroup(UpdateGroupRequest(conversationID: group.id, addMembers: [garcia]), by: kim) } == .notFound)
        let now = try store.conversation(group.id, for: kim)
        #expect(now.title == "Ward 3 nights" && now.participants == [kim, patel].sorted())

        // At most maximumGroupSize members.
        let many = (0..<MessageStore.maximumGroupSize).map { "staff\($0)@clinic.com" }
        for email in many { try store.createUser(email: email, name: email, role: .doctor, password: "password-x") }
        #expect(errorCode { try store.updateGroup(UpdateGroupRequest(conversationID: group.id, addMembers: many), by: kim) } == .invalidContent)
        #expect(try store.conversation(group.id, for: kim).participants.count == 2)
    }
}
