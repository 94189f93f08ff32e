import Foundation

/// Engine.IO protocol version 4 (https://socket.io/docs/v4/engine-io-protocol/): the
/// transport layer under Socket.IO. A packet is a one-digit type and its data.
public enum EnginePacket: Sendable, Hashable {
    case open(String)
    case close
    case ping(String)
    case pong(String)
    case message(String)
    /// A binary message (a WebSocket binary frame, or `b<base64>` in a polling payload).
    case binary(Data)
    case upgrade
    case noop

    /// The text form (`4hello`, `2probe`, `bAQID`).
    public var encoded: String {
        switch self {
        case .open(let data): return "0" + data
        case .close: return "1"
        case .ping(let data): return "2" + data
        case .pong(let data): return "3" + data
        case .message(let data): return "4" + data
        case .binary(let data): return "b" + data.base64EncodedString()
        case .upgrade: return "5"
        case .noop: return "6"
        }
    }

    /// Parses one text packet; `nil` for an empty string or an unknown type.
    public init?(text: some StringProtocol) {
        guard let first = text.first else { return nil }
        let data = String(text.dropFirst())
        switch first {
        case "0": self = .open(data)
        case "1": self = .close
        case "2": self = .ping(data)
        case "3": self = .pong(data)
        case "4": self = .message(data)
        case "5": self = .upgrade
        case "6": self = .noop
        case "b":
            guard let bytes = Data(base64Encoded: data) else { return nil }
            self = .binary(bytes)
        default: return nil
        }
    }

    /// The separator of packets in an HTTP long-polling payload.
    public static let recordSeparator: Character = "\u{1e}"

    /// Splits a polling payload into packets; `nil` if any of them is malformed.
    public static func decodePayload(_ payload: String) -> [EnginePacket]? {
        var packets: [EnginePacket] = []
        for part in payload.split(separator: recordSeparator, omittingEmptySubsequences: false) {
            guard let packet = EnginePacket(text: part) else { return nil }
            packets.append(packet)
        }
        return packets
    }

    /// Joins encoded packets into one polling payload.
    public static func encodePayload(_ encoded: [String]) -> String {
        encoded.joined(separator: String(recordSeparator))
    }
}

/// The handshake: `0{"sid","upgrades","pingInterval","pingTimeout","maxPayload"}`.
public struct EngineOpen: Codable, Sendable, Hashable {
    public var sid: String
    public var upgrades: [String]
    /// Milliseconds.
    public var pingInterval: Int
    public var pingTimeout: Int
    /// Bytes a polling payload or WebSocket message may hold.
    public var maxPayload: Int
}

/// The errors an Engine.IO server answers a bad HTTP request with (status 400 or 403,
/// body `{"code","message"}`), with the reference server's codes and messages.
public enum EngineError: Int, Error, Sendable {
    case unknownTransport = 0
    case unknownSessionID = 1
    case badHandshakeMethod = 2
    case badRequest = 3
    case forbidden = 4
    case unsupportedProtocolVersion = 5

    public var message: String {
        switch self {
        case .unknownTransport: return "Transport unknown"
        case .unknownSessionID: return "Session ID unknown"
        case .badHandshakeMethod: return "Bad handshake method"
        case .badRequest: return "Bad request"
        case .forbidden: return "Forbidden"
        case .unsupportedProtocolVersion: return "Unsupported protocol version"
        }
    }

    public var status: Int { self == .forbidden ? 403 : 400 }
    public var body: String { #"{"code":\#(rawValue),"message":"\#(message)"}"# }
}
