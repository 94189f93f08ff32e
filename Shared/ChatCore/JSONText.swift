import Foundation

/// Hand-written JSON for what every send produces: the stored message, its confirmation
/// and deliveries, and the store's answer. Byte for byte what `ChatJSON.makeEncoder()`
/// writes (sorted keys, absent optionals left out, slashes unescaped, RFC 3339 times with
/// milliseconds), which the tests check; `JSONEncoder` cost the store a tenth of its time.
public enum JSONText {
    /// `text` as a JSON string literal.
    public static func quoted(_ text: String) -> String {
        var out = ""
        appendQuoted(text, to: &out)
        return out
    }

    /// Appends `text` as a JSON string literal: `"`, `\`, and control characters escaped.
    public static func appendQuoted(_ text: String, to out: inout String) {
        let utf8 = text.utf8
        guard utf8.contains(where: { $0 < 0x20 || $0 == UInt8(ascii: "\"") || $0 == UInt8(ascii: "\\") }) else {
            out += "\""
            out += text
            out += "\""
            return
        }
        // Unescaped runs are copied whole: a store answer's result (a sync's 500 messages as
        // JSON) is short runs between escaped quotes.
        var text = text
        let quoted = text.withUTF8 { utf8 -> String in
            var bytes: [UInt8] = []
            bytes.reserveCapacity(utf8.count + utf8.count / 4 + 16)
            bytes.append(UInt8(ascii: "\""))
            var run = 0
            for index in 0..<utf8.count {
                let byte = utf8[index]
                let escape: UInt8
                switch byte {
                case UInt8(ascii: "\""): escape = UInt8(ascii: "\"")
                case UInt8(ascii: "\\"): escape = UInt8(ascii: "\\")
                case 0x0A: escape = UInt8(ascii: "n")
                case 0x0D: escape = UInt8(ascii: "r")
                case 0x09: escape = UInt8(ascii: "t")
                case 0x08: escape = UInt8(ascii: "b")
                case 0x0C: escape = UInt8(ascii: "f")
                case 0..<0x20: escape = UInt8(ascii: "u")
                default: continue
                }
                bytes.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[run..<index]))
                bytes.append(UInt8(ascii: "\\"))
                bytes.append(escape)
                if escape == UInt8(ascii: "u") {
                    bytes.append(contentsOf: [UInt8(ascii: "0"), UInt8(ascii: "0"), hexDigits[Int(byte >> 4)], hexDigits[Int(byte & 0x0F)]])
                }
                run = index + 1
            }
            bytes.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[run...]))
            bytes.append(UInt8(ascii: "\""))
            return String(decoding: bytes, as: UTF8.self)
        }
        out += quoted
    }

    private static let hexDigits = Array("0123456789abcdef".utf8)

    /// `2026-11-25T06:33:00.123Z` for milliseconds since 1970 (`ChatJSON.formatTimestamp` is this).
    public static func timestamp(milliseconds: Int64) -> String {
        let (seconds, millisecond) = floorDivide(milliseconds, 1000)
        let (days, secondOfDay) = floorDivide(seconds, 86400)
        // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let dayOfEra = z - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let monthIndex = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * monthIndex + 2) / 5 + 1
        let month = monthIndex < 10 ? monthIndex + 3 : monthIndex - 9
        let year = yearOfEra + era * 400 + (month <= 2 ? 1 : 0)
        guard (1600...9999).contains(year) else {
            return ChatJSON.formatTimestampWithFoundation(milliseconds: milliseconds)
        }
        var bytes = [UInt8](repeating: 0, count: 24)
        func put(_ value: Int64, _ at: Int, _ width: Int) {
            var value = value
            for offset in stride(from: width - 1, through: 0, by: -1) {
                bytes[at + offset] = UInt8(ascii: "0") + UInt8(value % 10)
                value /= 10
            }
        }
        put(year, 0, 4); bytes[4] = UInt8(ascii: "-")
        put(month, 5, 2); bytes[7] = UInt8(ascii: "-")
        put(day, 8, 2); bytes[10] = UInt8(ascii: "T")
        put(secondOfDay / 3600, 11, 2); bytes[13] = UInt8(ascii: ":")
        put(secondOfDay / 60 % 60, 14, 2); bytes[16] = UInt8(ascii: ":")
        put(secondOfDay % 60, 17, 2); bytes[19] = UInt8(ascii: ".")
        put(millisecond, 20, 3); bytes[23] = UInt8(ascii: "Z")
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Milliseconds since 1970 of a time written as ``timestamp(milliseconds:)`` writes it
    /// (`2026-11-25T06:33:00.123Z`, years 1600–9999, a real day of the month); nil for any
    /// other form, which `ChatJSON.parseTimestamp` leaves to Foundation. A gateway reads one
    /// per delivered message (for its delivery latency, in place: ``JSONScan/time(_:)``), and
    /// the decoders every time field.
    public static func milliseconds<Bytes: Collection<UInt8>>(timestamp bytes: Bytes) -> Int64? {
        bytes.withContiguousStorageIfAvailable(Self.timestampMilliseconds) ?? Array(bytes).withUnsafeBufferPointer(Self.timestampMilliseconds)
    }

    private static func timestampMilliseconds(_ b: UnsafeBufferPointer<UInt8>) -> Int64? {
        guard b.count == 24, b[4] == UInt8(ascii: "-"), b[7] == UInt8(ascii: "-"), b[10] == UInt8(ascii: "T"), b[13] == UInt8(ascii: ":"),
              b[16] == UInt8(ascii: ":"), b[19] == UInt8(ascii: "."), b[23] == UInt8(ascii: "Z") else { return nil }
        func number(_ at: Int, _ width: Int) -> Int64? {
            var value: Int64 = 0
            for index in at..<(at + width) {
                let digit = b[index] &- UInt8(ascii: "0")
                guard digit < 10 else { return nil }
                value = value * 10 + Int64(digit)
            }
            return value
        }
        guard let year = number(0, 4), year >= 1600, let month = number(5, 2), (1...12).contains(month), let day = number(8, 2),
              let hour = number(11, 2), hour < 24, let minute = number(14, 2), minute < 60, let second = number(17, 2), second < 60,
              let millisecond = number(20, 3) else { return nil }
        let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
        let monthDays: Int64 = switch month {
        case 2: leap ? 29 : 28
        case 4, 6, 9, 11: 30
        default: 31
        }
        guard (1...monthDays).contains(day) else { return nil }
        // A civil date to days since 1970-01-01 (Howard Hinnant's algorithm, as above in reverse).
        let shifted = month <= 2 ? year - 1 : year
        let era = shifted / 400
        let yearOfEra = shifted - era * 400
        let dayOfYear = (153 * (month > 2 ? month - 3 : month + 9) + 2) / 5 + day - 1
        let dayOfEra = yearOfEra * 365 + yearOfEra / 4 - yearOfEra / 100 + dayOfYear
        let days = era * 146_097 + dayOfEra - 719_468
        return ((days * 86400 + hour * 3600 + minute * 60 + second) * 1000) + millisecond
    }

    /// `{"data":…,"event":…,"gateway":…,"request":…}`: a `UserEvent` around data already in JSON.
    public static func userEvent(_ event: ServerEventName, data: String, gateway: String? = nil, request: String? = nil) -> String {
        var out = "{\"data\":"
        out.reserveCapacity(data.utf8.count + 96)
        out += data
        out += ",\"event\":"
        appendQuoted(event.rawValue, to: &out)
        if let gateway { out += ",\"gateway\":"; appendQuoted(gateway, to: &out) }
        if let request { out += ",\"request\":"; appendQuoted(request, to: &out) }
        out += "}"
        return out
    }

    /// `{"request":…,"result":…}`: a successful `StoreReply`, its result (JSON) as a string;
    /// with `raw`, `{"request":…,"result_json":…}`, the result as it is, for an asker that
    /// said it reads one (``StoreQuery/rawResult``): a list of big groups or a replay is
    /// hundreds of kilobytes of JSON, which quoted was escaped by the store and unescaped by
    /// the gateway (BENCHMARKS.md, seventeenth round). A raw result must be JSON, and is read
    /// by ``StoreClient``'s scanner, not by `StoreReply`'s decoder.
    public static func storeReply(request: String, result: String, raw: Bool = false) -> String {
        var out = "{\"request\":"
        out.reserveCapacity((raw ? result.utf8.count : result.utf8.count * 5 / 4) + request.utf8.count + 64)
        appendQuoted(request, to: &out)
        if raw {
            out += ",\"result_json\":"
            out += result
        } else {
            out += ",\"result\":"
            appendQuoted(result, to: &out)
        }
        out += "}"
        return out
    }

    private static func floorDivide(_ value: Int64, _ divisor: Int64) -> (Int64, Int64) {
        let (quotient, remainder) = value.quotientAndRemainder(dividingBy: divisor)
        return remainder < 0 ? (quotient - 1, remainder + divisor) : (quotient, remainder)
    }
}

