import ChatCore
import Foundation
import Prometheus

/// The standard `process_*` metrics, read from /proc on each scrape: CPU seconds,
/// resident memory, open file descriptors, start time.
public struct ProcessMetrics: Sendable {
    private let cpu: Counter
    private let lastCPU = CPUTotal()
    private let resident: Gauge
    private let openFiles: Gauge
    private let startTime: Gauge

    public init(registry: PrometheusCollectorRegistry) {
        cpu = registry.counter("process_cpu_seconds_total", help: "User and system CPU time spent, in seconds.")
        resident = registry.gauge("process_resident_memory_bytes", help: "Resident memory size, in bytes.")
        openFiles = registry.gauge("process_open_fds", help: "Open file descriptors.")
        startTime = registry.gauge("process_start_time_seconds", help: "Start time of the process since the Unix epoch, in seconds.")
        startTime.set(Date().timeIntervalSince1970 - ProcessInfo.processInfo.systemUptime + Self.startedAfterBoot())
    }

    /// Reads /proc/self now.
    public func update() {
        if let seconds = Self.cpuSeconds() {
            let delta = lastCPU.advance(to: seconds)
            if delta > 0 { cpu.increment(by: delta) }
        }
        if let bytes = Self.residentBytes() { resident.set(Double(bytes)) }
        if let count = try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count { openFiles.set(Double(count)) }
    }

    private static let ticksPerSecond = Double(sysconf(Int32(_SC_CLK_TCK)))

    /// Fields after the command name in /proc/self/stat (the name may contain spaces).
    private static func statFields() -> [Substring]? {
        guard let stat = try? String(contentsOfFile: "/proc/self/stat", encoding: .utf8), let close = stat.lastIndex(of: ")") else { return nil }
        return stat[stat.index(after: close)...].split(separator: " ")
    }

    /// utime + stime (fields 14 and 15 of stat; 12 and 13 after the name).
    static func cpuSeconds() -> Double? {
        guard let fields = statFields(), fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { return nil }
        return (user + system) / ticksPerSecond
    }

    /// Seconds from boot to this process's start (field 22 of stat).
    private static func startedAfterBoot() -> Double {
        guard let fields = statFields(), fields.count > 19, let ticks = Double(fields[19]) else { return 0 }
        return ticks / ticksPerSecond
    }

    /// VmRSS from /proc/self/status.
    public static func residentBytes() -> Int? {
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return nil }
        for line in status.split(separator: "\n") where line.hasPrefix("VmRSS:") {
            let parts = line.split(separator: " ", omittingEmptySubsequences: true)
            if parts.count >= 2, let kib = Int(parts[1]) { return kib * 1024 }
        }
        return nil
    }
}

/// The last CPU total seen, so the counter only ever moves forward by the difference.
private final class CPUTotal: @unchecked Sendable {
    private let lock = NSLock()
    private var seen = 0.0

    func advance(to total: Double) -> Double {
        lock.withLock {
            let delta = total - seen
            if delta > 0 { seen = total }
            return delta
        }
    }
}
