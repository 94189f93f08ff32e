/// The messages one socket has been given, so that a replay never shows one twice: per
/// conversation, the seqs given, as ranges. Live messages arrive in seq order and a replay
/// is a run of them, so a conversation takes a handful of ranges however many messages it
/// had (the 2,000 message ids this replaces took about 130 KiB per busy socket).
struct GivenMessages: Sendable {
    /// Per conversation: disjoint ranges, in ascending order, none adjacent to the next.
    private(set) var ranges: [String: [ClosedRange<Int64>]] = [:]

    /// Ranges kept per conversation; beyond that the oldest go (a replay that far back could
    /// then show one of those messages again, which the client deduplicates by id).
    static let maximumRanges = 64

    /// Records that `seq` of `conversation` was given; false if it had been already.
    mutating func insert(_ seq: Int64, in conversation: String) -> Bool {
        guard var list = ranges[conversation], let last = list.last else {
            ranges[conversation] = [seq...seq]
            return true
        }
        // The common case: the next message of the conversation.
        if seq == last.upperBound + 1 {
            list[list.count - 1] = last.lowerBound...seq
            ranges[conversation] = list
            return true
        }
        // The first range whose upper bound is at or above seq.
        var low = 0, high = list.count
        while low < high {
            let middle = (low + high) / 2
            if list[middle].upperBound < seq { low = middle + 1 } else { high = middle }
        }
        if low < list.count, list[low].contains(seq) { return false }
        let joinsBelow = low > 0 && list[low - 1].upperBound + 1 == seq
        let joinsAbove = low < list.count && list[low].lowerBound - 1 == seq
        switch (joinsBelow, joinsAbove) {
        case (true, true):
            list[low - 1] = list[low - 1].lowerBound...list[low].upperBound
            list.remove(at: low)
        case (true, false):
            list[low - 1] = list[low - 1].lowerBound...seq
        case (false, true):
            list[low] = seq...list[low].upperBound
        case (false, false):
            list.insert(seq...seq, at: low)
            if list.count > Self.maximumRanges { list.removeFirst(list.count - Self.maximumRanges) }
        }
        ranges[conversation] = list
        return true
    }
}
