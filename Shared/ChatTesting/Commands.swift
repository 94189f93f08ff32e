import Foundation

/// Runs a command to completion: its exit status and output (stdout and stderr).
public func runCommand(_ executable: String, _ arguments: [String]) async throws -> (Int32, String) {
    let output = FileManager.default.temporaryDirectory.appendingPathComponent("cmd-\(UUID().uuidString.prefix(8)).out")
    defer { try? FileManager.default.removeItem(at: output) }
    let process = try ChildProcess(executable: executable, arguments: arguments, outputPath: output.path)
    let status = await process.wait(timeout: .seconds(30)) ?? -1
    return (status, ((try? String(contentsOf: output, encoding: .utf8)) ?? ""))
}

/// A self-signed certificate for 127.0.0.1 and localhost: (certificate, key) paths in `directory`.
public func makeSelfSignedCertificate(in directory: URL) async throws -> (String, String) {
    let certificate = directory.appendingPathComponent("tls.crt").path
    let key = directory.appendingPathComponent("tls.key").path
    let (status, output) = try await runCommand("/usr/bin/openssl", [
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
        "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", key, "-out", certificate,
    ])
    guard status == 0 else { throw CommandError(description: "openssl failed: \(output)") }
    return (certificate, key)
}

/// A command that did not do what a test needed.
public struct CommandError: Error, CustomStringConvertible {
    public let description: String
}
