import ChatCore
import ChatTesting
import RedisClient
import Foundation
import Gateway
import MessageStore
import Testing

private let (admin, doctor, patel, okafor) = ("admin@clinic.com", "doctor@clinic.com", "dr.patel@clinic.com", "dr.okafor@clinic.com")

/// Waits until the presence service has read and acknowledged everything on `chat:events`.
private func presenceCaughtUp(_ stack: RealtimeStack) async throws {
    let caughtUp = await eventually(timeout: .seconds(10)) {
        let groups = (try? await stack.redis.send(["XINFO", "GROUPS", stack.keys.events]).array) ?? []
        return groups.contains { group in
            let fields = group.array ?? []
            var info: [String: String] = [:]
            for index in stride(from: 0, to: fields.count - 1, by: 2) {
                info[fields[index].string ?? ""] = fields[index + 1].string ?? fields[index + 1].int.map(String.init)
            }
            return info["name"] == RedisKeys.presenceGroup && info["pending"] == "0" && info["lag"] == "0"
        }
    }
    try #require(caughtUp, "presence did not catch up with chat:events")
}

@Suite("A group's members change over REST, seen live on the sockets", .redisServer)
struct GroupChangeTests {
    private func group(_ id: String, _ content: String, _ clientID: String) -> JSONValue {
        .object(["conversation_id": .string(id), "content": .string(content), "client_id": .string(clientID)])
    }

