import ChatCore
import Foundation
@testable import Gateway
import Testing

@Suite("Engine.IO and Socket.IO packets, the outbound queue, the token bucket")
struct SocketIOProtocolTests {
    @Test("Engine.IO packets encode and parse as the protocol document shows")
    func enginePackets() throws {
        #expect(EnginePacket.message("hello").encoded == "4hello")
        #expect(EnginePacket.ping("probe").encoded == "2probe")
        #expect(EnginePacket.binary(Data([1, 2, 3, 4])).encoded == "bAQIDBA==")
        #expect(EnginePacket(text: "4hello") == .message("hello"))
        #expect(EnginePacket(text: "3probe") == .pong("probe"))
        #expect(EnginePacket(text: "bAQIDBA==") == .binary(Data([1, 2, 3, 4])))
        #expect(EnginePacket(text: "5") == .upgrade)
        #expect(EnginePacket(text: "6") == .noop)
        #expect(EnginePacket(text: "") == nil)
        #expect(EnginePacket(text: "9x") == nil)
        #expect(EnginePacket(text: "b!!!") == nil)
        // Polling payloads are joined with the record separator (0x1e).
        #expect(EnginePacket.decodePayload("4hello\u{1e}2\u{1e}bAQIDBA==") == [.message("hello"), .ping(""), .binary(Data([1, 2, 3, 4]))])
        #expect(EnginePacket.encodePayload(["4a", "4b"]) == "4a\u{1e}4b")
        #expect(EnginePacket.decodePayload("4a\u{1e}\u{1e}4b") == nil)
        #expect(EngineError.unknownSessionID.body == #"{"code":1,"message":"Session ID unknown"}"#)
    }

    @Test("Socket.IO packets: connect with auth, events with ack ids, namespaces, binary attachment counts")
    func socketPackets() throws {
        let connect = try SocketPacket(parsing: #"0{"token":"abc"}"#)
        #expect(connect.kind == .connect)
        #expect(connect.data?["token"] == .string("abc"))
        #expect(try SocketPacket(parsing: "0").data == nil)
        let event = try SocketPacket(parsing: #"212["send_message",{"content":"hi"}]"#)
        #expect(event.ackID == 12)
        #expect(event.event?.name == "send_message")
        #expect(event.event?.arguments == [.object(["content": .string("hi")])])
        let namespaced = try SocketPacket(parsing: #"2/admin,3["x"]"#)
        #expect(namespaced.namespace == "/admin")
        #expect(namespaced.ackID == 3)
        let binary = try SocketPacket(parsing: #"52-["upload",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#)
        #expect(binary.kind == .binaryEvent)
        #expect(binary.attachments == 2)
        #expect(try SocketPacket(parsing: "1").kind == .disconnect)
        #expect(try SocketPacket(parsing: "0/admin,").namespace == "/admin")

        for bad in ["", "7", "2", "2[", "2{}", "2[1]", "0[]", "3[]", #"1{"a":1}"#, "5[\"x\"]", "2999999999999999999[\"x\"]"] {
            #expect(throws: SocketPacket.ParseError.self, "\(bad)") { try SocketPacket(parsing: bad) }
        }
        // Encoding: the shapes clients expect.
        #expect(SocketPacket(.connect, data: .object(["sid": .string("s1")])).encoded == #"0{"sid":"s1"}"#)
        #expect(SocketPacket(.connectError, namespace: "/admin", data: .object(["message": .string("Invalid namespace")])).encoded
            == #"4/admin,{"message":"Invalid namespace"}"#)
        #expect(SocketPacket(.disconnect).encoded == "1")
        #expect(SocketPacket.eventText("receive_message", json: #"{"seq":1}"#) == #"2["receive_message",{"seq":1}]"#)
        #expect(SocketPacket.eventText(#"odd"name"#, json: "1") == #"2["odd\"name",1]"#)
        #expect(SocketPacket.ackText(7, json: #"{"ok":true}"#) == #"37[{"ok":true}]"#)
        // Whole numbers stay whole.
        #expect(JSONValue.object(["seq": .number(12)]).text == #"{"seq":12}"#)
    }

    @Test("send_message packets read by the scanner give what the full parser gives; every other packet is left to it")
    func scannedSendMessages() throws {
        for (text, ack) in [(#"22["send_message",{"conversation_id":"c1","content":"hi \"there\"\n","client_id":"k1"}]"#, Optional(2)),
                            (#"2["send_message",{"receiver_email":"b@clinic.com","content":"é 😀","client_id":null}]"#, nil),
                            (#"2123456789012345["send_message", { "content" : "x" } ]"#, 123456789012345)] {
            let scanned = try #require(ClientConnection.scannedSend(text), "\(text)")
            let packet = try SocketPacket(parsing: text)
            let (name, arguments) = try #require(packet.event)
            #expect(name == "send_message" && scanned.ackID == ack && packet.ackID == ack)
            #expect(scanned.body == (try arguments[0].decode(SendMessageRequest.self)))
        }
        for other in [#"2["user_typing",{"conversation_id":"c1","is_typing":true}]"#, #"2/admin,["send_message",{"content":"x"}]"#,
                      #"2["send_message",{"content":"x"},{"extra":1}]"#, #"2["send_message",{"content":5}]"#, #"2["send_message",{"content":"x"}"#,
                      #"2["send_message","x"]"#, #"2["send_message"]"#, #"21234567890123456["send_message",{"content":"x"}]"#,
                      #"3["send_message",{"content":"x"}]"#, #"2["send_message",{"content":"x","content":"y"}]"#] {
            #expect(ClientConnection.scannedSend(other) == nil, "\(other)")
        }
    }

    @Test("the outbound queue drops typing first, then overflows; takes in order within a byte budget")
    func outboundQueue() async throws {
        let queue = OutboundQueue(capacity: 3, maximumBytes: 1000)
        #expect(queue.push("typing-1", .droppable) == .queued)
        #expect(queue.push("m1") == .queued)
        #expect(queue.push("m2") == .queued)
        // Full: the typing packet makes room for a message.
        #expect(queue.push("m3") == .queued)
        #expect(queue.counts.dropped == 1)
        // Full of messages: typing is dropped, a message overflows.
        #expect(queue.push("typing-2", .droppable) == .dropped)
        #expect(queue.push("m4") == .overflow)
        #expect(await queue.take(maximumBytes: 4) == .packets(["m1", "m2"]))
        #expect(await queue.take() == .packets(["m3"]))
        queue.interrupt()
        #expect(await queue.take() == .interrupted)
        queue.close()
        #expect(await queue.take() == .closed)
        #expect(queue.push("late") == .closed)

        // A waiting taker is woken by a push.
        let waiting = OutboundQueue(capacity: 10, maximumBytes: 1000)
        async let taken = waiting.take()
        try await Task.sleep(for: .milliseconds(50))
        _ = waiting.push("wake")
        #expect(await taken == .packets(["wake"]))
    }

    @Test("the token bucket allows the burst, then the rate, and says how long to wait")
    func tokenBucket() {
        let start = ContinuousClock.now
        var bucket = TokenBucket(rate: 2, burst: 3, now: start)
        #expect((0..<3).map { _ in bucket.take(now: start) } == [nil, nil, nil])
        let wait = bucket.take(now: start)
        #expect(wait != nil && abs(wait! - 0.5) < 0.001)
        #expect(bucket.take(now: start + .milliseconds(500)) == nil)
        #expect(bucket.take(now: start + .milliseconds(600)) != nil)
    }
}
