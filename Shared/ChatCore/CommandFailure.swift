/// A command-line tool's failure while it runs (Redis unreachable, the store refused, a
/// benchmark's stack not answering), as opposed to bad arguments: ArgumentParser prints
/// `Error: ` and this description and exits 1, without the usage it prints after a
/// `ValidationError`, which said nothing about what went wrong.
public struct CommandFailure: Error, CustomStringConvertible, Sendable {
    public let description: String

    public init(_ description: String) {
        self.description = description
    }
}
