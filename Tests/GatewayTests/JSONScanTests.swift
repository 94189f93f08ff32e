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
        #expect(fields.time("timestamp") == ChatJSON.parseTimestamp("2026-12-01T10:00:00.000Z"))
        #expect(JSONScan(Array(#"{"at":"2026-12-01T11:00:00+01:00","no":"later","n":1}"#.utf8))?.time("at") == ChatJSON.parseTimestamp("2026-12-01T10:00:00Z"))
        #expect(JSONScan(Array(#"{"no":"later","n":1}"#.utf8)).map { [$0.time("no"), $0.time("n"), $0.time("none")] } == [nil, nil, nil])
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

    @Test("a string ends at the first quote after an even run of backslashes, however long the text and wherever the run")
    func stringEnds() throws {
        var generator = SystemRandomNumberGenerator()
        let pieces = ["\\", "\"", "\\\\", "\\\"", "a", "é", " ", "{", "}", "]", ",", ":", "\n", String(repeating: "x", count: 40)]
        for _ in 0..<500 {
            let text = (0..<Int.random(in: 0...30, using: &generator)).map { _ in pieces.randomElement(using: &generator)! }.joined()
            let value = JSONValue.object(["b": .string(text), "a": .array([.string(text), .number(1)]), "c": .string("end")])
            let bytes = Array(value.text.utf8)
            let scan = try #require(JSONScan(bytes), "\(value.text)")
            #expect(scan.members.map(\.key) == ["a", "b", "c"], "\(value.text)")
            #expect(scan.decodedString("b") == text)
            #expect(scan.string("c") == "end")
            #expect(scan.endsAt(bytes.count))
        }
        // Hand-written: a run of backslashes right before the closing quote, and one that escapes it.
        #expect(JSONScan(Array(#"{"a":"x\\","b":1}"#.utf8))?.integer("b") == 1)
        #expect(JSONScan(Array(#"{"a":"x\","b":1}"#.utf8))?.members.map(\.key) == nil, "the quote is escaped: the string never ends")
        #expect(JSONScan(Array(#"{"a":"\\"}"#.utf8))?.decodedString("a") == "\\")
        #expect(JSONScan(Array(#"{"a":"\""#.utf8)) == nil)
    }

    @Test("finds the elements of an array, nested values and strings with brackets whole")
    func elements() throws {
        let text = #" [ {"a":[1,{"b":"]}"}]} , "x,\"]" ,12, -3.5e2,true,null,[] ,{} ] "#
        let bytes = Array(text.utf8)
        let ranges = try #require(JSONScan.elements(bytes, in: 0..<bytes.count))
        #expect(ranges.map { String(decoding: bytes[$0], as: UTF8.self) }
                == [#"{"a":[1,{"b":"]}"}]}"#, #""x,\"]""#, "12", "-3.5e2", "true", "null", "[]", "{}"])
        #expect(JSONScan.elements(Array(" [ ] ".utf8), in: 0..<5) == [])
        // Within a member's range.
        let object = Array(#"{"list":["p","q"],"n":1}"#.utf8)
        let list = try #require(JSONScan(object)?.range("list"))
        #expect(JSONScan.elements(object, in: list)?.map { String(decoding: object[$0], as: UTF8.self) } == [#""p""#, #""q""#])
        for malformed in ["", "{}", "[", "[1", "[1,]", "[,1]", "[1 2]", #"["a]"#, "[1] x", "[[1]"] {
            let bytes = Array(malformed.utf8)
            #expect(JSONScan.elements(bytes, in: 0..<bytes.count) == nil, "\(malformed)")
        }
    }

    @Test("a sync's answer read by the scanner is what decoding it gives: each message's JSON as the encoder writes it, receipts, summaries")
    func syncReplay() throws {
        let start = Date(timeIntervalSince1970: 1_764_052_200.25)
        let texts = ["plain", #"quote " and \ and ] and }"#, "line\nbreak\ttab", "émigré 🩺 日本語", "<script>alert(1)</script>"]
        let messages = texts.enumerated().map { index, text in
            Message(id: "m\(index)", conversationID: "d1", seq: Int64(index + 5), senderEmail: "a@clinic.com", receiverEmail: "b@clinic.com",
                    content: text, timestamp: start.addingTimeInterval(Double(index)), read: index == 1, readAt: index == 1 ? start : nil,
                    expiresAt: start.addingTimeInterval(86400), clientID: index % 2 == 0 ? "k\(index)" : nil)
        }
        let receipt = ReadReceipt(messageID: "m4", conversationID: "d1", readerEmail: "b@clinic.com", readAt: start, upToSeq: 9)
        let result = SyncResult(conversations: [
            SyncedConversation(id: "d1", lastSeq: 9, messages: messages, receipts: [receipt], truncated: true),
            SyncedConversation(id: "g1", lastSeq: 0, messages: [], receipts: [], truncated: false),
        ], receiptsCursor: 31)
        let bytes = Array(result.jsonText.utf8)
        let scanned = try #require(SyncReplay(scanning: bytes))
        #expect(scanned == SyncReplay(decoding: bytes))
        #expect(scanned.receiptsCursor == 31)
        #expect(SyncReplay(scanning: Array(SyncResult(conversations: []).jsonText.utf8))?.receiptsCursor == nil, "a store older than the cursor")
        #expect(scanned.conversations.map(\.id) == ["d1", "g1"])
        #expect(scanned.conversations.map(\.lastSeq) == [9, 0])
        #expect(scanned.conversations.map(\.truncated) == [true, false])
        #expect(scanned.conversations[0].messages.map(\.json) == (try messages.map { String(decoding: try ChatJSON.makeEncoder().encode($0), as: UTF8.self) }))
        #expect(scanned.conversations[0].messages.map(\.position.seq) == [5, 6, 7, 8, 9])
        #expect(scanned.conversations[0].messages.allSatisfy { $0.position.conversationID == "d1" })
        #expect(scanned.conversations[0].receipts == [receipt.jsonText])

        // The encoder's own output (spaces, another member order) is read too, or left to the decoder.
        let pretty = JSONEncoder()
        pretty.outputFormatting = [.prettyPrinted]
        pretty.dateEncodingStrategy = .custom { date, encoder in
            var container = encoder.singleValueContainer()
            try container.encode(ChatJSON.formatTimestamp(date))
        }
        let other = Array(try pretty.encode(result))
        #expect((SyncReplay(scanning: other) ?? SyncReplay(decoding: other))?.conversations.map(\.messages.count) == [5, 0])
        // An escaped id or an unexpected shape is not the scanner's: the decoder reads what it can.
        let escaped = Array(SyncResult(conversations: [SyncedConversation(id: "g\"2", lastSeq: 1, messages: [], receipts: [], truncated: false)]).jsonText.utf8)
        #expect(SyncReplay(scanning: escaped) == nil)
        #expect(SyncReplay(decoding: escaped)?.conversations.map(\.id) == ["g\"2"])
        for odd in [#"{"conversations":{}}"#, #"{"conversations":[{"id":"c","last_seq":1,"messages":[],"receipts":[],"truncated":1}]}"#,
                    #"{"conversations":[{"id":"c","last_seq":1,"messages":[{"seq":1}],"receipts":[],"truncated":false}]}"#,
                    #"{"conversations":[],"receipts_cursor":"7"}"#, "[]", ""] {
            #expect(SyncReplay(scanning: Array(odd.utf8)) == nil, "\(odd)")
        }
    }

    @Test("gives nil for what is not a well-formed object", arguments: ["", "[]", "{", #"{"a":1"#, #"{"a" 1}"#, #"{"a":"x}"#, #"{"a\"b":1}"#, #"{"a":{"b":1}"#])
    func malformed(text: String) {
        #expect(JSONScan(Array(text.utf8)) == nil)
    }
}
