import ArgumentParser
import ChatCore
import Foundation
import Logging
import RedisClient

@main
struct Chatctl: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chatctl",
        abstract: "Administers the clinic chat system through Redis (CHAT_REDIS_URL, CHAT_REDIS_PREFIX); the messages service must be running.",
        subcommands: [UserCommand.self, SeedDemo.self, RetentionCommand.self]
    )
}

struct UserCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "user", abstract: "Manage users.",
                                                    subcommands: [Add.self, Disable.self, Enable.self, List.self, SetRole.self, SetPassword.self, Logout.self])

    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Add a user; without --password one is generated and printed. They choose their own at their first login.")
        @Option var email: String
        @Option var name: String
        @Option var role: Role
        @Option(help: "At least 8 characters. Prefer the generated one.") var password: String?

        func run() async throws {
            let password = try acceptable(password ?? PasswordPolicy.generate(), for: email)
            let hash = await PasswordPolicy.hash(password)
            let user: User = try await withStore { store in
                try store.result(await store.command(.createUser, user: "", body: CreateUserRequest(email: email, name: name, role: role, passwordHash: hash,
                                                                                                   mustChangePassword: true)))
            }
            print("added \(user.email) (\(user.name), \(user.role.rawValue))")
            if self.password == nil { print("password: \(password)") }
        }
    }

    struct Disable: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Disable a user: no login, and their tokens stop working.")
        @Argument var email: String
        func run() async throws {
            let user: User = try await withStore { try $0.result(await $0.command(.setUserDisabled, user: "", body: UpdateUserRequest(email: email, disabled: true))) }
            print("disabled \(user.email)")
        }
    }

    struct Enable: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Enable a disabled user again.")
        @Argument var email: String
        func run() async throws {
            let user: User = try await withStore { try $0.result(await $0.command(.setUserDisabled, user: "", body: UpdateUserRequest(email: email, disabled: false))) }
            print("enabled \(user.email)")
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List every user.")
        func run() async throws {
            let users: [User] = try await withStore { try $0.result(await $0.query(.listUsers, user: "")) }
            for user in users {
                print([user.email, user.role.rawValue, user.disabled ? "disabled" : "enabled", user.name].joined(separator: "\t"))
            }
        }
    }

    struct SetPassword: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "set-password",
            abstract: "Set a user's password (a forgotten one); without --password one is generated and printed. Their sessions end everywhere, and they choose their own at their next login.")
        @Argument var email: String
        @Option(help: "At least 8 characters. Prefer the generated one.") var password: String?
        func run() async throws {
            let password = try acceptable(password ?? PasswordPolicy.generate(), for: email)
            let hash = await PasswordPolicy.hash(password)
            let lifetime = try ChatConfiguration(environment: ProcessInfo.processInfo.environment).tokenTTL
            let user: User = try await withStore { store in
                // Redis's clock, which the gateways' tokens carry too.
                let body = SetPasswordRequest(email: email, passwordHash: hash, tokensBefore: try await store.sharedNow().epochMilliseconds, tokensTTL: lifetime,
                                              mustChangePassword: true)
                return try store.result(await store.command(.setPassword, user: "", body: body))
            }
            print("set the password of \(user.email); their sessions have ended")
            if self.password == nil { print("password: \(password)") }
        }
    }

    struct Logout: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "End every session of a user on every gateway (a lost or shared device); they can log in again.")
        @Argument var email: String
        func run() async throws {
            let lifetime = try ChatConfiguration(environment: ProcessInfo.processInfo.environment).tokenTTL
            let user: User = try await withStore { store in
                let body = EndSessionsRequest(email: email, tokensBefore: try await store.sharedNow().epochMilliseconds, tokensTTL: lifetime)
                return try store.result(await store.command(.endSessions, user: "", body: body))
            }
            print("ended every session of \(user.email)")
        }
    }

    struct SetRole: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "set-role", abstract: "Change a user's role.")
        @Argument var email: String
        @Argument var role: Role
        func run() async throws {
            let user: User = try await withStore { try $0.result(await $0.command(.setUserRole, user: "", body: UpdateUserRequest(email: email, role: role))) }
            print("\(user.email) is now \(user.role.rawValue)")
        }
    }
}

struct SeedDemo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "seed-demo",
        abstract: "Create the demo accounts (admin@clinic.com, doctor@clinic.com and a few more); existing ones are left alone.")

    @Flag(help: "Give every demo account the password 'password' (local demos only). Otherwise each gets a generated one, printed once.")
    var demoPassword = false

    func run() async throws {
        try await withStore { store in
            for (email, name, role) in DemoAccounts.all {
                let password = demoPassword ? "password" : PasswordPolicy.generate()
                let reply = try await store.command(.createUser, user: "", body: CreateUserRequest(email: email, name: name, role: role,
                                                                                                     passwordHash: await PasswordPolicy.hash(password)))
                if reply.error?.code == .conflict {
                    print("\(email)\texists")
                } else {
                    let _: User = try store.result(reply)
                    print("\(email)\t\(role.rawValue)\t\(password)")
                }
            }
        }
    }
}

extension Role: ExpressibleByArgument {}

/// The password, if it meets the policy for `email`; its fault in one line otherwise.
func acceptable(_ password: String, for email: String) throws -> String {
    do {
        try PasswordPolicy.checkChosen(password, email: email)
    } catch let error as ChatError {
        throw CommandFailure(error.message)
    }
    return password
}