extension Message {
    /// This message as `ChatJSON.makeEncoder()` writes it.
    public var jsonText: String {
        var out = "{"
        out.reserveCapacity(content.utf8.count + 320)
        if let clientID { out += "\"client_id\":"; JSONText.appendQuoted(clientID, to: &out); out += "," }
        out += "\"content\":"; JSONText.appendQuoted(content, to: &out)
        out += ",\"conversation_id\":"; JSONText.appendQuoted(conversationID, to: &out)
        out += ",\"expires_at\":\""; out += JSONText.timestamp(milliseconds: expiresAt.epochMilliseconds)
        out += "\",\"id\":"; JSONText.appendQuoted(id, to: &out)
        out += read ? ",\"read\":true" : ",\"read\":false"
        if let readAt { out += ",\"read_at\":\""; out += JSONText.timestamp(milliseconds: readAt.epochMilliseconds); out += "\"" }
        if let receiverEmail { out += ",\"receiver_email\":"; JSONText.appendQuoted(receiverEmail, to: &out) }
        out += ",\"sender_email\":"; JSONText.appendQuoted(senderEmail, to: &out)
        out += ",\"seq\":"; out += String(seq)
        out += ",\"timestamp\":\""; out += JSONText.timestamp(milliseconds: timestamp.epochMilliseconds); out += "\"}"
        return out
    }
}

