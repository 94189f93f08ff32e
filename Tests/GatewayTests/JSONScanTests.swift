import ChatCore
import Foundation
@testable import Gateway
import Testing

@Suite("JSONScan: the fan-out path's field reader")
struct JSONScanTests {
    @Test("finds top-level members and forwards data as published, whatever the message text holds")
    func members() throws {
        let content = #"a "quoted" {brace} [bracket], \ backslash, "id":"fake", ünïcödé"#
        let message = ["content": JSONValue.string(content), "conversation_id": .string("c1"), "id": .string("m1"), "seq": .number(42),
                       "timestamp": .string("2026-12-01T10:00:00.000Z")]
        let envelope = JSONValue.object(["event": .string("receive_message"), "data": .object(message), "gateway": .null])
        let bytes = Array(envelope.text.utf8)
        let top = try #require(JSONScan(bytes))
        #expect(top.string("event") == "receive_message")
        #expect(top.isNull("gateway") && top.isNull("request"))
        let data = try #require(top.range("data"))
        #expect(JSONValue(parsing: String(decoding: bytes[data], as: UTF8.self)) == .object(message))
        let fields = try #require(JSONScan(bytes, in: data))
        #expect(fields.string("id") == "m1")
        #expect(fields.string("conversation_id") == "c1")
        #expect(fields.integer("seq") == 42)
        #expect(fields.string("content") == nil, "an escaped string is left to the full decoder")
        #expect(fields.members.map(\.key) == ["content", "conversation_id", "id", "seq", "timestamp"])
    }

    @Test("gives nil for what is not a well-formed object", arguments: ["", "[]", "{", #"{"a":1"#, #"{"a" 1}"#, #"{"a":"x}"#, #"{"a\"b":1}"#, #"{"a":{"b":1}"#])
    func malformed(text: String) {
        #expect(JSONScan(Array(text.utf8)) == nil)
    }
}
