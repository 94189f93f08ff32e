import ChatCore
import ChatTesting
import Foundation
import RedisClient
import Synchronization
import Testing

/// What a `StoreClient` does with answers that come after its timeout (real Redis; the
/// answers are handed to it as its reply pump would).
@Suite("StoreClient: answers after the timeout", .redisServer)
struct StoreClientLateReplyTests {
    /// A store client on a real Redis, answered only by the test (through `handleReply`).
    func withClient(_ gatewayID: String, timeout: Duration, lateLimit: Int = 100_000, _ body: @Sendable (StoreClient) async throws -> Void) async throws {
        let server = try RedisServer.required()
        let redis = RedisClient(configuration: server.configuration)
        try await withRunning(redis) { redis in
            try await redis.waitUntilReady()
            try await body(StoreClient(redis: redis, keys: uniqueKeys(gatewayID), gatewayID: gatewayID, timeout: timeout, lateLimit: lateLimit))
        }
    }

    func reply(_ request: String, result: String) -> [UInt8] {
        Array(#"{"request":"\#(request)","result":"\#(result.replacingOccurrences(of: "\"", with: "\\\""))"}"#.utf8)
    }

    @Test("a timed-out write: onReply gets unavailable; the store's later answer goes to onLateReply once; a write without a late handler drops its late answer; one answered in time never reaches the late handler")
    func lateAnswers() async throws {
        try await withClient("gw-late", timeout: .milliseconds(200)) { client in
            let answers = Mutex<[String]>([])
            let late = Mutex<[String]>([])
            try await client.submit(.send, user: "doctor@clinic.com", payload: "{}", request: "w1", onLateReply: { reply in
                late.withLock { $0.append(reply.result ?? "none") }
            }) { result in
                answers.withLock { $0.append(result.failureCode) }
            }
            try await client.submit(.send, user: "doctor@clinic.com", payload: "{}", request: "w2") { result in
                answers.withLock { $0.append("w2 " + result.failureCode) }
            }
            #expect(await eventually { answers.withLock { $0.count } == 2 })
            #expect(answers.withLock { $0 }.sorted() == ["unavailable", "w2 unavailable"])
            #expect(client.lateWrites == 1, "only the write with a late handler is followed")
            #expect(client.pendingRequests == 0, "a timed-out write no longer holds back a stopping gateway")

            client.handleReply(reply("w1", result: #"{"id":"m1"}"#))
            #expect(late.withLock { $0 } == [#"{"id":"m1"}"#])
            #expect(client.lateWrites == 0)
            client.handleReply(reply("w1", result: #"{"id":"m1"}"#))
            client.handleReply(reply("w2", result: #"{"id":"m2"}"#))
            #expect(late.withLock { $0 } == [#"{"id":"m1"}"#], "once, and only for the write that asked")
            #expect(answers.withLock { $0.count } == 2, "onReply ran exactly once each")

            // Answered in time: onReply has it, the late handler never runs, even past the timeout.
            try await client.submit(.send, user: "doctor@clinic.com", payload: "{}", request: "w3", onLateReply: { reply in
                late.withLock { $0.append("late " + (reply.result ?? "")) }
            }) { result in
                answers.withLock { $0.append((try? result.get()).flatMap(\.result) ?? "failed") }
            }
            client.handleReply(reply("w3", result: #"{"id":"m3"}"#))
            try await Task.sleep(for: .milliseconds(400))
            client.handleReply(reply("w3", result: #"{"id":"m3"}"#))
            #expect(answers.withLock { $0.last } == #"{"id":"m3"}"#)
            #expect(late.withLock { $0.count } == 1)
            #expect(client.lateWrites == 0)
        }
    }

    @Test("answers that come in one batch (one PUBLISH for several requests) each reach their request, in order; a malformed batch is dropped whole")
    func batchedAnswers() async throws {
        try await withClient("gw-batch", timeout: .seconds(5)) { client in
            let answers = Mutex<[String]>([])
            for n in 1...3 {
                try await client.submit(.send, user: "doctor@clinic.com", payload: "{}", request: "b\(n)") { result in
                    answers.withLock { $0.append("b\(n) " + ((try? result.get()).flatMap(\.result) ?? result.failureCode)) }
                }
            }
            client.handleReply(Array(#"{"batch":[{"request":"b1","result":"{}"}"#.utf8))
            #expect(answers.withLock { $0 }.isEmpty, "an unfinished batch answers nothing")
            let batch = PublishBatch.payload([reply("b2", result: #"{"id":"m2"}"#), reply("b1", result: #"{"id":"m1"}"#)].map { String(decoding: $0, as: UTF8.self) })
            client.handleReply(Array(batch.utf8))
            #expect(answers.withLock { $0 } == [#"b2 {"id":"m2"}"#, #"b1 {"id":"m1"}"#])
            client.handleReply(Array(PublishBatch.payload([String(decoding: reply("b3", result: "{}"), as: UTF8.self)]).utf8))
            #expect(answers.withLock { $0.last } == "b3 {}", "a batch of one is the answer alone")
            #expect(client.pendingRequests == 0)
        }
    }

    @Test("at most lateLimit timed-out writes are followed; when full the newer ones are not (the store answers the older first); an answered one makes room")
    func lateLimit() async throws {
        try await withClient("gw-limit", timeout: .milliseconds(100), lateLimit: 3) { client in
            let late = Mutex<[String]>([])
            let timedOut = Mutex(0)
            func submit(_ request: String) async throws {
                try await client.submit(.send, user: "doctor@clinic.com", payload: "{}", request: request, onLateReply: { _ in
                    late.withLock { $0.append(request) }
                }) { _ in timedOut.withLock { $0 += 1 } }
            }
            for n in 1...5 { try await submit("w\(n)") }
            #expect(await eventually { timedOut.withLock { $0 } == 5 })
            #expect(client.lateWrites == 3)
            for n in 1...5 { client.handleReply(reply("w\(n)", result: "{}")) }
            // The first three to time out (their timers run concurrently, so not necessarily w1...w3).
            #expect(late.withLock { $0 }.count == 3)
            #expect(Set(late.withLock { $0 }).isSubset(of: ["w1", "w2", "w3", "w4", "w5"]) && Set(late.withLock { $0 }).count == 3)
            #expect(client.lateWrites == 0)
            try await submit("w6")
            #expect(await eventually { timedOut.withLock { $0 } == 6 })
            client.handleReply(reply("w6", result: "{}"))
            #expect(late.withLock { $0 }.last == "w6", "answered ones made room")
        }
    }
}

extension Result where Success == StoreReply, Failure == any Error {
    /// The error code of a failure, or "ok".
    var failureCode: String {
        switch self {
        case .success: "ok"
        case .failure(let error): (error as? ChatError)?.code.rawValue ?? "\(error)"
        }
    }
}
