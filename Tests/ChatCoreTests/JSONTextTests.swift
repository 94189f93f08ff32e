import Foundation
import Testing
@testable import ChatCore

@Suite("Hand-written JSON of the send path")
struct JSONTextTests {
    /// Strings that need every kind of escape, and some that need none.
    static let awkward = [
        "plain", "", "quote \" and backslash \\ and slash /", "line\nbreak\r\ttab", "\u{08}\u{0C}\u{01}\u{1F}\u{7F}",
        "émigré 👩‍⚕️ 日本語", "\u{2028}\u{2029}", "<script>alert(1)</script>", "\\u0041 is not an escape here", "end with backslash \\",
    ]

    func encoded<T: Encodable>(_ value: T) throws -> String { String(decoding: try ChatJSON.makeEncoder().encode(value), as: UTF8.self) }

    @Test("a message is written byte for byte as the encoder writes it, whatever its text and optional fields")
    func messages() throws {
        var checked = 0
        for (index, text) in Self.awkward.enumerated() {
            for variant in 0..<4 {
                let sent = Date(timeIntervalSince1970: 1_764_052_200 + Double(index * 7919 + variant) + Double(variant * 137) / 1000)
                let message = Message(
                    id: "0190f0e2-\(index)", conversationID: "c-\(text)", seq: Int64(index * 1000 + variant), senderEmail: "a\(index)@clinic.com",
                    receiverEmail: variant % 2 == 0 ? "b@clinic.com" : nil, content: text, timestamp: sent, read: variant == 3,
                    readAt: variant == 3 ? sent.addingTimeInterval(61.5) : nil, expiresAt: sent.addingTimeInterval(90 * 86400),
                    clientID: variant < 2 ? "client-\(text)" : nil)
                #expect(message.jsonText == (try encoded(message)), "variant \(variant) of \(text.debugDescription)")
                checked += 1
            }
        }
        #expect(checked == Self.awkward.count * 4)
    }

