import Foundation

/// The top-level members of a JSON object, found without decoding it: each key with the
/// byte range of its raw value. The hot paths read a few fields of every event and store
/// reply this way (a gateway forwards an event's `data` as it came, instead of decoding
/// and re-encoding it). Anything it does not understand (escaped keys, bad JSON) gives
/// nil, and the caller decodes the slow way.
public struct JSONScan: Sendable {
    public let bytes: [UInt8]
    public private(set) var members: [(key: String, value: Range<Int>)] = []
    /// Just past the object's closing brace.
    public private(set) var endIndex = 0

    public init?(_ bytes: [UInt8], in range: Range<Int>? = nil) {
        self.bytes = bytes
        var cursor = Cursor(bytes: bytes, index: range?.lowerBound ?? 0, end: range?.upperBound ?? bytes.count)
        cursor.skipSpace()
        guard cursor.at(UInt8(ascii: "{")) else { return nil }
        cursor.index += 1
        cursor.skipSpace()
        if cursor.at(UInt8(ascii: "}")) {
            endIndex = cursor.index + 1
            return
        }
        while cursor.index < cursor.end {
            cursor.skipSpace()
            guard cursor.at(UInt8(ascii: "\"")) else { return nil }
            let keyStart = cursor.index + 1
            guard cursor.skipString() else { return nil }
            let keyBytes = bytes[keyStart..<(cursor.index - 1)]
            if keyBytes.contains(UInt8(ascii: "\\")) { return nil }
            cursor.skipSpace()
            guard cursor.at(UInt8(ascii: ":")) else { return nil }
            cursor.index += 1
            cursor.skipSpace()
            guard let value = cursor.skipValue() else { return nil }
            members.append((String(decoding: keyBytes, as: UTF8.self), value))
            cursor.skipSpace()
            if cursor.at(UInt8(ascii: "}")) {
                endIndex = cursor.index + 1
                return
            }
            guard cursor.at(UInt8(ascii: ",")) else { return nil }
            cursor.index += 1
        }
        return nil
    }

    /// The byte ranges of the elements of the JSON array in `range` of `bytes` (white space
    /// around it allowed), found without decoding them; nil when it is not an array.
    public static func elements(_ bytes: [UInt8], in range: Range<Int>) -> [Range<Int>]? {
        var cursor = Cursor(bytes: bytes, index: range.lowerBound, end: range.upperBound)
        cursor.skipSpace()
        guard cursor.at(UInt8(ascii: "[")) else { return nil }
        cursor.index += 1
        cursor.skipSpace()
        var elements: [Range<Int>] = []
        if cursor.at(UInt8(ascii: "]")) { return cursor.restIsSpace(after: 1) ? elements : nil }
        while true {
            cursor.skipSpace()
            guard let value = cursor.skipValue() else { return nil }
            elements.append(value)
            cursor.skipSpace()
            if cursor.at(UInt8(ascii: "]")) { return cursor.restIsSpace(after: 1) ? elements : nil }
            guard cursor.at(UInt8(ascii: ",")) else { return nil }
            cursor.index += 1
        }
    }

    /// A position in `bytes` up to `end`, moved past white space, strings and whole values.
    private struct Cursor {
        let bytes: [UInt8]
        var index: Int
        let end: Int

        func at(_ byte: UInt8) -> Bool { index < end && bytes[index] == byte }

        static func isSpace(_ byte: UInt8) -> Bool { byte == 0x20 || byte == 0x0A || byte == 0x0D || byte == 0x09 }

        mutating func skipSpace() { while index < end, Self.isSpace(bytes[index]) { index += 1 } }

        /// Nothing but white space from `offset` past here to the end.
        func restIsSpace(after offset: Int) -> Bool {
            bytes[(index + offset)..<end].allSatisfy(Self.isSpace)
        }

        /// Past a string starting here (a quote); false if it does not end. Goes from quote
        /// to quote with `memchr` (a message's text is most of what the fan-out scans: byte
        /// by byte this was 4 % of a gateway's CPU); a quote after an odd run of backslashes
        /// is escaped.
        mutating func skipString() -> Bool {
            let open = index + 1
            let closing: Int? = bytes.withUnsafeBufferPointer { buffer in
                guard let base = buffer.baseAddress else { return nil }
                var from = open
                while from < end, let found = memchr(base + from, Int32(UInt8(ascii: "\"")), end - from) {
                    let quote = base.distance(to: found.assumingMemoryBound(to: UInt8.self))
                    var before = quote
                    while before > open, buffer[before - 1] == UInt8(ascii: "\\") { before -= 1 }
                    if (quote - before) % 2 == 0 { return quote }
                    from = quote + 1
                }
                return nil
            }
            guard let closing else {
                index = end
                return false
            }
            index = closing + 1
            return true
        }

