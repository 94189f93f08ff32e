// The clinic messaging page. Every piece of user data is put on the page with
// textContent (never innerHTML), so message text is always shown as text.
import { Api } from "./api.js";
import { SocketClient } from "./socketio.js";
import { setupAdmin } from "./admin.js";
import { setupGroups } from "./group.js";

const $ = (id) => document.getElementById(id);
const SESSION_KEY = "clinic.session";

const state = {
  session: null,           // {token, user: {email, name, role}}
  conversations: new Map(),// id -> conversation (from the API, kept current by events)
  messages: new Map(),     // id -> [message] sorted by seq
  oldestLoaded: new Map(), // id -> true when the first message is loaded
  people: new Map(),       // email -> {name, role}
  presence: new Map(),     // email -> {online, last_seen}
  typing: new Map(),       // conversation id -> {email, timer}
  current: null,
  pending: new Map(),      // client_id -> {conversation_id, content, state: "pending"|"failed", receiver_email}
  status: "offline",
  lastTyping: 0,
  receiptsCursor: null,    // the read markers of the list are current up to this version
  readMarks: new Map(),    // conversation id -> {wanted, sent, acked, inFlight, timer, last}: marks not sent yet
  gapsAsked: new Set(),    // "conversation id:seq" of gaps already fetched (fillGap)
};

// Read marks are sent one at a time per conversation, spaced by readMarkInterval: in a busy
// group a mark per arriving message was a store write and a receipt to every member each,
// and hit the gateway's rate limit (BENCHMARKS.md, sixteenth round).
function readMarkInterval(id) {
  // Each mark is a store write and receipts: 250 ms per 5 members, at most 3 s.
  const members = ((state.conversations.get(id) || {}).participants || []).length;
  return Math.min(3000, 250 * Math.max(1, Math.ceil(members / 5)));
}

const api = new Api(() => state.session && state.session.token, () => sessionEnded());
let socket = null;
let groups = null;

// MARK: Helpers

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function nameOf(email) {
  if (state.session && email === state.session.user.email) return "You";
  return (state.people.get(email) || {}).name || email;
}

function titleOf(conversation) {
  if (conversation.kind === "group") return conversation.title || "Group";
  const other = conversation.participants.find((p) => p !== state.session.user.email) || state.session.user.email;
  return nameOf(other);
}

function partnerOf(conversation) {
  if (conversation.kind === "group") return null;
  return conversation.participants.find((p) => p !== state.session.user.email) || null;
}

