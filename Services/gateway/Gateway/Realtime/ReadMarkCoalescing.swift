/// A socket's `mark_conversation_read`s: one per conversation at the store at a time. Marks
/// that come while one is there wait, merged into one (the highest seq; each of them is
/// answered with its answer), and go when it is answered. Every mark is a store write and
/// receipts (to every member until the seventeenth round): a client that marks every
/// arriving message (the web client did until 2026-12-03, and a tab opened before still
/// may) then costs the store one mark per round trip, not one per message (BENCHMARKS.md,
/// sixteenth round).
struct ReadMarkCoalescing: Sendable {
    /// What goes to the store: up to which seq, and the marks (their acknowledgement ids,
    /// nil for none) it answers.
    struct Mark: Equatable, Sendable {
        var upToSeq: Int64
        var ackIDs: [Int?]
    }

    private var inFlight: Set<String> = []
    private var waiting: [String: Mark] = [:]

    /// A mark came: the one to send now, or nil when it waits for the one in flight.
    mutating func offer(_ conversation: String, upToSeq: Int64, ackID: Int?) -> Mark? {
        guard inFlight.contains(conversation) else {
            inFlight.insert(conversation)
            return Mark(upToSeq: upToSeq, ackIDs: [ackID])
        }
        var merged = waiting[conversation] ?? Mark(upToSeq: upToSeq, ackIDs: [])
        merged.upToSeq = max(merged.upToSeq, upToSeq)
        merged.ackIDs.append(ackID)
        waiting[conversation] = merged
        return nil
    }

    /// The conversation's mark in flight was answered: the waiting one to send next (it is
    /// in flight then), or nil (nothing is in flight for the conversation any more).
    mutating func answered(_ conversation: String) -> Mark? {
        guard let next = waiting.removeValue(forKey: conversation) else {
            inFlight.remove(conversation)
            return nil
        }
        return next
    }

    /// Conversations with a mark in flight.
    var inFlightCount: Int { inFlight.count }
}
