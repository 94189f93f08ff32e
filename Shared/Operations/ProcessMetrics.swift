import ChatCore
import Foundation
import Prometheus
import Synchronization

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
        let boot = Date().timeIntervalSince1970 - ProcessInfo.processInfo.systemUptime
        startTime.set(boot + (ProcessStatus.read()?.startedAfterBoot ?? 0))
    }

    /// Reads /proc/self now.
    public func update() {
        if let status = ProcessStatus.read() {
            let delta = lastCPU.advance(to: status.cpuSeconds)
            if delta > 0 { cpu.increment(by: delta) }
            resident.set(Double(status.residentBytes))
        }
        if let count = try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count { openFiles.set(Double(count)) }
    }
}

/// The last CPU total seen, so the counter only ever moves forward by the difference.
private final class CPUTotal: Sendable {
    private let seen = Mutex(0.0)

    func advance(to total: Double) -> Double {
        seen.withLock { seen in
            let delta = total - seen
            if delta > 0 { seen = total }
            return delta
        }
    }
}
