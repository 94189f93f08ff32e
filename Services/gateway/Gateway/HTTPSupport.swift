import ChatCore
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import RedisClient

/// Per-request state: the caller's address (for login throttling) and a 64 KiB body limit.
public struct GatewayRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    /// The peer's IP address, when there is a socket.
    public var remoteAddress: String?

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        remoteAddress = source.channel.remoteAddress?.ipAddress
    }

    /// Bodies larger than this are refused with 413.
    public var maxUploadSize: Int { 64 * 1024 }
}

/// Turns every error into `{"error":{"code","message"}}` with its status, and adds the
/// headers every API response carries. Nothing reaches a client as a bare 500.
struct ErrorMiddleware: RouterMiddleware {
    typealias Context = GatewayRequestContext
    let logger: Logger
    var hsts = false

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        var response: Response
        do {
            response = try await next(request, context)
        } catch {
            response = Self.response(for: Self.chatError(error, logger: logger, path: request.uri.path))
        }
        // API answers hold patient information: never stored by a browser or proxy. The web
        // client's own files may be cached but are revalidated (ETag) on every load.
        let isAPI = request.uri.path.hasPrefix("/api/") || request.uri.path.hasPrefix("/socket.io/") || response.status.code >= 400
        response.headers[.cacheControl] = response.headers[.cacheControl] ?? (isAPI ? "no-store" : "no-cache")
        response.headers[.init("X-Content-Type-Options")!] = "nosniff"
        // The web client loads only its own files and talks only to this origin; no framing.
        response.headers[.init("Content-Security-Policy")!] = "default-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
        response.headers[.init("Referrer-Policy")!] = "no-referrer"
        if hsts {
            // Browsers that saw this over HTTPS never use plain HTTP for this host again.
            response.headers[.init("Strict-Transport-Security")!] = "max-age=31536000; includeSubDomains"
        }
        return response
    }

    static func chatError(_ error: any Error, logger: Logger, path: String) -> ChatError {
        switch error {
        case let error as ChatError:
            return error
        case let error as any HTTPResponseError:
            // Hummingbird's own errors: no route, body over the limit (NIOTooManyBytesError), ...
            let message = (error as? HTTPError)?.body
            switch error.status {
            case .notFound: return ChatError(.notFound, "no such endpoint")
            case .contentTooLarge: return ChatError(.payloadTooLarge, "the request body is larger than 64 KiB")
            case .methodNotAllowed: return ChatError(.badRequest, "this method is not allowed here")
            case .unauthorized: return ChatError(.unauthorized, message ?? "authentication required")
            default: return ChatError(.badRequest, message ?? "bad request")
            }
        case is RedisConnectionError:
            return ChatError(.unavailable, "the service is temporarily unavailable; retry")
        default:
            logger.error("request failed", metadata: ["http.path": "\(path)", "chat.error": "\(error)"])
            return ChatError(.internal, "something went wrong; it has been logged")
        }
    }

    static func response(for error: ChatError) -> Response {
        var response = (try? json(ErrorBody(error: ChatError(error.code, error.message)), status: HTTPResponse.Status(code: error.code.httpStatus)))
            ?? Response(status: .internalServerError)
        if let retryAfter = error.retryAfter {
            response.headers[.retryAfter] = String(Int(retryAfter.rounded(.up)))
        }
        return response
    }
}

/// A JSON response with the project's encoding.
func json<T: Encodable>(_ value: T, status: HTTPResponse.Status = .ok) throws -> Response {
    rawJSON(try ChatJSON.makeEncoder().encode(value), status: status)
}

/// A response whose body is already JSON (a store answer passed through as is).
func rawJSON(_ body: some Sequence<UInt8>, status: HTTPResponse.Status = .ok) -> Response {
    Response(status: status, headers: [.contentType: "application/json; charset=utf-8"], body: .init(byteBuffer: ByteBuffer(bytes: body)))
}

