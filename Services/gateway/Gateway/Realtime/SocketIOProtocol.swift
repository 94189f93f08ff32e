import ChatCore
import Foundation

/// Socket.IO protocol version 5 (https://socket.io/docs/v4/socket-io-protocol/): packets
/// carried in Engine.IO messages. Text form: type digit, attachment count and `-` for
/// binary types, `/namespace,` unless it is `/`, an acknowledgement id, then JSON.
public struct SocketPacket: Sendable, Hashable {
    public enum Kind: Int, Sendable {
        case connect = 0
        case disconnect = 1
        case event = 2
        case ack = 3
        case connectError = 4
        case binaryEvent = 5
        case binaryAck = 6
    }

    public var kind: Kind
    public var namespace: String
    public var ackID: Int?
    public var data: JSONValue?
    /// Binary packets: how many binary attachments follow.
    public var attachments: Int

    public init(_ kind: Kind, namespace: String = "/", ackID: Int? = nil, data: JSONValue? = nil, attachments: Int = 0) {
        self.kind = kind
        self.namespace = namespace
        self.ackID = ackID
        self.data = data
        self.attachments = attachments
    }

    /// Why a packet could not be read, in words a client developer can act on.
    public struct ParseError: Error, Sendable, Hashable, CustomStringConvertible {
        public var description: String
    }

    /// Parses and validates one packet (the checks of the reference parser: a CONNECT's
    /// data is an object, an EVENT's is a non-empty array starting with a name, and so on).
    public init(parsing text: String) throws(ParseError) {
        var rest = Substring(text)
        guard let first = rest.first, let digit = first.wholeNumberValue, let kind = Kind(rawValue: digit) else {
            throw ParseError(description: "unknown Socket.IO packet type")
        }
        rest = rest.dropFirst()
        var attachments = 0
        if kind == .binaryEvent || kind == .binaryAck {
            guard let dash = rest.firstIndex(of: "-"), let count = Int(rest[..<dash]), count >= 0, count <= 10 else {
                throw ParseError(description: "binary packet without a valid attachment count")
            }
            attachments = count
            rest = rest[rest.index(after: dash)...]
        }
        var namespace = "/"
        if rest.first == "/" {
            let end = rest.firstIndex(of: ",") ?? rest.endIndex
            namespace = String(rest[..<end])
            rest = end == rest.endIndex ? "" : rest[rest.index(after: end)...]
        }
        var ackID: Int?
        let digits = rest.prefix { $0.isASCII && $0.isNumber }
        if !digits.isEmpty {
            guard digits.count <= 15, let id = Int(digits) else { throw ParseError(description: "acknowledgement id out of range") }
            ackID = id
            rest = rest.dropFirst(digits.count)
        }
        var data: JSONValue?
        if !rest.isEmpty {
            guard let value = JSONValue(parsing: rest) else { throw ParseError(description: "packet data is not valid JSON") }
            data = value
        }
        self.init(kind, namespace: namespace, ackID: ackID, data: data, attachments: attachments)
        try validate()
    }

    private func validate() throws(ParseError) {
        switch kind {
        case .connect:
            if let data, data.objectValue == nil { throw ParseError(description: "CONNECT data must be an object") }
        case .disconnect:
            if data != nil { throw ParseError(description: "DISCONNECT carries no data") }
        case .event, .binaryEvent:
            guard case .array(let items)? = data, let name = items.first, name.stringValue != nil else {
                throw ParseError(description: "EVENT data must be an array starting with the event name")
            }
        case .ack, .binaryAck:
            guard ackID != nil, case .array? = data else { throw ParseError(description: "ACK needs an id and an array") }
        case .connectError:
            break
        }
    }

    /// The text form.
    public var encoded: String {
        var text = String(kind.rawValue)
        if kind == .binaryEvent || kind == .binaryAck { text += "\(attachments)-" }
        if namespace != "/" { text += namespace + "," }
        if let ackID { text += String(ackID) }
        if let data { text += data.text }
        return text
    }

    /// An EVENT packet's name and arguments.
    public var event: (name: String, arguments: [JSONValue])? {
        guard kind == .event || kind == .binaryEvent, case .array(let items)? = data, let name = items.first?.stringValue else { return nil }
        return (name, Array(items.dropFirst()))
    }

    /// `2["name",data]` ready to send, built from already-encoded JSON (no re-encoding per socket).
    public static func eventText(_ name: String, json: String) -> String {
        "2[" + JSONText.quoted(name) + "," + json + "]"
    }

    /// `3<id>[data]`.
    public static func ackText(_ id: Int, json: String) -> String {
        "3\(id)[" + json + "]"
    }
}
