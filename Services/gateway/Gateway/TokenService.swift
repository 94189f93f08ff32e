import ChatCore
import Crypto
import Foundation
import RedisClient

/// What a verified access token says.
public struct TokenClaims: Codable, Sendable, Hashable {
    /// The user's email.
    public var sub: String
    public var role: Role
    /// The token's id, for revocation.
    public var jti: String
    /// Issued and expiry times, seconds since 1970.
    public var iat: Int64
    public var exp: Int64
}

/// Signed access tokens (JWT, HS256) with an expiry and an id; logout revokes one
/// everywhere through Redis, and a disabled user's tokens all stop working.
public struct TokenService: Sendable {
    private let keyBytes: Data
    private var key: SymmetricKey { SymmetricKey(data: keyBytes) }
    public let lifetime: Duration
    private let redis: RedisClient
    private let keys: RedisKeys

    public init(secret: String, lifetime: Duration, redis: RedisClient, keys: RedisKeys) {
        self.keyBytes = Data(SHA256.hash(data: Data(secret.utf8)))
        self.lifetime = lifetime
        self.redis = redis
        self.keys = keys
    }

    /// A new token for `user`.
    public func issue(for user: User, now: Date = Date()) -> (token: String, claims: TokenClaims) {
        let issued = Int64(now.timeIntervalSince1970)
        let claims = TokenClaims(sub: user.email, role: user.role, jti: UUID().uuidString.lowercased(), iat: issued, exp: issued + lifetime.milliseconds / 1000)
        let header = Self.base64URL(Data(#"{"alg":"HS256","typ":"JWT"}"#.utf8))
        let payload = Self.base64URL(try! JSONEncoder().encode(claims))
        let signature = Self.base64URL(Data(HMAC<SHA256>.authenticationCode(for: Data("\(header).\(payload)".utf8), using: key)))
        return ("\(header).\(payload).\(signature)", claims)
    }

    /// The claims of a valid, unexpired, unrevoked token of an enabled user; `unauthorized` otherwise.
    public func verify(_ token: String, now: Date = Date()) async throws -> TokenClaims {
        let claims = try decode(token, now: now)
        let refused = try await redis.exists([keys.revokedToken(claims.jti), keys.disabledUser(claims.sub)])
        guard refused == 0 else { throw ChatError(.unauthorized, "this token is no longer valid; log in again") }
        return claims
    }

    /// Checks signature and expiry only (no Redis).
    public func decode(_ token: String, now: Date = Date()) throws -> TokenClaims {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, let payload = Self.data(base64URL: parts[1]), let signature = Self.data(base64URL: parts[2]),
              HMAC<SHA256>.isValidAuthenticationCode(signature, authenticating: Data("\(parts[0]).\(parts[1])".utf8), using: key),
              let claims = try? JSONDecoder().decode(TokenClaims.self, from: payload) else {
            throw ChatError(.unauthorized, "the access token is not valid")
        }
        guard Int64(now.timeIntervalSince1970) < claims.exp else { throw ChatError(.unauthorized, "the access token has expired; log in again") }
        return claims
    }

    /// Logout: the token is refused everywhere until it would have expired anyway.
    public func revoke(_ claims: TokenClaims, now: Date = Date()) async throws {
        let remaining = max(1, claims.exp - Int64(now.timeIntervalSince1970))
        try await redis.set(keys.revokedToken(claims.jti), to: "1", expiration: .seconds(Int(remaining)))
    }

    static func base64URL(_ data: Data) -> String {
        data.base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
    }

    static func data(base64URL text: Substring) -> Data? {
        var base64 = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        base64 += String(repeating: "=", count: (4 - base64.count % 4) % 4)
        return Data(base64Encoded: base64)
    }
}
