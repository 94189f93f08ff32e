import ChatCore
import Testing

@Suite("LogThrottle")
struct LogThrottleTests {
    @Test("the first failure is logged, the next ones once a minute with how many were held back, and a success starts over")
    func throttles() {
        var throttle = LogThrottle(interval: .seconds(60))
        let start = ContinuousClock.now
        #expect(throttle.admit(now: start) == 0)
        // Every 200 ms for a minute: held back.
        let held = (1..<300).map { throttle.admit(now: start + .milliseconds(200 * $0)) }
        #expect(held.allSatisfy { $0 == nil })
        #expect(throttle.admit(now: start + .seconds(60)) == 299)
        #expect(throttle.admit(now: start + .seconds(61)) == nil)
        // It works again: the end is reported once, and the next failure is logged at once.
        #expect(throttle.reset() == true)
        #expect(throttle.reset() == false)
        #expect(throttle.admit(now: start + .seconds(62)) == 0)
    }
}
