/// One reply from Redis in the RESP2 protocol.
///
/// hiredis 0.14 does not distinguish a null bulk string from a null array,
/// so both arrive as ``null``.
public enum RESPValue: Sendable, Hashable {
    /// `+OK` and other status replies.
    case simpleString(String)
    /// `-ERR ...`: an error reply from the server (not a connection failure).
    case error(String)
    /// `:42`
    case integer(Int64)
    /// `$5\r\nhello`: binary-safe bytes.
    case bulkString([UInt8])
    /// `*2\r\n...`: a (possibly nested) array.
    case array([RESPValue])
    /// `$-1` or `*-1`.
    case null
}

extension RESPValue {
    /// The reply as text, for bulk and status replies; `nil` otherwise.
    public var string: String? {
        switch self {
        case .bulkString(let bytes): return String(decoding: bytes, as: UTF8.self)
        case .simpleString(let s): return s
        default: return nil
        }
    }

    /// The reply as an integer, for integer replies and bulk strings holding digits.
    public var int: Int? {
        switch self {
        case .integer(let i): return Int(i)
        case .bulkString, .simpleString: return string.flatMap { Int($0) }
        default: return nil
        }
    }

    /// The elements of an array reply; `nil` for anything else (an empty array is `[]`).
    public var array: [RESPValue]? {
        if case .array(let values) = self { return values }
        return nil
    }

    /// `true` for a null reply.
    public var isNull: Bool {
        if case .null = self { return true }
        return false
    }
}

extension RESPValue: ExpressibleByStringLiteral {
    public init(stringLiteral value: String) { self = .bulkString(Array(value.utf8)) }
}

extension RESPValue: CustomStringConvertible {
    public var description: String {
        switch self {
        case .simpleString(let s): return "+\(s)"
        case .error(let e): return "-\(e)"
        case .integer(let i): return ":\(i)"
        case .bulkString: return "\"\(string ?? "")\""
        case .array(let values): return "[" + values.map(\.description).joined(separator: ", ") + "]"
        case .null: return "(nil)"
        }
    }
}
