import ChatCore
import Presence

await ServiceMain.run("chat-presence") { runtime in
    [PresenceService(runtime: runtime)]
}
