import Foundation

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

extension URLSession {
    /// `data(for:)` without its cancellation handler: the request runs to its end (or its
    /// timeout) even if the task awaiting it is cancelled.
    ///
    /// On Linux, cancelling a task while its `data(for:)` is completing deadlocks both
    /// (swift-corelibs-foundation issue 5412: the canceller holds the task's status lock and
    /// waits for the session's queue, which waits for that lock to resume the task; fixed by
    /// pull request 5417, not in this toolchain). A task group that throws on its first
    /// failure cancels its other requests, so a load tool whose logins met a gateway that was
    /// not there hung four times out of five instead of saying so (BENCHMARKS.md,
    /// twenty-first round). With a completion handler nothing is cancelled.
    public func dataIgnoringCancellation(for request: URLRequest) async throws -> (Data, URLResponse) {
        try await withCheckedThrowingContinuation { continuation in
            dataTask(with: request) { data, response, error in
                if let error {
                    continuation.resume(throwing: error)
                } else if let response {
                    continuation.resume(returning: (data ?? Data(), response))
                } else {
                    continuation.resume(throwing: URLError(.badServerResponse))
                }
            }.resume()
        }
    }
}
