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
}
