import Synchronization

/// A Lua script run with `EVALSHA`, loaded once per server and re-sent with `EVAL` after `NOSCRIPT`.
///
/// A restarted or flushed Redis forgets scripts; the first call after that falls back
/// to `EVAL`, which also caches the script again.
public final class RedisScript: Sendable {
    /// The Lua source.
    public let source: String
    /// The SHA1 Redis knows it by, once loaded.
    private let sha = Mutex<String?>(nil)

    public init(_ source: String) { self.source = source }

    fileprivate var knownSHA: String? { sha.withLock { $0 } }
    fileprivate func remember(_ value: String) { sha.withLock { $0 = value } }
}

extension RedisClient {
    /// `SCRIPT LOAD source`: the script's SHA1.
    @discardableResult
    public func scriptLoad(_ script: RedisScript) async throws -> String {
        let reply = try await send(["SCRIPT", "LOAD", script.source])
        guard let sha = reply.string else { throw RedisUnexpectedReplyError(command: "SCRIPT", reply: reply) }
        script.remember(sha)
        return sha
    }

    /// Runs `script` with `EVALSHA`, loading it first if needed and falling back to `EVAL` on `NOSCRIPT`.
    @discardableResult
    public func run(_ script: RedisScript, keys: [String] = [], arguments: [String] = []) async throws -> RESPValue {
        let tail = [String(keys.count)] + keys + arguments
        let sha: String
        if let known = script.knownSHA { sha = known } else { sha = try await scriptLoad(script) }
        do {
            return try await send(["EVALSHA", sha] + tail)
        } catch let error as RedisServerError where error.prefix == "NOSCRIPT" {
            return try await send(["EVAL", script.source] + tail)
        }
    }
}
