import ChatCore
import ChatTesting
import Foundation
import RedisClient
@testable import Gateway
import Synchronization
import Testing

/// The gate every CONNECT passes (CHAT_ADMISSION_LIMIT): alone, and in a gateway with a
/// real WebSocket client, Redis and SQLite.
@Suite("Admission of CONNECTs", .redisServer)
struct AdmissionGateTests {
    final class Record: Sendable {
        let entered = Mutex<[Int]>([])
        let inside = Atomic(0)
        let mostInside = Atomic(0)
        let open = Atomic(false)
    }

    @Test("at most the limit hold it at once; the others wait and go in, in the order they came, as holders leave")
    func limitAndOrder() async throws {
        let gate = AdmissionGate(limit: 3)
        let record = Record()
        @Sendable func hold(_ index: Int) async {
            await gate.pass {
                record.entered.withLock { $0.append(index) }
                let now = record.inside.add(1, ordering: .relaxed).newValue
                record.mostInside.max(now, ordering: .relaxed)
                while !record.open.load(ordering: .relaxed) { try? await Task.sleep(for: .milliseconds(1)) }
                record.inside.subtract(1, ordering: .relaxed)
            }
        }
        var tasks: [Task<Void, Never>] = []
        for index in 0..<3 { tasks.append(Task { await hold(index) }) }
        #expect(await eventually { gate.peak == 3 })
        for index in 3..<10 {
            tasks.append(Task { await hold(index) })
            #expect(await eventually { gate.waitingCount == index - 2 })
        }
        #expect(record.entered.withLock { $0.count } == 3)
        record.open.store(true, ordering: .relaxed)
        for task in tasks { await task.value }
        #expect(record.mostInside.load(ordering: .relaxed) == 3)
        #expect(gate.peak == 3)
        #expect(gate.waitingCount == 0)
        #expect(Set(record.entered.withLock { $0 }) == Set(0..<10))

        // With one place, each goes in only after the one before left: exactly the order they came in.
        let single = AdmissionGate(limit: 1)
        let first = Record()
        let holder = Task {
            await single.pass { while !first.open.load(ordering: .relaxed) { try? await Task.sleep(for: .milliseconds(1)) } }
        }
        #expect(await eventually { single.peak == 1 })
        var queued: [Task<Void, Never>] = []
        for index in 0..<8 {
            queued.append(Task { await single.pass { first.entered.withLock { $0.append(index) } } })
            #expect(await eventually { single.waitingCount == index + 1 })
        }
        first.open.store(true, ordering: .relaxed)
        await holder.value
        for task in queued { await task.value }
        #expect(first.entered.withLock { $0 } == Array(0..<8))
        #expect(single.peak == 1)
    }

    @Test("once nobody waits after at least the burst's number waited, afterBurst is told how many, once; fewer wait and it is not told, but they count towards the next")
    func afterBurst() async throws {
        let told = Mutex<[Int]>([])
        let gate = AdmissionGate(limit: 1, burst: 5) { count in told.withLock { $0.append(count) } }
        // One holds the place while `waiters` queue behind it; then all go through.
        func burst(_ waiters: Int) async {
            let entered = Atomic(false)
            let open = Atomic(false)
            let holder = Task {
                await gate.pass {
                    entered.store(true, ordering: .relaxed)
                    while !open.load(ordering: .relaxed) { try? await Task.sleep(for: .milliseconds(1)) }
                }
            }
            #expect(await eventually { entered.load(ordering: .relaxed) })
            var queued: [Task<Void, Never>] = []
            for index in 0..<waiters {
                queued.append(Task { await gate.pass {} })
                #expect(await eventually { gate.waitingCount == index + 1 })
            }
            open.store(true, ordering: .relaxed)
            await holder.value
            for task in queued { await task.value }
        }
        await burst(4)
        #expect(told.withLock { $0.isEmpty })
        await burst(3)
        #expect(told.withLock { $0 } == [7])
        // Nobody waiting: going through never counts.
        for _ in 0..<10 { await gate.pass {} }
        #expect(told.withLock { $0.count } == 1)
        await burst(5)
        #expect(told.withLock { $0 } == [7, 5])
        #expect(gate.waitingCount == 0)
    }

