import ArgumentParser

@main
struct ChatBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chat-bench",
        abstract: "Measures the clinic chat system; results go in BENCHMARKS.md.",
        subcommands: [RedisBench.self, PurgeBench.self]
    )
}
