import ChatCore
import Foundation
import Synchronization

/// One client's Socket.IO socket on the default namespace, over one Engine.IO session.
/// Packets are handled in arrival order; store answers come back through callbacks.
final class ClientConnection: Sendable {
    let session: EngineSession
    let server: RealtimeServer
    /// The Socket.IO session id (not the Engine.IO one); prefixes this socket's store requests.
    let socketID: String

    private struct State {
        var claims: TokenClaims?
        var connectedAt: Date?
        var failedConnects = 0
        /// Store requests made so far (``newRequest()``).
        var requests = 0
        /// Binary attachments still to skip after a refused binary packet.
        var skipBinary = 0
        /// The newest seq this socket has been given, per conversation.
        var seen: [String: Int64] = [:]
        /// The read-marker version this socket's receipts are current at: the last sync's
        /// `receipts_cursor` (live receipts arrive on the subscription after it); nil: none yet.
        var receiptsCursor: Int64?
        /// Where the socket was when the subscription was lost: the replay starts there, not
        /// at what arrived live on the new subscription before the replay ran (that would
        /// skip the gap).
        var atLoss: (seen: [String: Int64], receiptsCursor: Int64?)?
        /// What this socket has been given, so a replay never shows a message twice.
        var given = GivenMessages()
        /// This socket's `mark_conversation_read`s: one per conversation at the store at a time.
        var readMarks = ReadMarkCoalescing()

        /// Records a message given to the client; false if it was given already.
        mutating func remember(_ message: RealtimeServer.Delivered) -> Bool {
            seen[message.conversationID] = max(seen[message.conversationID] ?? 0, message.seq)
            return given.insert(message.seq, in: message.conversationID)
        }
    }

    private let state = Mutex(State())

    init(session: EngineSession, server: RealtimeServer) {
        self.session = session
        self.server = server
        self.socketID = EngineServer.newSessionID()
    }

    var claims: TokenClaims? { state.withLock { $0.claims } }

    private var store: StoreClient { server.store }

    // MARK: Inbound

    func handle(_ item: EngineSession.Inbound) async {
        switch item {
        case .binary:
            let expected = state.withLock { s -> Bool in
                guard s.skipBinary > 0 else { return false }
                s.skipBinary -= 1
                return true
            }
            if !expected, claims != nil { answer(nil, .failure(ChatError(.badRequest, "binary frames are not supported; send JSON events"))) }
        case .message(let text):
            // The packet clients send most, read with the scanner; everything else is parsed in full.
            if let claims, let (ackID, body) = Self.scannedSend(text) {
                server.metrics.eventIn(ClientEventName.sendMessage.rawValue).increment()
                guard !server.isDraining else { return refuseWhileDraining(ackID, clientID: body.clientID) }
                return await send(body, ackID: ackID, email: claims.sub)
            }
            let packet: SocketPacket
            do {
                packet = try SocketPacket(parsing: text)
            } catch {
                if claims != nil {
                    answer(nil, .failure(ChatError(.badRequest, "malformed Socket.IO packet: \(error.description)")))
                } else {
                    session.close(.protocolError)
                }
                return
            }
            await handle(packet)
        }
    }

    private func handle(_ packet: SocketPacket) async {
        guard packet.namespace == "/" else {
            if packet.kind == .connect {
                session.send(SocketPacket(.connectError, namespace: packet.namespace, data: .object(["message": .string("Invalid namespace")])).encoded)
            }
            return
        }
        switch packet.kind {
        case .connect:
            await connect(packet.data)
        case .disconnect:
            if let email = claims?.sub {
                state.withLock { $0.claims = nil }
                server.detach(self, email: email)
                await server.presence(.disconnect, conn: socketID, user: email)
            }
        case .event:
            guard let claims, let (name, arguments) = packet.event else { return }
            await event(name, arguments, ackID: packet.ackID, claims: claims)
        case .binaryEvent, .binaryAck:
            state.withLock { $0.skipBinary += packet.attachments }
            if packet.kind == .binaryEvent, claims != nil {
                answer(packet.ackID, .failure(ChatError(.badRequest, "binary payloads are not supported; send JSON")))
            }
        case .ack, .connectError:
            // The server asks for no acknowledgements; clients send no CONNECT_ERROR.
            break
        }
    }

