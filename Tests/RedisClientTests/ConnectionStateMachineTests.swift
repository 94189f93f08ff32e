import Testing
@testable import RedisClient

@Suite("Connection state machine")
struct ConnectionStateMachineTests {
    typealias Machine = ConnectionStateMachine<String, Int>

    @Test("before run() callers are refused with notRunning")
    func refusesBeforeRun() {
        var machine = Machine()
        guard case .fail(let error) = machine.acquire() else { Issue.record("expected a failure"); return }
        #expect(error.code == .notRunning)
    }

    @Test("callers wait for an attempt under way and get the connection when it succeeds")
    func waitersResumeOnConnect() {
        var machine = Machine()
        let r1 = machine.connectStarted()
        #expect(r1)
        guard case .wait = machine.acquire() else { Issue.record("expected wait"); return }
        let r2 = machine.addWaiter(1)
        #expect(r2)
        let r3 = machine.addWaiter(2)
        #expect(r3)
        guard case .resume(let waiters, let connection) = machine.connectSucceeded("c1") else { Issue.record("expected resume"); return }
        #expect(waiters == [1, 2])
        #expect(connection == "c1")
        guard case .use("c1") = machine.acquire() else { Issue.record("expected use"); return }
    }

    @Test("a failed attempt fails its waiters, and callers fail fast until the next attempt")
    func failedAttemptFailsFast() {
        var machine = Machine()
        _ = machine.connectStarted()
        _ = machine.addWaiter(7)
        let failed = machine.connectFailed("refused")
        #expect(failed == [7])
        guard case .fail(let error) = machine.acquire() else { Issue.record("expected fail"); return }
        #expect(error.code == .connecting)
        let r4 = machine.addWaiter(8)
        #expect(!r4)
        let r5 = machine.connectStarted()
        #expect(r5)
        guard case .wait = machine.acquire() else { Issue.record("expected wait"); return }
    }

    @Test("a lost connection makes new callers wait for the reconnection")
    func lostConnectionWaits() {
        var machine = Machine()
        _ = machine.connectStarted()
        _ = machine.connectSucceeded("c1")
        let r6 = machine.connectionClosed()
        #expect(r6)
        guard case .wait = machine.acquire() else { Issue.record("expected wait"); return }
    }

    @Test("shutdown fails waiters, closes the connection, and refuses everything after")
    func shutdown() {
        var machine = Machine()
        _ = machine.connectStarted()
        _ = machine.addWaiter(1)
        guard case .fail(let waiters) = machine.shutdown() else { Issue.record("expected waiters"); return }
        #expect(waiters == [1])
        let r7 = machine.connectStarted()
        #expect(!r7)
        guard case .close("late") = machine.connectSucceeded("late") else { Issue.record("a connection made after shutdown must be closed"); return }
        guard case .fail(let error) = machine.acquire() else { Issue.record("expected fail"); return }
        #expect(error.code == .shutdown)
        let r8 = machine.connectionClosed()
        #expect(!r8)

        var connected = Machine()
        _ = connected.connectStarted()
        _ = connected.connectSucceeded("c")
        guard case .close("c") = connected.shutdown() else { Issue.record("expected close"); return }
    }
}
