import Foundation
import Synchronization

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
///
/// Ids made in one process in the same millisecond are monotonic (RFC 9562, 6.2, method
/// 2): the first takes fresh random bits, each next one the previous bits plus one. A
/// batch of sends shares its commit's time, so its messages' ids sort in the order they
/// were stored. Retention purges in expiry order and breaks ties by id, so a purge then
/// walks the table in row order; with random bits, a purge of 10 messages of one batch
/// touched a page per message (BENCHMARKS.md, ninth round). So the next id of a
/// millisecond can be guessed from the last one: ids name things, they grant nothing
/// (every lookup by message id checks that the caller takes part in its conversation).
public enum TimeOrderedID {
    public static func make(at date: Date = Date()) -> String { shared.make(at: date) }

    /// The process's generator: every id of the process goes through it.
    private static let shared = Generator()

    /// Makes ids monotonic within a millisecond: it keeps the last id's bits. Tests make their
    /// own, so other tests' ids do not interleave with theirs.
    final class Generator: Sendable {
        private let last = Mutex(Bits(milliseconds: 0, random: (0, 0)))

        func make(at date: Date) -> String {
            let milliseconds = UInt64(max(0, date.epochMilliseconds))
            // In the last id's millisecond, the next id needs no random bits (two `getrandom`
            // calls per id otherwise: most of a busy store's ids share a millisecond).
            let next = last.withLock { last -> Bits? in
                guard last.milliseconds == milliseconds, let next = last.incremented() else { return nil }
                last = next
                return next
            }
            if let next { return TimeOrderedID.make(milliseconds: next.milliseconds, random: next.random) }
            var generator = SystemRandomNumberGenerator()
            let fresh = Bits(milliseconds: milliseconds, random: (generator.next(), generator.next()))
            let bits = last.withLock { last in
                last = fresh.following(last)
                return last
            }
            return TimeOrderedID.make(milliseconds: bits.milliseconds, random: bits.random)
        }
    }

    /// An id's time and its 74 random bits (12 in `random.0`, 62 in `random.1`, as ``make(milliseconds:random:)`` takes them).
    struct Bits: Sendable {
        var milliseconds: UInt64
        var random: (UInt64, UInt64)

        /// These fresh bits, or, in the millisecond of `previous`, `previous` plus one (carrying
        /// from the 62 bits into the 12; past the last value of the millisecond, fresh bits of
        /// the next one). A time earlier than `previous` (the clock set back, or a date given
        /// by the caller) takes the fresh bits: ids stay monotonic only within a millisecond.
        func following(_ previous: Bits) -> Bits {
            guard milliseconds == previous.milliseconds else { return self }
            return previous.incremented() ?? Bits(milliseconds: milliseconds + 1, random: random)
        }

        /// These bits plus one in the same millisecond (carrying from the 62 bits into the 12),
        /// or nil past the millisecond's last value.
        func incremented() -> Bits? {
            let low = random.1 & 0x3FFF_FFFF_FFFF_FFFF, high = random.0 & 0x0FFF
            if low < 0x3FFF_FFFF_FFFF_FFFF { return Bits(milliseconds: milliseconds, random: (high, low + 1)) }
            if high < 0x0FFF { return Bits(milliseconds: milliseconds, random: (high + 1, 0)) }
            return nil
        }
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
