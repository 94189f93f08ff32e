import Foundation
import Synchronization

/// Hands the system back the memory the allocator keeps after a burst of work.
///
/// glibc's malloc keeps what a process freed for its next allocations and returns to the
/// system only what is free at the top of a heap: after thousands of short-lived tasks (a
/// gateway's CONNECTs waiting their turn while a herd of sockets comes back), tens of
/// megabytes stay resident, free but scattered between what is still in use.
/// `malloc_trim(0)` gives back every free page of every arena. It takes the arenas' locks
/// while it walks them, so it runs on a Dispatch thread (off the event loops and Swift's
/// cooperative pool), once per burst, and at most once per `interval`: requests made
/// while one runs or rests are folded into one more run after it.
public final class MemoryRelease: Sendable {
    private typealias Trim = @convention(c) (Int) -> Int32

    /// glibc's `malloc_trim`, looked up at run time (Swift's Glibc module does not declare
    /// it; another C library may not have it, and then nothing is released).
    private static let trim: Trim? = {
        guard let handle = dlopen(nil, RTLD_NOW), let symbol = dlsym(handle, "malloc_trim") else { return nil }
        return unsafeBitCast(symbol, to: Trim.self)
    }()

    /// Whether this process's C library can give memory back.
    public static var isAvailable: Bool { trim != nil }

    /// Gives back the allocator's free pages now; the resident bytes that went (0 if none,
    /// or if this is not glibc). Blocks the calling thread for as long as the walk takes.
    @discardableResult
    public static func releaseNow() -> Int {
        guard let trim else { return 0 }
        let before = ProcessStatus.read()?.residentBytes ?? 0
        _ = trim(0)
        let after = ProcessStatus.read()?.residentBytes ?? 0
        return max(0, before - after)
    }

    /// What one release did.
    public struct Released: Sendable {
        /// Resident bytes given back.
        public var bytes: Int
        /// How long the release took.
        public var took: Duration
    }

    private struct State {
        var running = false
        var again = false
    }

    private let state = Mutex(State())
    private let interval: Duration
    private let release: @Sendable () -> Int
    private let released: @Sendable (Released) -> Void

    /// - Parameters:
    ///   - interval: the least time between two releases.
    ///   - release: what a release does (``releaseNow()``; tests count calls instead).
    ///   - released: told after each release (a log line, a metric).
    public init(interval: Duration = .seconds(10), release: @escaping @Sendable () -> Int = { MemoryRelease.releaseNow() },
                released: @escaping @Sendable (Released) -> Void = { _ in }) {
        self.interval = interval
        self.release = release
        self.released = released
    }

    /// Asks for a release: now if none ran within `interval`, else once that has passed.
    public func request() {
        let start = state.withLock { s -> Bool in
            if s.running {
                s.again = true
                return false
            }
            s.running = true
            return true
        }
        if start { Task.detached { await self.run() } }
    }

    private func run() async {
        while true {
            // On a thread of Dispatch's, not one of Swift's cooperative pool (as many
            // threads as cores, which the gateway's tasks need).
            let done = await withCheckedContinuation { (finished: CheckedContinuation<Released, Never>) in
                DispatchQueue.global(qos: .utility).async { [release] in
                    let started = ContinuousClock.now
                    let bytes = release()
                    finished.resume(returning: Released(bytes: bytes, took: ContinuousClock.now - started))
                }
            }
            released(done)
            try? await Task.sleep(for: interval)
            let again = state.withLock { s -> Bool in
                if s.again {
                    s.again = false
                    return true
                }
                s.running = false
                return false
            }
            if !again { return }
        }
    }
}
