/// Redis answered a command with an error reply (`-ERR ...`, `-WRONGTYPE ...`).
///
/// The connection is fine; the command was refused. Compare ``RedisConnectionError``.
public struct RedisServerError: Error, Hashable, CustomStringConvertible {
    /// The whole error line, e.g. `NOSCRIPT No matching script. Please use EVAL.`
    public let message: String

    public init(message: String) { self.message = message }

    /// The error's first word (`ERR`, `WRONGTYPE`, `NOSCRIPT`, `BUSYGROUP`, ...).
    public var prefix: Substring { message.prefix { $0 != " " } }

    public var description: String { "Redis error: \(message)" }
}

/// The client could not get a reply: the connection failed, closed, or the client is not running.
///
/// A command that failed this way may or may not have been executed by the server.
public struct RedisConnectionError: Error, Hashable, CustomStringConvertible {
    /// What went wrong; new codes may be added.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: Hashable, Sendable {
            case notRunning, connecting, connectionClosed, connectFailed, shutdown, protocolError, timedOut
        }
        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// The client's `run()` is not active, so it refuses work.
        public static let notRunning = Code(.notRunning)
        /// The client is between connection attempts (backing off after a failure).
        public static let connecting = Code(.connecting)
        /// The connection closed before the reply arrived.
        public static let connectionClosed = Code(.connectionClosed)
        /// A connection attempt failed (refused, timed out, AUTH or SELECT refused).
        public static let connectFailed = Code(.connectFailed)
        /// The client is shutting down.
        public static let shutdown = Code(.shutdown)
        /// The server sent bytes that are not RESP.
        public static let protocolError = Code(.protocolError)
        /// No reply came within the reply timeout (a stalled server, a peer gone without a
        /// reset): the connection was closed, and reconnects.
        public static let timedOut = Code(.timedOut)

        public var description: String { "\(base)" }
    }

    public let code: Code
    /// More detail, such as the underlying socket error.
    public let detail: String

    public init(_ code: Code, _ detail: String = "") {
        self.code = code
        self.detail = detail
    }

    public var description: String { detail.isEmpty ? "Redis connection error: \(code)" : "Redis connection error: \(code): \(detail)" }
}

/// A reply did not have the shape the typed method expected.
public struct RedisUnexpectedReplyError: Error, CustomStringConvertible {
    /// The command that was sent (its name only).
    public let command: String
    /// The reply that came back.
    public let reply: RESPValue

    public var description: String { "unexpected reply to \(command): \(reply)" }
}
