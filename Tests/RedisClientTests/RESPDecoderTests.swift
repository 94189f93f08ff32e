import CHiredis
import Foundation
import NIOCore
import NIOEmbedded
import NIOTestUtils
import Testing
@testable import RedisClient

@Suite("RESP reply decoding (hiredis redisReader)")
struct RESPDecoderTests {
    @Test("every reply type decodes, whole and fed one byte at a time")
    func everyReplyTypeByteAtATime() throws {
        let pairs: [(String, [RESPValue])] = [
            ("+OK\r\n", [.simpleString("OK")]),
            ("-ERR unknown command 'FOO'\r\n", [.error("ERR unknown command 'FOO'")]),
            (":0\r\n:-42\r\n:9223372036854775807\r\n", [.integer(0), .integer(-42), .integer(.max)]),
            ("$5\r\nhello\r\n", ["hello"]),
            ("$0\r\n\r\n", [.bulkString([])]),
            ("$-1\r\n", [.null]),
            ("*-1\r\n", [.null]),
            ("*0\r\n", [.array([])]),
            ("*2\r\n$1\r\na\r\n:1\r\n", [.array(["a", .integer(1)])]),
            ("*2\r\n*2\r\n$2\r\nid\r\n*2\r\n$1\r\nf\r\n$1\r\nv\r\n*0\r\n", [.array([.array(["id", .array(["f", "v"])]), .array([])])]),
            ("*3\r\n$-1\r\n-WRONGTYPE x\r\n*1\r\n*1\r\n*0\r\n", [.array([.null, .error("WRONGTYPE x"), .array([.array([.array([])])])])]),
            ("$4\r\na\r\nb\r\n", [.bulkString(Array("a\r\nb".utf8))]),
        ]
        try ByteToMessageDecoderVerifier.verifyDecoder(stringInputOutputPairs: pairs) { RESPReplyDecoder() }
    }

    @Test("a 1 MiB bulk string split across many reads arrives whole")
    func largeBulkStringAcrossReads() throws {
        let payload = (0..<(1 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        var wire = ByteBuffer(string: "$\(payload.count)\r\n")
        wire.writeBytes(payload)
        wire.writeString("\r\n:7\r\n")

        let channel = EmbeddedChannel(handler: ByteToMessageHandler(RESPReplyDecoder()))
        while wire.readableBytes > 0 {
            let chunk = wire.readSlice(length: min(7919, wire.readableBytes))!
            try channel.writeInbound(chunk)
        }
        #expect(try channel.readInbound(as: RESPValue.self) == .bulkString(payload))
        #expect(try channel.readInbound(as: RESPValue.self) == .integer(7))
        #expect(try channel.readInbound(as: RESPValue.self) == nil)
        #expect(try channel.finish().isClean)
    }

    @Test("bytes that are not RESP are a protocol error")
    func malformedInputThrows() {
        let decoder = RESPReplyDecoder()
        var buffer = ByteBuffer(string: "?what\r\n")
        #expect(throws: RESPProtocolError.self) { try decoder.next(from: &buffer) }
    }

    @Test("an incomplete reply waits for more bytes")
    func incompleteReplyWaits() throws {
        let decoder = RESPReplyDecoder()
        var first = ByteBuffer(string: "*2\r\n$3\r\nfo")
        #expect(try decoder.next(from: &first) == nil)
        var rest = ByteBuffer(string: "o\r\n:1\r\n")
        #expect(try decoder.next(from: &rest) == .array(["foo", .integer(1)]))
    }
}

@Suite("RESP command encoding")
struct RESPEncoderTests {
    @Test("commands encode byte for byte as hiredis's redisFormatCommandArgv", arguments: [
        ["PING"],
        ["SET", "key", "value", "EX", "10"],
        ["SET", "empty", ""],
        ["XADD", "s", "*", "payload", "{\"content\":\"héllo 👋\"}"],
        Array(repeating: "x", count: 12),
        ["SET", "big", "<100 KB of a>"],
    ])
    func matchesHiredis(arguments: [String]) {
        let arguments = arguments.map { $0 == "<100 KB of a>" ? String(repeating: "a", count: 100_000) : $0 }
        var buffer = ByteBufferAllocator().buffer(capacity: 64)
        RESPCommandEncoder.encode(arguments, into: &buffer)
        #expect(buffer.readableBytesView.elementsEqual(hiredisFormat(arguments)))
    }

    private func hiredisFormat(_ arguments: [String]) -> [UInt8] {
        let cStrings = arguments.map { strdup($0) }
        defer { cStrings.forEach { free($0) } }
        let lengths = arguments.map { $0.utf8.count }
        var target: UnsafeMutablePointer<CChar>?
        let argv: [UnsafePointer<CChar>?] = cStrings.map { UnsafePointer($0) }
        let length = argv.withUnsafeBufferPointer { argvBuffer in
            lengths.withUnsafeBufferPointer { lengthBuffer in
                redisFormatCommandArgv(&target, Int32(arguments.count), UnsafeMutablePointer(mutating: argvBuffer.baseAddress), lengthBuffer.baseAddress)
            }
        }
        defer { redisFreeCommand(target) }
        return target!.withMemoryRebound(to: UInt8.self, capacity: Int(length)) { Array(UnsafeBufferPointer(start: $0, count: Int(length))) }
    }
}
