import NIOCore

/// Runs a task's jobs on one NIO event loop. A task that works with one channel (a
/// gateway's WebSocket, the load tool's sockets) runs on that channel's loop: its writes
/// are made on the loop, and the replies it waits for resume it there, without waking a
/// thread of Swift's cooperative pool each time.
public final class EventLoopExecutor: TaskExecutor, Sendable {
    public let eventLoop: any EventLoop

    public init(_ eventLoop: any EventLoop) { self.eventLoop = eventLoop }

    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        eventLoop.execute { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
    }
}
