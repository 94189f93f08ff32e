import Foundation

/// UUIDs of version 7 (RFC 9562): 48 bits of Unix milliseconds, then random bits, in the
/// usual lowercase text form. Ids made later sort later, so a B-tree index on them grows
/// at its end instead of dirtying a random page per insert. The store gives them to
/// messages; the gateway, the web client and the load tool give them to sends as their
/// `client_id` (the store's unique index on `(client_id, sender_email)` is then written
/// at its end too).
public enum TimeOrderedID {
    public static func make(at date: Date = Date()) -> String {
        let milliseconds = UInt64(max(0, date.epochMilliseconds))
        var bytes = UUID().uuid  // 122 random bits; the first six bytes become the time
        withUnsafeMutableBytes(of: &bytes) { raw in
            for index in 0..<6 { raw[index] = UInt8(truncatingIfNeeded: milliseconds >> (40 - 8 * UInt64(index))) }
            raw[6] = 0x70 | (raw[6] & 0x0F)  // version 7
            raw[8] = 0x80 | (raw[8] & 0x3F)  // variant 10
        }
        return UUID(uuid: bytes).uuidString.lowercased()
    }
}
