/// The top-level members of a JSON object, found without decoding it: each key with the
/// byte range of its raw value. The fan-out path reads a few fields of every event this
/// way and forwards the `data` member as it came, instead of decoding and re-encoding it.
/// Anything it does not understand (escaped keys, bad JSON) gives nil, and the caller
/// decodes the slow way.
struct JSONScan {
    let bytes: [UInt8]
    private(set) var members: [(key: String, value: Range<Int>)] = []

    init?(_ bytes: [UInt8], in range: Range<Int>? = nil) {
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
        if index < end, bytes[index] == UInt8(ascii: "}") { return }
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
            if bytes[index] == UInt8(ascii: "}") { return }
            guard bytes[index] == UInt8(ascii: ",") else { return nil }
            index += 1
        }
        return nil
    }

    func range(_ key: String) -> Range<Int>? { members.first { $0.key == key }?.value }

    /// A string member without escapes, or nil (absent, not a string, or escaped).
    func string(_ key: String) -> String? {
        guard let range = range(key), range.count >= 2, bytes[range.lowerBound] == UInt8(ascii: "\"") else { return nil }
        let inner = bytes[(range.lowerBound + 1)..<(range.upperBound - 1)]
        return inner.contains(UInt8(ascii: "\\")) ? nil : String(decoding: inner, as: UTF8.self)
    }

    /// True when the member is there and is `null` (or absent).
    func isNull(_ key: String) -> Bool {
        guard let range = range(key) else { return true }
        return bytes[range].elementsEqual("null".utf8)
    }

    func integer(_ key: String) -> Int64? {
        guard let range = range(key) else { return nil }
        return Int64(String(decoding: bytes[range], as: UTF8.self))
    }

    func raw(_ key: String) -> String? { range(key).map { String(decoding: bytes[$0], as: UTF8.self) } }
}
