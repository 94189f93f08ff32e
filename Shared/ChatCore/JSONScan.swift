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
        var index = range?.lowerBound ?? 0
        let end = range?.upperBound ?? bytes.count
        func skipSpace() { while index < end, [0x20, 0x09, 0x0A, 0x0D].contains(bytes[index]) { index += 1 } }
        /// Past a string starting at `index` (a quote); false if it does not end.
        func skipString() -> Bool {
            index += 1
            while index < end {
                switch bytes[index] {
                case UInt8(ascii: "\\"): index += 2
                case UInt8(ascii: "\""):
                    index += 1
                    return true
                default: index += 1
                }
            }
            return false
        }
        skipSpace()
        guard index < end, bytes[index] == UInt8(ascii: "{") else { return nil }
        index += 1
        skipSpace()
        if index < end, bytes[index] == UInt8(ascii: "}") {
            endIndex = index + 1
            return
        }
        while index < end {
            skipSpace()
            guard index < end, bytes[index] == UInt8(ascii: "\"") else { return nil }
            let keyStart = index + 1
            guard skipString() else { return nil }
            let keyBytes = bytes[keyStart..<(index - 1)]
            if keyBytes.contains(UInt8(ascii: "\\")) { return nil }
            skipSpace()
            guard index < end, bytes[index] == UInt8(ascii: ":") else { return nil }
            index += 1
            skipSpace()
            let valueStart = index
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
                while index < end, ![UInt8(ascii: ","), UInt8(ascii: "}"), 0x20, 0x09, 0x0A, 0x0D].contains(bytes[index]) { index += 1 }
            }
            members.append((String(decoding: keyBytes, as: UTF8.self), valueStart..<index))
            skipSpace()
            guard index < end else { return nil }
            if bytes[index] == UInt8(ascii: "}") {
                endIndex = index + 1
                return
            }
            guard bytes[index] == UInt8(ascii: ",") else { return nil }
            index += 1
        }
        return nil
    }

    /// True when nothing but white space follows the object up to `end`.
    public func endsAt(_ end: Int) -> Bool {
        bytes[endIndex..<end].allSatisfy { [0x20, 0x09, 0x0A, 0x0D].contains($0) }
    }

    public func range(_ key: String) -> Range<Int>? { members.first { $0.key == key }?.value }

    /// A string member without escapes, or nil (absent, not a string, or escaped).
    public func string(_ key: String) -> String? {
        guard let range = range(key), range.count >= 2, bytes[range.lowerBound] == UInt8(ascii: "\"") else { return nil }
        let inner = bytes[(range.lowerBound + 1)..<(range.upperBound - 1)]
        return inner.contains(UInt8(ascii: "\\")) ? nil : String(decoding: inner, as: UTF8.self)
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
            let byte = bytes[index]
            guard byte == UInt8(ascii: "\\") else {
                out.append(byte)
                index += 1
                continue
            }
            guard index + 1 < end else { return nil }
            let escape = bytes[index + 1]
            index += 2
            switch escape {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): out.append(escape)
            case UInt8(ascii: "b"): out.append(0x08)
            case UInt8(ascii: "f"): out.append(0x0C)
            case UInt8(ascii: "n"): out.append(0x0A)
            case UInt8(ascii: "r"): out.append(0x0D)
            case UInt8(ascii: "t"): out.append(0x09)
            case UInt8(ascii: "u"):
                guard var code = hex(index) else { return nil }
                index += 4
                if (0xD800...0xDBFF).contains(code) {
                    guard index + 6 <= end, bytes[index] == UInt8(ascii: "\\"), bytes[index + 1] == UInt8(ascii: "u"),
                          let low = hex(index + 2), (0xDC00...0xDFFF).contains(low) else { return nil }
                    index += 6
                    code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                }
                guard let scalar = Unicode.Scalar(code) else { return nil }
                out.append(contentsOf: String(Character(scalar)).utf8)
            default:
                return nil
            }
        }
        return String(decoding: out, as: UTF8.self)
    }
}
