import ArgumentParser
import ChatCore
import Foundation
import MessageStore

/// `chat-bench store`: the messages service's floor. Sends applied the way the service
/// applies a batch from `chat:commands` (`MessageStore.apply`: one transaction, one
/// savepoint, applied-entry row and audit row per send), straight into a fresh SQLite
/// file, with no Redis and no network. Whatever the whole system reaches, it cannot
/// persist faster than this on the same machine.
struct StoreBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "store",
        abstract: "Sends per second through MessageStore.apply alone (one transaction per batch), the messages service's ceiling."
    )

    @Option(help: "1:1 conversations the sends go round (each with its own two users).")
    var conversations = 100

    @Option(help: "Sends per round.")
    var messages = 20_000

    @Option(help: "Sends per batch (the service reads up to 256 per XREADGROUP).")
    var batch = 256

    @Option(help: "Rounds; the report gives each and their median.")
    var rounds = 3

    enum ClientIDs: String, ExpressibleByArgument, CaseIterable {
        case time, random
    }

    @Option(name: .customLong("client-ids"), help: "The sends' client ids: time (UUID v7, as the web client, the gateway and the other workloads send) or random (UUID v4, as any other client may send).")
    var clientIDs = ClientIDs.time

    func run() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("store-bench-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("chat.sqlite").path
        let store = try MessageStore.open(path: path, retention: .seconds(90 * 86400), bcryptCost: 4)
        var pairs: [(sender: String, conversation: String)] = []
        for index in 0..<conversations {
            let a = String(format: "store-%05d-a@bench.local", index), b = String(format: "store-%05d-b@bench.local", index)
            for email in [a, b] { _ = try store.createUser(email: email, name: email, role: .doctor, password: "password") }
            pairs.append((a, try store.openDirectConversation(a, b).id))
        }

        var rates: [Double] = []
        var counter = 0
        print("| round | sends | seconds | sends/s | µs per send | written (KiB per send) |")
        print("|---|---:|---:|---:|---:|---:|")
        for round in 1...rounds {
            let before = ProcessStatus.bytesWritten()
            let started = ContinuousClock.now
            var sent = 0
            while sent < messages {
                let count = min(batch, messages - sent)
                let commands = try (0..<count).map { offset -> (id: String, command: StoreCommand) in
                    counter += 1
                    let pair = pairs[(sent + offset) % pairs.count]
                    let body = SendMessageRequest(conversationID: pair.conversation, content: "bench note \(counter): the patient in bed 4 is stable",
                                                  clientID: clientIDs == .time ? TimeOrderedID.make() : UUID().uuidString.lowercased())
                    return ("\(counter)-0", try StoreCommand(type: .send, user: pair.sender, gateway: "bench", request: "r\(counter)", body: body))
                }
                let outcomes = try store.apply(commands)
                for case .failed(let error) in outcomes { throw CommandFailure("a send failed: \(error)") }
                sent += count
            }
            let seconds = ms(ContinuousClock.now - started) / 1000
            let written = Double(ProcessStatus.bytesWritten() - before) / 1024 / Double(messages)
            rates.append(Double(messages) / seconds)
            print("| \(round) | \(messages) | \(fixed2(seconds)) | \(Int(Double(messages) / seconds)) | \(fixed2(seconds * 1e6 / Double(messages))) | \(fixed2(written)) |")
        }
        let middle = median(rates)
        print("\nmedian: \(Int(middle)) sends/s, \(fixed2(1e6 / middle)) µs per send (batches of \(batch), \(conversations) conversations, \(clientIDs.rawValue) client ids)")
    }
}
