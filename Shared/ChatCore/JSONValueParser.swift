import Foundation

/// JSON text to ``JSONValue`` in one pass over its bytes, for what clients send (every
/// Socket.IO event but a send: CONNECT, `sync`, typing, read marks). JSONDecoder took the
/// long way for `JSONValue`: each value was tried as a bool, a number, a string and an
/// array before an object, and every failed try built an error (8 % of a gateway's CPU
/// while 2,000 sockets came back, nineteenth round of BENCHMARKS.md).
///
/// It gives up (nil) on anything it is not sure to read as JSONDecoder does: a lone
/// surrogate escape, a repeated key, a number beyond a Double's range either way (1e400,
/// 1e-400), nesting deeper than 64, a control character in a string, or text that is not
/// JSON. The caller then asks
/// JSONDecoder, so what is accepted and how it reads never differs from before
/// (`JSONValueParserTests` compares the two on thousands of texts).
struct JSONValueParser {
    private let bytes: UnsafeBufferPointer<UInt8>
    private var index = 0
    private var depth = 0
    static let maximumDepth = 64

    private init(_ bytes: UnsafeBufferPointer<UInt8>) { self.bytes = bytes }

    /// The value of the whole text (white space around it allowed), or nil.
    static func parse(_ bytes: UnsafeBufferPointer<UInt8>) -> JSONValue? {
        var parser = JSONValueParser(bytes)
        parser.skipSpace()
        guard let value = parser.value() else { return nil }
        parser.skipSpace()
        return parser.index == bytes.count ? value : nil
    }

    private var current: UInt8? { index < bytes.count ? bytes[index] : nil }

    private mutating func skipSpace() {
        while index < bytes.count {
            switch bytes[index] {
            case 0x20, 0x0A, 0x0D, 0x09: index += 1
            default: return
            }
        }
    }

    private mutating func value() -> JSONValue? {
        guard let byte = current else { return nil }
        switch byte {
        case UInt8(ascii: "{"): return object()
        case UInt8(ascii: "["): return array()
        case UInt8(ascii: "\""): return string().map(JSONValue.string)
        case UInt8(ascii: "t"): return literal("true", .bool(true))
        case UInt8(ascii: "f"): return literal("false", .bool(false))
        case UInt8(ascii: "n"): return literal("null", .null)
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return number()
        default: return nil
        }
    }

    private mutating func literal(_ word: StaticString, _ value: JSONValue) -> JSONValue? {
        let count = word.utf8CodeUnitCount
        guard bytes.count - index >= count else { return nil }
        for offset in 0..<count where bytes[index + offset] != word.utf8Start[offset] { return nil }
        index += count
        return value
    }

    private mutating func object() -> JSONValue? {
        guard depth < Self.maximumDepth else { return nil }
        depth += 1
        defer { depth -= 1 }
        index += 1
        var members: [String: JSONValue] = [:]
        skipSpace()
        if current == UInt8(ascii: "}") {
            index += 1
            return .object(members)
        }
        while true {
            skipSpace()
            guard current == UInt8(ascii: "\""), let key = string() else { return nil }
            skipSpace()
            guard current == UInt8(ascii: ":") else { return nil }
            index += 1
            skipSpace()
            guard let member = value() else { return nil }
            // A repeated key: which one JSONDecoder keeps is its business.
            guard members.updateValue(member, forKey: key) == nil else { return nil }
            skipSpace()
            switch current {
            case UInt8(ascii: ","): index += 1
            case UInt8(ascii: "}"):
                index += 1
                return .object(members)
            default: return nil
            }
        }
    }

    private mutating func array() -> JSONValue? {
        guard depth < Self.maximumDepth else { return nil }
        depth += 1
        defer { depth -= 1 }
        index += 1
        var elements: [JSONValue] = []
        skipSpace()
        if current == UInt8(ascii: "]") {
            index += 1
            return .array(elements)
        }
        while true {
            skipSpace()
            guard let element = value() else { return nil }
            elements.append(element)
            skipSpace()
            switch current {
            case UInt8(ascii: ","): index += 1
            case UInt8(ascii: "]"):
                index += 1
                return .array(elements)
            default: return nil
            }
        }
    }

