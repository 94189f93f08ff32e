@testable import ChatCore
import Synchronization
import Testing

@Suite("StoreClient's late writes: an answer never overtakes the timeout")
struct LateWritesTests {
    @Test("an answer that comes between the timeout's start and its delivery is parked and handed over when the write is armed, once")
    func parkedUntilArmed() {
        var late = StoreClient.LateWrites()
        let got = Mutex<[String]>([])
        let added = late.add("w1", { reply in got.withLock { $0.append(reply.result ?? "") } }, lifetime: .seconds(600), limit: 10)
        let early = late.take(StoreReply(request: "w1", result: "first"))
        let repeated = late.take(StoreReply(request: "w1", result: "again"))
        #expect(added && early == nil && repeated == nil, "not armed yet: the answer is parked")
        let armed = late.arm("w1")
        #expect(armed?.1.result == "first", "the first answer, not the repeat")
        if let (handler, reply) = armed { handler(reply) }
        #expect(got.withLock { $0 } == ["first"])
        #expect(late.entries.isEmpty)
        let after = late.take(StoreReply(request: "w1", result: "later"))
        let rearmed = late.arm("w1")
        #expect(after == nil && rearmed == nil, "once")
    }

    @Test("armed first: the answer goes straight to the handler, once; unknown requests are ignored")
    func armedFirst() {
        var late = StoreClient.LateWrites()
        let added = late.add("w2", { _ in }, lifetime: .seconds(600), limit: 10)
        let armed = late.arm("w2")
        let first = late.take(StoreReply(request: "w2", result: "r"))
        let second = late.take(StoreReply(request: "w2", result: "r"))
        let unknown = late.take(StoreReply(request: "w9", result: "r"))
        let unknownArmed = late.arm("w9")
        #expect(added && armed == nil, "nothing was parked")
        #expect(first != nil && second == nil)
        #expect(unknown == nil && unknownArmed == nil)
    }

    @Test("full: new writes are not followed; expired ones make room")
    func limitAndLifetime() {
        var late = StoreClient.LateWrites()
        let start = ContinuousClock.now
        let a = late.add("a", { _ in }, lifetime: .seconds(10), limit: 2, now: start)
        let b = late.add("b", { _ in }, lifetime: .seconds(10), limit: 2, now: start)
        let c = late.add("c", { _ in }, lifetime: .seconds(10), limit: 2, now: start)
        #expect(a && b && !c)
        #expect(Set(late.entries.keys) == ["a", "b"])
        let d = late.add("d", { _ in }, lifetime: .seconds(10), limit: 2, now: start + .seconds(11))
        #expect(d)
        #expect(Set(late.entries.keys) == ["d"])
    }
}
