import Foundation
import Testing
@testable import ChatCore

@Suite("Domain types as JSON")
struct DomainJSONTests {
    let timestamp = Date(timeIntervalSince1970: 1_764_052_200.123)
    /// Exactly representable, so it survives a round trip bit for bit.
    let exact = Date(timeIntervalSince1970: 1_764_052_200.125)

    @Test("times are written to the nearest millisecond")
    func millisecondRounding() {
        #expect(ChatJSON.formatTimestamp(timestamp) == "2025-11-25T06:30:00.123Z")
        #expect(ChatJSON.formatTimestamp(Date(timeIntervalSince1970: 0.0006)) == "1970-01-01T00:00:00.001Z")
        #expect(ChatJSON.formatTimestamp(Date(timeIntervalSince1970: 59.9996)) == "1970-01-01T00:01:00.000Z")
        #expect(ChatJSON.formatTimestamp(Date(timeIntervalSince1970: -0.25)) == "1969-12-31T23:59:59.750Z")
    }

    @Test("a message encodes with the protocol's snake_case fields and RFC 3339 UTC times")
    func messageShape() throws {
        let message = Message(
            id: "m1", conversationID: "c1", seq: 7, senderEmail: "admin@clinic.com", receiverEmail: "doctor@clinic.com",
            content: "Hello <b>doctor</b>", timestamp: exact, expiresAt: exact.addingTimeInterval(90 * 86400), clientID: "k-1")
        let json = try JSONSerialization.jsonObject(with: ChatJSON.makeEncoder().encode(message)) as! [String: Any]
        #expect(Set(json.keys) == ["id", "conversation_id", "seq", "sender_email", "receiver_email", "content", "timestamp", "read", "expires_at", "client_id"])
        #expect(json["timestamp"] as? String == "2025-11-25T06:30:00.125Z")
        #expect(json["expires_at"] as? String == "2026-02-23T06:30:00.125Z")
        #expect(json["content"] as? String == "Hello <b>doctor</b>")
        let decoded = try ChatJSON.makeDecoder().decode(Message.self, from: ChatJSON.makeEncoder().encode(message))
        #expect(decoded == message)
    }

    @Test("times without fractional seconds decode too; other strings are refused")
    func timestamps() throws {
        #expect(ChatJSON.parseTimestamp("2025-11-25T06:30:00Z") == Date(timeIntervalSince1970: 1_764_052_200))
        #expect(ChatJSON.parseTimestamp("yesterday") == nil)
        let bad = Data(#"{"email":"a@b","last_seen":"nope"}"#.utf8)
        #expect(throws: DecodingError.self) { try ChatJSON.makeDecoder().decode(UserOfflineEvent.self, from: bad) }
    }

    @Test("client requests decode from the original app's payloads")
    func clientRequests() throws {
        let decoder = ChatJSON.makeDecoder()
        let send = try decoder.decode(SendMessageRequest.self, from: Data(#"{"receiver_email":"doctor@clinic.com","content":"hi","conversation_id":null}"#.utf8))
        #expect(send == SendMessageRequest(receiverEmail: "doctor@clinic.com", content: "hi", clientID: nil))
        let typing = try decoder.decode(TypingEvent.self, from: Data(#"{"receiver_email":"d@c","is_typing":true}"#.utf8))
        #expect(typing.isTyping && typing.receiverEmail == "d@c")
        let sync = try decoder.decode(SyncRequest.self, from: Data(#"{"since":{"c1":4,"c2":0}}"#.utf8))
        #expect(sync.since == ["c1": 4, "c2": 0])
        #expect(ClientEventName(rawValue: "mark_message_read") == .markMessageRead)
        #expect(ServerEventName.allCases.map(\.rawValue).contains("message_read_receipt"))
    }

    @Test("an error body is {\"error\":{\"code\",\"message\"}} and each code has its HTTP status")
    func errorBody() throws {
        let body = ErrorBody(error: ChatError(.notFound, "conversation not found"))
        let json = String(decoding: try ChatJSON.makeEncoder().encode(body), as: UTF8.self)
        #expect(json == #"{"error":{"code":"not_found","message":"conversation not found"}}"#)
        #expect(ChatError.Code.invalidContent.httpStatus == 422)
        #expect(ChatError.Code.payloadTooLarge.httpStatus == 413)
        #expect(ChatError.Code.rateLimited.httpStatus == 429)
        // One status per code; only a password to change shares forbidden's 403 (a client tells them apart by the code).
        #expect(ChatError.Code.passwordChangeRequired.httpStatus == 403 && ChatError.Code.forbidden.httpStatus == 403)
        let others = ChatError.Code.allCases.filter { $0 != .passwordChangeRequired }
        #expect(Set(others.map(\.httpStatus)).count == others.count)
    }
}

@Test("milliseconds survive a round trip through JSON and Date (a truncating conversion made the retention cursor return a message again)")
func millisecondsRoundTrip() {
    let start: Int64 = 1_764_066_447_000
    func throughJSON(_ ms: Int64) -> Date { ChatJSON.parseTimestamp(ChatJSON.formatTimestamp(Date(timeIntervalSince1970: Double(ms) / 1000)))! }
    let broken = (start..<start + 10_000).filter { throughJSON($0).epochMilliseconds != $0 }
    #expect(broken.isEmpty, "\(broken.prefix(5))")
    let truncated = (start..<start + 10_000).filter { Int64(throughJSON($0).timeIntervalSince1970 * 1000) != $0 }
    #expect(!truncated.isEmpty, "the old conversion is exact here too, so this test proves nothing")
}