    /// A string from its opening quote; the text between quotes without escapes is taken as it is.
    private mutating func string() -> String? {
        index += 1
        let start = index
        while index < bytes.count {
            let byte = bytes[index]
            if byte == UInt8(ascii: "\"") {
                let text = String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<index]), as: UTF8.self)
                index += 1
                return text
            }
            if byte == UInt8(ascii: "\\") { return escapedString(from: start) }
            if byte < 0x20 { return nil }
            index += 1
        }
        return nil
    }

    private mutating func escapedString(from start: Int) -> String? {
        var utf8 = Array(UnsafeBufferPointer(rebasing: bytes[start..<index]))
        while index < bytes.count {
            let byte = bytes[index]
            index += 1
            switch byte {
            case UInt8(ascii: "\""):
                return String(decoding: utf8, as: UTF8.self)
            case UInt8(ascii: "\\"):
                guard let escaped = current else { return nil }
                index += 1
                if let plain = JSONEscape.character(escaped) {
                    utf8.append(plain)
                    continue
                }
                guard escaped == UInt8(ascii: "u"), var code = hex4() else { return nil }
                if JSONEscape.highSurrogates.contains(code) {
                    // A high surrogate must be followed by an escaped low one.
                    guard bytes.count - index >= 6, bytes[index] == UInt8(ascii: "\\"), bytes[index + 1] == UInt8(ascii: "u") else { return nil }
                    index += 2
                    guard let low = hex4(), let pair = JSONEscape.pair(code, low) else { return nil }
                    code = pair
                }
                // (A lone low surrogate is no scalar.)
                guard let scalar = Unicode.Scalar(code) else { return nil }
                utf8.append(contentsOf: UTF8.encode(scalar)!)
            default:
                if byte < 0x20 { return nil }
                utf8.append(byte)
            }
        }
        return nil
    }

    private mutating func hex4() -> UInt32? {
        guard bytes.count - index >= 4 else { return nil }
        var code: UInt32 = 0
        for _ in 0..<4 {
            let byte = bytes[index]
            let digit: UInt8
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = byte - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = byte - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = byte - UInt8(ascii: "A") + 10
            default: return nil
            }
            code = code << 4 | UInt32(digit)
            index += 1
        }
        return code
    }

    /// A number as JSON writes it: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?, read as
    /// the nearest Double (as JSONDecoder does); small whole numbers without a detour.
    private mutating func number() -> JSONValue? {
        let start = index
        var whole = true
        if current == UInt8(ascii: "-") { index += 1 }
        guard let first = current, first.isDigit else { return nil }
        index += 1
        if first != UInt8(ascii: "0") { skipDigits() }
        if current == UInt8(ascii: ".") {
            whole = false
            index += 1
            guard current?.isDigit == true else { return nil }
            skipDigits()
        }
        if current == UInt8(ascii: "e") || current == UInt8(ascii: "E") {
            whole = false
            index += 1
            if current == UInt8(ascii: "+") || current == UInt8(ascii: "-") { index += 1 }
            guard current?.isDigit == true else { return nil }
            skipDigits()
        }
        let text = UnsafeBufferPointer(rebasing: bytes[start..<index])
        // Up to 15 digits a whole number is exact in a Double: no need for strtod.
        if whole, text.count <= 15 {
            var negative = false
            var magnitude: Int64 = 0
            for byte in text {
                if byte == UInt8(ascii: "-") { negative = true } else { magnitude = magnitude * 10 + Int64(byte - UInt8(ascii: "0")) }
            }
            // -0 is a Double's negative zero, as JSONDecoder reads it.
            return .number(negative ? (magnitude == 0 ? -0.0 : -Double(magnitude)) : Double(magnitude))
        }
        guard let value = Double(String(decoding: text, as: UTF8.self)), value.isFinite else { return nil }
        // Too small for a Double (1e-400 reads as 0): JSONDecoder refuses it.
        if value == 0, !Self.zeroMantissa(text) { return nil }
        return .number(value)
    }

    /// Whether the digits before the exponent are all zeros (0.000e5 is a true zero).
    private static func zeroMantissa(_ text: UnsafeBufferPointer<UInt8>) -> Bool {
        for byte in text {
            if byte == UInt8(ascii: "e") || byte == UInt8(ascii: "E") { return true }
            if byte >= UInt8(ascii: "1") && byte <= UInt8(ascii: "9") { return false }
        }
        return true
    }

    private mutating func skipDigits() {
        while let byte = current, byte.isDigit { index += 1 }
    }
}

private extension UInt8 {
    var isDigit: Bool { self >= UInt8(ascii: "0") && self <= UInt8(ascii: "9") }
}

/// JSON's escapes, for the readers that unescape strings (``JSONValueParser``,
/// ``JSONScan/decodedString(_:)``).
enum JSONEscape {
    /// The byte a one-character escape stands for (`\n` → 0x0A), or nil (`u`, or not an escape).
    static func character(_ escaped: UInt8) -> UInt8? {
        switch escaped {
        case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): escaped
        case UInt8(ascii: "b"): 0x08
        case UInt8(ascii: "f"): 0x0C
        case UInt8(ascii: "n"): 0x0A
        case UInt8(ascii: "r"): 0x0D
        case UInt8(ascii: "t"): 0x09
        default: nil
        }
    }

    static let highSurrogates: ClosedRange<UInt32> = 0xD800...0xDBFF

    /// The code point of a high and a low surrogate, or nil if `low` is not one.
    static func pair(_ high: UInt32, _ low: UInt32) -> UInt32? {
        guard (0xDC00...0xDFFF).contains(low) else { return nil }
        return 0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00)
    }
}
