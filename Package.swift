// swift-tools-version:6.0
import PackageDescription

// Layout (see DESIGN.md): Shared/ holds the libraries every service uses,
// Services/<name>/ holds one library plus one thin executable per service.
var serviceLibraryDependencies: [Target.Dependency] {
    [
        "ChatCore", "RedisClient",
        .product(name: "Logging", package: "swift-log"),
        .product(name: "Prometheus", package: "swift-prometheus"),
        .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
    ]
}

let package = Package(
    name: "clinic-chat",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "chat-gateway", targets: ["chat-gateway"]),
        .executable(name: "chat-messages", targets: ["chat-messages"]),
        .executable(name: "chat-presence", targets: ["chat-presence"]),
        .executable(name: "chat-retention", targets: ["chat-retention"]),
        .executable(name: "chat-bench", targets: ["chat-bench"]),
        .executable(name: "chatctl", targets: ["chatctl"]),
        .library(name: "RedisClient", targets: ["RedisClient"]),
        .library(name: "ChatCore", targets: ["ChatCore"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird-auth.git", from: "2.5.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "3.12.3"),
        .package(url: "https://github.com/hummingbird-project/hummingbird-websocket.git", from: "2.8.1"),
        .package(url: "https://github.com/apple/swift-collections.git", from: "1.6.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift.git", from: "0.2.0"),
        .package(url: "https://github.com/apple/swift-nio-extras.git", from: "1.35.2"),
    ],
    targets: [
        // MARK: Shared
        .systemLibrary(
            name: "CHiredis",
            path: "Shared/CHiredis",
            pkgConfig: "hiredis",
            providers: [.apt(["libhiredis-dev"])]
        ),
        .target(
            name: "RedisClient",
            dependencies: [
                "CHiredis",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            path: "Shared/RedisClient"
        ),
        .target(
            name: "ChatCore",
            dependencies: [
                "RedisClient",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "HummingbirdBcrypt", package: "hummingbird-auth"),
            ],
            path: "Shared/ChatCore"
        ),
        // Health, readiness and metrics over HTTP, and the body of every executable.
        .target(
            name: "Operations",
            dependencies: [
                "ChatCore", "RedisClient",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            path: "Shared/Operations"
        ),
        .target(
            name: "ChatTesting",
            dependencies: ["RedisClient", "ChatCore"],
            path: "Shared/ChatTesting"
        ),

        // MARK: Services (library + thin executable each)
        .target(
            name: "Gateway",
            dependencies: serviceLibraryDependencies + [
                "Operations",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                .product(name: "NIOHTTPTypesHTTP1", package: "swift-nio-extras"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "DequeModule", package: "swift-collections"),
            ],
            path: "Services/gateway/Gateway"
        ),
        .executableTarget(name: "chat-gateway", dependencies: ["Gateway", "ChatCore", "Operations"], path: "Services/gateway/chat-gateway"),
        .target(
            name: "MessageStore",
            dependencies: serviceLibraryDependencies + [
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "HummingbirdBcrypt", package: "hummingbird-auth"),
            ],
            path: "Services/messages/MessageStore"
        ),
        .executableTarget(name: "chat-messages", dependencies: ["MessageStore", "ChatCore", "Operations"], path: "Services/messages/chat-messages"),
        .target(name: "Presence", dependencies: serviceLibraryDependencies, path: "Services/presence/Presence"),
        .executableTarget(name: "chat-presence", dependencies: ["Presence", "ChatCore", "Operations"], path: "Services/presence/chat-presence"),
        .target(name: "Retention", dependencies: serviceLibraryDependencies, path: "Services/retention/Retention"),
        .executableTarget(name: "chat-retention", dependencies: ["Retention", "ChatCore", "Operations"], path: "Services/retention/chat-retention"),

        // MARK: Tools
        .executableTarget(
            name: "chatctl",
            dependencies: ["RedisClient", "ChatCore", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            path: "Tools/chatctl"
        ),
        .executableTarget(
            name: "chat-bench",
            dependencies: [
                "RedisClient", "ChatCore", "ChatTesting", "MessageStore", "Retention",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
            ],
            path: "Tools/chat-bench"
        ),

        // MARK: Tests
        .testTarget(
            name: "RedisClientTests",
            dependencies: [
                "RedisClient", "CHiredis", "ChatTesting",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOTestUtils", package: "swift-nio"),
            ],
            path: "Tests/RedisClientTests"
        ),
        .testTarget(name: "ChatCoreTests", dependencies: ["ChatCore", "RedisClient"], path: "Tests/ChatCoreTests"),
        .testTarget(
            name: "MessageStoreTests",
            dependencies: ["MessageStore", "ChatCore", "ChatTesting", "RedisClient", .product(name: "GRDB", package: "GRDB.swift"),
                           .product(name: "Prometheus", package: "swift-prometheus")],
            path: "Tests/MessageStoreTests"
        ),
        .testTarget(
            name: "GatewayTests",
            dependencies: [
                "Gateway", "MessageStore", "Presence", "ChatCore", "ChatTesting", "RedisClient",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "HummingbirdWSClient", package: "hummingbird-websocket"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ],
            path: "Tests/GatewayTests"
        ),
        .testTarget(
            name: "RetentionTests",
            dependencies: ["Retention", "MessageStore", "ChatCore", "ChatTesting", "RedisClient"],
            path: "Tests/RetentionTests"
        ),
        .testTarget(
            name: "BenchTests",
            dependencies: ["chat-bench", .product(name: "Histogram", package: "hdrhistogram-swift")],
            path: "Tests/BenchTests"
        ),
        .testTarget(
            name: "ServiceTests",
            dependencies: ["ChatCore", "ChatTesting", "RedisClient", "Gateway", "MessageStore", "Presence", "Retention", "Operations", .product(name: "GRDB", package: "GRDB.swift")],
            path: "Tests/ServiceTests"
        ),
    ]
)
