import ChatCore
import Foundation

/// The store's answer to a `sync`, read for its replay: each message's and receipt's JSON
/// as the store wrote it (the events' data, forwarded as it came instead of decoded and
/// encoded again), each message's position, and each conversation's summary. A sync
/// carries up to 500 messages, and its answer is read where the gateway's Redis replies
/// are (the subscriber's event loop), so every delivery of the gateway waits meanwhile.
struct SyncReplay: Equatable {
    struct Item: Equatable {
        var position: RealtimeServer.Delivered
        var json: String
    }

    struct Conversation: Equatable {
        var id: String
        var lastSeq: Int64
        var messages: [Item]
        var receipts: [String]
        var truncated: Bool
    }

    var conversations: [Conversation]
    /// The store's `receipts_cursor` (nil from a store older than it).
    var receiptsCursor: Int64?
    /// Receipts were left out to keep the replay within its limit.
    var receiptsTruncated = false

    /// Read with ``JSONScan``: the store writes messages and receipts as the encoder does
    /// (`SyncResult.jsonText`), so their bytes are the events' data. Nil for anything the
    /// scanner does not read (an escaped id, an unexpected shape).
    init?(scanning bytes: [UInt8]) {
        guard let top = JSONScan(bytes), top.endsAt(bytes.count), let list = top.range("conversations"),
              let elements = JSONScan.elements(bytes, in: list) else { return nil }
        var conversations: [Conversation] = []
        conversations.reserveCapacity(elements.count)
        for element in elements {
            guard let scan = JSONScan(bytes, in: element), let id = scan.string("id"), let lastSeq = scan.integer("last_seq"),
                  let truncated = scan.range("truncated").flatMap({ Self.boolean(bytes[$0]) }),
                  let messageRanges = scan.range("messages").flatMap({ JSONScan.elements(bytes, in: $0) }),
                  let receiptRanges = scan.range("receipts").flatMap({ JSONScan.elements(bytes, in: $0) }) else { return nil }
            var messages: [Item] = []
            messages.reserveCapacity(messageRanges.count)
            for range in messageRanges {
                guard let message = JSONScan(bytes, in: range), let conversationID = message.string("conversation_id"),
                      let seq = message.integer("seq") else { return nil }
                messages.append(Item(position: .init(conversationID: conversationID, seq: seq), json: String(decoding: bytes[range], as: UTF8.self)))
            }
            let receipts = receiptRanges.map { String(decoding: bytes[$0], as: UTF8.self) }
            conversations.append(Conversation(id: id, lastSeq: lastSeq, messages: messages, receipts: receipts, truncated: truncated))
        }
        self.conversations = conversations
        if top.range("receipts_cursor") != nil {
            guard let cursor = top.integer("receipts_cursor") else { return nil }
            receiptsCursor = cursor
        }
        if let flag = top.range("receipts_truncated") {
            guard let truncated = Self.boolean(bytes[flag]) else { return nil }
            receiptsTruncated = truncated
        }
    }

    /// Decoded and encoded again, the slow way: for an answer the scanner does not read.
    init?(decoding bytes: [UInt8]) {
        guard let result = try? ChatJSON.makeDecoder().decode(SyncResult.self, from: Data(bytes)) else { return nil }
        conversations = result.conversations.map { conversation in
            Conversation(id: conversation.id, lastSeq: conversation.lastSeq,
                         messages: conversation.messages.map { Item(position: .init(conversationID: $0.conversationID, seq: $0.seq), json: $0.jsonText) },
                         receipts: conversation.receipts.map(\.jsonText), truncated: conversation.truncated)
        }
        receiptsCursor = result.receiptsCursor
        receiptsTruncated = result.receiptsTruncated ?? false
    }

    private static func boolean(_ literal: ArraySlice<UInt8>) -> Bool? {
        if literal.elementsEqual("true".utf8) { return true }
        if literal.elementsEqual("false".utf8) { return false }
        return nil
    }
}
