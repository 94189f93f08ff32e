import Foundation

/// UUIDs of version 7 (RFC 9562): 48 bits of Unix milliseconds, then random bits, in the
/// usual lowercase text form. Ids made later sort later, so a B-tree index on them grows
/// at its end instead of dirtying a random page per insert. The store gives them to
/// messages; the gateway, the web client and the load tool give them to sends as their
/// `client_id` (the store's unique index on `(client_id, sender_email)` is then written
/// at its end too), and store requests carry them as their ids.
///
/// The random bits come from `SystemRandomNumberGenerator` (the `getrandom` system call):
/// Foundation's `UUID()` on Linux opens, reads and closes `/dev/urandom` for every id,
/// three system calls that were one per send in the messages service and the gateway.
public enum TimeOrderedID {
    public static func make(at date: Date = Date()) -> String {
        var random = SystemRandomNumberGenerator()
        return make(milliseconds: UInt64(max(0, date.epochMilliseconds)), random: (random.next(), random.next()))
    }

    /// The id for this time and these random bits (12 bits of `random.0` and 62 of `random.1`).
    static func make(milliseconds: UInt64, random: (UInt64, UInt64)) -> String {
        let high = milliseconds << 16 | 0x7000 | (random.0 & 0x0FFF)            // time, version 7, 12 random bits
        let low = 0x8000_0000_0000_0000 | (random.1 & 0x3FFF_FFFF_FFFF_FFFF)    // variant 10, 62 random bits
        return String(unsafeUninitializedCapacity: 36) { buffer in
            var position = 0
            // The 16 hex digits of `value`, a dash after digit `first`, `second` and `third` (0: none).
            func put(_ value: UInt64, dashesAfter first: Int, _ second: Int = 0, _ third: Int = 0) {
                for index in 1...16 {
                    let nibble = UInt8(truncatingIfNeeded: value >> UInt64(4 * (16 - index))) & 0xF
                    buffer[position] = nibble < 10 ? UInt8(ascii: "0") + nibble : UInt8(ascii: "a") + nibble - 10
                    position += 1
                    if index == first || index == second || index == third {
                        buffer[position] = UInt8(ascii: "-")
                        position += 1
                    }
                }
            }
            put(high, dashesAfter: 8, 12, 16)
            put(low, dashesAfter: 4)
            return position
        }
    }
}
