@testable import Gateway
import Testing

@Suite("A socket's read marks: one per conversation at the store at a time")
struct ReadMarkCoalescingTests {
    @Test("a mark goes at once when its conversation has none in flight; those that come meanwhile wait, merged (the highest seq, every acknowledgement); the next goes when the one in flight is answered")
    func merging() {
        var marks = ReadMarkCoalescing()
        #expect(marks.offer("a", upToSeq: 5, ackID: 1) == .init(upToSeq: 5, ackIDs: [1]))
        #expect(marks.offer("a", upToSeq: 7, ackID: 2) == nil)
        #expect(marks.offer("a", upToSeq: 6, ackID: nil) == nil, "a lower seq waits too, and takes the merged answer")
        #expect(marks.offer("b", upToSeq: 3, ackID: 4) == .init(upToSeq: 3, ackIDs: [4]), "another conversation does not wait")
        #expect(marks.inFlightCount == 2)
        #expect(marks.answered("a") == .init(upToSeq: 7, ackIDs: [2, nil]))
        #expect(marks.offer("a", upToSeq: 9, ackID: 5) == nil, "the merged one is in flight now")
        #expect(marks.answered("a") == .init(upToSeq: 9, ackIDs: [5]))
        #expect(marks.answered("a") == nil)
        #expect(marks.answered("b") == nil)
        #expect(marks.inFlightCount == 0)
        #expect(marks.offer("a", upToSeq: 10, ackID: 6) == .init(upToSeq: 10, ackIDs: [6]), "nothing in flight: at once again")
    }
}