    @Test("strings are quoted as the encoder quotes them, long escaped ones (a store answer's result) included")
    func quotedStrings() throws {
        for text in Self.awkward { #expect(JSONText.quoted(text) == (try encoded(text)), "\(text.debugDescription)") }
        // A result in a result: runs between escapes, escapes back to back, escapes at both ends.
        let message = Message(id: "m", conversationID: "c", seq: 1, senderEmail: "a@clinic.com", receiverEmail: nil, content: Self.awkward.joined(separator: "\""),
                              timestamp: Date(timeIntervalSince1970: 1_764_052_200.5), expiresAt: Date(timeIntervalSince1970: 1_771_828_200.5), clientID: "k")
        let nested = "\"" + String(repeating: message.jsonText, count: 20) + "\\\n"
        #expect(JSONText.quoted(nested) == (try encoded(nested)))
        #expect(try ChatJSON.makeDecoder().decode(String.self, from: Data(JSONText.quoted(nested).utf8)) == nested)
    }

    @Test("a sync's answer, its receipts and a page of messages are written byte for byte as the encoder writes them")
    func syncAnswers() throws {
        let start = Date(timeIntervalSince1970: 1_764_052_200.25)
        func message(_ seq: Int, _ text: String, direct: Bool) -> Message {
            Message(id: "id-\(seq)", conversationID: direct ? "d1" : "g \"1\"", seq: Int64(seq), senderEmail: "a@clinic.com",
                    receiverEmail: direct ? "b@clinic.com" : nil, content: text, timestamp: start.addingTimeInterval(Double(seq)),
                    read: seq % 3 == 0, readAt: seq % 3 == 0 ? start.addingTimeInterval(Double(seq) + 9.5) : nil,
                    expiresAt: start.addingTimeInterval(90 * 86400), clientID: seq % 2 == 0 ? "k\(seq)" : nil)
        }
        let receipts = [ReadReceipt(messageID: "id-7", conversationID: "d1", readerEmail: "b@clinic.com", readAt: start.addingTimeInterval(60.001), upToSeq: 7),
                        ReadReceipt(messageID: nil, conversationID: "g \"1\"", readerEmail: "c\\d@clinic.com", readAt: start, upToSeq: 0)]
        for receipt in receipts { #expect(receipt.jsonText == (try encoded(receipt))) }
        let result = SyncResult(conversations: [
            SyncedConversation(id: "d1", lastSeq: 12, messages: Self.awkward.enumerated().map { message($0 + 1, $1, direct: true) },
                               receipts: [receipts[0]], truncated: true),
            SyncedConversation(id: "g \"1\"", lastSeq: 3, messages: [], receipts: [receipts[1]], truncated: false),
            SyncedConversation(id: "g2", lastSeq: 0, messages: [message(1, "one", direct: false)], receipts: [], truncated: false),
        ], receiptsCursor: 4_000_000_017)
        #expect(result.jsonText == (try encoded(result)))
        #expect(result.jsonText.hasSuffix(#"],"receipts_cursor":4000000017}"#))
        #expect(result.conversations[0].messages.jsonText == (try encoded(result.conversations[0].messages)), "a history page")
        #expect([Message]().jsonText == (try encoded([Message]())))
        #expect(SyncResult(conversations: []).jsonText == (try encoded(SyncResult(conversations: []))), "a store older than the cursor")
        #expect(SyncResult(conversations: [], receiptsCursor: 0).jsonText == (try encoded(SyncResult(conversations: [], receiptsCursor: 0))))
        #expect(try ChatJSON.makeDecoder().decode(SyncResult.self, from: Data(result.jsonText.utf8)) == result)
    }

    @Test("a conversation is written byte for byte as the encoder writes it: awkward titles, emails and names, optional fields, members and markers; with presence, through the encoder")
    func conversations() throws {
        let start = Date(timeIntervalSince1970: 1_800_000_000)
        let last = Message(id: "m\"9", conversationID: "c\\1", seq: 9, senderEmail: "é@clinic.com", receiverEmail: nil, content: Self.awkward[5],
                           timestamp: start.addingTimeInterval(5), read: true, readAt: start.addingTimeInterval(6),
                           expiresAt: start.addingTimeInterval(86400), clientID: "k9")
        var conversations: [Conversation] = []
        for (index, title) in [nil, "Ward \"3\" / night\n", Self.awkward[3]].enumerated() {
            var conversation = Conversation(id: "c\(index)\u{1}", kind: title == nil ? .direct : .group, title: title,
                                            participants: ["a@clinic.com", "b.c+d@clinic.com", "z\"@x"], createdAt: start,
                                            lastMessageAt: index == 0 ? nil : start.addingTimeInterval(5), lastMessage: index == 0 ? nil : last,
                                            unreadCount: index * 7)
            if index > 0 {
                conversation.members = [User(email: "a@clinic.com", name: "Dr. \"Ann\" Ø", role: .admin),
                                        User(email: "z\"@x", name: Self.awkward[4], role: .doctor, disabled: true)]
                conversation.readPositions = ["z\"@x": 3, "a@clinic.com": 0, "b.c+d@clinic.com": 12, "B@clinic.com": 1]
                conversation.readVersion = index == 1 ? 0 : 4_000_000_001
            }
            conversations.append(conversation)
            #expect(conversation.jsonText == (try encoded(conversation)), "\(index)")
        }
        #expect(conversations.jsonText == (try encoded(conversations)), "the list")
        #expect([Conversation]().jsonText == (try encoded([Conversation]())))
        var withPresence = conversations[1]
        withPresence.presence = ["a@clinic.com": PresenceState(online: false, lastSeen: start)]
        #expect(withPresence.jsonText == (try encoded(withPresence)))
        #expect(try ChatJSON.makeDecoder().decode([Conversation].self, from: Data(conversations.jsonText.utf8)) == conversations)
    }

    @Test("the gateway adds presence to the store's conversation list byte for byte as decoding, setting presence and encoding did; it declines what it cannot read")
    func conversationListPresence() throws {
        let start = Date(timeIntervalSince1970: 1_800_000_000.25)
        let last = Message(id: "m9", conversationID: "c1", seq: 9, senderEmail: "a@clinic.com", receiverEmail: nil,
                           content: #"{"participants":["x@y"],"presence":{}} ]"# + Self.awkward[3], timestamp: start, read: false, readAt: nil,
                           expiresAt: start.addingTimeInterval(86400), clientID: nil)
        let everyone = ["a@clinic.com", "b.c+d@clinic.com", "émile@clinic.com", "zed@clinic.com", "Upper@clinic.com"]
        var conversations: [Conversation] = []
        for index in 0..<4 {
            var conversation = Conversation(id: "c\(index)", kind: index == 0 ? .direct : .group, title: index == 0 ? nil : Self.awkward[index],
                                            participants: Array(everyone.dropFirst(index % 2).prefix(index + 2)).sorted(), createdAt: start,
                                            lastMessageAt: index == 1 ? start : nil, lastMessage: index == 1 ? last : nil, unreadCount: index)
            if index >= 2 {
                conversation.members = [User(email: "a@clinic.com", name: "Dr. \"Ann\"", role: .admin)]
                conversation.readPositions = ["a@clinic.com": 2, "zed@clinic.com": 0]
                conversation.readVersion = Int64(index)
            }
            conversations.append(conversation)
        }
        // Online, offline since a time, offline never seen; "zed" has no state at all.
        let states = ["a@clinic.com": PresenceState(online: true, lastSeen: nil),
                      "b.c+d@clinic.com": PresenceState(online: false, lastSeen: start.addingTimeInterval(-3600)),
                      "émile@clinic.com": PresenceState(online: false, lastSeen: nil),
                      "Upper@clinic.com": PresenceState(online: true, lastSeen: start),
                      "stranger@clinic.com": PresenceState(online: true, lastSeen: nil)]
        for list in [conversations, [], [conversations[2]]] {
            let scanned = try #require(ConversationListText(Array(list.jsonText.utf8)))
            #expect(scanned.participants == list.flatMap(\.participants))
            var expected = list
            for index in expected.indices {
                expected[index].presence = states.filter { expected[index].participants.contains($0.key) }
            }
            #expect(String(decoding: scanned.withPresence(states), as: UTF8.self) == (try encoded(expected)))
            for index in expected.indices { expected[index].presence = [:] }
            #expect(String(decoding: scanned.withPresence([:]), as: UTF8.self) == (try encoded(expected)), "no presence known (Redis down)")
        }
        // What the slow way decodes: an escaped email, presence already there, anything not a list of conversations.
        var escaped = conversations[0]
        escaped.participants = ["a@clinic.com", "z\"@x"]
        var present = conversations[0]
        present.presence = [:]
        for text in [[escaped].jsonText, try encoded([present]), "", "{}", "[", "[1]", #"[{"participants":"a"}]"#, #"[{"participants":[1]}]"#,
                     #"[{"participants":["a"]"#, #"[{"participants":["a"}]"#, #"[{"id":"c"}]"#, #"[{"participants":["]}]"#] {
            #expect(ConversationListText(Array(text.utf8)) == nil, "\(text)")
        }
        #expect(ConversationListText(Array(#" [ {"participants":[ "" , "b" ]} ] "#.utf8))?.participants == ["", "b"])
    }

    @Test("a publish batch holds its parts in order, byte for byte; one part is published as it is; anything else is not a batch")
    func publishBatches() throws {
        let parts = [#"{"data":{"a":"x \"]}"},"event":"e1"}"#, #"{"data":[],"event":"e2"}"#, #"{"request":"r","result":"{\"batch\":[]}"}"#]
        let payload = PublishBatch.payload(parts)
        #expect(payload == #"{"batch":["# + parts.joined(separator: ",") + "]}")
        #expect(PublishBatch.parts(Array(payload.utf8))?.map { String(decoding: $0, as: UTF8.self) } == parts)
        #expect(PublishBatch.payload([parts[0]]) == parts[0])
        #expect(PublishBatch.parts(Array(parts[0].utf8)) == nil)
        #expect(PublishBatch.parts(Array(#"{"batch":[]}"#.utf8)) == [])
        for text in [#"{"batch":[{"a":1}]"#, #"{"batch":[{"a":1}],"event":"x"}"#, #"{"batch":{"a":1}}"#, #"{"batch":[{"a":1}]} x"#, #"{"batch":"#] {
            #expect(PublishBatch.parts(Array(text.utf8)) == nil, "\(text)")
        }
    }

    @Test("times are written as Foundation's ISO 8601 formatter writes them, leap days and the epoch included")
    func timestamps() {
        var generator = SystemRandomNumberGenerator()
        var samples: [Int64] = [0, 1, 999, -1, -1000, -86_400_001, 951_782_400_000, 951_868_799_999, 4_107_542_400_000, 253_402_300_799_999]
        for _ in 0..<2000 { samples.append(Int64.random(in: 0...7_258_118_400_000, using: &generator)) }  // up to 2200
        for milliseconds in samples {
            #expect(JSONText.timestamp(milliseconds: milliseconds) == ChatJSON.formatTimestampWithFoundation(milliseconds: milliseconds), "\(milliseconds)")
        }
        #expect(JSONText.timestamp(milliseconds: 951_782_400_000) == "2000-02-29T00:00:00.000Z")
    }

    @Test("times are read back as the instants Foundation's ISO 8601 parser reads, to the millisecond; other forms and impossible dates are left to it")
    func timestampsRead() throws {
        var generator = SystemRandomNumberGenerator()
        var samples: [Int64] = [0, 1, 999, 951_782_400_000, 951_868_799_999, 4_107_542_400_000, 253_402_300_799_999, -11_676_096_000_000,
                                977_420_420_739]  // 2000-12-21T17:40:20.739Z, which Foundation reads a few ulps off (below)
        for _ in 0..<2000 { samples.append(Int64.random(in: -11_676_096_000_000...7_258_118_400_000, using: &generator)) }  // 1600 to 2200
        for milliseconds in samples {
            let text = JSONText.timestamp(milliseconds: milliseconds)
            #expect(JSONText.milliseconds(timestamp: text.utf8) == milliseconds, "\(text)")
            // The same instant to the millisecond, and within a microsecond as a Double: Foundation's parser
            // computes the fraction in steps and is sometimes a few ulps from the nearest Double (CI met
            // 2000-12-21T17:40:20.739Z: -886779.2609999999 against -886779.261), so bit equality is not its
            // contract; the fast path gives the nearest Double, as reading the stored milliseconds does.
            let parsed = try #require(ChatJSON.parseTimestamp(text), "\(text)")
            let foundation = try Date.ISO8601FormatStyle(includingFractionalSeconds: true).parse(text)
            #expect(parsed.epochMilliseconds == foundation.epochMilliseconds, "\(text)")
            #expect(abs(parsed.timeIntervalSince(foundation)) < 1e-6, "\(text)")
            #expect(parsed == ChatJSON.date(milliseconds: milliseconds), "\(text)")
        }
        for text in ["2026-02-29T00:00:00.000Z", "2026-13-01T00:00:00.000Z", "2026-04-31T00:00:00.000Z", "2026-00-10T00:00:00.000Z",
                     "2026-01-00T00:00:00.000Z", "2026-01-01T24:00:00.000Z", "2026-01-01T00:60:00.000Z", "2026-01-01T00:00:60.000Z",
                     "2026-01-01T00:00:00.000+01:00", "2026-01-01T00:00:00Z", "2026-01-01 00:00:00.000Z", "2026-01-01T00:00:00.00aZ",
                     "1599-12-31T00:00:00.000Z", "+026-01-01T00:00:00.000Z"] {
            #expect(JSONText.milliseconds(timestamp: text.utf8) == nil, "\(text)")
        }
        #expect(JSONText.milliseconds(timestamp: "2024-02-29T23:59:59.999Z".utf8) == 1_709_251_199_999)
        // What the fast path leaves alone still parses as before.
        #expect(ChatJSON.parseTimestamp("2026-01-01T01:00:00.000+01:00")?.epochMilliseconds == 1_767_225_600_000)
        #expect(ChatJSON.parseTimestamp("2026-01-01T00:00:00Z")?.epochMilliseconds == 1_767_225_600_000)
        #expect(ChatJSON.parseTimestamp("2026-02-30T00:00:00.000Z") == (try? Date.ISO8601FormatStyle(includingFractionalSeconds: true).parse("2026-02-30T00:00:00.000Z")))
    }

    @Test("events and store answers around a message are the encoder's bytes")
    func wrappers() throws {
        let message = Message(id: "m", conversationID: "c", seq: 1, senderEmail: "a@clinic.com", receiverEmail: nil, content: "say \"hi\"\n",
                              timestamp: Date(timeIntervalSince1970: 1_764_052_200.5), expiresAt: Date(timeIntervalSince1970: 1_771_828_200.5), clientID: "k")
        let json = message.jsonText
        #expect(JSONText.userEvent(.receiveMessage, data: json) == (try encoded(UserEvent(event: .receiveMessage, data: message))))
        #expect(JSONText.userEvent(.messageSentConfirmed, data: json, gateway: "gw \"1\"", request: "s1:r/2")
                == (try encoded(UserEvent(event: .messageSentConfirmed, data: message, gateway: "gw \"1\"", request: "s1:r/2"))))
        #expect(JSONText.storeReply(request: "sock:req", result: json) == (try encoded(StoreReply(request: "sock:req", result: try encoded(message)))))
        let reply = try ChatJSON.makeDecoder().decode(StoreReply.self, from: Data(JSONText.storeReply(request: "r", result: json).utf8))
        #expect(try ChatJSON.makeDecoder().decode(Message.self, from: Data(try #require(reply.result).utf8)) == message)
    }

    @Test("a store answer with its result as raw JSON is read back as the same text as the quoted form; an error or a null result as before")
    func rawStoreReplies() throws {
        for text in Self.awkward {
            let message = Message(id: "m", conversationID: "c", seq: 1, senderEmail: "a@clinic.com", receiverEmail: nil, content: text,
                                  timestamp: Date(timeIntervalSince1970: 1_764_052_200.5), expiresAt: Date(timeIntervalSince1970: 1_771_828_200.5), clientID: text)
            let json = [message, message].jsonText
            let raw = JSONText.storeReply(request: "s:\"q\"", result: json, raw: true)
            #expect(raw == #"{"request":"s:\"q\"","result_json":"# + json + "}", "\(raw)")
            #expect(try JSONSerialization.jsonObject(with: Data(raw.utf8)) is [String: Any], "valid JSON: \(raw)")
            let quoted = JSONText.storeReply(request: "s:\"q\"", result: json)
            #expect(StoreClient.readReply(Array(raw.utf8)) == StoreReply(request: "s:\"q\"", result: json))
            #expect(StoreClient.readReply(Array(quoted.utf8)) == StoreReply(request: "s:\"q\"", result: json))
        }
        let refused = try encoded(StoreReply(request: "r", error: ChatError(.notFound, "conversation not found")))
        #expect(StoreClient.readReply(Array(refused.utf8)) == StoreReply(request: "r", error: ChatError(.notFound, "conversation not found")))
        #expect(StoreClient.readReply(Array(#"{"request":"r","result":null}"#.utf8)) == StoreReply(request: "r"))
        #expect(StoreClient.readReply(Array("not json".utf8)) == nil)
    }

    @Test("a send's body read by the scanner is what the decoder reads; any other shape is left to the decoder")
    func scannedSendBodies() throws {
        let decoder = ChatJSON.makeDecoder()
        for text in Self.awkward where !text.isEmpty {
            for body in [SendMessageRequest(conversationID: "c1", content: text, clientID: "k\(text)"),
                         SendMessageRequest(receiverEmail: "b@clinic.com", content: text, clientID: nil)] {
                let bytes = Array(try ChatJSON.makeEncoder().encode(body))
                #expect(SendMessageRequest(scanning: bytes) == body)
                #expect(try decoder.decode(SendMessageRequest.self, from: Data(bytes)) == body)
            }
        }
        let spaced = #" { "content" : "a\u00e9\ud83d\ude00" , "conversation_id" : null , "receiver_email":"b@x.org" } "#
        #expect(SendMessageRequest(scanning: Array(spaced.utf8)) == SendMessageRequest(receiverEmail: "b@x.org", content: "aé😀", clientID: nil))
        for other in [#"{"content":5}"#, #"{"conversation_id":"c"}"#, #"{"content":"a","extra":1}"#, #"{"content":"a","content":"b"}"#,
                      #"{"content":"a","client_id":7}"#, #"{"content":"a","client_id":{"x":1}}"#, "{not json", "[]", "", #""text""#] {
            #expect(SendMessageRequest(scanning: Array(other.utf8)) == nil, "\(other)")
        }
    }
}
