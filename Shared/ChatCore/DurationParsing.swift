import Foundation
import RedisClient

/// Reads durations written as a number and a unit: `500ms`, `3s`, `1.5m`, `12h`, `90d`.
public enum DurationParser {
    /// The units accepted, for error messages and docs.
    public static let expected = "a duration such as 500ms, 30s, 5m, 12h or 90d"

    /// The duration, or `nil` when `text` is not a positive number followed by `ms`, `s`, `m`, `h` or `d`.
    public static func parse(_ text: String) -> Duration? {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        guard let unitStart = trimmed.firstIndex(where: { !$0.isNumber && $0 != "." }) else { return nil }
        let number = trimmed[..<unitStart]
        let unit = trimmed[unitStart...]
        guard !number.isEmpty, let value = Double(number), value > 0, value.isFinite else { return nil }
        let millisecondsPerUnit: Double
        switch unit {
        case "ms": millisecondsPerUnit = 1
        case "s": millisecondsPerUnit = 1000
        case "m": millisecondsPerUnit = 60_000
        case "h": millisecondsPerUnit = 3_600_000
        case "d": millisecondsPerUnit = 86_400_000
        default: return nil
        }
        let milliseconds = value * millisecondsPerUnit
        guard milliseconds >= 1, milliseconds < Double(Int64.max / 1_000_000) else { return nil }
        return .milliseconds(Int64(milliseconds.rounded()))
    }

    /// Writes a duration back in the largest unit that keeps it whole (`90d`, `1500ms`).
    public static func format(_ duration: Duration) -> String {
        let ms = duration.milliseconds
        for (unit, size) in [("d", Int64(86_400_000)), ("h", 3_600_000), ("m", 60_000), ("s", 1000)] where ms % size == 0 && ms >= size {
            return "\(ms / size)\(unit)"
        }
        return "\(ms)ms"
    }
}

