import ChatTesting
import Foundation
import Testing

/// The built executables sit next to the test bundle in the build folder.
func executablePath(_ name: String) throws -> String {
    let bundle = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")
    let path = URL(fileURLWithPath: bundle).deletingLastPathComponent().appendingPathComponent(name).path
    try #require(FileManager.default.isExecutableFile(atPath: path), "\(name) is not built at \(path); run `swift build` first")
    return path
}

/// Runs an executable with `environment` added, its output in a temporary file. The admin
/// endpoints of the services without HTTP go to a free port unless `environment` says otherwise.
func launch(_ name: String, environment: [String: String]) throws -> (ChildProcess, URL) {
    let log = FileManager.default.temporaryDirectory.appendingPathComponent("\(name)-\(UUID().uuidString.prefix(8)).log")
    let admin = name == "chat-gateway" ? [:] : ["CHAT_ADMIN_PORT": "0"]
    let env = ProcessInfo.processInfo.environment.merging(admin) { $1 }.merging(environment) { $1 }
    return (try ChildProcess(executable: try executablePath(name), arguments: [], environment: env, outputPath: log.path), log)
}

func contents(_ url: URL) -> String { (try? String(contentsOf: url, encoding: .utf8)) ?? "" }

@Suite("Executables", .redisServer)
struct ExecutableTests {
    static let services = ["chat-gateway", "chat-messages", "chat-presence", "chat-retention"]

    @Test("each starts against Redis, logs that it is ready, and exits 0 within 5 s of SIGTERM", arguments: services)
    func readyAndGracefulStop(service: String) async throws {
        let server = try RedisServer.required()
        let (process, log) = try launch(service, environment: [
            "CHAT_REDIS_URL": server.url, "CHAT_REDIS_PREFIX": uniqueKeys(service).prefix, "CHAT_HTTP_PORT": "0",
            "CHAT_JWT_SECRET": String(repeating: "s", count: 32),
            "CHAT_DB_PATH": FileManager.default.temporaryDirectory.appendingPathComponent("\(service)-\(UUID().uuidString.prefix(8)).sqlite").path,
        ])
        defer { process.signal(SIGKILL); try? FileManager.default.removeItem(at: log) }
        let ready = await eventually(timeout: .seconds(20)) { contents(log).contains("] ready") }
        #expect(ready, "\(service) output: \(contents(log))")
        process.signal(SIGTERM)
        let status = await process.wait(timeout: .seconds(5))
        #expect(status == 0, "\(service) output: \(contents(log))")
    }

    @Test("a bad CHAT_REDIS_URL or duration stops it with one line naming the variable", arguments: services)
    func badConfiguration(service: String) async throws {
        for (variable, value) in [("CHAT_REDIS_URL", "http://nowhere"), ("CHAT_PRESENCE_TTL", "soon")] {
            let (process, log) = try launch(service, environment: [variable: value, "CHAT_JWT_SECRET": String(repeating: "s", count: 32)])
            defer { try? FileManager.default.removeItem(at: log) }
            let status = await process.wait(timeout: .seconds(10))
            #expect(status == 2)
            let lines = contents(log).split(separator: "\n")
            #expect(lines.count == 1, "\(lines)")
            #expect(lines.first?.hasPrefix("\(service): \(variable): expected ") == true, "\(lines)")
        }
    }
}