        /// Past the value starting here (a string, an object or array as a whole, or a
        /// literal up to the next delimiter); its range, or nil if it does not end.
        mutating func skipValue() -> Range<Int>? {
            let start = index
            guard index < end else { return nil }
            switch bytes[index] {
            case UInt8(ascii: "\""):
                guard skipString() else { return nil }
            case UInt8(ascii: "{"), UInt8(ascii: "["):
                var depth = 0
                repeat {
                    switch bytes[index] {
                    case UInt8(ascii: "\""):
                        guard skipString() else { return nil }
                        continue
                    case UInt8(ascii: "{"), UInt8(ascii: "["): depth += 1
                    case UInt8(ascii: "}"), UInt8(ascii: "]"): depth -= 1
                    default: break
                    }
                    index += 1
                } while depth > 0 && index < end
                guard depth == 0 else { return nil }
            default:
                while index < end, !Self.isSpace(bytes[index]), bytes[index] != UInt8(ascii: ","), bytes[index] != UInt8(ascii: "}"),
                      bytes[index] != UInt8(ascii: "]") { index += 1 }
                guard index > start else { return nil }
            }
            return start..<index
        }
    }

    /// True when nothing but white space follows the object up to `end`.
    public func endsAt(_ end: Int) -> Bool {
        bytes[endIndex..<end].allSatisfy(Cursor.isSpace)
    }

    public func range(_ key: String) -> Range<Int>? { members.first { $0.key == key }?.value }

    /// A string member without escapes, or nil (absent, not a string, or escaped).
    public func string(_ key: String) -> String? {
        guard let range = range(key), range.count >= 2, bytes[range.lowerBound] == UInt8(ascii: "\"") else { return nil }
        let inner = bytes[(range.lowerBound + 1)..<(range.upperBound - 1)]
        return inner.contains(UInt8(ascii: "\\")) ? nil : String(decoding: inner, as: UTF8.self)
    }

    /// A time member as ``ChatJSON/parseTimestamp(_:)`` reads it; one in the project's own
    /// form is read in place, with no string made (a gateway reads one per delivered message).
    public func time(_ key: String) -> Date? {
        guard let range = range(key), range.count == 26, bytes[range.lowerBound] == UInt8(ascii: "\""),
              let milliseconds = JSONText.milliseconds(timestamp: bytes[(range.lowerBound + 1)..<(range.upperBound - 1)]) else {
            return string(key).flatMap(ChatJSON.parseTimestamp)
        }
        return ChatJSON.date(milliseconds: milliseconds)
    }

    /// True when the member is there and is `null` (or absent).
    public func isNull(_ key: String) -> Bool {
        guard let range = range(key) else { return true }
        return bytes[range].elementsEqual("null".utf8)
    }

    public func integer(_ key: String) -> Int64? {
        guard let range = range(key) else { return nil }
        return Int64(String(decoding: bytes[range], as: UTF8.self))
    }

    /// A string member with its escapes resolved (`\"`, `\\`, `\n`, `\u00e9`, surrogate
    /// pairs, ...), or nil if it is absent, not a string, or badly escaped.
    public func decodedString(_ key: String) -> String? {
        guard let range = range(key), range.count >= 2, bytes[range.lowerBound] == UInt8(ascii: "\"") else { return nil }
        let end = range.upperBound - 1
        var index = range.lowerBound + 1
        var out: [UInt8] = []
        out.reserveCapacity(end - index)
        func hex(_ at: Int) -> UInt32? {
            guard at + 4 <= end else { return nil }
            return UInt32(String(decoding: bytes[at..<(at + 4)], as: UTF8.self), radix: 16)
        }
        while index < end {
            // The run up to the next escape, copied whole.
            var next = index
            while next < end, bytes[next] != UInt8(ascii: "\\") { next += 1 }
            out.append(contentsOf: bytes[index..<next])
            index = next
            guard index < end else { break }
            guard index + 1 < end else { return nil }
            let escape = bytes[index + 1]
            index += 2
            if let plain = JSONEscape.character(escape) {
                out.append(plain)
                continue
            }
            guard escape == UInt8(ascii: "u"), var code = hex(index) else { return nil }
            index += 4
            if JSONEscape.highSurrogates.contains(code) {
                guard index + 6 <= end, bytes[index] == UInt8(ascii: "\\"), bytes[index + 1] == UInt8(ascii: "u"),
                      let low = hex(index + 2), let pair = JSONEscape.pair(code, low) else { return nil }
                index += 6
                code = pair
            }
            guard let scalar = Unicode.Scalar(code) else { return nil }
            out.append(contentsOf: String(Character(scalar)).utf8)
        }
        return String(decoding: out, as: UTF8.self)
    }
}
