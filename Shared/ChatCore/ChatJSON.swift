import Foundation

/// The one JSON encoding of the project: RFC 3339 UTC times with milliseconds (`2026-11-25T06:33:00.123Z`).
public enum ChatJSON {
    /// An encoder with the project's date format and sorted keys (stable output for logs and tests).
    public static func makeEncoder() -> JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .custom { date, encoder in
            var container = encoder.singleValueContainer()
            try container.encode(formatTimestamp(date))
        }
        return encoder
    }

    /// A decoder that reads RFC 3339 times with or without fractional seconds.
    public static func makeDecoder() -> JSONDecoder {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .custom { decoder in
            let container = try decoder.singleValueContainer()
            let text = try container.decode(String.self)
            guard let date = parseTimestamp(text) else {
                throw DecodingError.dataCorruptedError(in: container, debugDescription: "expected an RFC 3339 time, got \"\(text)\"")
            }
            return date
        }
        return decoder
    }

    /// `2026-11-25T06:33:00.123Z`: rounded to the nearest millisecond (the formatter alone would truncate 0.1229999 to .122).
    public static func formatTimestamp(_ date: Date) -> String {
        JSONText.timestamp(milliseconds: date.epochMilliseconds)
    }

    /// The same with Foundation's ISO 8601 formatter: for years outside 1600–9999 (Foundation's
    /// calendar is Julian before 1582), and the tests' reference.
    static func formatTimestampWithFoundation(milliseconds: Int64) -> String {
        let (seconds, fraction) = milliseconds.quotientAndRemainder(dividingBy: 1000)
        let whole = Date(timeIntervalSince1970: TimeInterval(fraction < 0 ? seconds - 1 : seconds))
        let base = whole.formatted(Date.ISO8601FormatStyle(timeZone: .gmt))  // 2026-11-25T06:33:00Z
        let ms = fraction < 0 ? fraction + 1000 : fraction
        return base.dropLast() + "." + String(repeating: "0", count: ms < 10 ? 2 : ms < 100 ? 1 : 0) + String(ms) + "Z"
    }

    /// The time `milliseconds` after 1970: the nearest Double to it from the reference date.
    /// Foundation's ISO 8601 parser gives the same millisecond but is sometimes a few ulps off
    /// (2000-12-21T17:40:20.739Z): the two agree in `epochMilliseconds`, not always in bits.
    static func date(milliseconds: Int64) -> Date {
        Date(timeIntervalSinceReferenceDate: Double(milliseconds - 978_307_200_000) / 1000)
    }

    /// Parses RFC 3339 with or without fractional seconds; `nil` otherwise.
    public static func parseTimestamp(_ text: String) -> Date? {
        if let milliseconds = JSONText.milliseconds(timestamp: text.utf8) { return date(milliseconds: milliseconds) }
        if let date = try? Date.ISO8601FormatStyle(includingFractionalSeconds: true).parse(text) { return date }
        return try? Date.ISO8601FormatStyle().parse(text)
    }
}

extension Date {
    /// Milliseconds since 1970, rounded (not truncated: a time read back from milliseconds
    /// must give the same milliseconds, or a cursor "after this one" returns it again).
    public var epochMilliseconds: Int64 { Int64((timeIntervalSince1970 * 1000).rounded()) }
}