function time(iso) {
  return new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

function day(iso) {
  return new Date(iso).toLocaleDateString([], { weekday: "long", year: "numeric", month: "long", day: "numeric" });
}

function announce(text) {
  $("announcer").textContent = text;
}

// A send's client_id: a UUID of version 7 (RFC 9562), the time in milliseconds and then
// random bits. Later sends sort later, so the store's unique index of client ids grows at
// its end instead of taking a write on a random page for every message.
function uuid() {
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  let time = Date.now();
  for (let i = 5; i >= 0; i--) { bytes[i] = time % 256; time = Math.floor(time / 256); }
  bytes[6] = 0x70 | (bytes[6] & 0x0f);
  bytes[8] = 0x80 | (bytes[8] & 0x3f);
  const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

// MARK: Session

function saveSession() {
  localStorage.setItem(SESSION_KEY, JSON.stringify(state.session));
}

async function login(event) {
  event.preventDefault();
  const email = $("login-email").value.trim();
  const password = $("login-password").value;
  $("login-error").textContent = "";
  if (!email || !password) {
    $("login-error").textContent = "Enter your email and password.";
    return;
  }
  $("login-submit").disabled = true;
  try {
    const result = await api.login(email, password);
    state.session = { token: result.token, user: result.user };
    saveSession();
    await enter();
  } catch (error) {
    $("login-error").textContent = error.status === 429
      ? `Too many attempts. Try again in ${error.retryAfter || 60} seconds.`
      : error.status === 401 ? "Wrong email or password." : error.message;
  } finally {
    $("login-submit").disabled = false;
  }
}

async function logout(message) {
  if (state.session) {
    const token = state.session.token;
    state.session = null;
    localStorage.removeItem(SESSION_KEY);
    if (!message) fetch("/api/auth/logout", { method: "POST", headers: { Authorization: `Bearer ${token}` } }).catch(() => {});
  }
  if (socket) socket.stop();
  socket = null;
  state.conversations.clear();
  state.messages.clear();
  state.oldestLoaded.clear();
  state.receiptsCursor = null;
  for (const mark of state.readMarks.values()) clearTimeout(mark.timer);
  state.readMarks.clear();
  state.gapsAsked.clear();
  state.current = null;
  if ($("admin-dialog").open) $("admin-dialog").close();
  if ($("password-dialog").open) $("password-dialog").close();
  passwordRequired = false;
  $("app-view").hidden = true;
  $("login-view").hidden = false;
  $("login-error").textContent = message || "";
  document.title = "Clinic messages";
}

// Every session of this user ends, on every device, this page's too (a phone lost, a
// shared computer left logged in).
async function logoutEverywhere() {
  if (!window.confirm("Log out on every device, this one included?")) return;
  try {
    await api.logoutEverywhere();
    logout("You were logged out on every device.");
  } catch (error) {
    if (state.session) announce(`Logging out everywhere failed: ${error.message}`);
  }
}

// Idle logout: no input for data-idle-minutes minutes ends the session.
let idleTimer;
function resetIdle() {
  clearTimeout(idleTimer);
  const minutes = Number(document.body.dataset.idleMinutes || 30);
  if (state.session) idleTimer = setTimeout(() => logout("You were logged out after a period of inactivity."), minutes * 60000);
}

// MARK: Start

async function showApp() {
  $("login-view").hidden = true;
  $("app-view").hidden = false;
  $("me-name").textContent = state.session.user.name;
  $("admin-button").hidden = state.session.user.role !== "admin";
  $("notify-button").hidden = !("Notification" in window) || Notification.permission !== "default";
  resetIdle();
  await loadConversations();
  connectSocket();
}

function connectSocket() {
  socket = new SocketClient({
    auth: () => ({ token: state.session.token }),
    onEvent: handleEvent,
    onStatus: setStatus,
    onRefused: () => sessionEnded(),
  });
  socket.start();
}

// The server ended this page's session (its token expired, was revoked, or the account
// was disabled). While this page changes its password that is expected: the server ends
// every session of the old token, this page's socket among them, before the answer with
// the new token arrives.
let changingPassword = false;
function sessionEnded() {
  if (!changingPassword) logout("Your session has ended. Please log in again.");
}

// MARK: Password

// `required`: the password is one an administrator set, and nothing else works until the
// user chooses their own (the server answers everything else 403 password_change_required).
// The dialog then cannot be dismissed; its other button logs out.
let passwordRequired = false;
function openPasswordDialog(required = false) {
  passwordRequired = required;
  for (const id of ["password-current", "password-new", "password-again"]) $(id).value = "";
  $("password-error").textContent = "";
  $("password-hint").textContent = required
    ? "An administrator set your password. Choose your own to continue."
    : "Your other devices will be logged out.";
  $("password-cancel").textContent = required ? "Log out" : "Cancel";
  $("password-dialog").showModal();
  $("password-current").focus();
}

// After a login or a reload: straight in, or first a password of one's own.
async function enter() {
  if (state.session.user.must_change_password) {
    $("login-view").hidden = false;
    openPasswordDialog(true);
    return;
  }
  await showApp();
}

async function changePassword(event) {
  event.preventDefault();
  const current = $("password-current").value;
  const next = $("password-new").value;
  const error = (text) => { $("password-error").textContent = text; };
  if (!current) return error("Enter your current password.");
  if ([...next].length < 8) return error("The new password needs at least 8 characters.");
  if (new TextEncoder().encode(next).length > 72) return error("The new password is too long (at most 72 bytes).");
  if (next !== $("password-again").value) return error("The two new passwords are not the same.");
  if (next === current) return error("The new password is the same as the current one.");
  error("");
  $("password-save").disabled = true;
  changingPassword = true;
  try {
    const result = await api.changePassword(current, next);
    state.session = { token: result.token, user: result.user };
    saveSession();
    const wasRequired = passwordRequired;
    passwordRequired = false;
    $("password-dialog").close();
    if (wasRequired) {
      await showApp();
    } else {
      // The old token's socket was ended by the server: connect again with the new one.
      if (socket) socket.stop();
      connectSocket();
    }
    announce("Your password was changed. Your other devices were logged out.");
  } catch (failure) {
    changingPassword = false;
    if (failure.status === 401) return logout("Your session has ended. Please log in again.");
    error(failure.status === 403 ? "The current password is wrong."
      : failure.status === 429 ? `Too many attempts. Try again in ${failure.retryAfter || 60} seconds.`
      : failure.message);
  } finally {
    changingPassword = false;
    $("password-save").disabled = false;
  }
}

// What the page already has of each conversation, for `sync`: the newest message of
// the list (loaded over REST before the socket connects, and kept up to date as messages
// arrive) or of the history on screen. The gateway replays only what is newer, so opening
// the app does not replay (and count, and announce) messages the list already shows; a
// conversation the page does not know yet is replayed whole. Likewise `receipts_after`: the
// list's markers are current up to its newest read version, so only markers that moved
// after it are replayed (not every other reader of every conversation at every open).
function sinceMap() {
  const since = {};
  for (const [id, conversation] of state.conversations) since[id] = conversation.last_message ? conversation.last_message.seq : 0;
  for (const [id, list] of state.messages) if (list.length) since[id] = Math.max(since[id] || 0, list[list.length - 1].seq);
  return since;
}

function setStatus(status) {
  const wasOffline = state.status !== "online";
  state.status = status;
  const label = { online: "Online", reconnecting: "Reconnecting…", offline: "Offline" }[status];
  $("connection").textContent = label;
  $("connection").dataset.state = status;
  if (status === "online" && wasOffline) {
    // Connected, or back: what was missed, and what failed sent again.
    resync();
    for (const [clientID, pending] of state.pending) if (pending.state === "failed") retry(clientID);
  }
}

// What the page missed (since its list, on the first connection; while the socket was
// away, after): `sync` replays what is newer than the page has, messages (counted and
// announced as they come) and read receipts. The list is reloaded only when the replay
// could not carry everything (a conversation or the receipts truncated) or failed: pages
// all back at once after their gateway went away then cost the store a replay each, not
// also a conversation list each, which for a member of large groups is most of the work
// (BENCHMARKS.md, seventeenth round). Until then every (re)connection reloaded the list,
// the first one too, right after the page had loaded it.
async function resync() {
  let ack = null;
  try {
    ack = await socket.emit("sync", Object.assign({ since: sinceMap() },
      state.receiptsCursor === null ? {} : { receipts_after: state.receiptsCursor }));
  } catch {
    ack = null;
  }
  const complete = ack && ack.ok && !ack.receipts_truncated && !Object.values(ack.conversations || {}).some((c) => c.truncated);
  if (!complete) {
    refreshConversations();
    return;
  }
  if (typeof ack.receipts_cursor === "number") state.receiptsCursor = Math.max(state.receiptsCursor || 0, ack.receipts_cursor);
}

// MARK: Conversations

async function loadConversations() {
  const list = await api.conversations();
  for (const conversation of list) {
    for (const member of conversation.members || []) state.people.set(member.email, { name: member.name, role: member.role });
    for (const [email, presence] of Object.entries(conversation.presence || {})) state.presence.set(email, presence);
    // A receipt may have come in while the list was on its way: markers only move forward.
    const known = (state.conversations.get(conversation.id) || {}).read_positions || {};
    conversation.read_positions = conversation.read_positions || {};
    for (const [email, seq] of Object.entries(known)) conversation.read_positions[email] = Math.max(conversation.read_positions[email] || 0, seq);
    state.conversations.set(conversation.id, conversation);
    if (typeof conversation.read_version === "number") state.receiptsCursor = Math.max(state.receiptsCursor || 0, conversation.read_version);
  }
  renderList();
  renderHeader();
  for (const conversation of list) catchUp(conversation);
}

// A conversation whose messages the page holds but whose newest message in the list is
// newer than any of them (a replay that left it out, a socket that missed its messages
// with no later one to show the gap): its newest page comes over REST, and what lies
// between is fetched as for any gap.
async function catchUp(conversation) {
  const list = state.messages.get(conversation.id);
  const last = conversation.last_message;
  if (!list || !last || (list.length && list[list.length - 1].seq >= last.seq)) return;
  try {
    const page = await api.history(conversation.id, undefined, 100);
    upsert(page);
    if (page.length) await fillGap(conversation.id, page[0].seq);
  } catch {
    return;  // the next reload of the list tries again
  }
  if (conversation.id === state.current) {
    renderMessages();
    markRead();
  }
}

// Reloads of the list in the background (back online; a conversation the page does not
// know yet, of which a replay may bring 100 messages): one at a time, and one more after
// it if asked meanwhile.
let listReload = null;
let listReloadAgain = false;
function refreshConversations() {
  if (listReload) {
    listReloadAgain = true;
    return;
  }
  listReload = loadConversations().catch(() => {}).finally(() => {
    listReload = null;
    if (listReloadAgain) {
      listReloadAgain = false;
      refreshConversations();
    }
  });
}

function sortedConversations() {
  return [...state.conversations.values()].sort((a, b) =>
    (b.last_message_at || b.created_at).localeCompare(a.last_message_at || a.created_at));
}

function renderList() {
  const list = $("conversation-list");
  list.replaceChildren();
  for (const conversation of sortedConversations()) {
    const item = el("li");
    const button = el("button", "conversation" + (conversation.id === state.current ? " selected" : ""));
    button.type = "button";
    button.dataset.id = conversation.id;
    const partner = partnerOf(conversation);
    const dot = el("span", "dot" + (partner && (state.presence.get(partner) || {}).online ? " online" : ""));
    dot.setAttribute("aria-label", partner && (state.presence.get(partner) || {}).online ? "online" : "offline");
    const main = el("span", "conversation-main");
    const top = el("span", "conversation-top");
    top.append(el("span", "conversation-title", titleOf(conversation)));
    if (partner) top.append(el("span", "role", (state.people.get(partner) || {}).role || ""));
    if (conversation.last_message) top.append(el("span", "conversation-time", time(conversation.last_message.timestamp)));
    const preview = el("span", "preview", conversation.last_message ? conversation.last_message.content : "No messages yet");
    main.append(top, preview);
    button.append(dot, main);
    if (conversation.unread_count > 0) {
      const badge = el("span", "badge", String(conversation.unread_count));
      badge.setAttribute("aria-label", `${conversation.unread_count} unread`);
      button.append(badge);
    }
    button.addEventListener("click", () => openConversation(conversation.id));
    item.append(button);
    list.append(item);
  }
  const total = [...state.conversations.values()].reduce((sum, c) => sum + (c.unread_count || 0), 0);
  document.title = total > 0 ? `(${total}) Clinic messages` : "Clinic messages";
}

function renderHeader() {
  const conversation = state.conversations.get(state.current);
  if (!conversation) return;
  $("members-button").hidden = conversation.kind !== "group";
  $("pane-title").textContent = titleOf(conversation);
  const partner = partnerOf(conversation);
  if (!partner) {
    $("pane-status").textContent = conversation.participants.map(nameOf).join(", ");
    return;
  }
  const presence = state.presence.get(partner) || {};
  $("pane-status").textContent = presence.online ? "Online"
    : presence.last_seen ? `Last seen ${day(presence.last_seen)} ${time(presence.last_seen)}` : "Offline";
}

async function openConversation(id) {
  state.current = id;
  document.body.classList.add("in-conversation");
  $("composer").hidden = false;
  $("new-pill").hidden = true;
  renderList();
  renderHeader();
  renderTyping();
  if (!state.messages.has(id)) {
    const page = await api.history(id);
    state.messages.set(id, page);
    if (page.length < 30) state.oldestLoaded.set(id, true);
  }
  renderMessages({ toBottom: true });
  markRead();
  $("composer-input").focus();
}

async function loadOlder() {
  const id = state.current;
  const list = state.messages.get(id);
  if (!id || !list || !list.length || state.oldestLoaded.get(id) || state.loadingOlder) return;
  state.loadingOlder = true;
  try {
    const page = await api.history(id, list[0].seq);
    if (page.length < 30) state.oldestLoaded.set(id, true);
    const box = $("messages");
    const before = box.scrollHeight;
    upsert(page);
    renderMessages();
    box.scrollTop += box.scrollHeight - before;  // the reader's place stays put
  } finally {
    state.loadingOlder = false;
  }
}

// MARK: Messages

function upsert(messages) {
  for (const message of messages) {
    const list = state.messages.get(message.conversation_id);
    if (!list) continue;
    const index = list.findIndex((m) => m.id === message.id);
    if (index >= 0) list[index] = { ...list[index], ...message };
    else list.push(message);
    list.sort((a, b) => a.seq - b.seq);
  }
}

// A message whose predecessor the page does not have (a replay after an outage is at
// most 500 messages, the newest; a socket that missed some) brings what is between over
// REST: up to 3 pages of 100 back from it. A bigger gap drops what is below it, and
// scrolling up pages back from there as usual. Each gap is asked for once (messages
// retention deleted leave gaps for good).
async function fillGap(id, seq) {
  const list = state.messages.get(id);
  const index = list ? list.findIndex((m) => m.seq === seq) : -1;
  if (index <= 0 || list[index - 1].seq >= seq - 1 || state.gapsAsked.has(`${id}:${seq}`)) return;
  state.gapsAsked.add(`${id}:${seq}`);
  const after = list[index - 1].seq;
  let before = seq;
  try {
    for (let pages = 0; pages < 3; pages++) {
      const page = await api.history(id, before, 100);
      upsert(page);
      if (page.length < 100 || page[0].seq <= after + 1) return;
      before = page[0].seq;
    }
    const current = state.messages.get(id);
    if (current) state.messages.set(id, current.filter((m) => m.seq >= before));
    state.oldestLoaded.delete(id);
  } catch {
    state.gapsAsked.delete(`${id}:${seq}`);  // asked again with the next message
  } finally {
    if (id === state.current) renderMessages();
  }
}

function atBottom() {
  const box = $("messages");
  return box.scrollHeight - box.scrollTop - box.clientHeight < 40;
}

function renderMessages({ toBottom = false } = {}) {
  const box = $("messages");
  const stick = toBottom || atBottom();
  box.replaceChildren();
  const me = state.session.user.email;
  const list = state.messages.get(state.current) || [];
  let lastDay = "";
  const pending = [...state.pending.entries()].filter(([, p]) => p.conversation_id === state.current);
  for (const message of list) {
    const thisDay = day(message.timestamp);
    if (thisDay !== lastDay) {
      box.append(el("div", "day", thisDay));
      lastDay = thisDay;
    }
    const node = bubble(message.sender_email === me, message.sender_email, message.content, message.timestamp,
                        message.sender_email === me ? receipt(message) : null, message.id);
    if (message.sender_email === me) {
      const retractButton = el("button", "link retract", "Retract");
      retractButton.type = "button";
      retractButton.setAttribute("aria-label", "Retract this message");
      retractButton.addEventListener("click", () => retract(message));
      node.querySelector(".meta").append(retractButton);
    }
    box.append(node);
  }
  for (const [clientID, p] of pending) {
    const node = bubble(true, me, p.content, new Date().toISOString(), p.state, clientID);
    if (p.state === "failed") {
      const retryButton = el("button", "link retry", "Not sent. Retry");
      retryButton.type = "button";
      retryButton.addEventListener("click", () => retry(clientID));
      node.append(retryButton);
    }
    box.append(node);
  }
  if (stick) box.scrollTop = box.scrollHeight;
}

// The tick of one of my stored messages: "read" once every other participant's read
// marker covers it, "partly" (in a group) once some have, else "sent". The label says
// how many; the tooltip says who.
function receipt(message) {
  const me = state.session.user.email;
  const conversation = state.conversations.get(message.conversation_id);
  const positions = (conversation && conversation.read_positions) || null;
  const others = conversation ? conversation.participants.filter((p) => p !== me) : [];
  const readers = positions ? others.filter((p) => (positions[p] || 0) >= message.seq) : [];
  // `read` is the store's "someone has read it", for when the markers are not known yet.
  const count = Math.max(readers.length, message.read ? 1 : 0);
  if (!count) return { state: "sent" };
  if (others.length <= 1 || count >= others.length) {
    return { state: "read", label: others.length > 1 ? "read by everyone" : "read", readers };
  }
  return { state: "partly", label: `read by ${count} of ${others.length}`, readers };
}

function bubble(own, sender, content, timestamp, tick, key) {
  const node = el("div", "message" + (own ? " own" : ""));
  node.dataset.key = key;
  if (!own && (state.conversations.get(state.current) || {}).kind === "group") node.append(el("div", "sender", nameOf(sender)));
  node.append(el("div", "text", content));
  const meta = el("div", "meta", time(timestamp));
  if (tick) {
    if (typeof tick === "string") tick = { state: tick };
    const symbols = { pending: "…", sent: "✓", partly: "✓✓", read: "✓✓", failed: "!" };
    const labels = { pending: "sending", sent: "sent", partly: "read by some", read: "read", failed: "not sent" };
    const mark = el("span", "tick " + tick.state, symbols[tick.state]);
    mark.setAttribute("aria-label", tick.label || labels[tick.state]);
    if (tick.readers && tick.readers.length) mark.title = "Read by " + tick.readers.map(nameOf).join(", ");
    mark.dataset.state = tick.state;
    meta.append(mark);
  }
  node.append(meta);
  return node;
}

function markRead() {
  const conversation = state.conversations.get(state.current);
  const list = state.messages.get(state.current) || [];
  if (!conversation || !list.length || document.hidden) return;
  const upTo = list[list.length - 1].seq;
  if (conversation.unread_count === 0 && conversation.readUpTo >= upTo) return;
  conversation.unread_count = 0;
  conversation.readUpTo = upTo;
  renderList();
  let mark = state.readMarks.get(conversation.id);
  if (!mark) state.readMarks.set(conversation.id, mark = { wanted: 0, sent: 0, acked: 0, inFlight: false, timer: null, last: 0 });
  mark.wanted = Math.max(mark.wanted, upTo);
  sendReadMark(conversation.id, mark);
}

// Sends the newest wanted mark of a conversation once none is in flight, the interval since
// the last one is over, and a random part of a quarter of it more (members who got the same
// message do not all mark at once): one mark covers every message that arrived meanwhile.
// Over the socket, or over REST when the socket is down or refused it; a mark that failed
// both ways is sent again with the next one.
function sendReadMark(id, mark, due) {
  if (mark.inFlight || mark.timer || mark.wanted <= mark.sent || !state.session) return;
  if (!due) {
    const interval = readMarkInterval(id);
    const wait = Math.max(0, mark.last + interval - Date.now()) + Math.random() * interval / 4;
    mark.timer = setTimeout(() => { mark.timer = null; sendReadMark(id, mark, true); }, wait);
    return;
  }
  const upTo = mark.wanted;
  Object.assign(mark, { inFlight: true, sent: upTo, last: Date.now() });
  const viaREST = () => api.markRead(id, upTo);
  const request = socket && socket.connected
    ? socket.emit("mark_conversation_read", { conversation_id: id, up_to_seq: upTo })
      .then((ack) => { if (!ack || ack.ok !== true) throw new Error("refused"); }).catch(viaREST)
    : viaREST();
  request.then(() => {
    mark.acked = Math.max(mark.acked, upTo);
    mark.inFlight = false;
    if (state.readMarks.get(id) === mark) sendReadMark(id, mark);
  }, () => {
    // Sent again with the next mark of this conversation (not retried on its own while offline).
    mark.inFlight = false;
    mark.sent = mark.acked;
  });
}

// MARK: Sending

async function send(content) {
  const conversation = state.conversations.get(state.current);
  if (!conversation || !content.trim()) return;
  const clientID = uuid();
  state.pending.set(clientID, { conversation_id: conversation.id, content, state: "pending" });
  renderMessages({ toBottom: true });
  stopTyping();
  await deliver(clientID);
}

async function deliver(clientID) {
  const pending = state.pending.get(clientID);
  if (!pending) return;
  const body = { conversation_id: pending.conversation_id, content: pending.content, client_id: clientID };
  let message = null;
  let failure = null;
  let viaREST = false;
  try {
    const ack = await socket.emit("send_message", body);
    if (ack && ack.ok) message = ack.message;
    else failure = ack && ack.error;
    // The gateway is restarting (or the store was slow): another gateway takes it over REST.
    viaREST = Boolean(failure && failure.code === "unavailable");
  } catch {
    // The socket is down or slow: the same send through REST (the client_id makes it safe).
    viaREST = true;
  }
  if (viaREST) {
    try {
      message = await api.send(body);
      failure = null;
    } catch (error) {
      failure = { code: error.code, message: error.message };
    }
  }
  if (message) confirm(message);
  else {
    pending.state = "failed";
    pending.error = failure;
    if (pending.conversation_id === state.current) renderMessages();
  }
}

function retry(clientID) {
  const pending = state.pending.get(clientID);
  if (!pending) return;
  pending.state = "pending";
  renderMessages();
  deliver(clientID);
}

function confirm(message) {
  if (message.client_id) state.pending.delete(message.client_id);
  received(message, true);
}

function received(message, own) {
  const conversation = state.conversations.get(message.conversation_id);
  if (!conversation) {
    refreshConversations();
    return;
  }
  if (state.messages.has(message.conversation_id)) {
    upsert([message]);
    fillGap(message.conversation_id, message.seq);
  }
  const newer = !conversation.last_message || conversation.last_message.seq <= message.seq;
  if (newer) {
    conversation.last_message = message;
    conversation.last_message_at = message.timestamp;
  }
  const mine = message.sender_email === state.session.user.email;
  const seen = message.conversation_id === state.current && !document.hidden;
  if (!mine && !seen && newer && !own) conversation.unread_count = (conversation.unread_count || 0) + 1;
  if (message.conversation_id === state.current) {
    const wasAtBottom = atBottom();
    renderMessages();
    if (!mine && !wasAtBottom) $("new-pill").hidden = false;
    if (!mine) markRead();
  }
  if (!mine) {
    announce(`New message from ${nameOf(message.sender_email)}: ${message.content}`);
    clearTyping(message.conversation_id);
    if (document.hidden && "Notification" in window && Notification.permission === "granted") {
      new Notification(`Message from ${nameOf(message.sender_email)}`, { body: message.content, tag: message.conversation_id });
    }
  }
  renderList();
}

// MARK: Events from the server

function handleEvent(name, data) {
  switch (name) {
    case "receive_message":
      received(data, false);
      break;
    case "message_sent_confirmed":
      confirm(data);
      break;
    case "message_read_receipt": {
      const me = state.session.user.email;
      const conversation = state.conversations.get(data.conversation_id);
      if (conversation) {
        // Markers only move forward; a receipt replayed after a reconnect may be older.
        const positions = conversation.read_positions || (conversation.read_positions = {});
        positions[data.reader_email] = Math.max(positions[data.reader_email] || 0, data.up_to_seq || 0);
      }
      if (data.reader_email === me) {
        if (conversation) {
          conversation.unread_count = 0;
          renderList();
        }
        break;
      }
      for (const message of state.messages.get(data.conversation_id) || []) {
        if (message.sender_email === me && message.seq <= data.up_to_seq) {
          message.read = true;
          message.read_at = message.read_at || data.read_at;
        }
      }
      if (data.conversation_id === state.current) renderMessages();
      break;
    }
    case "user_typing":
      if (data.is_typing) showTyping(data.conversation_id, data.sender_email);
      else clearTyping(data.conversation_id);
      break;
    case "user_online":
    case "user_offline":
      state.presence.set(data.email, { online: name === "user_online", last_seen: data.last_seen });
      if (data.name && !state.people.has(data.email)) state.people.set(data.email, { name: data.name });
      renderList();
      renderHeader();
      break;
    case "resynchronized":
      // The gateway replayed what it missed while Redis was away: the list's counts and any
      // conversation the replay left out come with the list (gaps in open ones are fetched).
      refreshConversations();
      break;
    case "conversation_updated":
      groupUpdated(data);
      break;
    case "messages_purged":
      dropMessages(data.conversation_id, data.message_ids);
      break;
    case "error":
      if (data && data.client_id && state.pending.has(data.client_id)) {
        state.pending.get(data.client_id).state = "failed";
        renderMessages();
      }
      break;
    default:
      break;
  }
}

// The sender takes a message back (sent to the wrong person, the wrong patient's details):
// asked first; it goes from every page of the conversation (messages_purged).
async function retract(message) {
  if (!window.confirm("Retract this message? It is removed for everyone in this conversation.")) return;
  try {
    await api.retractMessage(message.id);
    dropMessages(message.conversation_id, [message.id]);
  } catch (error) {
    announce(`Not retracted: ${error.message}`);
    window.alert(`The message was not retracted: ${error.message}`);
  }
}

// Messages gone (retracted, or deleted by retention): out of the page, and the list
// reloaded when its preview or unread badge may have shown one of them.
function dropMessages(conversationID, ids) {
  const before = state.messages.get(conversationID) || [];
  state.messages.set(conversationID, before.filter((m) => !ids.includes(m.id)));
  if (conversationID === state.current) renderMessages();
  const conversation = state.conversations.get(conversationID);
  if (conversation && ((conversation.last_message && ids.includes(conversation.last_message.id)) || conversation.unread_count > 0)) {
    refreshConversations();
  }
}

// A group changed (this page's change, or anyone's): one this user left or was removed
// from goes (closed if open); otherwise its title and members change at once, and the list
// is loaded again for the new members' names (and for a group this page did not know).
function groupUpdated(data) {
  const id = data.conversation_id;
  const known = state.conversations.get(id);
  if (!data.participants.includes(state.session.user.email)) {
    state.conversations.delete(id);
    state.messages.delete(id);
    state.oldestLoaded.delete(id);
    if (state.current === id) {
      state.current = null;
      document.body.classList.remove("in-conversation");
      $("composer").hidden = true;
      $("members-button").hidden = true;
      $("messages").replaceChildren();
      $("pane-title").textContent = "Select a conversation";
      $("pane-status").textContent = `You are no longer in ${(known && known.title) || data.title || "this group"}.`;
    }
    announce(`You are no longer in ${(known && known.title) || data.title || "a group"}.`);
    renderList();
    groups.refresh();
    return;
  }
  if (known) {
    known.participants = data.participants;
    known.title = data.title;
    renderList();
    renderHeader();
    groups.refresh();
  }
  refreshConversations();
}

// MARK: Typing

function showTyping(conversationID, email) {
  const previous = state.typing.get(conversationID);
  if (previous) clearTimeout(previous.timer);
  state.typing.set(conversationID, { email, timer: setTimeout(() => clearTyping(conversationID), 4000) });
  renderTyping();
}

function clearTyping(conversationID) {
  const previous = state.typing.get(conversationID);
  if (previous) clearTimeout(previous.timer);
  state.typing.delete(conversationID);
  renderTyping();
}

function renderTyping() {
  const typing = state.typing.get(state.current);
  $("typing").textContent = typing ? `${nameOf(typing.email)} is typing…` : "";
}

function typed() {
  if (!socket || !state.current) return;
  const now = Date.now();
  if (now - state.lastTyping > 2000) {
    state.lastTyping = now;
    socket.send("user_typing", { conversation_id: state.current, is_typing: true });
  }
  clearTimeout(state.typingStop);
  state.typingStop = setTimeout(stopTyping, 3000);
}

function stopTyping() {
  clearTimeout(state.typingStop);
  if (state.lastTyping && socket && state.current) socket.send("user_typing", { conversation_id: state.current, is_typing: false });
  state.lastTyping = 0;
}

// MARK: New conversation

const chosen = new Map();

async function searchPeople() {
  const q = $("people-search").value.trim();
  const role = $("people-role").value;
  const results = $("people-results");
  try {
    const users = await api.searchUsers(q, role);
    results.replaceChildren();
    for (const user of users) {
      state.people.set(user.email, { name: user.name, role: user.role });
      const item = el("li");
      const label = el("label", "person");
      const box = el("input");
      box.type = "checkbox";
      box.checked = chosen.has(user.email);
      box.addEventListener("change", () => (box.checked ? chosen.set(user.email, user) : chosen.delete(user.email)));
      label.append(box, el("span", "person-name", user.name), el("span", "role", user.role), el("span", "person-email", user.email),
                   el("span", "dot" + (user.online ? " online" : "")));
      item.append(label);
      results.append(item);
    }
    if (!users.length) results.append(el("li", "empty", "Nobody found"));
  } catch (error) {
    $("new-error").textContent = error.message;
  }
}

async function startConversation(event) {
  event.preventDefault();
  const emails = [...chosen.keys()];
  const title = $("group-title").value.trim();
  if (!emails.length) {
    $("new-error").textContent = "Choose at least one person.";
    return;
  }
  if (emails.length > 1 && !title) {
    $("new-error").textContent = "A group needs a title.";
    return;
  }
  try {
    const conversation = await api.createConversation(emails, emails.length > 1 ? title : undefined);
    $("new-dialog").close();
    await loadConversations();
    await openConversation(conversation.id);
  } catch (error) {
    $("new-error").textContent = error.message;
  }
}

// MARK: Search

let searchTimer;
function searchMessages() {
  clearTimeout(searchTimer);
  searchTimer = setTimeout(async () => {
    const q = $("search-input").value.trim();
    const results = $("search-results");
    results.replaceChildren();
    results.hidden = !q;
    if (!q) return;
    try {
      const found = await api.searchMessages(q);
      for (const message of found) {
        const item = el("li");
        const button = el("button", "search-hit");
        button.type = "button";
        button.append(el("span", "sender", nameOf(message.sender_email)), el("span", "preview", message.content));
        button.addEventListener("click", () => {
          results.hidden = true;
          $("search-input").value = "";
          openConversation(message.conversation_id);
        });
        item.append(button);
        results.append(item);
      }
      if (!found.length) results.append(el("li", "empty", "No messages found"));
    } catch (error) {
      results.append(el("li", "error", error.message));
    }
  }, 250);
}

// MARK: Wiring

function wire() {
  $("login-form").addEventListener("submit", login);
  $("logout-button").addEventListener("click", () => logout());
  $("logout-everywhere-button").addEventListener("click", logoutEverywhere);
  $("password-button").addEventListener("click", () => openPasswordDialog(false));
  setupAdmin({ api, me: () => state.session.user, el, $ });
  groups = setupGroups({ api, el, $, state, onChanged: async (change) => groupUpdated(change) });
  $("members-button").addEventListener("click", () => groups.open(state.current));
  $("password-form").addEventListener("submit", changePassword);
  $("password-cancel").addEventListener("click", () => {
    $("password-dialog").close();
    if (passwordRequired) logout();
  });
  // Escape closes a dialog; not the one a user must get through.
  $("password-dialog").addEventListener("cancel", (event) => { if (passwordRequired) event.preventDefault(); });
  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = $("composer-input");
    const text = input.value;
    input.value = "";
    send(text);
  });
  $("composer-input").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      $("composer").requestSubmit();
    }
  });
  $("composer-input").addEventListener("input", typed);
  $("messages").addEventListener("scroll", () => {
    if ($("messages").scrollTop < 40) loadOlder();
    if (atBottom()) $("new-pill").hidden = true;
  });
  $("new-pill").addEventListener("click", () => {
    $("messages").scrollTop = $("messages").scrollHeight;
    $("new-pill").hidden = true;
  });
  $("new-message").addEventListener("click", () => {
    chosen.clear();
    $("people-search").value = "";
    $("group-title").value = "";
    $("new-error").textContent = "";
    $("new-dialog").showModal();
    searchPeople();
  });
  $("people-search").addEventListener("input", () => searchPeople());
  $("people-role").addEventListener("change", () => searchPeople());
  $("new-form").addEventListener("submit", startConversation);
  $("new-cancel").addEventListener("click", () => $("new-dialog").close());
  $("search-input").addEventListener("input", searchMessages);
  $("back-button").addEventListener("click", () => document.body.classList.remove("in-conversation"));
  $("notify-button").addEventListener("click", async () => {
    await Notification.requestPermission();
    $("notify-button").hidden = Notification.permission !== "default";
  });
  document.addEventListener("visibilitychange", () => { if (!document.hidden) markRead(); });
  for (const type of ["keydown", "pointerdown", "scroll"]) document.addEventListener(type, resetIdle, { passive: true });
}

async function boot() {
  wire();
  const saved = localStorage.getItem(SESSION_KEY);
  if (saved) {
    try {
      state.session = JSON.parse(saved);
      state.session.user = await api.me();
      saveSession();
      await enter();
      return;
    } catch {
      state.session = null;
      localStorage.removeItem(SESSION_KEY);
    }
  }
  $("login-view").hidden = false;
  $("login-email").focus();
}

boot();
