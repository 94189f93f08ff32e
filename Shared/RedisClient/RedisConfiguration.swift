/// Where and how to connect: parsed from `redis://[:password@]host:port/db` or `redis+unix:///path`.
public struct RedisConfiguration: Sendable, Hashable {
    /// A TCP host and port, or a Unix domain socket.
    public enum Endpoint: Sendable, Hashable {
        case tcp(host: String, port: Int)
        case unix(path: String)
    }

    public var endpoint: Endpoint
    /// Sent with `AUTH` on every new connection when set.
    public var username: String?
    public var password: String?
    /// Selected with `SELECT` on every new connection when not 0.
    public var database: Int
    /// Shown by `CLIENT LIST` (`CLIENT SETNAME`), so operators see which service holds which connection.
    public var clientName: String?
    /// How long one connection attempt may take.
    public var connectTimeout: Duration
    /// The longest wait between reconnection attempts; waits double from 50 ms up to this.
    public var maximumBackoff: Duration
    /// How long a connection may go without a reply while commands wait for one (a blocking
    /// read: its `BLOCK` time more) before it is closed as dead and reconnects; nil: forever.
    /// Without it, a server that stopped answering, or a host gone without a reset, holds
    /// every caller until the kernel gives up on the connection (about 15 minutes).
    public var replyTimeout: Duration?
    /// Idle TCP connections are probed after this long without traffic, then every third of
    /// it, and closed after three unanswered probes (`SO_KEEPALIVE`, `TCP_KEEPIDLE`,
    /// `TCP_KEEPINTVL`, `TCP_KEEPCNT`), so a subscriber or a blocked reader whose server
    /// vanished learns it in about twice this; nil: the kernel's defaults (two hours). A
    /// ``RedisSubscriber`` with a reply timeout also sends `PING` this often.
    public var keepAlive: Duration?

    public init(
        endpoint: Endpoint,
        username: String? = nil,
        password: String? = nil,
        database: Int = 0,
        clientName: String? = nil,
        connectTimeout: Duration = .seconds(2),
        maximumBackoff: Duration = .seconds(2),
        replyTimeout: Duration? = .seconds(10),
        keepAlive: Duration? = .seconds(15)
    ) {
        self.endpoint = endpoint
        self.username = username
        self.password = password
        self.database = database
        self.clientName = clientName
        self.connectTimeout = connectTimeout
        self.maximumBackoff = maximumBackoff
        self.replyTimeout = replyTimeout
        self.keepAlive = keepAlive
    }

    /// Parses a Redis URL.
    ///
    /// Accepted: `redis://host`, `redis://host:port`, `redis://:password@host:port/db`,
    /// `redis://user:password@host:port/db`, `redis://[::1]:6379`, `redis+unix:///path/to/socket`.
    public init(url: String) throws(RedisURLError) {
        if url.hasPrefix("redis+unix://") {
            let path = String(url.dropFirst("redis+unix://".count))
            guard path.hasPrefix("/"), path.count > 1 else { throw RedisURLError(url: url, reason: "a Unix socket URL needs an absolute path") }
            self.init(endpoint: .unix(path: path))
            return
        }
        guard url.hasPrefix("redis://") else { throw RedisURLError(url: url, reason: "the scheme must be redis:// or redis+unix://") }
        var rest = Substring(url.dropFirst("redis://".count))

        var username: String?
        var password: String?
        if let at = rest.lastIndex(of: "@") {
            let userinfo = rest[..<at]
            rest = rest[rest.index(after: at)...]
            if let colon = userinfo.firstIndex(of: ":") {
                let user = userinfo[..<colon]
                username = user.isEmpty ? nil : String(user)
                password = String(userinfo[userinfo.index(after: colon)...]).removingPercentEncodingIfPossible
            } else if !userinfo.isEmpty {
                password = String(userinfo).removingPercentEncodingIfPossible
            }
        }

        var database = 0
        if let slash = rest.firstIndex(of: "/") {
            let db = rest[rest.index(after: slash)...]
            rest = rest[..<slash]
            if !db.isEmpty {
                guard let n = Int(db), n >= 0 else { throw RedisURLError(url: url, reason: "the database must be a number, got '\(db)'") }
                database = n
            }
        }

        var host: Substring
        var port = 6379
        if rest.hasPrefix("[") {
            guard let close = rest.firstIndex(of: "]") else { throw RedisURLError(url: url, reason: "unclosed '[' in an IPv6 host") }
            host = rest[rest.index(after: rest.startIndex)..<close]
            let after = rest[rest.index(after: close)...]
            if after.hasPrefix(":") {
                guard let p = Int(after.dropFirst()), (1...65535).contains(p) else { throw RedisURLError(url: url, reason: "the port must be 1-65535") }
                port = p
            } else if !after.isEmpty {
                throw RedisURLError(url: url, reason: "unexpected '\(after)' after the host")
            }
        } else if let colon = rest.lastIndex(of: ":") {
            host = rest[..<colon]
            guard let p = Int(rest[rest.index(after: colon)...]), (1...65535).contains(p) else { throw RedisURLError(url: url, reason: "the port must be 1-65535") }
            port = p
        } else {
            host = rest
        }
        guard !host.isEmpty else { throw RedisURLError(url: url, reason: "the host is missing") }
        self.init(endpoint: .tcp(host: String(host), port: port), username: username, password: password, database: database)
    }
}

/// A Redis URL that could not be parsed.
public struct RedisURLError: Error, Hashable, CustomStringConvertible {
    public let url: String
    public let reason: String
    public var description: String { "\(reason) (expected redis://[:password@]host:port/db or redis+unix:///path)" }
}

extension String {
    /// `%40` → `@` and so on, for passwords in URLs; the string as is when it holds no valid escapes.
    fileprivate var removingPercentEncodingIfPossible: String {
        guard contains("%") else { return self }
        var bytes: [UInt8] = []
        var iterator = utf8.makeIterator()
        while let byte = iterator.next() {
            if byte == UInt8(ascii: "%"), let hi = iterator.next(), let lo = iterator.next(),
               let value = UInt8(String(decoding: [hi, lo], as: UTF8.self), radix: 16) {
                bytes.append(value)
            } else if byte == UInt8(ascii: "%") {
                return self
            } else {
                bytes.append(byte)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
