import ArgumentParser

@main
struct ChatBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chat-bench",
        abstract: "Measures the clinic chat system; results go in BENCHMARKS.md.",
        subcommands: [PairsBench.self, GroupBench.self, IdleBench.self, ChurnBench.self, HistoryBench.self, SeedBench.self, PurgeBench.self, StoreBench.self, RedisBench.self, JSONBench.self]
    )
}
