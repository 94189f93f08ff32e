import ChatCore
import Crypto
import Foundation
import RedisClient
import Synchronization

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
    /// The issue time in milliseconds, which a password change or a log-out everywhere
    /// compares with (`auth:tokens_before:{email}`); absent from tokens issued before it
    /// existed, which count as issued at the start of their `iat` second.
    public var iatMilliseconds: Int64?

    public init(sub: String, role: Role, jti: String, iat: Int64, exp: Int64, iatMilliseconds: Int64? = nil) {
        (self.sub, self.role, self.jti, self.iat, self.exp, self.iatMilliseconds) = (sub, role, jti, iat, exp, iatMilliseconds)
    }

    /// When the token was issued, in milliseconds since 1970.
    public var issuedAtMilliseconds: Int64 { iatMilliseconds ?? iat * 1000 }

    /// Set by ``TokenService/verify(_:now:)`` (not part of the token): the user must change
    /// their password before anything else (`auth:must_change:{email}`).
    public var passwordChangeRequired = false

    enum CodingKeys: String, CodingKey {
        case sub, role, jti, iat, exp
        case iatMilliseconds = "iat_ms"
    }
}

extension TokenClaims {
    /// The claims as `TokenService.issue` writes them, read with ``JSONScan``; nil for any
    /// other spelling (escapes, other members), which `JSONDecoder` reads.
    init?(scanning bytes: [UInt8]) {
        guard let scan = JSONScan(bytes), scan.endsAt(bytes.count), scan.members.count == 5 || scan.members.count == 6,
              let sub = scan.string("sub"), let role = scan.string("role").flatMap(Role.init(rawValue:)), let jti = scan.string("jti"),
              let iat = scan.integer("iat"), let exp = scan.integer("exp") else { return nil }
        let milliseconds = scan.integer("iat_ms")
        guard (scan.members.count == 6) == (milliseconds != nil) else { return nil }
        self.init(sub: sub, role: role, jti: jti, iat: iat, exp: exp, iatMilliseconds: milliseconds)
    }
}

/// Signed access tokens (JWT, HS256) with an expiry and an id; logout revokes one
/// everywhere through Redis, a disabled user's tokens all stop working, and so do those
/// issued before a user's password was changed or their sessions were all ended.
public struct TokenService: Sendable {
    private let keyBytes: Data
    private var key: SymmetricKey { SymmetricKey(data: keyBytes) }
    public let lifetime: Duration
    private let redis: RedisClient
    /// How long a check waits for Redis's auth state to be whole before it answers
    /// `unavailable` (``verify(_:now:)``). The messages service puts it back within seconds of
    /// Redis losing its data.
    public var authStateWait: Duration = .seconds(5)
    private let keys: RedisKeys
    /// Shared by the copies of this service: one poll of `auth:state` for all the checks waiting on it.
    private let authStateWatch = AuthStateWatch()

    public init(secret: String, lifetime: Duration, redis: RedisClient, keys: RedisKeys) {
        self.keyBytes = Data(SHA256.hash(data: Data(secret.utf8)))
        self.lifetime = lifetime
        self.redis = redis
        self.keys = keys
    }

