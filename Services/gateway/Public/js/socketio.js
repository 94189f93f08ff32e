// A small Socket.IO v5 client over Engine.IO v4 (WebSocket transport), with
// acknowledgements, heartbeat checking and reconnection. No dependencies.

export class SocketClient {
  /**
   * @param {object} options
   * @param {() => object} options.auth   CONNECT data, asked anew for every (re)connection
   * @param {(name: string, data: any) => void} options.onEvent
   * @param {(status: "online"|"reconnecting"|"offline", detail?: string) => void} options.onStatus
   * @param {(error: {message: string, data?: any}) => void} options.onRefused  CONNECT_ERROR or server DISCONNECT
   */
  constructor({ auth, onEvent, onStatus, onRefused }) {
    this.auth = auth;
    this.onEvent = onEvent;
    this.onStatus = onStatus;
    this.onRefused = onRefused;
    this.acks = new Map();
    this.nextAck = 1;
    this.attempt = 0;
    this.stopped = true;
    this.connected = false;
  }

  start() {
    this.stopped = false;
    this.open();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    clearTimeout(this.heartbeatTimer);
    if (this.ws) this.ws.close();
    this.setConnected(false, "offline");
  }

  open() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(`${scheme}//${location.host}/socket.io/?EIO=4&transport=websocket`);
    this.ws = ws;
    ws.onmessage = (event) => this.receive(String(event.data));
    ws.onclose = () => {
      if (this.ws !== ws) return;
      clearTimeout(this.heartbeatTimer);
      this.setConnected(false, this.stopped ? "offline" : "reconnecting");
      for (const [, pending] of this.acks) pending.reject(new Error("disconnected"));
      this.acks.clear();
      if (!this.stopped) this.scheduleReconnect();
    };
  }

  scheduleReconnect() {
    this.attempt += 1;
    const delay = Math.min(5000, 500 * 2 ** Math.min(this.attempt, 4)) * (0.75 + Math.random() / 2);
    this.retryTimer = setTimeout(() => this.open(), delay);
  }

  setConnected(connected, status, detail) {
    this.connected = connected;
    this.onStatus(status, detail);
  }

  // The server pings every pingInterval; no ping for interval + timeout means the link is dead.
  armHeartbeat() {
    clearTimeout(this.heartbeatTimer);
    this.heartbeatTimer = setTimeout(() => this.ws && this.ws.close(), this.pingInterval + this.pingTimeout);
  }

  receive(text) {
    const type = text[0];
    const data = text.slice(1);
    if (type === "0") {
      const open = JSON.parse(data);
      this.pingInterval = open.pingInterval;
      this.pingTimeout = open.pingTimeout;
      this.armHeartbeat();
      this.ws.send("40" + JSON.stringify(this.auth()));
    } else if (type === "2") {
      this.ws.send("3");
      this.armHeartbeat();
    } else if (type === "1") {
      this.ws.close();
    } else if (type === "4") {
      this.receivePacket(data);
    }
  }

  receivePacket(text) {
    const kind = text[0];
    let rest = text.slice(1);
    let id = "";
    while (rest.length && rest[0] >= "0" && rest[0] <= "9") {
      id += rest[0];
      rest = rest.slice(1);
    }
    const payload = rest ? JSON.parse(rest) : undefined;
    if (kind === "0") {
      this.attempt = 0;
      this.setConnected(true, "online");
    } else if (kind === "4") {
      this.stopped = true;
      this.onRefused(payload || { message: "refused" });
      this.ws.close();
    } else if (kind === "1") {
      // The server ended the session (token expired or revoked): do not reconnect with it.
      this.stopped = true;
      this.onRefused({ message: "the session ended", data: { code: "unauthorized" } });
      this.ws.close();
    } else if (kind === "2" && Array.isArray(payload)) {
      this.onEvent(payload[0], payload[1]);
    } else if (kind === "3" && id) {
      const pending = this.acks.get(Number(id));
      if (pending) {
        this.acks.delete(Number(id));
        clearTimeout(pending.timer);
        pending.resolve(payload ? payload[0] : undefined);
      }
    }
  }

  /** Sends an event; resolves with the server's acknowledgement (rejects when offline or after `timeout` ms). */
  emit(name, data, timeout = 10000) {
    return new Promise((resolve, reject) => {
      if (!this.connected || !this.ws || this.ws.readyState !== WebSocket.OPEN) {
        reject(new Error("offline"));
        return;
      }
      const id = this.nextAck++;
      const timer = setTimeout(() => {
        this.acks.delete(id);
        reject(new Error("timeout"));
      }, timeout);
      this.acks.set(id, { resolve, reject, timer });
      this.ws.send("42" + id + JSON.stringify([name, data]));
    });
  }

  /** Sends an event without waiting for anything (typing). */
  send(name, data) {
    if (this.connected && this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send("42" + JSON.stringify([name, data]));
  }
}