extension Request {
    /// The body decoded as `T`: 413 over the limit, 400 for no body or invalid JSON, 422 for bytes that are not UTF-8.
    func decodeJSON<T: Decodable>(_ type: T.Type, context: GatewayRequestContext) async throws -> T {
        guard let value = try await decodeJSONIfPresent(type, context: context) else {
            throw ChatError(.badRequest, "the request body is empty; send JSON")
        }
        return value
    }

    /// As ``decodeJSON(_:context:)``, but `nil` for an empty body (for optional bodies).
    func decodeJSONIfPresent<T: Decodable>(_ type: T.Type, context: GatewayRequestContext) async throws -> T? {
        let buffer = try await body.collect(upTo: context.maxUploadSize)
        let bytes = Array(buffer.readableBytesView)
        guard !bytes.isEmpty else { return nil }
        guard String(validating: bytes, as: UTF8.self) != nil else { throw ChatError(.invalidContent, "the request body is not valid UTF-8 text") }
        do {
            return try ChatJSON.makeDecoder().decode(T.self, from: Data(bytes))
        } catch let error as DecodingError {
            switch error {
            case .keyNotFound(let key, _): throw ChatError(.badRequest, "'\(key.stringValue)' is missing")
            case .typeMismatch(_, let c), .valueNotFound(_, let c):
                throw ChatError(.badRequest, "'\(c.codingPath.map(\.stringValue).joined(separator: "."))' has the wrong type")
            case .dataCorrupted(let c) where !c.codingPath.isEmpty:
                throw ChatError(.badRequest, "'\(c.codingPath.map(\.stringValue).joined(separator: "."))' is not valid")
            default: throw ChatError(.badRequest, "the request body is not valid JSON")
            }
        }
    }

    /// An optional integer query parameter; 400 when present but not a number.
    func integer(_ name: String) throws -> Int? {
        guard let text = uri.queryParameters.get(name) else { return nil }
        guard let value = Int(text) else { throw ChatError(.badRequest, "\(name) must be a whole number") }
        return value
    }

    /// The bearer token, if any.
    var bearerToken: String? {
        guard let header = headers[.authorization], header.lowercased().hasPrefix("bearer ") else { return nil }
        return String(header.dropFirst(7)).trimmingCharacters(in: .whitespaces)
    }
}

/// Login throttling: more than 5 failures a minute for one account or one address → 429.
struct LoginThrottle: Sendable {
    static let limit = 5
    let redis: RedisClient
    let keys: RedisKeys

    /// Refuses with `rate_limited` (and when to retry) while the account or address is over the limit.
    func check(email: String, address: String) async throws {
        let replies = try await redis.pipeline([
            ["GET", keys.loginFailuresByAccount(email)], ["TTL", keys.loginFailuresByAccount(email)],
            ["GET", keys.loginFailuresByAddress(address)], ["TTL", keys.loginFailuresByAddress(address)],
        ])
        for (count, ttl) in [(replies[0], replies[1]), (replies[2], replies[3])] where (count.int ?? 0) >= Self.limit {
            let wait = max(1, ttl.int ?? 60)
            throw ChatError(.rateLimited, "too many failed logins; try again in \(wait) seconds", retryAfter: Double(wait))
        }
    }

    func recordFailure(email: String, address: String) async {
        _ = try? await redis.pipeline([
            ["INCR", keys.loginFailuresByAccount(email)], ["EXPIRE", keys.loginFailuresByAccount(email), "60", "NX"],
            ["INCR", keys.loginFailuresByAddress(address)], ["EXPIRE", keys.loginFailuresByAddress(address), "60", "NX"],
        ])
    }
}

extension GatewayRequestContext {
    /// A path parameter with its percent-encoding undone: clients that encode a path's
    /// parts (`encodeURIComponent("a@b.c")` is `a%40b.c`) name the same user or
    /// conversation as those that do not. 400 for an encoding that is not UTF-8.
    func pathParameter(_ name: String) throws -> String {
        let raw = try parameters.require(name)
        guard let decoded = raw.removingPercentEncoding else { throw ChatError(.badRequest, "the \(name) in the path is not valid percent-encoded UTF-8") }
        return decoded
    }
}
