import Foundation

/// Any JSON value, for payloads whose shape is checked after parsing (Socket.IO event
/// arguments, the `data` of a user event that a gateway forwards without knowing its type).
public enum JSONValue: Codable, Sendable, Hashable {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .null
        } else if let value = try? container.decode(Bool.self) {
            self = .bool(value)
        } else if let value = try? container.decode(Double.self) {
            self = .number(value)
        } else if let value = try? container.decode(String.self) {
            self = .string(value)
        } else if let value = try? container.decode([JSONValue].self) {
            self = .array(value)
        } else {
            self = .object(try container.decode([String: JSONValue].self))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .null: try container.encodeNil()
        case .bool(let value): try container.encode(value)
        case .number(let value):
            // Whole numbers print without a fraction (seq 12, not 12.0).
            if value.rounded() == value, abs(value) < 9_007_199_254_740_992 { try container.encode(Int64(value)) } else { try container.encode(value) }
        case .string(let value): try container.encode(value)
        case .array(let value): try container.encode(value)
        case .object(let value): try container.encode(value)
        }
    }

    /// Parses JSON text; `nil` if it is not JSON. In one pass over the bytes
    /// (``JSONValueParser``), or through JSONDecoder for what that pass leaves to it.
    public init?(parsing text: some StringProtocol) {
        let utf8 = text.utf8
        // (Text not stored contiguously is parsed from a copy.)
        let parsed = utf8.withContiguousStorageIfAvailable(JSONValueParser.parse) ?? Array(utf8).withUnsafeBufferPointer(JSONValueParser.parse)
        if let parsed {
            self = parsed
            return
        }
        guard let value = Self.decoded(text) else { return nil }
        self = value
    }

    /// Through JSONDecoder alone (what ``init(parsing:)`` falls back to; `chat-bench json`
    /// compares the two).
    public static func decoded(_ text: some StringProtocol) -> JSONValue? {
        try? JSONDecoder().decode(JSONValue.self, from: Data(text.utf8))
    }

    /// Compact JSON text (keys sorted).
    public var text: String { ChatJSON.text(self) }

    public subscript(key: String) -> JSONValue? {
        if case .object(let object) = self { return object[key] }
        return nil
    }

    public var stringValue: String? {
        if case .string(let value) = self { return value }
        return nil
    }

    public var objectValue: [String: JSONValue]? {
        if case .object(let value) = self { return value }
        return nil
    }

    /// Decodes this value as `T` with the project's date format.
    public func decode<T: Decodable>(_ type: T.Type = T.self) throws -> T {
        try ChatJSON.makeDecoder().decode(T.self, from: Data(text.utf8))
    }

    /// The value of an `Encodable`, through its JSON.
    public init(encoding value: some Encodable) throws {
        self = try JSONDecoder().decode(JSONValue.self, from: ChatJSON.makeEncoder().encode(value))
    }
}

extension ChatJSON {
    /// Compact JSON text of `value` in the project's encoding; `null` if it cannot be encoded.
    public static func text(_ value: some Encodable) -> String {
        (try? String(decoding: makeEncoder().encode(value), as: UTF8.self)) ?? "null"
    }
}
