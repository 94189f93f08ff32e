import Foundation
import Testing
@testable import ChatCore

@Suite("Time-ordered ids (UUID v7)")
struct TimeOrderedIDTests {
    /// The same id written by Foundation: the time's six bytes, then the random bits with
    /// the version and variant set.
    static func foundation(milliseconds: UInt64, random: (UInt64, UInt64)) -> String {
        let high = milliseconds << 16 | 0x7000 | (random.0 & 0x0FFF)
        let low = 0x8000_0000_0000_0000 | (random.1 & 0x3FFF_FFFF_FFFF_FFFF)
        var bytes = UUID().uuid
        withUnsafeMutableBytes(of: &bytes) { raw in
            for index in 0..<8 {
                raw[index] = UInt8(truncatingIfNeeded: high >> UInt64(56 - 8 * index))
                raw[8 + index] = UInt8(truncatingIfNeeded: low >> UInt64(56 - 8 * index))
            }
        }
        return UUID(uuid: bytes).uuidString.lowercased()
    }

    @Test("the text is Foundation's lowercase UUID text of the same bits, for edge and random values")
    func sameTextAsFoundation() {
        var generator = SystemRandomNumberGenerator()
        var cases: [(UInt64, (UInt64, UInt64))] = [(0, (0, 0)), (0xFFFF_FFFF_FFFF, (.max, .max)), (1_764_000_000_000, (0x0123_4567_89AB_CDEF, 0xFEDC_BA98_7654_3210))]
        for _ in 0..<2000 { cases.append((generator.next() & 0xFFFF_FFFF_FFFF, (generator.next(), generator.next()))) }
        for (milliseconds, random) in cases {
            #expect(TimeOrderedID.make(milliseconds: milliseconds, random: random) == Self.foundation(milliseconds: milliseconds, random: random))
        }
    }

    @Test("version 7, variant 10, the given time in the first 48 bits; later ids sort later; no two alike")
    func versionTimeAndOrder() throws {
        let start = Date()
        var ids: [String] = []
        for step in 0..<50 { ids.append(TimeOrderedID.make(at: start.addingTimeInterval(Double(step) * 0.002))) }
        #expect(ids == ids.sorted())
        for (step, id) in ids.enumerated() {
            let uuid = try #require(UUID(uuidString: id))
            #expect(uuid.uuid.6 >> 4 == 7 && uuid.uuid.8 >> 6 == 0b10 && id == id.lowercased() && id.count == 36, "\(id)")
            let milliseconds = Int64(id.replacingOccurrences(of: "-", with: "").prefix(12), radix: 16)
            #expect(milliseconds == start.addingTimeInterval(Double(step) * 0.002).epochMilliseconds)
        }
        let many = (0..<10_000).map { _ in TimeOrderedID.make(at: start) }
        #expect(Set(many).count == many.count)
    }

    @Test("ids of one millisecond are monotonic: each the previous plus one, carrying into the 12 high bits and past the millisecond; another millisecond starts fresh")
    func monotonicWithinAMillisecond() throws {
        let date = Date(timeIntervalSince1970: 1_764_000_000.123)
        // A generator of its own: other tests running meanwhile make ids through the process's.
        let generator = TimeOrderedID.Generator()
        let ids = (0..<5000).map { _ in generator.make(at: date) }
        #expect(ids == ids.sorted() && Set(ids).count == ids.count)
        #expect(ids.allSatisfy { $0.hasPrefix("019ab") && Int64($0.replacingOccurrences(of: "-", with: "").prefix(12), radix: 16) == date.epochMilliseconds })
        // Consecutive ids differ by one, compared on their last 60 bits (a carry past those, which
        // would show as one other step, is all but impossible from random bits in 5,000 steps).
        let values = try ids.map { id -> UInt64 in try #require(UInt64(id.replacingOccurrences(of: "-", with: "").suffix(15), radix: 16)) }
        let steps = zip(values, values.dropFirst()).map { $1 &- $0 }
        #expect(steps.filter { $0 == 1 }.count >= steps.count - 1, "\(Set(steps))")

        typealias Bits = TimeOrderedID.Bits
        let fresh = Bits(milliseconds: 7, random: (0x0123, 0x0456))
        let plusOne = fresh.following(Bits(milliseconds: 7, random: (0x0FFF, 41)))
        #expect(plusOne.milliseconds == 7 && plusOne.random == (0x0FFF, 42))
        let carry = fresh.following(Bits(milliseconds: 7, random: (0x0ABC, 0x3FFF_FFFF_FFFF_FFFF)))
        #expect(carry.milliseconds == 7 && carry.random == (0x0ABD, 0))
        #expect(Bits(milliseconds: 7, random: (0x0FFF, 0x3FFF_FFFF_FFFF_FFFF)).incremented() == nil, "the millisecond's last value")
        let nextMillisecond = fresh.following(Bits(milliseconds: 7, random: (0x0FFF, 0x3FFF_FFFF_FFFF_FFFF)))
        #expect(nextMillisecond.milliseconds == 8 && nextMillisecond.random == (0x0123, 0x0456))
        for previous in [Bits(milliseconds: 6, random: (1, 1)), Bits(milliseconds: 9, random: (1, 1))] {
            let following = fresh.following(previous)
            #expect(following.milliseconds == 7 && following.random == (0x0123, 0x0456))
        }
        // Their text still sorts the way their bits do.
        #expect(TimeOrderedID.make(milliseconds: 7, random: (0x0ABC, 0x3FFF_FFFF_FFFF_FFFF)) < TimeOrderedID.make(milliseconds: 7, random: carry.random))
    }
}
