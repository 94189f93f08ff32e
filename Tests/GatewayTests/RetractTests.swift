import ChatCore
import ChatTesting
import Foundation
import Gateway
import MessageStore
import Testing

private let (doctor, patel) = ("doctor@clinic.com", "dr.patel@clinic.com")

@Suite("Retracting a message over REST, seen live on the sockets", .redisServer)
struct RetractTests {
    @Test("DELETE /api/messages/{id} by its sender: every socket of the conversation gets messages_purged, history no longer has it; the receiver gets 403, a second try 404; audited")
    func retractLive() async throws {
        try await withRealtimeStack { stack in
            let (sender, receiver) = (try await stack.connect(doctor), try await stack.connect(patel))
            let sent = try await sender.call("send_message", .object(["receiver_email": .string(patel), "content": .string("wrong patient"), "client_id": .string("r1")]), ack: 1)
            let id = try #require(sent["message"]?["id"]?.stringValue)
            let conversation = try #require(sent["message"]?["conversation_id"]?.stringValue)
            _ = try await receiver.event("receive_message")
            let (doctorToken, patelToken) = (try await stack.login(doctor), try await stack.login(patel))

            #expect(try await stack.http("DELETE", "/api/messages/\(id)", token: patelToken).0 == 403)
            let (status, body) = try await stack.http("DELETE", "/api/messages/\(id)", token: doctorToken)
            #expect(status == 200 && body?["message_id"] == .string(id), "\(String(describing: body))")
            for socket in [receiver, sender] {
                let purged = try await socket.event("messages_purged")
                #expect(purged["conversation_id"] == .string(conversation) && purged["message_ids"] == .array([.string(id)]))
            }
            let (_, history) = try await stack.http("GET", "/api/conversations/\(conversation)/messages", token: patelToken)
            #expect(history == .array([]))
            #expect(try await stack.http("DELETE", "/api/messages/\(id)", token: doctorToken).0 == 404)
            let audit = try stack.store.auditLog().filter { $0.action == "retract_message" }.map { "\($0.actor ?? "-") \($0.outcome) \($0.detail ?? "-")" }
            #expect(audit.contains("\(doctor) ok \(id)") && audit.contains("\(patel) forbidden \(id)"), "\(audit)")
            await sender.close()
            await receiver.close()
        }
    }
}
