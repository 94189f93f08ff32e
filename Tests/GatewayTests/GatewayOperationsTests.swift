import ChatCore
import ChatTesting
import Foundation
import Gateway
import NIOSSL
import NIOWebSocket
import Testing

@Suite("Gateway operations: drain on stop, TLS", .redisServer)
struct GatewayOperationsTests {
    @Test("a stopping gateway fails /readyz, refuses new sessions, answers new events 'reconnect', confirms the send in flight, then closes its sockets as going away")
    func drain() async throws {
        try await withRealtimeStack(gateways: 2, environment: ["CHAT_SHUTDOWN_GRACE": "8s"]) { stack in
            let doctor = "doctor@clinic.com"
            let admin = try await SocketTestClient.connect(port: stack.ports[0], token: stack.token("admin@clinic.com"))
            let receiver = try await SocketTestClient.connect(port: stack.ports[1], token: stack.token(doctor))
            #expect(try await stack.http("GET", "/readyz").0 == 200)

            // With the store away, a send stays in flight.
            await stack.storeControl.stop()
            try await admin.emit("send_message", .object(["receiver_email": .string(doctor), "content": .string("in flight"), "client_id": .string("drain-1")]), ack: 1)
            try await Task.sleep(for: .milliseconds(200))
            let draining = Task { await stack.services[0].drain() }

            #expect(await eventually { (try? await stack.http("GET", "/readyz").0) == 503 })
            let (readyStatus, readyBody) = try await stack.http("GET", "/readyz")
            #expect(readyStatus == 503 && readyBody?["error"]?["message"] == .string("not ready: shutting down"), "\(String(describing: readyBody))")
            let (handshake, _) = try await stack.httpRaw("GET", "/socket.io/?EIO=4&transport=polling")
            #expect(handshake == 503)
            let refused = try await admin.call("send_message", .object(["receiver_email": .string(doctor), "content": .string("late"), "client_id": .string("drain-2")]), ack: 2)
            #expect(refused["ok"] == .bool(false))
            #expect(refused["error"]?["code"] == .string("unavailable"))
            #expect(refused["error"]?["client_id"] == .string("drain-2"))
            #expect(!admin.isClosed, "the socket stays open while its send is in flight")

            stack.storeControl.run()
            await draining.value
            // The confirmation and the acknowledgement came before the close.
            let confirmed = try await admin.event("message_sent_confirmed")
            #expect(confirmed["client_id"] == .string("drain-1"))
            let ack = try await admin.next { $0.hasPrefix("431[") }
            #expect(ack.contains(#""ok":true"#))
            #expect(await admin.waitClosed())
            #expect(admin.closeCode == .goingAway)
            // The recipient on the other gateway got it, and that gateway still serves.
            #expect(try await receiver.event("receive_message")["client_id"] == .string("drain-1"))
            #expect(try await stack.http("GET", "/readyz", gateway: 1).0 == 200)
            let moved = try await SocketTestClient.connect(port: stack.ports[1], token: stack.token("admin@clinic.com"))
            let again = try await moved.call("send_message", .object(["receiver_email": .string(doctor), "content": .string("late"), "client_id": .string("drain-2")]), ack: 1)
            #expect(again["ok"] == .bool(true))
        }
    }

    @Test("with CHAT_TLS_CERT/KEY a Socket.IO client connects over WSS and sends; the certificate is checked")
    func secureWebSocket() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("wss-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let (certificate, key) = try await makeSelfSignedCertificate(in: directory)
        try await withRealtimeStack(environment: ["CHAT_TLS_CERT": certificate, "CHAT_TLS_KEY": key]) { stack in
            var trusting = TLSConfiguration.makeClientConfiguration()
            trusting.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(certificate))
            let client = try await SocketTestClient.connect(port: stack.ports[0], token: stack.token("admin@clinic.com"), tls: trusting)
            let answer = try await client.call("send_message", .object(["receiver_email": .string("doctor@clinic.com"), "content": .string("over TLS"),
                                                                        "client_id": .string("tls-1")]), ack: 1)
            #expect(answer["message"]?["content"] == .string("over TLS"))
            // A client that does not trust the certificate does not get in.
            await #expect(throws: (any Error).self) {
                _ = try await SocketTestClient.open(port: stack.ports[0], tls: TLSConfiguration.makeClientConfiguration())
            }
        }
    }
}
