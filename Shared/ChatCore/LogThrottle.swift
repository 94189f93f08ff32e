/// Lets a repeating warning through at most once per `interval`, and counts what it held
/// back, so a loop that fails every 200 ms while Redis or the disk is away logs a line a
/// minute instead of five a second.
public struct LogThrottle: Sendable {
    public let interval: Duration
    private var lastLogged: ContinuousClock.Instant?
    private var held = 0

    public init(interval: Duration = .seconds(60)) { self.interval = interval }

    /// Whether to log this occurrence: nil to hold it back, or how many were held back since
    /// the last one logged.
    public mutating func admit(now: ContinuousClock.Instant = .now) -> Int? {
        if let lastLogged, now - lastLogged < interval {
            held += 1
            return nil
        }
        defer { lastLogged = now; held = 0 }
        return held
    }

    /// After a success: the next failure is logged at once. Returns whether the failures
    /// had been logged (to say that they ended).
    @discardableResult
    public mutating func reset() -> Bool {
        defer { lastLogged = nil; held = 0 }
        return lastLogged != nil
    }
}