    @Test("a gateway gives memory back after a burst of CONNECTs, and after as many sockets left (CHAT_RELEASE_MEMORY_AFTER), and counts it in /metrics")
    func releasesMemoryAfterBurst() async throws {
        try await withRealtimeStack(environment: ["CHAT_ADMISSION_LIMIT": "1", "CHAT_RELEASE_MEMORY_AFTER": "3"]) { stack in
            @Sendable func releases() async throws -> Int? {
                let (status, body) = try await stack.httpRaw("GET", "/metrics")
                #expect(status == 200)
                let line = String(decoding: body, as: UTF8.self).split(separator: "\n").first { $0.hasPrefix("chat_gateway_memory_releases_total ") }
                return line.flatMap { Int(Double($0.split(separator: " ").last ?? "") ?? -1) }
            }
            #expect(try await releases() == 0)
            // The test holds the gateway's one place while three sockets' CONNECTs queue.
            let gate = stack.services[0].realtime.admission
            let open = Atomic(false)
            let holder = Task { await gate.pass { while !open.load(ordering: .relaxed) { try? await Task.sleep(for: .milliseconds(1)) } } }
            #expect(await eventually { gate.peak == 1 })
            let connecting = (0..<3).map { index in Task { try await stack.connect(["admin@clinic.com", "doctor@clinic.com", "admin@clinic.com"][index]) } }
            #expect(await eventually { gate.waitingCount == 3 })
            #expect(try await releases() == 0)
            open.store(true, ordering: .relaxed)
            await holder.value
            var sockets: [SocketTestClient] = []
            for task in connecting { sockets.append(try await task.value) }
            #expect(await eventually { (try? await releases()) == 1 })
            #expect(MemoryRelease.isAvailable)
            // Three sockets leaving ask for another; it comes once the first's 10 s rest is over.
            for socket in sockets { await socket.close() }
            #expect(await eventually { stack.services[0].realtime.userCount == 0 })
            #expect(try await releases() == 1)
            #expect(await eventually(timeout: .seconds(20)) { (try? await releases()) == 2 })
        }
    }

    @Test("twenty sockets connecting at once with a since through a gate of two: all connected and replayed, never more than two CONNECTs at once")
    func connectsTakeTurns() async throws {
        try await withRealtimeStack(environment: ["CHAT_ADMISSION_LIMIT": "2"]) { stack in
            let conversation = try stack.store.openDirectConversation("doctor@clinic.com", "admin@clinic.com").id
            let sender = try await stack.connect("doctor@clinic.com")
            _ = try await sender.call("send_message", .object(["receiver_email": .string("admin@clinic.com"), "content": .string("waiting for you"),
                                                               "client_id": .string("a1")]), ack: 1)
            let sockets = try await withThrowingTaskGroup(of: SocketTestClient.self) { group in
                for _ in 0..<20 { group.addTask { try await stack.connect("admin@clinic.com", since: [conversation: 0]) } }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(sockets.count == 20)
            for socket in sockets { #expect(try await socket.event("receive_message")["content"] == .string("waiting for you")) }
            let gate = stack.services[0].realtime.admission
            #expect((1...2).contains(gate.peak))
            #expect(gate.waitingCount == 0)
            for socket in sockets + [sender] { await socket.close() }
        }
    }

    @Test("a replay waiting on a store that does not answer holds no turn: through a gate of one, a second CONNECT is answered while the first one's replay still waits, which then fails as unavailable")
    func replayHoldsNoTurn() async throws {
        try await withRealtimeStack(storeRunning: false, storeTimeout: .seconds(3), environment: ["CHAT_ADMISSION_LIMIT": "1"]) { stack in
            // A store that takes queries and never answers (hung, or far behind).
            let silent = RedisSubscriber(configuration: try RedisConfiguration(url: stack.redisURL))
            let listening = Task { try await silent.run() }
            defer { listening.cancel() }
            try await silent.subscribe([stack.keys.storeQueries])
            let first = try await stack.connect("admin@clinic.com", since: ["c-1": 0])
            let second = try await stack.connect("doctor@clinic.com", since: ["c-2": 0])
            // The first replay is still waiting for the store (3 s) when the second socket is in.
            #expect(first.drain("error").isEmpty)
            let failed = try await first.event("error", timeout: .seconds(10))
            #expect(failed["code"] == .string("unavailable"))
            #expect(try await second.event("error", timeout: .seconds(10))["code"] == .string("unavailable"))
            #expect(stack.services[0].realtime.admission.peak == 1)
            for socket in [first, second] { await socket.close() }
        }
    }
}