/// Connects to Redis, listens for the store's answers, runs `body`, and disconnects.
func withStore<T: Sendable>(_ body: @Sendable (StoreClient) async throws -> T) async throws -> T {
    // A bad variable is one line (`ConfigurationError`'s description) without the usage, as any runtime fault.
    let configuration = try ChatConfiguration(environment: ProcessInfo.processInfo.environment)
    var logger = Logger(label: "chatctl")
    logger.logLevel = .error
    var redisConfiguration = configuration.redis
    redisConfiguration.clientName = "chatctl"
    let redis = RedisClient(configuration: redisConfiguration, logger: logger)
    let subscriber = RedisSubscriber(configuration: redisConfiguration, logger: logger)
    let store = StoreClient(redis: redis, keys: configuration.keys, gatewayID: "chatctl-\(ProcessInfo.processInfo.processIdentifier)", timeout: .seconds(10))
    return try await withThrowingTaskGroup(of: T?.self) { group in
        group.addTask { try await redis.run(); return nil }
        group.addTask { try await subscriber.run(); return nil }
        group.addTask { await store.pumpReplies(from: subscriber); return nil }
        defer { group.cancelAll() }
        do {
            try await redis.waitUntilReady(timeout: .seconds(10))
        } catch {
            throw CommandFailure("cannot reach Redis at \(configuration.redisURL): \(error)")
        }
        try await subscriber.subscribe([store.replyChannel])
        _ = try? await redis.send(["PING"])
        // The subscription must be live before the first answer can come back.
        for _ in 0..<100 where (try? await redis.send(["PUBSUB", "NUMSUB", store.replyChannel]).array?.last?.int) != 1 {
            try await Task.sleep(for: .milliseconds(20))
        }
        do {
            return try await body(store)
        } catch let error as ChatError {
            throw CommandFailure(error.message)
        }
    }
}

struct RetentionCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "retention", abstract: "Look at what retention will delete; legal holds.",
                                                    subcommands: [Preview.self, Conversations.self, Hold.self, Release.self])

    struct Conversations: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Conversations to put on legal hold: a person's (--participant), those on hold (--held), or both. Participants and counts, never content.")
        @Option(help: "A participant's email.") var participant: String?
        @Flag(help: "Only those on legal hold.") var held = false
        @Option(help: "At most this many, the latest activity first (1 to 500).") var limit = 100

        func validate() throws {
            guard participant != nil || held else { throw ValidationError("give --participant <email>, or --held") }
            guard (1...500).contains(limit) else { throw ValidationError("--limit is 1 to 500") }
        }

        func run() async throws {
            let found: [AdminConversation] = try await withStore { store in
                try store.result(await store.query(.adminConversations, user: "") {
                    $0.query = participant
                    $0.held = held
                    $0.limit = limit
                })
            }
            print("conversation\tkind\ttitle\tparticipants\tmessages\tkept_past_expiry\tlegal_hold")
            for c in found {
                print("\(c.id)\t\(c.kind.rawValue)\t\(c.title ?? "")\t\(c.participants.joined(separator: ","))\t\(c.messages)\t\(c.keptPastExpiry)\t\(c.legalHold ? "on" : "off")")
            }
        }
    }

    struct Hold: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Put a conversation on legal hold: its messages are kept past their expiry (audited).")
        @Argument var conversation: String
        func run() async throws { try await setLegalHold(conversation, true) }
    }

    struct Release: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Release a conversation's legal hold: its messages past their expiry are deleted at the next sweep (audited).")
        @Argument var conversation: String
        func run() async throws { try await setLegalHold(conversation, false) }
    }

    static func setLegalHold(_ conversation: String, _ held: Bool) async throws {
        let _: [String: String] = try await withStore { store in
            try store.result(await store.command(.setLegalHold, user: "", body: LegalHoldRequest(conversationID: conversation, held: held)))
        }
        print(held ? "\(conversation) is on legal hold" : "released the legal hold on \(conversation)")
    }

    struct Preview: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Counts of the messages the coming sweeps will delete, by conversation and day (UTC). Deletes nothing.")
        @Option(help: "How far ahead to look, in days (0: only what is already due).") var days = 7

        func run() async throws {
            let cutoff = Date().addingTimeInterval(TimeInterval(days) * 86400).epochMilliseconds
            let due: [DueMessage] = try await withStore { store in
                var all: [DueMessage] = []
                var cursor: String?
                while true {
                    let page: [DueMessage] = try store.result(await store.query(.dueMessages, user: "") {
                        $0.before = cutoff
                        $0.limit = 5000
                        $0.query = cursor
                    })
                    guard let last = page.last else { break }
                    all += page
                    cursor = "\(last.expiresAt.epochMilliseconds):\(last.id)"
                }
                return all
            }
            var counts: [String: [String: Int]] = [:]
            for message in due {
                let day = String(ChatJSON.formatTimestamp(message.expiresAt).prefix(10))
                counts[day, default: [:]][message.conversationID, default: 0] += 1
            }
            print("day\tconversation\tmessages")
            for day in counts.keys.sorted() {
                for (conversation, count) in counts[day]!.sorted(by: { $0.key < $1.key }) { print("\(day)\t\(conversation)\t\(count)") }
            }
            print("total\t\t\(due.count)")
        }
    }
}
