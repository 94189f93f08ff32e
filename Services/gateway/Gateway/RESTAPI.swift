import ChatCore
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import Operations
import RedisClient

/// The REST API of DESIGN.md. Every handler authenticates (but login, health and the
/// OpenAPI document), talks to the store through ``StoreClient``, and answers JSON.
public struct RESTAPI: Sendable {
    let store: StoreClient
    let tokens: TokenService
    let redis: RedisClient
    let keys: RedisKeys
    let presence: PresenceReader
    let throttle: LoginThrottle
    let logger: Logger
    /// `/readyz` (with the service's phase) and `/metrics`; without it, `/readyz` checks only
    /// Redis and `/metrics` is empty.
    let operations: OperationsEndpoints?
    /// Served over TLS: responses carry Strict-Transport-Security.
    let hsts: Bool
    /// `POST /api/messages`: a retry key, taken as the send's `client_id`.
    static let idempotencyKey = HTTPField.Name("Idempotency-Key")!

    public init(store: StoreClient, tokens: TokenService, redis: RedisClient, keys: RedisKeys, logger: Logger,
                operations: OperationsEndpoints? = nil, hsts: Bool = false) {
        self.operations = operations
        self.hsts = hsts
        self.store = store
        self.tokens = tokens
        self.redis = redis
        self.keys = keys
        self.presence = PresenceReader(redis: redis, keys: keys)
        self.throttle = LoginThrottle(redis: redis, keys: keys)
        self.logger = logger
    }

