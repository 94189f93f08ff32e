import ChatCore
import Foundation
import GRDB

extension MessageStore {
    /// Changes a group (``UpdateGroupRequest``) for `actor`, a member; the change as every
    /// member, old and new, is told of it. People added join with nothing unread and see the
    /// group's history (a care team's handover); people removed lose the conversation at once
    /// (history, search, deliveries), as an outsider: `not_found`.
    public func updateGroup(_ request: UpdateGroupRequest, by actor: String, now: Date = Date()) throws -> ConversationUpdatedEvent {
        try write { db in try self.updateGroup(db, request, by: actor, now: now).event }
    }

    /// The rules: only members change a group (others get `not_found`), only groups change;
    /// anyone adds people (active users, up to ``maximumGroupSize``) and renames; a member
    /// leaves by removing themselves; removing others is for the group's creator and admins.
    /// Adding a member or removing a non-member changes nothing, so a retried request is
    /// answered as the first was; a request that names nothing to change is refused.
    func updateGroup(_ db: Database, _ request: UpdateGroupRequest, by actor: String, now: Date) throws -> (event: ConversationUpdatedEvent, previous: [String]) {
        let actor = actor.lowercased()
        var record = try requireParticipant(db, request.conversationID, actor)
        guard record.kind == Conversation.Kind.group.rawValue else {
            throw ChatError(.badRequest, "only a group's members and title change; a 1:1 conversation stays between its two people")
        }
        guard request.title != nil || !(request.addMembers ?? []).isEmpty || !(request.removeMembers ?? []).isEmpty else {
            throw ChatError(.badRequest, "nothing to change: give title, add_members or remove_members")
        }
        let previous = try String.fetchAll(db.cachedStatement(sql: "SELECT email FROM participants WHERE conversation_id = ? ORDER BY email"), arguments: [record.id])
        func distinct(_ emails: [String]?) -> [String] {
            var seen: [String] = []
            for email in (emails ?? []).map({ $0.trimmingCharacters(in: .whitespaces).lowercased() }) where !seen.contains(email) { seen.append(email) }
            return seen
        }
        let added = distinct(request.addMembers).filter { !previous.contains($0) }
        let removed = distinct(request.removeMembers).filter { previous.contains($0) }
        if removed.contains(where: { $0 != actor }), actor != record.createdBy {
            let role = try String.fetchOne(db.cachedStatement(sql: "SELECT role FROM users WHERE email = ?"), arguments: [actor])
            guard role == Role.admin.rawValue else {
                throw ChatError(.forbidden, "only the group's creator or an admin removes other members; anyone may leave")
            }
        }
        var title = record.title
        if let given = request.title {
            let trimmed = given.trimmingCharacters(in: .whitespacesAndNewlines)
            guard (1...100).contains(trimmed.count) else { throw ChatError(.invalidContent, "a group title has 1 to 100 characters") }
            title = trimmed
        }
        for email in added { try requireActiveUser(db, email) }
        let participants = (previous.filter { !removed.contains($0) } + added).sorted()
        guard participants.count <= Self.maximumGroupSize else {
            throw ChatError(.invalidContent, "a group has at most \(Self.maximumGroupSize) members")
        }
        if title != record.title {
            record.title = title
            try record.update(db)
        }
        for email in removed {
            try db.execute(sql: "DELETE FROM participants WHERE conversation_id = ? AND email = ?", arguments: [record.id, email])
        }
        for email in added {
            // Nothing unread on joining: the marker starts at the newest message.
            try ParticipantRecord(conversationID: record.id, email: email, readSeq: record.lastSeq, readAt: nil, joinedAt: now.epochMilliseconds).insert(db)
        }
        let event = ConversationUpdatedEvent(conversationID: record.id, title: title, participants: participants, added: added, removed: removed, by: actor)
        return (event, previous)
    }

    /// An `update_group` read again (committed, perhaps never announced): the group as it is,
    /// with the request's additions that are members and its removals that are not.
    func replayedGroupUpdate(_ db: Database, _ request: UpdateGroupRequest, by actor: String) throws -> (event: ConversationUpdatedEvent, previous: [String])? {
        guard let record = try ConversationRecord.fetchOne(db, key: request.conversationID) else { return nil }
        let participants = try String.fetchAll(db.cachedStatement(sql: "SELECT email FROM participants WHERE conversation_id = ? ORDER BY email"), arguments: [record.id])
        let added = (request.addMembers ?? []).map { $0.lowercased() }.filter { participants.contains($0) }
        let removed = (request.removeMembers ?? []).map { $0.lowercased() }.filter { !participants.contains($0) }
        let event = ConversationUpdatedEvent(conversationID: record.id, title: record.title, participants: participants, added: added, removed: removed,
                                             by: actor.lowercased())
        return (event, Array(Set(participants).union(removed)).sorted())
    }
}
