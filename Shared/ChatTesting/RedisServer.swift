import Foundation
import RedisClient

/// A real `redis-server` on a free loopback port with its own temporary directory.
///
/// Tests and the bench start one, use it, and stop it; nothing is shared with any
/// other Redis on the machine. Persistence is off unless `arguments` turn it on.
public final class RedisServer: @unchecked Sendable {
    /// The port it listens on (kept across ``restart()``).
    public let port: Int
    /// Its working directory, removed by ``stop()``.
    public let directory: URL
    private let extraArguments: [String]
    private let lock = NSLock()
    private var process: ChildProcess?

    /// `redis://127.0.0.1:<port>`.
    public var url: String { "redis://127.0.0.1:\(port)" }
    /// A client configuration for this server.
    public var configuration: RedisConfiguration { RedisConfiguration(endpoint: .tcp(host: "127.0.0.1", port: port)) }

    /// Starts a server (on `port`, or a free one) and returns once it answers `PING`.
    public static func start(port: Int? = nil, arguments: [String] = []) async throws -> RedisServer {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("chat-redis-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        // A free port can be taken by someone else before redis-server binds it: try another.
        for attempt in 1...5 {
            let server = RedisServer(port: try port ?? freePort(), directory: directory, arguments: arguments)
            do {
                try await server.launch()
                return server
            } catch let error as RedisServerLaunchError where port == nil && attempt < 5 && error.exited {
                continue
            }
        }
        throw RedisServerLaunchError(message: "redis-server did not start")
    }

    private init(port: Int, directory: URL, arguments: [String]) {
        self.port = port
        self.directory = directory
        self.extraArguments = arguments
    }

    deinit {
        process?.signal(SIGKILL)
    }

    private func launch() async throws {
        let process = try ChildProcess(executable: try Self.executable().path, arguments: [
            "--port", String(port), "--bind", "127.0.0.1", "--dir", directory.path,
            "--save", "", "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning",
            "--logfile", directory.appendingPathComponent("redis.log").path,
        ] + extraArguments)
        lock.withLock { self.process = process }
        let deadline = Date().addingTimeInterval(10)
        while !Self.answersPing(port: port) {
            let running = process.isRunning
            guard running, Date() < deadline else {
                let log = (try? String(contentsOf: directory.appendingPathComponent("redis.log"), encoding: .utf8)) ?? ""
                process.signal(SIGKILL)
                throw RedisServerLaunchError(message: "redis-server on port \(port) did not start: \(log)", exited: !running)
            }
            try await Task.sleep(for: .milliseconds(10))
        }
    }

    /// Stops the server (SIGTERM, then waits for it to exit); the port and directory are kept for ``restart()``.
    public func shutdown() {
        let process = lock.withLock { () -> ChildProcess? in defer { self.process = nil }; return self.process }
        guard let process, process.isRunning else { return }
        process.signal(SIGTERM)
        process.waitBlocking()
    }

    /// Kills the server with SIGKILL, as a crash would.
    public func kill() {
        let process = lock.withLock { () -> ChildProcess? in defer { self.process = nil }; return self.process }
        guard let process, process.isRunning else { return }
        process.signal(SIGKILL)
        process.waitBlocking()
    }

    /// Stops the server with SIGSTOP: connections stay open and its kernel still
    /// acknowledges what is sent, but nothing is answered (a hung server).
    public func pause() {
        lock.withLock { process }?.signal(SIGSTOP)
    }

    /// Lets a paused server go on (SIGCONT).
    public func resume() {
        lock.withLock { process }?.signal(SIGCONT)
    }

    /// Starts the server again on the same port and directory.
    public func restart() async throws {
        try await launch()
    }

    /// Stops the server and removes its directory.
    public func stop() {
        shutdown()
        try? FileManager.default.removeItem(at: directory)
    }

    /// Runs `body` with a client connected to this server, then stops the client.
    public func withClient<T: Sendable>(clientName: String? = nil, _ body: @Sendable (RedisClient) async throws -> T) async throws -> T {
        var configuration = configuration
        configuration.clientName = clientName
        return try await withRunning(RedisClient(configuration: configuration)) { client in
            try await client.waitUntilReady(timeout: .seconds(10))
            return try await body(client)
        }
    }

    private static func executable() throws -> URL {
        let path = (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":").map(String.init)
        for directory in path + ["/usr/bin", "/usr/local/bin"] {
            let candidate = URL(fileURLWithPath: directory).appendingPathComponent("redis-server")
            if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
        }
        throw RedisServerLaunchError(message: "redis-server not found on PATH (apt-get install redis-server, or run `make test`)")
    }

    /// Asks the kernel for a free TCP port on 127.0.0.1.
    public static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw RedisServerLaunchError(message: "socket() failed") }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = 0
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa -> Bool in
                bind(fd, sa, length) == 0 && getsockname(fd, sa, &length) == 0
            }
        }
        guard bound else { throw RedisServerLaunchError(message: "bind() failed") }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    private static func answersPing(port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
        guard connected else { return false }
        let ping = Array("PING\r\n".utf8)
        guard write(fd, ping, ping.count) == ping.count else { return false }
        var buffer = [UInt8](repeating: 0, count: 64)
        let n = read(fd, &buffer, buffer.count)
        let reply = n > 0 ? String(decoding: buffer[0..<n], as: UTF8.self) : ""
        return reply.hasPrefix("+PONG") || reply.hasPrefix("-NOAUTH")
    }
}

/// `redis-server` could not be started.
public struct RedisServerLaunchError: Error, CustomStringConvertible {
    public let message: String
    /// The server exited at once (typically: the port was taken), rather than never answering.
    public var exited = false

    public init(message: String, exited: Bool = false) {
        self.message = message
        self.exited = exited
    }

    public var description: String { message }
}
