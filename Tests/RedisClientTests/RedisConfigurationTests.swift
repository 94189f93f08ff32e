import Testing
@testable import RedisClient

@Suite("Redis URLs")
struct RedisConfigurationTests {
    @Test("the accepted forms parse into endpoint, password and database")
    func acceptedForms() throws {
        #expect(try RedisConfiguration(url: "redis://127.0.0.1:6379").endpoint == .tcp(host: "127.0.0.1", port: 6379))
        #expect(try RedisConfiguration(url: "redis://cache").endpoint == .tcp(host: "cache", port: 6379))
        let full = try RedisConfiguration(url: "redis://:s3cr%40t@redis.internal:6380/2")
        #expect(full.endpoint == .tcp(host: "redis.internal", port: 6380))
        #expect(full.password == "s3cr@t")
        #expect(full.username == nil)
        #expect(full.database == 2)
        let user = try RedisConfiguration(url: "redis://chat:pw@h:1/0")
        #expect(user.username == "chat")
        #expect(user.password == "pw")
        #expect(try RedisConfiguration(url: "redis://[::1]:7000").endpoint == .tcp(host: "::1", port: 7000))
        #expect(try RedisConfiguration(url: "redis+unix:///var/run/redis.sock").endpoint == .unix(path: "/var/run/redis.sock"))
    }

    @Test("malformed URLs are refused with a reason", arguments: [
        "http://localhost:6379", "redis://", "redis://host:notaport", "redis://host:70000",
        "redis://host/db", "redis+unix://relative", "localhost:6379", "redis://[::1",
    ])
    func refused(url: String) {
        #expect(throws: RedisURLError.self) { try RedisConfiguration(url: url) }
    }
}

@Suite("Stream ids")
struct StreamIDTests {
    @Test("the id after another is the next sequence number, or the next millisecond at the top")
    func idAfter() {
        #expect(StreamEntry.id(after: "5-3") == "5-4")
        #expect(StreamEntry.id(after: "1700000000000-0") == "1700000000000-1")
        #expect(StreamEntry.id(after: "5-18446744073709551615") == "6-0")
        #expect(StreamEntry.id(after: "garbage") == "garbage")
    }
}
