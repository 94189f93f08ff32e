import Testing

extension RedisServer {
    /// The server of the innermost suite marked `.redisServer`.
    @TaskLocal public static var current: RedisServer?

    /// The current suite's server; fails the test clearly when the suite lacks the trait.
    public static func required(sourceLocation: SourceLocation = #_sourceLocation) throws -> RedisServer {
        try #require(current, "mark the suite with @Suite(.redisServer)", sourceLocation: sourceLocation)
    }
}

/// Starts one real `redis-server` for a suite (or a single test), and stops it after.
public struct RedisServerTrait: SuiteTrait, TestTrait, TestScoping {
    let arguments: [String]

    public var isRecursive: Bool { false }

    public func scopeProvider(for test: Test, testCase: Test.Case?) -> Self? {
        test.isSuite || testCase == nil ? self : nil
    }

    public func provideScope(for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void) async throws {
        let server = try await RedisServer.start(arguments: arguments)
        defer { server.stop() }
        try await RedisServer.$current.withValue(server) {
            try await function()
        }
    }
}

extension Trait where Self == RedisServerTrait {
    /// `@Suite(.redisServer)`: one fresh redis-server for every test in the suite.
    public static var redisServer: Self { RedisServerTrait(arguments: []) }

    /// A fresh redis-server started with extra arguments (`["--appendonly", "yes"]`).
    public static func redisServer(arguments: [String]) -> Self { RedisServerTrait(arguments: arguments) }
}