extension Array where Element == Message {
    /// These messages as `ChatJSON.makeEncoder()` writes them (a history page, search hits).
    public var jsonText: String { "[" + map(\.jsonText).joined(separator: ",") + "]" }
}

extension Conversation {
    /// This conversation as `ChatJSON.makeEncoder()` writes it: by hand as the store lists
    /// it (a list of 50 conversations of 20 members is 1,000 members' JSON); through the
    /// encoder when it carries presence, which only the gateway adds.
    public var jsonText: String {
        guard presence == nil, members?.allSatisfy({ $0.online == nil && $0.lastSeen == nil }) ?? true else { return ChatJSON.text(self) }
        var out = "{\"created_at\":\""
        out += JSONText.timestamp(milliseconds: createdAt.epochMilliseconds)
        out += "\""
        if let createdBy { out += ",\"created_by\":"; JSONText.appendQuoted(createdBy, to: &out) }
        out += ",\"id\":"; JSONText.appendQuoted(id, to: &out)
        out += ",\"kind\":\""; out += kind.rawValue; out += "\""
        if let lastMessage { out += ",\"last_message\":"; out += lastMessage.jsonText }
        if let lastMessageAt { out += ",\"last_message_at\":\""; out += JSONText.timestamp(milliseconds: lastMessageAt.epochMilliseconds); out += "\"" }
        if let members {
            out += ",\"members\":["
            for (index, member) in members.enumerated() {
                if index > 0 { out += "," }
                out += member.disabled ? "{\"disabled\":true,\"email\":" : "{\"disabled\":false,\"email\":"
                JSONText.appendQuoted(member.email, to: &out)
                out += ",\"name\":"; JSONText.appendQuoted(member.name, to: &out)
                out += ",\"role\":\""; out += member.role.rawValue; out += "\"}"
            }
            out += "]"
        }
        out += ",\"participants\":["
        for (index, participant) in participants.enumerated() {
            if index > 0 { out += "," }
            JSONText.appendQuoted(participant, to: &out)
        }
        out += "]"
        if let readPositions {
            out += ",\"read_positions\":{"
            for (index, (email, seq)) in readPositions.sorted(by: { $0.key < $1.key }).enumerated() {
                if index > 0 { out += "," }
                JSONText.appendQuoted(email, to: &out)
                out += ":"; out += String(seq)
            }
            out += "}"
        }
        if let readVersion { out += ",\"read_version\":"; out += String(readVersion) }
        if let title { out += ",\"title\":"; JSONText.appendQuoted(title, to: &out) }
        out += ",\"unread_count\":"; out += String(unreadCount); out += "}"
        return out
    }
}

extension Array where Element == Conversation {
    /// These conversations as `ChatJSON.makeEncoder()` writes them (the conversation list).
    public var jsonText: String { "[" + map(\.jsonText).joined(separator: ",") + "]" }
}

/// The store's conversation list read for the gateway, which adds everyone's presence:
/// each conversation's participants and where its `participants` value ends, found with
/// ``JSONScan`` instead of decoding the list (50 conversations of 20 members decoded and
/// encoded again were most of the gateway's time on a page load). nil for anything it does
/// not read (not a list of conversations, an escaped email, presence already there); the
/// gateway then decodes the slow way.
public struct ConversationListText: Sendable {
    let bytes: [UInt8]
    /// Per conversation, its participants and the offset just past their array.
    let conversations: [(participants: [String], end: Int)]

