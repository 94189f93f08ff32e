import ChatCore
import MessageStore

await ServiceMain.run("chat-messages") { runtime in
    [MessagesService(runtime: runtime)]
}
