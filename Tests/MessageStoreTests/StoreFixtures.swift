import ChatCore
import Foundation
@testable import MessageStore

/// A store with the clinic's usual cast: two admins and four doctors.
func makeStore(retention: Duration = .seconds(90 * 86400)) throws -> MessageStore {
    let store = try MessageStore.inMemory(retention: retention)
    for (email, name, role) in cast {
        try store.createUser(email: email, name: name, role: role, password: "password-\(email)")
    }
    return store
}

/// The demo clinic; each password is `password-<email>`.
let cast = DemoAccounts.all

extension MessageStore {
    /// Sends one message and returns it, failing the test on error.
    @discardableResult
    func send(_ sender: String, to conversation: String? = nil, receiver: String? = nil, _ content: String, clientID: String? = nil, now: Date = Date()) throws -> StoredMessage {
        try append([SendRequest(sender: sender, conversationID: conversation, receiverEmail: receiver, content: content, clientID: clientID)], now: now)[0].get()
    }
}

/// The code of the `ChatError` `body` throws; nil when it throws nothing (`internal` for any other error).
func errorCode(_ body: () throws -> Any) -> ChatError.Code? {
    do {
        _ = try body()
        return nil
    } catch let error as ChatError {
        return error.code
    } catch {
        return .internal
    }
}
