import ChatCore
import Crypto
import Foundation
@testable import Gateway
import RedisClient
import Testing

@Suite("Tokens' encoding: base64url, claims, session ids")
struct TokenEncodingTests {
    /// Foundation's base64 with the url alphabet and no padding: what the codec must agree with.
    static func reference(_ bytes: [UInt8]) -> String {
        Data(bytes).base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    @Test("encodes as Foundation's base64 with the url alphabet and no padding, and decodes back, at every length to 70 bytes")
    func roundTrip() {
        var generator = SystemRandomNumberGenerator()
        for count in 0...70 {
            for _ in 0..<20 {
                let bytes = (0..<count).map { _ in UInt8.random(in: 0...255, using: &generator) }
                let text = Base64URL.encode(bytes)
                #expect(text == Self.reference(bytes), "\(bytes)")
                #expect(Base64URL.decode(Array(text.utf8)) == bytes, "\(text)")
            }
        }
        // Every character of the alphabet, both 62 and 63 included.
        let all = (0..<48).map { UInt8($0 * 16 / 3 & 0xFF) } + [0xFB, 0xEF, 0xBE, 0xFF, 0xFF, 0xFF]
        #expect(Base64URL.decode(Array(Base64URL.encode(all).utf8)) == all)
        #expect(Base64URL.encode([0xFB, 0xFF]) == "-_8")
    }

    @Test("refuses characters outside the url alphabet, padding, impossible lengths and set unused bits")
    func refusals() {
        #expect(Base64URL.decode(Array("QQ".utf8)) == [0x41])
        #expect(Base64URL.decode(Array("QUI".utf8)) == [0x41, 0x42])
        for text in ["QR", "QUJ", "QQ==", "QQ=", "Q", "QUJDR", "a+b/", "ab c", "ab\u{0}c", "abé", "ab.c"] {
            #expect(Base64URL.decode(Array(text.utf8)) == nil, "\(text)")
        }
        #expect(Base64URL.decode(Array("".utf8)) == [])
    }

    @Test("a token's claims are read by the scanner as the decoder reads them; a payload spelled otherwise is decoded, and a bad one refused")
    func claims() throws {
        let secret = String(repeating: "k", count: 32)
        let tokens = TokenService(secret: secret, lifetime: .seconds(3600), redis: RedisClient(configuration: try RedisConfiguration(url: "redis://127.0.0.1:1")), keys: RedisKeys())
        for user in [User(email: "dr.novak@clinic.com", name: "Dr Novak", role: .doctor), User(email: "zoë.ångström@clinic.com", name: "Zoë", role: .admin)] {
            let (token, claims) = tokens.issue(for: user)
            let payload = try #require(Base64URL.decode(Array(token.split(separator: ".")[1].utf8)))
            #expect(TokenClaims(scanning: payload) == claims)
            #expect(try JSONDecoder().decode(TokenClaims.self, from: Data(payload)) == claims)
            #expect(try tokens.decode(token) == claims)
            #expect(claims.iatMilliseconds.map { $0 / 1000 } == claims.iat, "issued in milliseconds, within its second")
        }
        // A token issued before iat_ms existed (five members) is still read, and counts as issued at the start of its second.
        let old = #"{"sub":"dr.novak@clinic.com","role":"doctor","jti":"j0","iat":1700000000,"exp":1700003600}"#
        let oldClaims = try #require(TokenClaims(scanning: Array(old.utf8)))
        #expect(oldClaims.iatMilliseconds == nil && oldClaims.issuedAtMilliseconds == 1_700_000_000_000)
        #expect(try JSONDecoder().decode(TokenClaims.self, from: Data(old.utf8)) == oldClaims)
        // Signed by the same key but written by someone else: escapes, spaces, members in another order.
        func signed(_ json: String) -> String {
            let key = SymmetricKey(data: Data(SHA256.hash(data: Data(secret.utf8))))
            let head = Base64URL.encode(Array(#"{"alg":"HS256","typ":"JWT"}"#.utf8)) + "." + Base64URL.encode(Array(json.utf8))
            return head + "." + Base64URL.encode(Array(HMAC<SHA256>.authenticationCode(for: Data(head.utf8), using: key)))
        }
        let exp = Int64(Date().timeIntervalSince1970) + 600
        let escaped = #"{ "exp": \#(exp), "sub": "dr.novak\u0040clinic.com", "role": "doctor", "jti": "j1", "iat": 1 }"#
        #expect(TokenClaims(scanning: Array(escaped.utf8)) == nil)
        #expect(try tokens.decode(signed(escaped)) == TokenClaims(sub: "dr.novak@clinic.com", role: .doctor, jti: "j1", iat: 1, exp: exp))
        for bad in [#"{"sub":"a@b.c","role":"nurse","jti":"j","iat":1,"exp":\#(exp)}"#, #"{"sub":"a@b.c","role":"doctor","jti":"j","iat":1}"#,
                    #"{"sub":"a@b.c","role":"doctor","jti":"j","iat":1,"exp":"\#(exp)"}"#, "[]"] {
            #expect(TokenClaims(scanning: Array(bad.utf8)) == nil, "\(bad)")
            #expect(throws: ChatError.self, "\(bad)") { try tokens.decode(signed(bad)) }
        }
    }

    @Test("session ids are 20 url-safe characters, all different")
    func sessionIDs() {
        let ids = (0..<1000).map { _ in EngineServer.newSessionID() }
        #expect(Set(ids).count == 1000)
        #expect(ids.allSatisfy { $0.utf8.count == 20 && Base64URL.decode(Array($0.utf8))?.count == 15 })
    }
}
