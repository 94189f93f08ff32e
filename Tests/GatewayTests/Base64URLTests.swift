import Foundation
@testable import Gateway
import Testing

@Suite("Base64url: tokens' and session ids' encoding")
struct Base64URLTests {
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

    @Test("session ids are 20 url-safe characters, all different")
    func sessionIDs() {
        let ids = (0..<1000).map { _ in EngineServer.newSessionID() }
        #expect(Set(ids).count == 1000)
        #expect(ids.allSatisfy { $0.utf8.count == 20 && Base64URL.decode(Array($0.utf8))?.count == 15 })
    }
}
