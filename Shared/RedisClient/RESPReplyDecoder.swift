import CHiredis
import NIOCore

/// Decodes RESP2 replies with hiredis's `redisReader`, one ``RESPValue`` per reply.
///
/// The reader copies what it is fed, so every readable byte is consumed at once;
/// replies come out as soon as they are complete, however the bytes were split.
public final class RESPReplyDecoder: ByteToMessageDecoder {
    public typealias InboundOut = RESPValue

    private let reader: UnsafeMutablePointer<redisReader>

    public init() {
        guard let reader = redisReaderCreate() else { fatalError("redisReaderCreate: out of memory") }
        self.reader = reader
    }

    deinit { redisReaderFree(reader) }

    /// Emits every complete reply: the reader holds the bytes, so once `buffer` is empty
    /// `ByteToMessageHandler` would not call again for replies still inside it.
    public func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        while let value = try next(from: &buffer) {
            context.fireChannelRead(wrapInboundOut(value))
        }
        return .needMoreData
    }

    public func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws -> DecodingState {
        try decode(context: context, buffer: &buffer)
    }

    /// Feeds the readable bytes of `buffer` to the reader and returns the next complete reply, if any.
    public func next(from buffer: inout ByteBuffer) throws -> RESPValue? {
        if buffer.readableBytes > 0 {
            let status = buffer.withUnsafeReadableBytes { bytes in
                redisReaderFeed(reader, bytes.baseAddress?.assumingMemoryBound(to: CChar.self), bytes.count)
            }
            guard status == REDIS_OK else { throw readerError() }
            buffer.moveReaderIndex(forwardBy: buffer.readableBytes)
        }
        var reply: UnsafeMutableRawPointer?
        guard redisReaderGetReply(reader, &reply) == REDIS_OK else { throw readerError() }
        guard let reply else { return nil }
        defer { freeReplyObject(reply) }
        return Self.value(of: reply.assumingMemoryBound(to: redisReply.self))
    }

    private func readerError() -> RESPProtocolError {
        let message = withUnsafeBytes(of: &reader.pointee.errstr) { raw in
            String(cString: raw.bindMemory(to: CChar.self).baseAddress!)
        }
        return RESPProtocolError(message: message)
    }

    private static func value(of reply: UnsafeMutablePointer<redisReply>) -> RESPValue {
        let r = reply.pointee
        switch r.type {
        case REDIS_REPLY_STRING:
            return .bulkString(bytes(r.str, r.len))
        case REDIS_REPLY_STATUS:
            return .simpleString(String(decoding: bytes(r.str, r.len), as: UTF8.self))
        case REDIS_REPLY_ERROR:
            return .error(String(decoding: bytes(r.str, r.len), as: UTF8.self))
        case REDIS_REPLY_INTEGER:
            return .integer(Int64(r.integer))
        case REDIS_REPLY_ARRAY:
            var values: [RESPValue] = []
            values.reserveCapacity(Int(r.elements))
            for i in 0..<Int(r.elements) {
                values.append(value(of: r.element[i]!))
            }
            return .array(values)
        default:
            return .null
        }
    }

    private static func bytes(_ str: UnsafeMutablePointer<CChar>?, _ len: Int) -> [UInt8] {
        guard let str, len > 0 else { return [] }
        return str.withMemoryRebound(to: UInt8.self, capacity: len) { Array(UnsafeBufferPointer(start: $0, count: len)) }
    }
}

/// The bytes from the server are not valid RESP; the connection cannot continue.
public struct RESPProtocolError: Error, CustomStringConvertible {
    /// hiredis's description of what was wrong.
    public let message: String
    public var description: String { "RESP protocol error: \(message)" }
}