    public init?(_ bytes: [UInt8]) {
        guard let elements = JSONScan.elements(bytes, in: 0..<bytes.count) else { return nil }
        var conversations: [(participants: [String], end: Int)] = []
        conversations.reserveCapacity(elements.count)
        for element in elements {
            guard let scan = JSONScan(bytes, in: element), scan.range("presence") == nil, let range = scan.range("participants"),
                  let items = JSONScan.elements(bytes, in: range) else { return nil }
            var participants: [String] = []
            participants.reserveCapacity(items.count)
            for item in items {
                guard item.count >= 2, bytes[item.lowerBound] == UInt8(ascii: "\""), bytes[item.upperBound - 1] == UInt8(ascii: "\"") else { return nil }
                let inner = (item.lowerBound + 1)..<(item.upperBound - 1)
                guard !bytes[inner].contains(UInt8(ascii: "\\")) else { return nil }
                participants.append(String(decoding: bytes[inner], as: UTF8.self))
            }
            conversations.append((participants, range.upperBound))
        }
        self.bytes = bytes
        self.conversations = conversations
    }

    /// Every conversation's participants, in list order (repeats included).
    public var participants: [String] { conversations.flatMap(\.participants) }

    /// The list with each conversation's `presence`: the states of its participants that
    /// `states` has. Byte for byte what `ChatJSON.makeEncoder()` writes for the decoded list
    /// with that presence set (sorted keys put `presence` right after `participants`).
    public func withPresence(_ states: [String: PresenceState]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count + conversations.reduce(0) { $0 + 16 + $1.participants.count * 80 })
        var copied = 0
        for conversation in conversations {
            out.append(contentsOf: bytes[copied..<conversation.end])
            out.append(contentsOf: ",\"presence\":{".utf8)
            var first = true
            for email in Set(conversation.participants).sorted() {
                guard let state = states[email] else { continue }
                if !first { out.append(UInt8(ascii: ",")) }
                first = false
                out.append(UInt8(ascii: "\""))
                out.append(contentsOf: email.utf8)
                out.append(contentsOf: "\":{".utf8)
                if let lastSeen = state.lastSeen {
                    out.append(contentsOf: "\"last_seen\":\"".utf8)
                    out.append(contentsOf: JSONText.timestamp(milliseconds: lastSeen.epochMilliseconds).utf8)
                    out.append(contentsOf: "\",".utf8)
                }
                out.append(contentsOf: state.online ? "\"online\":true}".utf8 : "\"online\":false}".utf8)
            }
            out.append(UInt8(ascii: "}"))
            copied = conversation.end
        }
        out.append(contentsOf: bytes[copied...])
        return out
    }
}

extension ReadReceipt {
    /// This receipt as `ChatJSON.makeEncoder()` writes it.
    public var jsonText: String {
        var out = "{\"conversation_id\":"
        JSONText.appendQuoted(conversationID, to: &out)
        if let messageID { out += ",\"message_id\":"; JSONText.appendQuoted(messageID, to: &out) }
        out += ",\"read_at\":\""; out += JSONText.timestamp(milliseconds: readAt.epochMilliseconds)
        out += "\",\"reader_email\":"; JSONText.appendQuoted(readerEmail, to: &out)
        out += ",\"up_to_seq\":"; out += String(upToSeq)
        out += "}"
        return out
    }
}

extension SyncResult {
    /// This answer as `ChatJSON.makeEncoder()` writes it (a sync carries up to 500 messages).
    public var jsonText: String {
        var out = "{\"conversations\":["
        out.reserveCapacity(conversations.reduce(64) { $0 + 96 + $1.messages.count * 400 + $1.receipts.count * 160 })
        for (index, conversation) in conversations.enumerated() {
            if index > 0 { out += "," }
            out += "{\"id\":"; JSONText.appendQuoted(conversation.id, to: &out)
            out += ",\"last_seq\":"; out += String(conversation.lastSeq)
            out += ",\"messages\":["
            for (position, message) in conversation.messages.enumerated() {
                if position > 0 { out += "," }
                out += message.jsonText
            }
            out += "],\"receipts\":["
            for (position, receipt) in conversation.receipts.enumerated() {
                if position > 0 { out += "," }
                out += receipt.jsonText
            }
            out += conversation.truncated ? "],\"truncated\":true}" : "],\"truncated\":false}"
        }
        out += "]"
        if let receiptsCursor { out += ",\"receipts_cursor\":"; out += String(receiptsCursor) }
        if let receiptsTruncated { out += receiptsTruncated ? ",\"receipts_truncated\":true" : ",\"receipts_truncated\":false" }
        out += "}"
        return out
    }
}
