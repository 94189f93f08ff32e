/// Several events (or store answers) for one pub/sub channel in one PUBLISH:
/// `{"batch":[e1,e2,...]}`, each element exactly what would have been published alone, in
/// order. The messages service announces a batch of commands with one PUBLISH per channel
/// this way (a group's read marks of one batch reach each member as one message instead of
/// one per mark); gateways and other store clients take the elements one by one.
public enum PublishBatch {
    /// `parts` (each a JSON object) as one payload; a single part is returned as it is, so
    /// a channel with one event gets the same bytes as before batches existed.
    public static func payload(_ parts: [String]) -> String {
        guard parts.count != 1 else { return parts[0] }
        var out = "{\"batch\":["
        out.reserveCapacity(parts.reduce(12) { $0 + $1.utf8.count + 1 })
        for (index, part) in parts.enumerated() {
            if index > 0 { out += "," }
            out += part
        }
        out += "]}"
        return out
    }

    private static let prefix = Array("{\"batch\":[".utf8)

    /// The elements of a batch payload, in order; nil when `payload` is not a batch (an
    /// event or answer published alone), or is not valid JSON.
    public static func parts(_ payload: [UInt8]) -> [[UInt8]]? {
        guard payload.starts(with: prefix), let top = JSONScan(payload), top.endsAt(payload.count), top.members.count == 1,
              let list = top.range("batch"), let elements = JSONScan.elements(payload, in: list) else { return nil }
        return elements.map { Array(payload[$0]) }
    }
}