    @Test("PATCH adds a member, who gets conversation_updated, the messages after it and the history; the creator removes them: told, no more deliveries or typing, history 404; refusals are 400, 403, 404, 422; audited")
    func membersChangeLive() async throws {
        try await withRealtimeStack(presence: true) { stack in
            let ward = try stack.store.createGroup(creator: admin, title: "Ward 3", members: [doctor, okafor])
            _ = try stack.store.append([SendRequest(sender: admin, conversationID: ward.id, receiverEmail: nil, content: "before patel", clientID: nil)])
            let (adminSocket, doctorSocket, patelSocket) = (try await stack.connect(admin), try await stack.connect(doctor), try await stack.connect(patel))
            let doctorToken = try await stack.login(doctor)
            let patelToken = try await stack.login(patel)

            // Dr. Kim (a member, not the creator) adds Dr. Patel.
            let (status, added) = try await stack.http("PATCH", "/api/conversations/\(ward.id)", token: doctorToken, raw: #"{"add_members":["dr.patel@clinic.com"]}"#)
            #expect(status == 200, "\(String(describing: added))")
            #expect(added?["added"] == .array([.string(patel)]) && added?["by"] == .string(doctor))
            for socket in [patelSocket, adminSocket, doctorSocket] {
                let update = try await socket.event("conversation_updated")
                #expect(update["conversation_id"] == .string(ward.id) && update["participants"]?.arrayValue?.contains(.string(patel)) == true)
            }
            let (_, history) = try await stack.http("GET", "/api/conversations/\(ward.id)/messages", token: patelToken)
            #expect(history?.arrayValue?.map { $0["content"] } == [.string("before patel")], "\(String(describing: history))")
            let (_, unread) = try await stack.http("GET", "/api/messages/unread-count", token: patelToken)
            #expect(unread?["total"] == .number(0))
            _ = try await adminSocket.call("send_message", group(ward.id, "welcome", "w1"), ack: 1)
            #expect(try await patelSocket.event("receive_message")["content"] == .string("welcome"))
            // Typing reaches the new member (and presence now knows them in this group). First
            // presence reads the welcome's `stored` entry, which would end the typing that follows.
            try await presenceCaughtUp(stack)
            try await adminSocket.emit("user_typing", .object(["conversation_id": .string(ward.id), "is_typing": .bool(true)]))
            #expect(try await patelSocket.event("user_typing")["sender_email"] == .string(admin))
            _ = try await doctorSocket.event("user_typing")

            // Removing someone else: not for Dr. Kim; the creator can.
            let (forbidden, _) = try await stack.http("PATCH", "/api/conversations/\(ward.id)", token: doctorToken, raw: #"{"remove_members":["dr.patel@clinic.com"]}"#)
            #expect(forbidden == 403)
            let adminToken = try await stack.login(admin)
            let (removedStatus, removed) = try await stack.http("PATCH", "/api/conversations/\(ward.id)", token: adminToken, raw: #"{"remove_members":["dr.patel@clinic.com"]}"#)
            #expect(removedStatus == 200 && removed?["removed"] == .array([.string(patel)]), "\(String(describing: removed))")
            let told = try await patelSocket.event("conversation_updated")
            #expect(told["removed"] == .array([.string(patel)]) && told["participants"]?.arrayValue?.contains(.string(patel)) == false)
            // No more deliveries or typing to the one removed; the others still get both. Once presence
            // has read the change (its `members` entry on chat:events), typing and the send that ends
            // it go to the members it reads again, though it knew the group from before.
            try await presenceCaughtUp(stack)
            #expect(patelSocket.drain("user_typing").isEmpty, "nothing more of the typing before the removal")
            try await adminSocket.emit("user_typing", .object(["conversation_id": .string(ward.id), "is_typing": .bool(true)]))
            #expect(try await doctorSocket.event("user_typing")["is_typing"] == .bool(true))
            _ = try await adminSocket.call("send_message", group(ward.id, "after patel", "w2"), ack: 2)
            #expect(try await doctorSocket.event("receive_message")["content"] == .string("welcome"))
            #expect(try await doctorSocket.event("receive_message")["content"] == .string("after patel"))
            #expect(try await doctorSocket.event("user_typing")["is_typing"] == .bool(false))
            try await Task.sleep(for: .milliseconds(500))
            #expect(patelSocket.drain("receive_message").isEmpty)
            #expect(patelSocket.drain("user_typing").isEmpty, "typing after the removal")
            #expect(try await stack.http("GET", "/api/conversations/\(ward.id)/messages", token: patelToken).0 == 404)
            #expect(try await stack.http("PATCH", "/api/conversations/\(ward.id)", token: patelToken, raw: #"{"title":"Mine"}"#).0 == 404)

            // Refusals: nothing to change, a bad title, an unknown person, a 1:1, bad JSON.
            for (raw, expected) in [(#"{}"#, 400), (#"{"title":" "}"#, 422), (#"{"add_members":["ghost@clinic.com"]}"#, 404), (#"{"add_members":"x"}"#, 400)] {
                #expect(try await stack.http("PATCH", "/api/conversations/\(ward.id)", token: doctorToken, raw: raw).0 == expected, "\(raw)")
            }
            let direct = try stack.store.openDirectConversation(doctor, okafor)
            #expect(try await stack.http("PATCH", "/api/conversations/\(direct.id)", token: doctorToken, raw: #"{"add_members":["dr.patel@clinic.com"]}"#).0 == 400)

            // Dr. Kim leaves and renames nothing more; the audit log says who did what.
            let (leftStatus, left) = try await stack.http("PATCH", "/api/conversations/\(ward.id)", token: doctorToken, raw: #"{"remove_members":["doctor@clinic.com"]}"#)
            #expect(leftStatus == 200 && left?["participants"] == .array([.string(admin), .string(okafor)]))
            let audit = try stack.store.auditLog().filter { $0.action == "update_group" }.map { "\($0.actor ?? "-") \($0.outcome) \($0.detail ?? "-")" }
            #expect(audit.contains("\(doctor) ok added \(patel)"), "\(audit)")
            #expect(audit.contains("\(admin) ok removed \(patel)"), "\(audit)")
            #expect(audit.contains("\(doctor) forbidden -"), "\(audit)")
            #expect(audit.contains("\(doctor) ok removed \(doctor)"), "\(audit)")
            for socket in [adminSocket, doctorSocket, patelSocket] { await socket.close() }
        }
    }
}