    /// A new token for `user`.
    public func issue(for user: User, now: Date = Date()) -> (token: String, claims: TokenClaims) {
        let milliseconds = now.epochMilliseconds
        let issued = milliseconds / 1000
        let claims = TokenClaims(sub: user.email, role: user.role, jti: UUID().uuidString.lowercased(), iat: issued,
                                 exp: issued + lifetime.milliseconds / 1000, iatMilliseconds: milliseconds)
        let header = Base64URL.encode(Array(#"{"alg":"HS256","typ":"JWT"}"#.utf8))
        let payload = Base64URL.encode(Array(try! JSONEncoder().encode(claims)))
        let signature = Base64URL.encode(Array(HMAC<SHA256>.authenticationCode(for: Data("\(header).\(payload)".utf8), using: key)))
        return ("\(header).\(payload).\(signature)", claims)
    }

    /// The claims of a valid, unexpired, unrevoked token of an enabled user, issued after
    /// their password last changed and their sessions were last all ended; `unauthorized`
    /// otherwise. One round trip to Redis, which also says whether the user must change
    /// their password first (``TokenClaims/passwordChangeRequired``).
    ///
    /// Fails closed: what is refused lives in Redis, so while Redis does not hold the whole
    /// auth state (`auth:state` missing or `pending`: Redis lost its data and the messages
    /// service has not put it back yet) no token is taken. The check waits for it up to
    /// ``authStateWait``, then answers `unavailable`.
    public func verify(_ token: String, now: Date = Date()) async throws -> TokenClaims {
        var claims = try decode(token, now: now)
        let query = ["MGET", keys.revokedToken(claims.jti), keys.disabledUser(claims.sub), keys.tokensBefore(claims.sub),
                     keys.passwordChangeRequired(claims.sub), keys.authState]
        var values = try await redis.send(query).array ?? []
        if values.count == 5, !Self.isWhole(authState: values[4]) {
            let paused = ChatError(.unavailable, "sign-in is paused while the server restores its security state from the message store; try again in a few seconds")
            guard await authStateWatch.waitUntilWhole(redis: redis, key: keys.authState, deadline: .now + authStateWait) else { throw paused }
            values = try await redis.send(query).array ?? []
            guard values.count == 5, Self.isWhole(authState: values[4]) else { throw paused }
        }
        guard values.count == 5, values[0].isNull, values[1].isNull else { throw ChatError(.unauthorized, "this token is no longer valid; log in again") }
        claims.passwordChangeRequired = !values[3].isNull
        if let before = values[2].string.flatMap({ Int64($0) }), claims.issuedAtMilliseconds < before {
            throw ChatError(.unauthorized, "this token was issued before the account's sessions were ended (a password change, or a log-out everywhere); log in again")
        }
        return claims
    }

    /// Whether `auth:state` says Redis holds everything the store would refuse: the messages
    /// service writes `restored …` last, after every key (`pending` while it restores).
    static func isWhole(authState value: RESPValue) -> Bool {
        value.string?.hasPrefix("restored") == true
    }

    /// Checks signature and expiry only (no Redis).
    public func decode(_ token: String, now: Date = Date()) throws -> TokenClaims {
        // Every socket's CONNECT and every REST call checks a token: bytes, not Foundation's
        // string replacements (the base64url alone was 8 % of the gateway's CPU under churn).
        let parts = token.utf8.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false)
        guard parts.count == 3, let payload = Base64URL.decode(parts[1]), let signature = Base64URL.decode(parts[2]),
              HMAC<SHA256>.isValidAuthenticationCode(signature, authenticating: Data(token.utf8[..<parts[1].endIndex]), using: key),
              let claims = TokenClaims(scanning: payload) ?? (try? JSONDecoder().decode(TokenClaims.self, from: Data(payload))) else {
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
}

/// The wait for `auth:state` to be whole again, shared by every check of a gateway: one task
/// reads the key every 100 ms (for at most 10 s) and every check that found it missing
/// looks at what that task last saw, each until its own deadline. A herd of CONNECTs after
/// Redis lost its data then costs Redis ten reads a second, not ten per waiting socket.
final class AuthStateWatch: Sendable {
    private let state = Mutex<(polling: Bool, whole: Bool)>((false, false))

    /// True once the key reads `restored …`; false if `deadline` (or cancellation) comes first.
    func waitUntilWhole(redis: RedisClient, key: String, deadline: ContinuousClock.Instant) async -> Bool {
        // The caller has just read it missing: what a poll saw before no longer holds.
        state.withLock { $0.whole = false }
        while ContinuousClock.now < deadline, !Task.isCancelled {
            // A poll that ended (it saw the key whole, then this reset; or its 10 s ran out) is
            // started again by whichever check looks next.
            let (whole, start) = state.withLock { state -> (Bool, Bool) in
                if state.whole { return (true, false) }
                if state.polling { return (false, false) }
                state.polling = true
                return (false, true)
            }
            if whole { return true }
            if start { poll(redis: redis, key: key) }
            try? await Task.sleep(for: .milliseconds(50))
        }
        return false
    }

    private func poll(redis: RedisClient, key: String) {
        Task {
            for _ in 0..<100 {
                if let value = try? await redis.send(["GET", key]), TokenService.isWhole(authState: value) {
                    self.state.withLock { $0.whole = true }
                    break
                }
                try? await Task.sleep(for: .milliseconds(100))
            }
            self.state.withLock { $0.polling = false }
        }
    }
}

/// Base64url without padding (RFC 4648 §5, as JWTs use it).
enum Base64URL {
    private static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".utf8)
    /// Each byte's value in the alphabet, 0xFF for a byte outside it.
    private static let values: [UInt8] = {
        var values = [UInt8](repeating: 0xFF, count: 256)
        for (value, byte) in alphabet.enumerated() { values[Int(byte)] = UInt8(value) }
        return values
    }()

    static func encode(_ bytes: [UInt8]) -> String {
        var text: [UInt8] = []
        text.reserveCapacity((bytes.count * 4 + 2) / 3)
        var index = 0
        while index < bytes.count {
            let count = min(3, bytes.count - index)
            var group = UInt32(bytes[index]) << 16
            if count > 1 { group |= UInt32(bytes[index + 1]) << 8 }
            if count > 2 { group |= UInt32(bytes[index + 2]) }
            for k in 0...count { text.append(alphabet[Int(group >> (18 - 6 * UInt32(k)) & 63)]) }
            index += 3
        }
        return String(decoding: text, as: UTF8.self)
    }

    /// The bytes, or nil for a character outside the alphabet (padding included), a length
    /// no encoding has, or unused low bits that are not zero (each byte string has one text).
    static func decode<Text: Collection<UInt8>>(_ text: Text) -> [UInt8]? {
        guard text.count % 4 != 1 else { return nil }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(text.count * 3 / 4)
        var group: UInt32 = 0
        var bits = 0
        for character in text {
            let value = values[Int(character)]
            guard value != 0xFF else { return nil }
            group = group << 6 | UInt32(value)
            bits += 6
            if bits >= 8 {
                bits -= 8
                bytes.append(UInt8(truncatingIfNeeded: group >> UInt32(bits)))
                group &= (1 << UInt32(bits)) - 1
            }
        }
        return group == 0 ? bytes : nil
    }
}