    // MARK: CONNECT

    /// The CONNECT's own work (the token, the subscription, the answer, presence, audit) takes
    /// its turn with the gateway's other CONNECTs (`RealtimeServer.admission`); a replay it
    /// asks for does not, so a slow or stopped store never holds a turn.
    private func connect(_ auth: JSONValue?) async {
        let connected = await server.admission.pass { () -> TokenClaims? in
            guard session.closeReason == nil else { return nil }
            return await admit(auth)
        }
        if let connected, let since = auth?["since"] {
            await sync(since, receiptsAfter: auth?["receipts_after"], ackID: nil, claims: connected)
        }
    }

    /// Answers a CONNECT; the claims of a socket connected by it.
    private func admit(_ auth: JSONValue?) async -> TokenClaims? {
        if claims != nil {
            // Already connected: confirm again, as the reference server does.
            session.send(SocketPacket(.connect, data: .object(["sid": .string(socketID)])).encoded)
            return nil
        }
        guard let token = auth?["token"]?.stringValue, !token.isEmpty else {
            refuse(ChatError(.unauthorized, #"authentication required: connect with auth {"token": "<access token>"}"#))
            return nil
        }
        let verified: TokenClaims
        do {
            verified = try await server.tokens.verify(token)
            if verified.passwordChangeRequired {
                throw ChatError(.passwordChangeRequired, "change your password first (POST /api/me/password), then connect with the token it gives")
            }
        } catch let error as ChatError {
            refuse(error)
            return nil
        } catch {
            refuse(ChatError(.unavailable, "could not check the token; try again"))
            return nil
        }
        state.withLock { s in
            s.claims = verified
            s.connectedAt = Date()
        }
        session.namespaceConnected()
        await server.attach(self, email: verified.sub)
        session.send(SocketPacket(.connect, data: .object(["sid": .string(socketID)])).encoded)
        await server.presence(.connect, conn: socketID, user: verified.sub)
        await store.fireAndForget(.audit, user: verified.sub, body: AuditRequest(action: "socket_connect", outcome: "ok", detail: session.remoteAddress))
        return verified
    }

    private func refuse(_ error: ChatError) {
        let failures = state.withLock { s in
            s.failedConnects += 1
            return s.failedConnects
        }
        let data: JSONValue = .object(["message": .string(error.message), "data": .object(["code": .string(error.code.rawValue)])])
        session.send(SocketPacket(.connectError, data: data).encoded)
        Task { [store, session] in
            await store.fireAndForget(.audit, user: "", body: AuditRequest(action: "socket_connect", outcome: "denied", detail: "\(error.code.rawValue) from \(session.remoteAddress ?? "?")"))
        }
        if failures >= server.configuration.maximumFailedConnects { session.close(.protocolError) }
    }

    // MARK: Events

    private func event(_ name: String, _ arguments: [JSONValue], ackID: Int?, claims: TokenClaims) async {
        guard let event = ClientEventName(rawValue: name) else {
            server.metrics.eventIn("unknown").increment()
            answer(ackID, .failure(ChatError(.badRequest, "unknown event \"\(name.prefix(64))\"")))
            return
        }
        server.metrics.eventIn(name).increment()
        let argument = arguments.first
        let email = claims.sub
        if server.isDraining, event != .userJoined {
            return refuseWhileDraining(ackID, clientID: event == .sendMessage ? argument?["client_id"]?.stringValue : nil)
        }
        switch event {
        case .userJoined:
            guard allowed(email, .other, ackID: ackID) else { return }
            guard let joined = argument?["email"]?.stringValue else {
                return answer(ackID, .failure(ChatError(.badRequest, "user_joined expects {email}")))
            }
            guard joined.lowercased() == email else {
                return answer(ackID, .failure(ChatError(.forbidden, "user_joined must name the user of the token")))
            }
            answer(ackID, .success(#"{"ok":true}"#))

        case .sendMessage:
            guard let argument, argument.objectValue != nil, let body = try? argument.decode(SendMessageRequest.self) else {
                let clientID = argument?["client_id"]?.stringValue
                guard allowed(email, .send, ackID: ackID, clientID: clientID) else { return }
                return answer(ackID, .failure(ChatError(.badRequest, "send_message expects {receiver_email | conversation_id, content, client_id}", clientID: clientID)))
            }
            await send(body, ackID: ackID, email: email)

        case .userTyping:
            guard allowed(email, .typing, ackID: ackID) else { return }
            guard let argument, argument.objectValue != nil, let typing = try? argument.decode(TypingEvent.self),
                  typing.conversationID != nil || typing.receiverEmail != nil else {
                return answer(ackID, .failure(ChatError(.badRequest, "user_typing expects {receiver_email | conversation_id, is_typing}")))
            }
            do {
                try await server.redis.xadd(server.keys.presenceCommands, fields: [
                    ("type", "typing"), ("user", email), ("gateway", server.configuration.gatewayID),
                    ("conversation_id", typing.conversationID ?? ""), ("receiver_email", typing.receiverEmail?.lowercased() ?? ""),
                    ("is_typing", typing.isTyping ? "1" : "0"),
                ], trim: .maxLength(100_000))
                answer(ackID, .success(#"{"ok":true}"#))
            } catch {
                answer(ackID, .failure(ChatError(.unavailable, "typing could not be sent")))
            }

        case .markMessageRead:
            guard allowed(email, .other, ackID: ackID) else { return }
            guard let argument, argument.objectValue != nil, let body = try? argument.decode(MarkMessageReadRequest.self) else {
                return answer(ackID, .failure(ChatError(.badRequest, "mark_message_read expects {message_id}")))
            }
            await command(.markMessageRead, body: body, email: email, ackID: ackID, key: "receipt")

        case .markConversationRead:
            guard allowed(email, .other, ackID: ackID) else { return }
            guard let argument, argument.objectValue != nil, let body = try? argument.decode(MarkConversationReadRequest.self) else {
                return answer(ackID, .failure(ChatError(.badRequest, "mark_conversation_read expects {conversation_id, up_to_seq}")))
            }
            // Checked here: a mark merged with others must not take their answer.
            guard body.upToSeq >= 0 else { return answer(ackID, .failure(ChatError(.badRequest, "up_to_seq must not be negative"))) }
            guard let mark = state.withLock({ $0.readMarks.offer(body.conversationID, upToSeq: body.upToSeq, ackID: ackID) }) else { return }
            await markRead(body.conversationID, mark, email: email)

        case .sync:
            guard allowed(email, .other, ackID: ackID) else { return }
            await sync(argument?["since"] ?? .object([:]), receiptsAfter: argument?["receipts_after"], ackID: ackID, claims: claims)
        }
    }

    /// `send_message`: rate limit, a client id if it has none, into the stream; the socket gets
    /// its confirmation and acknowledgement when the store answers.
    private func send(_ body: SendMessageRequest, ackID: Int?, email: String) async {
        guard allowed(email, .send, ackID: ackID, clientID: body.clientID) else { return }
        var body = body
        // Every send carries a client id, so a retry is stored once; a client that sent none gets
        // a time-ordered one (cheapest for the store's index, see `TimeOrderedID`).
        if body.clientID == nil { body.clientID = TimeOrderedID.make() }
        let sentClientID = body.clientID
        let received = ContinuousClock.now
        do {
            try await store.submit(.send, user: email, payload: body.jsonText, request: newRequest(), onLateReply: { [weak self] reply in
                self?.lateAnswer(reply, clientID: sentClientID)
            }) { [self] result in
                switch reply(result) {
                case .success(let message):
                    // The confirmation, then the acknowledgement: this socket sees its message committed.
                    _ = remember(message)
                    session.send(SocketPacket.eventText(ServerEventName.messageSentConfirmed.rawValue, json: message))
                    server.metrics.confirmLatency.record(.now - received)
                    server.metrics.eventOut(ServerEventName.messageSentConfirmed.rawValue).increment()
                    if let ackID { session.send(SocketPacket.ackText(ackID, json: #"{"message":"# + message + #","ok":true}"#)) }
                case .failure(var error):
                    error.clientID = sentClientID
                    answer(ackID, .failure(error))
                }
            }
        } catch {
            var failure = (error as? ChatError) ?? ChatError(.unavailable, "the message store is unreachable")
            failure.clientID = sentClientID
            answer(ackID, .failure(failure))
        }
    }

    /// Records a message (JSON) given to this socket; false if it had it already.
    private func remember(_ message: String) -> Bool {
        guard let fields = JSONScan(Array(message.utf8)), let conversation = fields.string("conversation_id"),
              let seq = fields.integer("seq") else { return true }
        return state.withLock { $0.remember(RealtimeServer.Delivered(conversationID: conversation, seq: seq)) }
    }

    /// The store's answer to a send that was already answered `unavailable` (the store was
    /// slow or down; it applied the send when it got to it): the socket gets the
    /// `message_sent_confirmed` it missed, unless a retry confirmed it meanwhile, or the
    /// refusal as an `error` event with the send's `client_id`.
    private func lateAnswer(_ reply: StoreReply, clientID: String?) {
        if var error = reply.error {
            error.clientID = clientID
            return answer(nil, .failure(error))
        }
        guard let message = reply.result, remember(message) else { return }
        session.send(SocketPacket.eventText(ServerEventName.messageSentConfirmed.rawValue, json: message))
        server.metrics.eventOut(ServerEventName.messageSentConfirmed.rawValue).increment()
    }

    /// The answer to new work while this gateway drains: the client reconnects (another gateway
    /// takes over) and sends again; answers already owed still arrive.
    private func refuseWhileDraining(_ ackID: Int?, clientID: String?) {
        answer(ackID, .failure(ChatError(.unavailable, "this gateway is restarting; reconnect (another gateway takes over) and send again", clientID: clientID)))
    }

    /// `2<ack id>["send_message",{…}]` read without building a `JSONValue`, or nil for any
    /// other packet or shape (which then takes the full parser, and its errors).
    static func scannedSend(_ text: String) -> (ackID: Int?, body: SendMessageRequest)? {
        let bytes = Array(text.utf8)
        guard bytes.first == UInt8(ascii: "2") else { return nil }
        var index = 1
        while index < bytes.count, index <= 15, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[index]) { index += 1 }
        let ackID = index > 1 ? Int(String(decoding: bytes[1..<index], as: UTF8.self)) : nil
        let prefix = Self.sendPrefix
        guard bytes.count > index + prefix.count, bytes[index..<(index + prefix.count)].elementsEqual(prefix), bytes.last == UInt8(ascii: "]"),
              let body = SendMessageRequest(scanning: bytes, in: (index + prefix.count)..<(bytes.count - 1)) else { return nil }
        return (ackID, body)
    }

    private static let sendPrefix = Array(#"["send_message","#.utf8)

    /// Whether the user is within `limit`; if not, the event is answered with `rate_limited`.
    private func allowed(_ email: String, _ limit: RealtimeServer.Limit, ackID: Int?, clientID: String? = nil) -> Bool {
        guard let retryAfter = server.throttle(email, limit) else { return true }
        server.metrics.rateLimited(limit.name).increment()
        let wait = (retryAfter * 1000).rounded(.up) / 1000
        answer(ackID, .failure(ChatError(.rateLimited, "too many events; wait \(wait) s", clientID: clientID, retryAfter: wait)))
        return false
    }

    private func command<Body: Encodable & Sendable>(_ type: StoreCommandType, body: Body, email: String, ackID: Int?, key: String) async {
        do {
            try await store.submit(type, user: email, body: body, request: newRequest()) { [self] result in
                answer(ackID, reply(result).map { #"{"\#(key)":"# + $0 + #","ok":true}"# })
            }
        } catch {
            answer(ackID, .failure((error as? ChatError) ?? ChatError(.unavailable, "the message store is unreachable")))
        }
    }

    /// Sends a mark (several merged, see ``ReadMarkCoalescing``) to the store, answers each
    /// of its marks with the store's answer, then sends the conversation's next waiting one.
    private func markRead(_ conversation: String, _ mark: ReadMarkCoalescing.Mark, email: String) async {
        let body = MarkConversationReadRequest(conversationID: conversation, upToSeq: mark.upToSeq)
        do {
            try await store.submit(.markConversationRead, user: email, body: body, request: newRequest()) { [self] result in
                marked(conversation, mark, reply(result).map { #"{"receipt":"# + $0 + #","ok":true}"# }, email: email)
            }
        } catch {
            marked(conversation, mark, .failure((error as? ChatError) ?? ChatError(.unavailable, "the message store is unreachable")), email: email)
        }
    }

    private func marked(_ conversation: String, _ mark: ReadMarkCoalescing.Mark, _ result: Result<String, ChatError>, email: String) {
        for case let ackID? in mark.ackIDs { answer(ackID, result) }
        // Marks without an acknowledgement hear only of a failure, once.
        if mark.ackIDs.contains(nil) { answer(nil, result) }
        guard let next = state.withLock({ $0.readMarks.answered(conversation) }) else { return }
        Task { await markRead(conversation, next, email: email) }
    }

    /// `sync {since, receipts_after}`: replays what the store has after the client's seqs (and
    /// the receipts that moved after `receipts_after`), then acknowledges with a summary.
    private func sync(_ since: JSONValue, receiptsAfter: JSONValue?, ackID: Int?, claims: TokenClaims) async {
        guard case .object(let entries) = since else {
            return answer(ackID, .failure(ChatError(.badRequest, "sync expects {since: {conversation_id: seq}}")))
        }
        var map: [String: Int64] = [:]
        for (conversation, value) in entries {
            // (A seq past Int64 used to stop the gateway: converting it traps.)
            guard case .number(let seq) = value, seq >= 0, seq.rounded() == seq, seq < 9.0e15 else {
                return answer(ackID, .failure(ChatError(.badRequest, "sync: each seq is a whole number, 0 or more")))
            }
            map[conversation] = Int64(seq)
        }
        var version: Int64?
        switch receiptsAfter {
        case nil, .null?: break
        case .number(let value)? where value >= 0 && value.rounded() == value && value < 9.0e15: version = Int64(value)
        default: return answer(ackID, .failure(ChatError(.badRequest, "sync: receipts_after is a whole number, 0 or more (a receipts_cursor or read_version)")))
        }
        state.withLock { s in s.seen.merge(map) { max($0, $1) } }
        await replay(since: map, after: nil, receiptsAfter: version, email: claims.sub, ackID: ackID)
    }

    /// The subscription was lost: remembers where this socket's replay will start.
    func subscriptionLost() {
        state.withLock { s in if s.atLoss == nil { s.atLoss = (s.seen, s.receiptsCursor) } }
    }

    /// After a lost subscription: replays everything after what this socket was given before
    /// the loss, or stored since it connected (what it already has is skipped by id).
    func resynchronize() async {
        guard let email = claims?.sub else { return }
        let (from, connectedAt) = state.withLock { s in
            defer { s.atLoss = nil }
            return (s.atLoss ?? (s.seen, s.receiptsCursor), s.connectedAt)
        }
        await replay(since: from.seen, after: connectedAt.map { $0.addingTimeInterval(-1) }, receiptsAfter: from.receiptsCursor, email: email, ackID: nil,
                     announced: true)
    }

    /// `announced`: the socket did not ask (a lost subscription); it is told with a `resynchronized` event.
    private func replay(since: [String: Int64], after: Date?, receiptsAfter: Int64?, email: String, ackID: Int?, announced: Bool = false) async {
        let limit = server.configuration.syncLimit
        await store.ask(.sync, user: email, {
            $0.since = since
            $0.after = after.map { $0.epochMilliseconds }
            $0.receiptsAfter = receiptsAfter
            $0.limit = limit
        }) { [self] result in
            let synced: SyncReplay
            switch reply(result) {
            case .failure(let error):
                return answer(ackID, .failure(error))
            case .success(let text):
                let bytes = Array(text.utf8)
                guard let read = SyncReplay(scanning: bytes) ?? SyncReplay(decoding: bytes) else {
                    return answer(ackID, .failure(ChatError(.internal, "the store sent an unreadable sync")))
                }
                synced = read
            }
            var summary: [String: JSONValue] = [:]
            for conversation in synced.conversations {
                for message in conversation.messages {
                    // Skip what reached this socket live while the sync was on its way.
                    guard state.withLock({ $0.remember(message.position) }) else { continue }
                    session.send(SocketPacket.eventText(ServerEventName.receiveMessage.rawValue, json: message.json))
                }
                for receipt in conversation.receipts {
                    session.send(SocketPacket.eventText(ServerEventName.messageReadReceipt.rawValue, json: receipt))
                }
                summary[conversation.id] = .object([
                    "last_seq": .number(Double(conversation.lastSeq)), "messages": .number(Double(conversation.messages.count)),
                    "truncated": .bool(conversation.truncated),
                ])
            }
            var acknowledgement: [String: JSONValue] = ["ok": .bool(true), "conversations": .object(summary)]
            if let cursor = synced.receiptsCursor {
                // Receipts are current at the cursor from here on (live ones arrive on the subscription).
                state.withLock { s in s.receiptsCursor = cursor }
                acknowledgement["receipts_cursor"] = .number(Double(cursor))
            }
            if synced.receiptsTruncated {
                // More receipts than the replay's limit: `sync` again after the cursor for the rest.
                acknowledgement["receipts_truncated"] = .bool(true)
            }
            let text = JSONValue.object(acknowledgement).text
            if announced {
                session.send(SocketPacket.eventText(ServerEventName.resynchronized.rawValue, json: text))
                server.metrics.eventOut(ServerEventName.resynchronized.rawValue).increment()
            }
            answer(ackID, .success(text))
        }
    }

    // MARK: Outbound

    /// An event from Redis for this socket.
    /// False when the socket already had that message.
    @discardableResult
    func push(_ text: String, _ priority: OutboundQueue.Priority, delivered: RealtimeServer.Delivered?) -> Bool {
        if let delivered, !state.withLock({ $0.remember(delivered) }) { return false }
        session.send(text, priority)
        return true
    }

    /// The answer to an event: its acknowledgement if it asked for one, else (for failures) an `error` event.
    private func answer(_ ackID: Int?, _ result: Result<String, ChatError>) {
        switch result {
        case .success(let json):
            if let ackID { session.send(SocketPacket.ackText(ackID, json: json)) }
        case .failure(let error):
            if let ackID {
                session.send(SocketPacket.ackText(ackID, json: #"{"error":"# + ChatJSON.text(error) + #","ok":false}"#))
            } else {
                session.send(SocketPacket.eventText(ServerEventName.error.rawValue, json: ChatJSON.text(error)))
                server.metrics.eventOut(ServerEventName.error.rawValue).increment()
            }
        }
    }

    /// A store answer as its JSON result, or its error.
    private func reply(_ result: Result<StoreReply, any Error>) -> Result<String, ChatError> {
        switch result {
        case .success(let reply):
            if let error = reply.error { return .failure(error) }
            return .success(reply.result ?? "{}")
        case .failure(let error):
            return .failure((error as? ChatError) ?? ChatError(.unavailable, "the message store is unreachable"))
        }
    }

    /// The socket's id and its own count: unique, and no random bits to fetch per send.
    private func newRequest() -> String { socketID + ":" + String(state.withLock { $0.requests += 1; return $0.requests }) }

    // MARK: Ending

    /// The token expired or was revoked: tell the client, disconnect the namespace (the
    /// client must connect again with a new token), keep the transport.
    func endSession(_ reason: ChatError) {
        guard let email = state.withLock({ s -> String? in
            defer { s.claims = nil }
            return s.claims?.sub
        }) else { return }
        answer(nil, .failure(reason))
        session.send(SocketPacket(.disconnect).encoded)
        server.detach(self, email: email)
        Task { [server, socketID] in await server.presence(.disconnect, conn: socketID, user: email) }
    }

    /// The transport is gone.
    func disconnected() {
        guard let email = state.withLock({ s -> String? in
            defer { s.claims = nil }
            return s.claims?.sub
        }) else { return }
        server.detach(self, email: email)
        Task { [store, server, socketID] in
            await server.presence(.disconnect, conn: socketID, user: email)
            await store.fireAndForget(.audit, user: email, body: AuditRequest(action: "socket_disconnect", outcome: "ok", detail: session.closeReason?.rawValue))
        }
    }
}
