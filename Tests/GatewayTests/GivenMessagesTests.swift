@testable import Gateway
import Testing

@Suite("What a socket has been given (seq ranges per conversation)")
struct GivenMessagesTests {
    @Test("live messages in order make one range however many; a repeat is refused; conversations are apart")
    func inOrder() {
        var given = GivenMessages()
        let fresh = (Int64(1)...10_000).filter { given.insert($0, in: "a") }
        #expect(fresh.count == 10_000)
        #expect(given.ranges["a"] == [1...10_000])
        let repeats = [Int64(1), 5_000, 10_000].filter { given.insert($0, in: "a") }
        #expect(repeats.isEmpty)
        let other = given.insert(5_000, in: "b")
        #expect(other)
        #expect(given.ranges["b"] == [5_000...5_000])
    }

    @Test("a replay after live messages fills the gap below them, and the ranges merge")
    func replayAfterLive() {
        var given = GivenMessages()
        for seq in Int64(1)...3 { _ = given.insert(seq, in: "c") }
        // Reconnected with since 3: live 8 and 9 arrive before the replay of 4...9.
        let live = [Int64(8), 9].filter { given.insert($0, in: "c") }
        #expect(live == [8, 9])
        #expect(given.ranges["c"] == [1...3, 8...9])
        let replayed = (Int64(4)...9).filter { given.insert($0, in: "c") }
        #expect(replayed == [4, 5, 6, 7], "8 and 9 were given live")
        #expect(given.ranges["c"] == [1...9])
    }

    @Test("in any order, it answers as a set of seqs would")
    func againstASet() {
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<50 {
            var given = GivenMessages()
            var reference = Set<Int64>()
            for _ in 0..<400 {
                let seq = Int64.random(in: 1...120, using: &generator)
                let before = reference.sorted()
                let inserted = given.insert(seq, in: "r")
                #expect(inserted == reference.insert(seq).inserted, "seq \(seq) after \(before)")
            }
            let ranges = given.ranges["r"] ?? []
            #expect(Set(ranges.flatMap { Array($0) }) == reference)
            for (lower, upper) in zip(ranges, ranges.dropFirst()) {
                #expect(lower.upperBound + 1 < upper.lowerBound, "ranges must be apart and in order: \(ranges)")
            }
            #expect(ranges.count <= GivenMessages.maximumRanges)
        }
    }

    @Test("at most maximumRanges per conversation: the oldest go first")
    func bounded() {
        var given = GivenMessages()
        let count = GivenMessages.maximumRanges + 10
        for index in 0..<count { _ = given.insert(Int64(index * 2), in: "g") }
        let ranges = given.ranges["g"] ?? []
        #expect(ranges.count == GivenMessages.maximumRanges)
        #expect(ranges.first == Int64(20)...20 && ranges.last == Int64((count - 1) * 2)...Int64((count - 1) * 2))
        #expect(!ranges.contains { $0.contains(0) } && ranges.contains { $0.contains(20) })
    }
}