    /// A router with every route; `registered` lists them (the OpenAPI test reads it).
    public func makeRouter() -> (router: Router<GatewayRequestContext>, registered: [String]) {
        let router = Router(context: GatewayRequestContext.self)
        router.add(middleware: ErrorMiddleware(logger: logger, hsts: hsts))
        let routes = RouteRecorder(router: router)

        routes.add(.get, "/healthz") { _, _ in try json(["status": "ok"]) }
        routes.add(.get, "/readyz") { _, _ in
            guard let operations = self.operations else { return try await self.readiness() }
            return await operations.readiness()
        }
        routes.add(.get, "/metrics") { _, _ in
            guard let operations = self.operations else { return Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4"]) }
            return await operations.metrics()
        }
        routes.add(.get, "/api/openapi.json") { _, _ in rawJSON(Array(OpenAPIDocument.json.utf8)) }

        routes.add(.post, "/api/auth/login") { request, context in try await self.login(request, context) }
        routes.add(.post, "/api/auth/logout") { request, _ in
            let claims = try await self.authenticate(request, duringPasswordChange: true)
            try await self.tokens.revoke(claims)
            // Sockets opened with this token, on any gateway, end now.
            _ = try? await self.redis.publish(#"{"data":{"jti":"\#(claims.jti)"},"event":"session_revoked"}"#, to: self.keys.user(claims.sub))
            // Kept by the store too (and audited there), so the token is refused again should Redis lose its data.
            await self.store.fireAndForget(.revokeToken, user: claims.sub, body: RevokeTokenRequest(jti: claims.jti, expiresAt: claims.exp * 1000))
            return Response(status: .noContent)
        }
        routes.add(.post, "/api/me/password") { request, context in try await self.changePassword(request, context) }
        routes.add(.post, "/api/auth/logout-everywhere") { request, _ in
            let claims = try await self.authenticate(request, duringPasswordChange: true)
            _ = try await self.endSessions(of: claims.sub, by: claims.sub)
            return Response(status: .noContent)
        }
        routes.add(.get, "/api/me") { request, _ in
            let claims = try await self.authenticate(request, duringPasswordChange: true)
            return try self.pass(await self.store.query(.me, user: claims.sub))
        }

        routes.add(.get, "/api/conversations") { request, _ in
            let claims = try await self.authenticate(request, ownEmailParameter: true)
            let reply = try await self.store.query(.conversations, user: claims.sub)
            if let error = reply.error { throw error }
            // Everyone's presence in one round trip, added to the store's JSON as it came.
            if let list = ConversationListText(Array((reply.result ?? "").utf8)) {
                return rawJSON(list.withPresence((try? await self.presence.states(list.participants)) ?? [:]))
            }
            // What the scan does not read (an email with an escape) is decoded and encoded again.
            var conversations: [Conversation] = try self.store.result(reply)
            let states = (try? await self.presence.states(conversations.flatMap(\.participants))) ?? [:]
            for index in conversations.indices {
                conversations[index].presence = states.filter { conversations[index].participants.contains($0.key) }
            }
            return try json(conversations)
        }
        routes.add(.post, "/api/conversations") { request, context in
            let claims = try await self.authenticate(request)
            let body = try await request.decodeJSON(CreateConversationRequest.self, context: context)
            return try self.pass(await self.store.command(.createConversation, user: claims.sub, body: body), status: .created)
        }
        routes.add(.patch, "/api/conversations/:id") { request, context in
            let claims = try await self.authenticate(request)
            let id = try context.pathParameter("id")
            struct Body: Decodable {
                var title: String?
                var addMembers: [String]?
                var removeMembers: [String]?
                enum CodingKeys: String, CodingKey {
                    case title
                    case addMembers = "add_members"
                    case removeMembers = "remove_members"
                }
            }
            let body = try await request.decodeJSON(Body.self, context: context)
            let change = UpdateGroupRequest(conversationID: id, title: body.title, addMembers: body.addMembers, removeMembers: body.removeMembers)
            return try self.pass(await self.store.command(.updateGroup, user: claims.sub, body: change))
        }
        routes.add(.get, "/api/conversations/:id/messages") { request, context in
            let claims = try await self.authenticate(request, ownEmailParameter: true)
            let id = try context.pathParameter("id")
            let (limit, skip, before) = (try request.integer("limit"), try request.integer("skip"), try request.integer("before"))
            guard (limit ?? 30) >= 1, (skip ?? 0) >= 0 else { throw ChatError(.badRequest, "limit must be at least 1 and skip not negative") }
            return try self.pass(await self.store.query(.history, user: claims.sub) {
                $0.conversationID = id
                $0.limit = limit
                $0.skip = skip
                $0.before = before.map(Int64.init)
            })
        }
        routes.add(.post, "/api/conversations/:id/read") { request, context in
            let claims = try await self.authenticate(request)
            let id = try context.pathParameter("id")
            struct Body: Decodable { var upToSeq: Int64?; enum CodingKeys: String, CodingKey { case upToSeq = "up_to_seq" } }
            let upTo = try await request.decodeJSONIfPresent(Body.self, context: context)?.upToSeq
            return try self.pass(await self.store.command(.markConversationRead, user: claims.sub,
                                                          body: MarkConversationReadRequest(conversationID: id, upToSeq: upTo ?? Int64.max)))
        }

        routes.add(.post, "/api/messages") { request, context in
            let claims = try await self.authenticate(request)
            var body = try await request.decodeJSON(SendMessageRequest.self, context: context)
            // HTTP clients' usual retry key: the same as `client_id`, which it fills in.
            if let key = request.headers[Self.idempotencyKey] {
                guard body.clientID == nil || body.clientID == key else {
                    throw ChatError(.badRequest, "Idempotency-Key and client_id differ; send one, or the same value")
                }
                body.clientID = key
            }
            return try self.pass(await self.store.command(.send, user: claims.sub, body: body), status: .created)
        }
        routes.add(.post, "/api/messages/:id/read") { request, context in
            let claims = try await self.authenticate(request)
            let id = try context.pathParameter("id")
            return try self.pass(await self.store.command(.markMessageRead, user: claims.sub, body: MarkMessageReadRequest(messageID: id)))
        }
        routes.add(.delete, "/api/messages/:id") { request, context in
            let claims = try await self.authenticate(request)
            let id = try context.pathParameter("id")
            return try self.pass(await self.store.command(.retractMessage, user: claims.sub, body: RetractMessageRequest(messageID: id)))
        }
        routes.add(.get, "/api/messages/unread-count") { request, _ in
            let claims = try await self.authenticate(request, ownEmailParameter: true)
            return try self.pass(await self.store.query(.unreadCount, user: claims.sub))
        }
        routes.add(.get, "/api/messages/search") { request, _ in
            let claims = try await self.authenticate(request, ownEmailParameter: true)
            let q = request.uri.queryParameters.get("q") ?? ""
            guard !q.trimmingCharacters(in: .whitespaces).isEmpty else { throw ChatError(.badRequest, "q is required") }
            let limit = try request.integer("limit")
            return try self.pass(await self.store.query(.searchMessages, user: claims.sub) {
                $0.query = q
                $0.limit = limit
            })
        }
        routes.add(.get, "/api/users/search") { request, _ in
            let claims = try await self.authenticate(request)
            let role = try request.uri.queryParameters.get("user_role").flatMap { text -> Role? in
                if text.isEmpty { return nil }
                guard let role = Role(rawValue: text.lowercased()) else { throw ChatError(.badRequest, "user_role is admin or doctor") }
                return role
            }
            var users: [User] = try self.store.result(await self.store.query(.searchUsers, user: claims.sub) {
                $0.query = request.uri.queryParameters.get("q") ?? ""
                $0.role = role
            })
            let states = (try? await self.presence.states(users.map(\.email))) ?? [:]
            for index in users.indices {
                users[index].online = states[users[index].email]?.online ?? false
                users[index].lastSeen = states[users[index].email]?.lastSeen
            }
            return try json(users)
        }

        routes.add(.get, "/api/admin/users") { request, _ in
            let claims = try await self.authenticate(request, admin: true)
            return try self.pass(await self.store.query(.listUsers, user: claims.sub))
        }
        routes.add(.post, "/api/admin/users") { request, context in
            let claims = try await self.authenticate(request, admin: true)
            struct Body: Decodable { var email: String, name: String, role: Role, password: String }
            let body = try await request.decodeJSON(Body.self, context: context)
            try PasswordPolicy.checkChosen(body.password, email: body.email)
            // Only the hash goes into the stream (and Redis's append-only file).
            let hash = await PasswordPolicy.hash(body.password)
            return try self.pass(await self.store.command(.createUser, user: claims.sub,
                                                          body: CreateUserRequest(email: body.email, name: body.name, role: body.role, passwordHash: hash,
                                                                                  mustChangePassword: true)),
                                 status: .created)
        }
        routes.add(.post, "/api/admin/users/:email/logout") { request, context in
            let claims = try await self.authenticate(request, admin: true)
            let user = try await self.endSessions(of: try context.pathParameter("email").lowercased(), by: claims.sub)
            return try json(user)
        }
        routes.add(.post, "/api/admin/users/:email/password") { request, context in
            let claims = try await self.authenticate(request, admin: true)
            let email = try context.pathParameter("email").lowercased()
            return try await self.resetPassword(email, by: claims, request, context)
        }
        for (path, disabled) in [("/api/admin/users/:email/disable", true), ("/api/admin/users/:email/enable", false)] {
            routes.add(.post, path) { request, context in
                let claims = try await self.authenticate(request, admin: true)
                let email = try context.pathParameter("email")
                return try self.pass(await self.store.command(.setUserDisabled, user: claims.sub, body: UpdateUserRequest(email: email, disabled: disabled)))
            }
        }
        routes.add(.put, "/api/admin/users/:email/role") { request, context in
            let claims = try await self.authenticate(request, admin: true)
            let email = try context.pathParameter("email")
            struct Body: Decodable { var role: Role }
            let body = try await request.decodeJSON(Body.self, context: context)
            return try self.pass(await self.store.command(.setUserRole, user: claims.sub, body: UpdateUserRequest(email: email, role: body.role)))
        }
        for (path, held) in [("/api/admin/conversations/:id/hold", true), ("/api/admin/conversations/:id/release", false)] {
            routes.add(.post, path) { request, context in
                let claims = try await self.authenticate(request, admin: true)
                let id = try context.pathParameter("id")
                return try self.pass(await self.store.command(.setLegalHold, user: claims.sub, body: LegalHoldRequest(conversationID: id, held: held)))
            }
        }
        routes.add(.get, "/api/admin/conversations") { request, _ in
            let claims = try await self.authenticate(request, admin: true)
            let participant = request.uri.queryParameters.get("participant").map { $0.trimmingCharacters(in: .whitespaces) }.flatMap { $0.isEmpty ? nil : $0 }
            let held: Bool? = try request.uri.queryParameters.get("held").map { text in
                switch text.lowercased() {
                case "true", "1": return true
                case "false", "0", "": return false
                default: throw ChatError(.badRequest, "held is true or false")
                }
            }
            guard participant != nil || held == true else {
                throw ChatError(.badRequest, "name a participant (participant=email), or ask for the conversations on legal hold (held=true)")
            }
            let limit = try request.integer("limit")
            if let limit, !(1...500).contains(limit) { throw ChatError(.badRequest, "limit is 1 to 500") }
            return try self.pass(await self.store.query(.adminConversations, user: claims.sub) {
                $0.query = participant
                $0.held = held
                $0.limit = limit
            })
        }
        routes.add(.get, "/api/admin/audit") { request, _ in
            let claims = try await self.authenticate(request, admin: true)
            let (limit, before) = (try request.integer("limit"), try request.integer("before"))
            return try self.pass(await self.store.query(.auditLog, user: claims.sub) {
                $0.limit = limit
                $0.before = before.map(Int64.init)
            })
        }
        return (router, routes.registered)
    }

    // MARK: Handlers

    struct LoginRequest: Decodable, Sendable {
        var email: String
        var password: String
    }

    struct LoginResponse: Encodable, Sendable {
        var token: String
        var tokenType = "Bearer"
        var expiresAt: Date
        var user: User
        enum CodingKeys: String, CodingKey {
            case token, user
            case tokenType = "token_type"
            case expiresAt = "expires_at"
        }
    }

    func login(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        let body = try await request.decodeJSON(LoginRequest.self, context: context)
        let email = body.email.trimmingCharacters(in: .whitespaces).lowercased()
        guard let user = try await checkPassword(.login, email: email, password: body.password, context: context, throttled: "login_throttled") else {
            // The same answer for an unknown user, a wrong password and a disabled account.
            throw ChatError(.unauthorized, "wrong email or password")
        }
        let (token, claims) = tokens.issue(for: user, now: try await store.sharedNow())
        return try json(LoginResponse(token: token, expiresAt: Date(timeIntervalSince1970: TimeInterval(claims.exp)), user: user))
    }

    /// A password checked by the store (`login` or `check_password`, which it audits), under
    /// the login throttle: more than 5 failures a minute for the account or the address
    /// answer 429 (audited here as `throttled`); a wrong password counts as a failure and
    /// gives nil.
    func checkPassword(_ kind: StoreQuery.Kind, email: String, password: String, context: GatewayRequestContext, throttled: String) async throws -> User? {
        let address = context.remoteAddress ?? "unknown"
        do {
            try await throttle.check(email: email, address: address)
        } catch let error as ChatError {
            await store.fireAndForget(.audit, user: email, body: AuditRequest(action: throttled, target: email, outcome: "rate_limited", detail: address))
            throw error
        }
        let reply = try await store.query(kind, user: email) { $0.password = password }
        do {
            return try store.result(reply) as User
        } catch let error as ChatError where error.code == .unauthorized {
            await throttle.recordFailure(email: email, address: address)
            return nil
        }
    }

    struct ChangePasswordRequest: Decodable, Sendable {
        var currentPassword: String
        var newPassword: String
        enum CodingKeys: String, CodingKey {
            case currentPassword = "current_password"
            case newPassword = "new_password"
        }
    }

    /// A user changes their own password: the current one is checked as a login's is (audited
    /// as `password_check`; a wrong one counts as a failed login, and the login throttle
    /// applies), the new one must meet the policy. Every token of the user issued before
    /// ends, on every gateway, with its sockets; the answer is a new token, as a login's.
    func changePassword(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        let claims = try await authenticate(request, duringPasswordChange: true)
        let body = try await request.decodeJSON(ChangePasswordRequest.self, context: context)
        let email = claims.sub
        try PasswordPolicy.checkChosen(body.newPassword, email: email)
        guard body.newPassword != body.currentPassword else {
            throw ChatError(.invalidContent, "the new password is the same as the current one")
        }
        guard try await checkPassword(.checkPassword, email: email, password: body.currentPassword, context: context, throttled: "password_change") != nil else {
            throw ChatError(.forbidden, "the current password is wrong")
        }
        let user = try await setPassword(email, to: body.newPassword, by: email)
        // Issued after the cutoff the change set, by the same clock.
        let (token, issued) = tokens.issue(for: user, now: try await store.sharedNow())
        return try json(LoginResponse(token: token, expiresAt: Date(timeIntervalSince1970: TimeInterval(issued.exp)), user: user))
    }

    struct ResetPasswordRequest: Decodable, Sendable {
        var password: String?
    }

    struct ResetPasswordResponse: Encodable, Sendable {
        var user: User
        /// The password made for the user, when the admin gave none: shown this once.
        var password: String?
    }

    /// An admin sets another user's password (a forgotten one, a departing device): the one
    /// given, or a generated one returned once. The user's tokens and sockets all end.
    func resetPassword(_ email: String, by claims: TokenClaims, _ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        guard email != claims.sub else {
            throw ChatError(.badRequest, "change your own password with POST /api/me/password (it asks for the current one)")
        }
        let given = try await request.decodeJSONIfPresent(ResetPasswordRequest.self, context: context)?.password
        if let given { try PasswordPolicy.checkChosen(given, email: email) }
        let password = given ?? PasswordPolicy.generate()
        let user = try await setPassword(email, to: password, by: claims.sub, mustChange: true)
        return try json(ResetPasswordResponse(user: user, password: given == nil ? password : nil))
    }

    /// Hashes the password here (only the hash goes into the stream) and has the store set it;
    /// tokens issued before now (Redis's clock, as every token's issue time) are refused from then on.
    /// `mustChange`: the user must replace it before anything else (an admin set it).
    func setPassword(_ email: String, to password: String, by actor: String, mustChange: Bool = false) async throws -> User {
        let hash = await PasswordPolicy.hash(password)
        let body = SetPasswordRequest(email: email, passwordHash: hash, tokensBefore: try await store.sharedNow().epochMilliseconds, tokensTTL: tokens.lifetime,
                                      mustChangePassword: mustChange)
        return try store.result(await store.command(.setPassword, user: actor, body: body))
    }

    /// Ends every session of the user, on every gateway: their tokens issued before now are
    /// refused, their sockets end (a lost or shared device).
    func endSessions(of email: String, by actor: String) async throws -> User {
        let body = EndSessionsRequest(email: email, tokensBefore: try await store.sharedNow().epochMilliseconds, tokensTTL: tokens.lifetime)
        return try store.result(await store.command(.endSessions, user: actor, body: body))
    }

    func readiness() async throws -> Response {
        do {
            try await redis.ping()
            return try json(["status": "ready"])
        } catch {
            throw ChatError(.unavailable, "not ready: Redis is unreachable")
        }
    }

    /// The caller's claims; 401 without a valid token. `ownEmailParameter`: a `user_email`
    /// parameter (the original app sent one) must be the caller (403 otherwise).
    /// `duringPasswordChange`: the route is one a user who must change their password may use
    /// first (`/api/me`, the change, logging out); every other answers 403 `password_change_required`.
    func authenticate(_ request: Request, ownEmailParameter: Bool = false, admin: Bool = false, duringPasswordChange: Bool = false) async throws -> TokenClaims {
        guard let token = request.bearerToken, !token.isEmpty else { throw ChatError(.unauthorized, "authentication required: send Authorization: Bearer <token>") }
        let claims = try await tokens.verify(token)
        if claims.passwordChangeRequired, !duringPasswordChange {
            throw ChatError(.passwordChangeRequired, "your password was set by an administrator: change it first (POST /api/me/password)")
        }
        if ownEmailParameter, let email = request.uri.queryParameters.get("user_email"), email.lowercased() != claims.sub {
            throw ChatError(.forbidden, "user_email must be your own address")
        }
        if admin, claims.role != .admin { throw ChatError(.forbidden, "only admins may do this") }
        return claims
    }

    /// A store answer as the response: its JSON passed through, or its error.
    func pass(_ reply: StoreReply, status: HTTPResponse.Status = .ok) throws -> Response {
        if let error = reply.error { throw error }
        return rawJSON(Array((reply.result ?? "{}").utf8), status: status)
    }
}

/// Registers routes and remembers them as `METHOD /path/{param}`, for the OpenAPI check.
final class RouteRecorder {
    let router: Router<GatewayRequestContext>
    private(set) var registered: [String] = []

    init(router: Router<GatewayRequestContext>) { self.router = router }

    func add(_ method: HTTPRequest.Method, _ path: String, _ handler: @escaping @Sendable (Request, GatewayRequestContext) async throws -> Response) {
        router.on(RouterPath(path), method: method, use: handler)
        let openAPIPath = path.split(separator: "/", omittingEmptySubsequences: false)
            .map { $0.hasPrefix(":") ? "{\($0.dropFirst())}" : String($0) }.joined(separator: "/")
        registered.append("\(method.rawValue) \(openAPIPath)")
    }
}
