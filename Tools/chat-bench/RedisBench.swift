import ArgumentParser
import ChatCore
import ChatTesting
import Foundation
import RedisClient

/// `chat-bench redis`: the client's pipelined throughput next to `redis-benchmark`, same server, same run.
struct RedisBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "redis",
        abstract: "Pipelined SET and XADD from many tasks, side by side with redis-benchmark against the same server."
    )

    @Option(help: "Redis to measure; by default a fresh redis-server is started on a free port.")
    var url: String?

    @Option(help: "Commands per measurement.")
    var requests = 400_000

    @Option(help: "Concurrent tasks for the client.")
    var tasks = 64

    @Option(help: "Commands per pipeline, for the client and for redis-benchmark -P.")
    var pipeline = 16

    @Option(help: "redis-benchmark connections (-c).")
    var connections = 50

    @Option(help: "Rounds; each alternates redis-benchmark and the client, and medians are reported.")
    var rounds = 3

    @Flag(help: "Also measure, in the same rounds, a client without the reply timeout and TCP keepalive (what they cost).")
    var compareWithoutTimeouts = false

    func run() async throws {
        let server: RedisServer? = url == nil ? try await RedisServer.start() : nil
        defer { server?.stop() }
        let configuration = try server?.configuration ?? RedisConfiguration(url: url!)
        guard case .tcp(let host, let port) = configuration.endpoint else {
            throw ValidationError("redis-benchmark needs a TCP endpoint")
        }
        let redis = RedisClient(configuration: configuration)
        var untimedConfiguration = configuration
        untimedConfiguration.replyTimeout = nil
        untimedConfiguration.keepAlive = nil
        let untimed: RedisClient? = compareWithoutTimeouts ? RedisClient(configuration: untimedConfiguration) : nil
        let workloads: [Workload] = [
            Workload(name: "SET", benchmarkArguments: ["-t", "set"], command: ["SET", "key:__rand_int__", "xxx"]),
            Workload(name: "XADD", benchmarkArguments: ["XADD", "bench:stream", "MAXLEN", "~", "100000", "*", "field", "xxx"],
                     command: ["XADD", "bench:stream", "MAXLEN", "~", "100000", "*", "field", "xxx"]),
        ]

        var rows: [String] = []
        let client = Task { try await redis.run() }
        let untimedClient = Task { try await untimed?.run() }
        defer { client.cancel(); untimedClient.cancel() }
        do {
            try await redis.waitUntilReady()
            try await untimed?.waitUntilReady()
            for workload in workloads {
                var reference: [Double] = []
                var pipelined: [Double] = []
                var unpipelined: [Double] = []
                var untimedPipelined: [Double] = []
                var untimedUnpipelined: [Double] = []
                for round in 1...rounds {
                    reference.append(try redisBenchmark(host: host, port: port, workload: workload))
                    pipelined.append(try await clientThroughput(redis, workload: workload, batch: pipeline))
                    unpipelined.append(try await clientThroughput(redis, workload: workload, batch: 1))
                    log("\(workload.name) round \(round): redis-benchmark \(Int(reference.last!)) /s, client pipelined \(Int(pipelined.last!)) /s, client one-per-await \(Int(unpipelined.last!)) /s")
                    if let untimed {
                        untimedPipelined.append(try await clientThroughput(untimed, workload: workload, batch: pipeline))
                        untimedUnpipelined.append(try await clientThroughput(untimed, workload: workload, batch: 1))
                        log("\(workload.name) round \(round): without timeouts: pipelined \(Int(untimedPipelined.last!)) /s, one-per-await \(Int(untimedUnpipelined.last!)) /s")
                    }
                }
                let ref = median(reference)
                func row(_ load: String, _ values: [Double]) {
                    rows.append("| \(workload.name) | \(load) | \(format(median(values))) | \(String(format: "%.2f", median(values) / ref)) |")
                }
                rows.append("| \(workload.name) | redis-benchmark -P \(pipeline) -c \(connections) | \(format(ref)) | 1.00 |")
                row("RedisClient, \(tasks) tasks × pipeline(\(pipeline))", pipelined)
                row("RedisClient, \(tasks) tasks × one command per await", unpipelined)
                if compareWithoutTimeouts {
                    row("RedisClient without reply timeout and keepalive, pipeline(\(pipeline))", untimedPipelined)
                    row("RedisClient without reply timeout and keepalive, one command per await", untimedUnpipelined)
                }
            }
        }
        print("| command | load | median ops/s (\(rounds) rounds) | ratio to redis-benchmark |")
        print("|---|---|---:|---:|")
        rows.forEach { print($0) }
    }

    struct Workload {
        let name: String
        let benchmarkArguments: [String]
        let command: [String]
    }

    /// Runs redis-benchmark and reads its `requests per second`.
    func redisBenchmark(host: String, port: Int, workload: Workload) throws -> Double {
        let output = FileManager.default.temporaryDirectory.appendingPathComponent("redis-benchmark-\(UUID().uuidString.prefix(8)).txt")
        defer { try? FileManager.default.removeItem(at: output) }
        let process = try ChildProcess(
            executable: "/usr/bin/redis-benchmark",
            arguments: ["-h", host, "-p", String(port), "-P", String(pipeline), "-c", String(connections), "-n", String(requests), "-q"] + workload.benchmarkArguments,
            outputPath: output.path)
        guard process.waitBlocking() == 0 else { throw CommandFailure("redis-benchmark failed: \((try? String(contentsOf: output, encoding: .utf8)) ?? "")") }
        // Output ends with e.g. "SET: 912408.75 requests per second, p50=0.759 msec" after \r progress lines.
        let text = (try String(contentsOf: output, encoding: .utf8)).replacingOccurrences(of: "\r", with: "\n")
        guard let line = text.split(separator: "\n").last(where: { $0.contains(" requests per second") }),
              let number = line.components(separatedBy: " requests per second").first?.split(separator: " ").last,
              let value = Double(number) else {
            throw CommandFailure("could not read redis-benchmark output: \(text)")
        }
        return value
    }

    /// `tasks` tasks share `requests` commands, each sending `batch` commands per await.
    func clientThroughput(_ redis: RedisClient, workload: Workload, batch: Int) async throws -> Double {
        let perTask = requests / tasks
        let command = workload.command
        let start = ContinuousClock.now
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<tasks {
                group.addTask {
                    let commands = Array(repeating: command, count: batch)
                    var sent = 0
                    while sent < perTask {
                        if batch == 1 {
                            _ = try await redis.send(command)
                        } else {
                            let replies = try await redis.pipeline(commands)
                            if case .error(let message)? = replies.first { throw RedisServerError(message: message) }
                        }
                        sent += batch
                    }
                }
            }
            try await group.waitForAll()
        }
        let elapsed = ContinuousClock.now - start
        return Double(perTask * tasks) / (Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18)
    }
}

func median(_ values: [Double]) -> Double {
    let sorted = values.sorted()
    return sorted.count % 2 == 1 ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
}

func format(_ value: Double) -> String {
    let n = Int(value.rounded())
    var digits = String(n)
    var groups: [String] = []
    while digits.count > 3 {
        groups.insert(String(digits.suffix(3)), at: 0)
        digits.removeLast(3)
    }
    groups.insert(digits, at: 0)
    return groups.joined(separator: ",")
}

func log(_ line: String) {
    FileHandle.standardError.write(Data((line + "\n").utf8))
}
