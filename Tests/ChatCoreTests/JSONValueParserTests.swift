@testable import ChatCore
import Foundation
import Testing

/// The byte parser behind `JSONValue(parsing:)` against JSONDecoder, which it replaces
/// for what it reads: whatever it accepts must read exactly as JSONDecoder reads it.
@Suite("JSONValue parsing in one pass")
struct JSONValueParserTests {
    static func fast(_ text: String) -> JSONValue? {
        Array(text.utf8).withUnsafeBufferPointer(JSONValueParser.parse)
    }

    @Test("what clients send is read in one pass, as JSONDecoder reads it", arguments: [
        #"["typing",{"conversation_id":"c-1","is_typing":true}]"#,
        #"{"token":"eyJhbGciOi.x.y","since":{"0192a":12,"0192b":0},"receipts_after":345}"#,
        #"["mark_conversation_read",{"conversation_id":"c1","up_to_seq":9007199254740991}]"#,
        #"["sync",{"since":{}}]"#,
        #" [ 1 , -2.5e-3 , 0.1 , 1E+2 , -0 , 123456789012345678901234567890 , null , false ] "#,
        #"{"text":"line\nbreak \"quoted\" back\\slash \/ tab\t \u00e9 \u20AC \ud83d\ude00 é 😀"}"#,
        #"{"nested":[[[[{"a":[{}]}]]]],"empty":"","e":[]}"#,
        #""plain""#, "42", "true", "null", "[4.9e-324, 1.393583509146907e-309, 0.000e-999, -0.0]",
    ])
    func valid(text: String) throws {
        let fast = try #require(Self.fast(text), "left to JSONDecoder: \(text)")
        #expect(fast == JSONValue.decoded(text))
        #expect(JSONValue(parsing: text) == fast)
    }

    @Test("what it is not sure of goes to JSONDecoder, which decides", arguments: [
        #"{"a":1,"a":2}"#, #"["\ud800"]"#, #"["\udc00x"]"#, #"["\ud800\u0041"]"#, "[1e400]", "[-1e400]", "[1e-400]", "[-2.5e-3004]",
        String(repeating: "[", count: 70) + String(repeating: "]", count: 70),
        "[\"tab\there\"]", "[01]", "[1.]", "[.5]", "[+1]", "[1e]", "[-]", "[tru]", "[nul]", "{\"a\" 1}", "{\"a\":1,}", "[1,]",
        "[1 2]", "{'a':1}", "", " ", "[", "]", "{\"a\":1}x", "[\"\\x\"]", "[\"\\u12\"]", "[NaN]", "[Infinity]", "\"open",
    ])
    func leftToJSONDecoder(text: String) {
        #expect(Self.fast(text) == nil)
        #expect(JSONValue(parsing: text) == JSONValue.decoded(text))
    }

