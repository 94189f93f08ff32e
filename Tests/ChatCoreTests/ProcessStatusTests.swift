import Foundation
import Testing
@testable import ChatCore

@Suite("Process figures from /proc")
struct ProcessStatusTests {
    @Test("this process has CPU time and resident memory, and its written bytes grow by what it writes")
    func ownProcess() throws {
        let status = try #require(ProcessStatus.read())
        #expect(status.cpuSeconds > 0 && status.residentBytes > 0 && status.peakResidentBytes >= status.residentBytes)
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("wchar-\(UUID().uuidString.prefix(8))").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        let before = ProcessStatus.bytesWritten()
        try Data(repeating: 7, count: 200_000).write(to: URL(fileURLWithPath: path))
        #expect(ProcessStatus.bytesWritten() - before >= 200_000)
        #expect(ProcessStatus.read(pid: Int32.max) == nil)
    }
}
