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

    @Test("decodes an escaped string member as JSONDecoder does, a store reply's result among them")
    func decodedString() throws {
        for text in [#"plain"#, #"{"id":"m1","content":"say \"hi\"\n"}"#, "tab\there é ünï 🩺 \u{1F468}\u{200D}\u{2695}\u{FE0F}", "\u{0}\u{1f}/\\"] {
            let payload = Array(JSONValue.object(["request": .string("r1"), "result": .string(text), "error": .null]).text.utf8)
            let scan = try #require(JSONScan(payload))
            #expect(scan.decodedString("result") == text)
        }
        let escapedUnicode = Array(#"{"a":"caf\u00e9 \ud83e\ude7a \/"}"#.utf8)
        #expect(JSONScan(escapedUnicode)?.decodedString("a") == "café 🩺 /")
        #expect(JSONScan(Array(#"{"a":"bad \q"}"#.utf8))?.decodedString("a") == nil)
        #expect(JSONScan(Array(#"{"a":"lone \ud83e"}"#.utf8))?.decodedString("a") == nil)
    }

    @Test("gives nil for what is not a well-formed object", arguments: ["", "[]", "{", #"{"a":1"#, #"{"a" 1}"#, #"{"a":"x}"#, #"{"a\"b":1}"#, #"{"a":{"b":1}"#])
    func malformed(text: String) {
        #expect(JSONScan(Array(text.utf8)) == nil)
    }
}
