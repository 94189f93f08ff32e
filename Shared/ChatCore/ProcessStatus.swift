import Foundation

/// CPU time and memory of a process, read from `/proc/<pid>/stat` and `/proc/<pid>/status`
/// (Linux): what `/metrics` reports for the service itself and what `chat-bench` reports
/// for every process under test.
public struct ProcessStatus: Sendable {
    /// User plus system CPU time.
    public var cpuSeconds: Double
    /// VmRSS and VmHWM (the peak).
    public var residentBytes: Int
    public var peakResidentBytes: Int
    /// Seconds from boot to the process's start.
    public var startedAfterBoot: Double

    private static let ticksPerSecond = Double(sysconf(Int32(_SC_CLK_TCK)))

    /// Bytes the process has passed to write(2) and its kin so far (`wchar` in
    /// `/proc/<pid>/io`); 0 if unreadable.
    public static func bytesWritten(pid: Int32 = getpid()) -> Int64 {
        guard let io = try? String(contentsOfFile: "/proc/\(pid)/io", encoding: .utf8),
              let line = io.split(separator: "\n").first(where: { $0.hasPrefix("wchar:") }) else { return 0 }
        return Int64(line.dropFirst(6).trimmingCharacters(in: .whitespaces)) ?? 0
    }

    /// Nil when the process is gone (or this is not Linux).
    public static func read(pid: Int32 = getpid()) -> ProcessStatus? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let close = stat.lastIndex(of: ")"),
              let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
        // Fields after the command name (which may hold spaces): utime and stime are fields 14
        // and 15 of stat, starttime field 22.
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 19, let user = Double(fields[11]), let system = Double(fields[12]), let start = Double(fields[19]) else { return nil }
        func bytes(_ key: String) -> Int {
            guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix(key) }) else { return 0 }
            return (Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "") ?? 0) * 1024
        }
        return ProcessStatus(cpuSeconds: (user + system) / ticksPerSecond, residentBytes: bytes("VmRSS:"), peakResidentBytes: bytes("VmHWM:"),
                             startedAfterBoot: start / ticksPerSecond)
    }
}
