import ChatCore
import Foundation

/// The rules for what clients send; each failure is a ``ChatError`` a client can show.
enum Validation {
    /// Trimmed, 1 to 10,000 characters, no control characters but tab and newlines.
    static func content(_ text: String) throws -> String {
        // The common case, checked on the UTF-8 bytes: non-empty, no longer than the limit
        // in bytes (so not in characters either), nothing to trim at either end (ASCII
        // ends that are not spaces), and no ASCII control character inside (UTF-8 encodes
        // everything else above 0x7F). Anything else takes the general path below.
        let utf8 = text.utf8
        if let first = utf8.first, let last = utf8.last, utf8.count <= MessageStore.maximumContentLength,
           first > 0x20, first < 0x7f, last > 0x20, last < 0x7f,
           !utf8.contains(where: { ($0 < 0x20 && $0 != 0x09 && $0 != 0x0a && $0 != 0x0d) || $0 == 0x7f }) {
            return text
        }
        let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
        guard !trimmed.isEmpty else { throw ChatError(.invalidContent, "the message is empty") }
        guard trimmed.count <= MessageStore.maximumContentLength else {
            throw ChatError(.invalidContent, "the message is longer than \(MessageStore.maximumContentLength) characters")
        }
        guard !trimmed.unicodeScalars.contains(where: { ($0.value < 0x20 && !"\n\r\t".unicodeScalars.contains($0)) || $0.value == 0x7f }) else {
            throw ChatError(.invalidContent, "the message contains control characters")
        }
        return trimmed
    }

    /// Lowercased, one `@`, no spaces, at most 254 characters.
    static func email(_ text: String) throws -> String {
        let email = text.trimmingCharacters(in: .whitespaces).lowercased()
        let parts = email.split(separator: "@", omittingEmptySubsequences: false)
        guard email.count <= 254, parts.count == 2, !parts[0].isEmpty, parts[1].contains("."),
              !email.contains(where: { $0.isWhitespace || $0.isNewline }) else {
            throw ChatError(.invalidContent, "not a valid email address")
        }
        return email
    }

    static func name(_ text: String) throws -> String {
        let name = text.trimmingCharacters(in: .whitespacesAndNewlines)
        guard (1...200).contains(name.count) else { throw ChatError(.invalidContent, "a name has 1 to 200 characters") }
        return name
    }

    static func password(_ text: String) throws { try PasswordPolicy.check(text) }
}
