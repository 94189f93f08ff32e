import ChatCore
import ChatTesting
import Foundation
import Synchronization
import Testing

@Suite("Giving memory back to the system")
struct MemoryReleaseTests {
    @Test("free memory scattered between blocks still in use is resident until released, and released it is not")
    func releasesScatteredFreeMemory() throws {
        try #require(MemoryRelease.isAvailable, "this test runs on glibc (Debian), where malloc_trim exists")
        // 64 MiB in 4 KiB blocks (below mmap's threshold: they come from the heap), every
        // block written; then all freed but every 32nd, which keeps the heap from shrinking
        // at its top, as the long-lived objects among a burst's short-lived tasks do.
        let blocks = (0..<16_384).map { _ -> UnsafeMutableRawPointer in
            let block = UnsafeMutableRawPointer.allocate(byteCount: 4096, alignment: 16)
            block.initializeMemory(as: UInt8.self, repeating: 7, count: 4096)
            return block
        }
        var kept: [UnsafeMutableRawPointer] = []
        for (index, block) in blocks.enumerated() {
            if index % 32 == 0 { kept.append(block) } else { block.deallocate() }
        }
        defer { for block in kept { block.deallocate() } }
        let released = MemoryRelease.releaseNow()
        // About 62 MiB was free; the rest of the process may move a little meanwhile.
        #expect(released > 32 << 20, "released \(released) bytes")
    }

    @Test("one release at a time, at most one per interval; requests in between are folded into one more after it")
    func foldsRequests() async throws {
        let runs = Atomic(0)
        let told = Mutex<[Int]>([])
        let release = MemoryRelease(interval: .milliseconds(1500), release: { runs.add(1, ordering: .relaxed).newValue * 10 },
                                    released: { released in told.withLock { $0.append(released.bytes) } })
        release.request()
        #expect(await eventually { runs.load(ordering: .relaxed) == 1 })
        for _ in 0..<5 { release.request() }
        // The first rests for its interval: the five wait, then run once.
        #expect(runs.load(ordering: .relaxed) == 1)
        #expect(await eventually { runs.load(ordering: .relaxed) == 2 })
        try await Task.sleep(for: .milliseconds(2500))
        #expect(runs.load(ordering: .relaxed) == 2)
        // Rested with nothing asked: the next request runs at once.
        release.request()
        #expect(await eventually { runs.load(ordering: .relaxed) == 3 })
        #expect(await eventually { told.withLock { $0 } == [10, 20, 30] })
    }
}
