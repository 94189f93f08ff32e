/// An error a client sees: `{"error":{"code","message"}}` over REST, an `error` event over Socket.IO.
public struct ChatError: Error, Codable, Sendable, Hashable, CustomStringConvertible {
    /// Machine-readable codes; each maps to one HTTP status.
    public enum Code: String, Codable, Sendable, CaseIterable {
        case badRequest = "bad_request"
        case unauthorized
        case forbidden
        /// The user's password was set by an admin or an operator: only changing it (and
        /// reading `/api/me`, logging out) is allowed until they do.
        case passwordChangeRequired = "password_change_required"
        case notFound = "not_found"
        case conflict
        case payloadTooLarge = "payload_too_large"
        case invalidContent = "invalid_content"
        case rateLimited = "rate_limited"
        case unavailable
        case `internal`

        /// The HTTP status REST answers with.
        public var httpStatus: Int {
            switch self {
            case .badRequest: return 400
            case .unauthorized: return 401
            case .forbidden, .passwordChangeRequired: return 403
            case .notFound: return 404
            case .conflict: return 409
            case .payloadTooLarge: return 413
            case .invalidContent: return 422
            case .rateLimited: return 429
            case .unavailable: return 503
            case .internal: return 500
            }
        }
    }

    public var code: Code
    /// A sentence for people; never contains another user's data.
    public var message: String
    /// The `client_id` of the send this error is about, if any.
    public var clientID: String?
    /// Seconds until a rate-limited client may try again.
    public var retryAfter: Double?

    public init(_ code: Code, _ message: String, clientID: String? = nil, retryAfter: Double? = nil) {
        self.code = code
        self.message = message
        self.clientID = clientID
        self.retryAfter = retryAfter
    }

    public var description: String { "\(code.rawValue): \(message)" }

    enum CodingKeys: String, CodingKey {
        case code, message
        case clientID = "client_id"
        case retryAfter = "retry_after"
    }
}

/// The REST error body, `{"error":{"code","message"}}`.
public struct ErrorBody: Codable, Sendable, Hashable {
    public var error: ChatError
    public init(error: ChatError) { self.error = error }
}
