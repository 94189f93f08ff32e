import ChatCore
import ChatTesting
import Foundation
@testable import Gateway
import Synchronization
import Testing

/// The gate every CONNECT and `sync` passes (CHAT_ADMISSION_LIMIT): alone, and in a
/// gateway with a real WebSocket client, Redis and SQLite.
@Suite("Admission of CONNECTs and syncs", .redisServer)
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

    @Test("twenty sockets connecting at once with a since (a CONNECT and its sync each) through a gate of two: all connected and replayed, never more than two at once")
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
}
