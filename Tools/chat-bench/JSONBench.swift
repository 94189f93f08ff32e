import ArgumentParser
import ChatCore
import Foundation

/// `chat-bench json`: what reading a client's event data costs, `JSONValue(parsing:)` (one
/// pass over the bytes) next to JSONDecoder (what it replaced), in one process, alternated.
struct JSONBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "json",
        abstract: "Parses typical Socket.IO event data (CONNECT, sync, typing, read marks) with JSONValue(parsing:) and with JSONDecoder, alternated."
    )

    @Option(help: "Parses of each text per measurement.")
    var iterations = 20_000

    @Option(help: "Rounds; each measures both ways, and medians are reported.")
    var rounds = 5

    /// What clients send most, as the data after the Socket.IO header.
    static let texts = [
        #"{"token":"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJkb2N0b3JAY2xpbmljLmNvbSIsImV4cCI6MTc2NDc5MDAwMH0.c2lnbmF0dXJl","since":{"0192f0a1-7c3e-7b51-9d2a-3f4e5a6b7c8d":12,"0192f0a1-7c3e-7b51-9d2a-3f4e5a6b7c8e":40},"receipts_after":3452}"#,
        #"["sync",{"since":{"0192f0a1-7c3e-7b51-9d2a-3f4e5a6b7c8d":12,"0192f0a1-7c3e-7b51-9d2a-3f4e5a6b7c8e":40,"0192f0a1-7c3e-7b51-9d2a-3f4e5a6b7c8f":0},"receipts_after":3452}]"#,
        #"["user_typing",{"conversation_id":"0192f0a1-7c3e-7b51-9d2a-3f4e5a6b7c8d","is_typing":true}]"#,
        #"["mark_conversation_read",{"conversation_id":"0192f0a1-7c3e-7b51-9d2a-3f4e5a6b7c8d","up_to_seq":41}]"#,
    ]

    func run() throws {
        for text in Self.texts where JSONValue(parsing: text) != JSONValue.decoded(text) {
            throw CommandFailure("the two ways read \(text) differently")
        }
        var onePass: [Double] = []
        var decoder: [Double] = []
        for round in 1...rounds {
            onePass.append(measure { JSONValue(parsing: $0) })
            decoder.append(measure { JSONValue.decoded($0) })
            print("round \(round): one pass \(String(format: "%.2f", onePass.last!)) µs, JSONDecoder \(String(format: "%.2f", decoder.last!)) µs per text")
        }
        let (fast, slow) = (median(onePass), median(decoder))
        print("| way | µs per text (median of \(rounds)) |")
        print("|---|---|")
        print("| JSONDecoder | \(String(format: "%.2f", slow)) |")
        print("| JSONValue(parsing:), one pass | \(String(format: "%.2f", fast)) (\(String(format: "%.1f", slow / fast))× faster) |")
    }

    /// Microseconds per text, over `iterations` parses of each.
    private func measure(_ parse: (String) -> JSONValue?) -> Double {
        var read = 0
        let start = ContinuousClock.now
        for _ in 0..<iterations {
            for text in Self.texts where parse(text) != nil { read += 1 }
        }
        precondition(read == iterations * Self.texts.count)
        return ms(ContinuousClock.now - start) * 1000 / Double(read)
    }
}
