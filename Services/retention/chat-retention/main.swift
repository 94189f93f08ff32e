import ChatCore
import Retention

await ServiceMain.run("chat-retention") { runtime in
    [RetentionService(runtime: runtime)]
}