    /// Random values written with random white space and escapes: all read in one pass, as
    /// JSONDecoder reads them. Then each text broken at one place: whatever the one pass
    /// still accepts, JSONDecoder reads the same.
    @Test("thousands of random texts, and each one broken at one place", arguments: [0x5EED, 1, 2, 3, 4] as [UInt64])
    func randomTexts(seed: UInt64) {
        var random = SplitMix(seed: seed)
        var accepted = 0, brokenAccepted = 0, brokenDiffering = 0
        for _ in 0..<3000 {
            let value = Self.randomValue(&random, depth: 0)
            let text = Self.write(value, &random)
            let fast = Self.fast(text)
            let slow = JSONValue.decoded(text)
            #expect(slow != nil, "JSONDecoder refused \(text)")
            #expect(fast == slow, "\(text)")
            if fast != nil { accepted += 1 }
            var bytes = Array(text.utf8)
            let position = Int(random.next() % UInt64(bytes.count))
            let replacements: [UInt8] = Array(#"{}[]":,\-+.eE0 9tfnu"#.utf8) + [0x01, 0x7F]
            switch random.next() % 3 {
            case 0: bytes.remove(at: position)
            case 1: bytes.insert(replacements[Int(random.next() % UInt64(replacements.count))], at: position)
            default: bytes[position] = replacements[Int(random.next() % UInt64(replacements.count))]
            }
            guard let broken = String(validating: bytes, as: UTF8.self) else { continue }
            if let read = Self.fast(broken) {
                brokenAccepted += 1
                if read != JSONValue.decoded(broken) {
                    brokenDiffering += 1
                    Issue.record("one pass read \(broken) otherwise than JSONDecoder")
                }
            }
        }
        #expect(accepted == 3000)
        #expect(brokenAccepted > 100, "the broken texts that are still JSON are read too")
        #expect(brokenDiffering == 0)
    }

    static func randomValue(_ random: inout SplitMix, depth: Int) -> JSONValue {
        switch random.next() % (depth > 4 ? 4 : 6) {
        case 0: return .null
        case 1: return .bool(random.next() % 2 == 0)
        case 2:
            switch random.next() % 4 {
            case 0: return .number(Double(Int64(bitPattern: random.next()) >> Int64(random.next() % 64)))
            case 1: return .number(Double(Int(random.next() % 2_000_001) - 1_000_000) / 1000)
            case 2: return .number(Double(bitPattern: random.next() & 0x7FEF_FFFF_FFFF_FFFF) * (random.next() % 2 == 0 ? 1 : -1))
            default: return .number(Double(random.next() % 100))
            }
        case 3:
            let pool: [Character] = ["a", "Z", "0", " ", "\"", "\\", "/", "\n", "\t", "\u{01}", "\u{1F}", "é", "€", "😀", "中", "\u{2028}", "\u{FEFF}"]
            return .string(String((0..<Int(random.next() % 12)).map { _ in pool[Int(random.next() % UInt64(pool.count))] }))
        case 4:
            return .array((0..<Int(random.next() % 5)).map { _ in randomValue(&random, depth: depth + 1) })
        default:
            var object: [String: JSONValue] = [:]
            for index in 0..<Int(random.next() % 5) { object["k\(index)\(random.next() % 3 == 0 ? "é\"\\" : "")"] = randomValue(&random, depth: depth + 1) }
            return .object(object)
        }
    }

    /// JSON text with random white space between tokens, numbers in several spellings, and
    /// characters escaped in every way JSON allows.
    static func write(_ value: JSONValue, _ random: inout SplitMix) -> String {
        func space() -> String { ["", "", " ", "\n", "\t ", "\r\n"][Int(random.next() % 6)] }
        switch value {
        case .null: return "null"
        case .bool(let flag): return flag ? "true" : "false"
        case .number(let number):
            if number.rounded() == number, abs(number) < 1e15, random.next() % 2 == 0 { return String(Int64(number)) }
            return random.next() % 2 == 0 ? "\(number)" : String(format: "%.17e", number)
        case .string(let string): return quote(string, &random)
        case .array(let elements):
            return "[" + space() + elements.map { write($0, &random) }.joined(separator: space() + "," + space()) + space() + "]"
        case .object(let members):
            return "{" + space() + members.map { quote($0.key, &random) + space() + ":" + space() + write($0.value, &random) }
                .joined(separator: "," + space()) + space() + "}"
        }
    }

    static func quote(_ string: String, _ random: inout SplitMix) -> String {
        var text = "\""
        for scalar in string.unicodeScalars {
            let escape = random.next() % 4 == 0
            switch scalar {
            case "\"": text += "\\\""
            case "\\": text += "\\\\"
            case "\n": text += escape ? "\\u000a" : "\\n"
            case "\t": text += "\\t"
            case "/": text += escape ? "\\/" : "/"
            case _ where scalar.value < 0x20: text += String(format: "\\u%04X", scalar.value)
            case _ where escape && scalar.value > 0xFFFF:
                let v = scalar.value - 0x10000
                text += String(format: "\\u%04x\\u%04X", 0xD800 + (v >> 10), 0xDC00 + (v & 0x3FF))
            case _ where escape: text += String(format: "\\u%04x", scalar.value)
            default: text.unicodeScalars.append(scalar)
            }
        }
        return text + "\""
    }
}

/// A small seeded generator, so a failure can be replayed.
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
