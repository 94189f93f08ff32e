// Administration, for admins: the users (add, role, disable or enable, end their
// sessions, a new password), legal holds (find a person's conversations, or the held
// ones; hold, release) and the audit log, through the admin REST routes. As everywhere in the page, data goes
// on the page with textContent only.

const AUDIT_PAGE = 100;
const PASSWORD_ALPHABET = "abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";

// 16 letters and digits from the browser's secure generator (as chatctl makes them).
function generatePassword() {
  const bytes = new Uint32Array(16);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (n) => PASSWORD_ALPHABET[n % PASSWORD_ALPHABET.length]).join("");
}

export function setupAdmin({ api, me, el, $ }) {
  let auditOldest = null;
  // Names by email, from the last list of users (the holds' participants are emails).
  let names = new Map();
  // What the holds tab shows: a participant's conversations, or (null) those on hold.
  let holdParticipant = null;

  function say(message) {
    $("admin-error").textContent = "";
    $("admin-message").textContent = message;
  }

  function fail(error) {
    $("admin-message").textContent = "";
    $("admin-error").textContent = error.message;
  }

  // Runs an action, then shows `done` (the text it returns) and the users as they are now.
  // One that locks someone out or ends their work asks first (`question`).
  async function act(action, question) {
    if (question && !window.confirm(question)) return;
    try {
      say(await action());
      await loadUsers();
    } catch (error) {
      fail(error);
    }
  }

  function actionButton(label, onClick) {
    const button = el("button", "link", label);
    button.type = "button";
    button.addEventListener("click", onClick);
    return button;
  }

  async function loadUsers() {
    const users = await api.adminUsers();
    names = new Map(users.map((user) => [user.email, user.name]));
    const body = $("user-table").tBodies[0];
    body.replaceChildren();
    for (const user of users) {
      const row = el("tr");
      row.dataset.email = user.email;
      row.append(el("td", null, user.name), el("td", null, user.email), el("td", "role-cell", user.role === "admin" ? "Admin" : "Doctor"),
                 el("td", "status-cell", user.disabled ? "Disabled" : user.must_change_password ? "Active, password to choose" : "Active"));
      const actions = el("td", "actions-cell");
      if (user.email === me().email) {
        actions.append(el("span", "hint", "You"));
      } else {
        const role = user.role === "admin" ? "doctor" : "admin";
        actions.append(
          actionButton(role === "admin" ? "Make admin" : "Make doctor", () => act(async () => {
            await api.adminSetRole(user.email, role);
            return `${user.name} is now ${role === "admin" ? "an admin" : "a doctor"}.`;
          })),
          actionButton(user.disabled ? "Enable" : "Disable", () => act(async () => {
            await api.adminSetDisabled(user.email, !user.disabled);
            return user.disabled ? `${user.name} can log in again.` : `${user.name} is disabled: logged out everywhere, and cannot log in.`;
          }, user.disabled ? null : `Disable ${user.name}? They are logged out everywhere and cannot log in until enabled.`)),
          actionButton("End sessions", () => act(async () => {
            await api.adminEndSessions(user.email);
            return `${user.name} was logged out on every device.`;
          }, `Log ${user.name} out on every device?`)),
          actionButton("New password", () => act(async () => {
            const result = await api.adminResetPassword(user.email);
            return `New password for ${user.name}: ${result.password} (shown once; their sessions have ended).`;
          }, `Give ${user.name} a new password? Their current one stops working and they are logged out everywhere.`)),
        );
      }
      row.append(actions);
      body.append(row);
    }
  }

  async function addUser(event) {
    event.preventDefault();
    const name = $("user-name").value.trim();
    const email = $("user-email").value.trim();
    const typed = $("user-password").value;
    if (!name || !email) return fail(new Error("Enter a name and an email."));
    if (typed && [...typed].length < 8) return fail(new Error("A password needs at least 8 characters."));
    const password = typed || generatePassword();
    try {
      const user = await api.adminCreateUser({ email, name, role: $("user-role").value, password });
      for (const id of ["user-name", "user-email", "user-password"]) $(id).value = "";
      say(typed ? `Added ${user.name} (${user.email}).` : `Added ${user.name} (${user.email}). Password: ${password} (shown once).`);
      await loadUsers();
    } catch (error) {
      fail(error.status === 409 ? new Error("A user with this email already exists.") : error);
    }
  }

  function describeMessages(conversation) {
    const count = `${conversation.messages} stored`;
    return conversation.kept_past_expiry ? `${count}, ${conversation.kept_past_expiry} kept past retention` : count;
  }

  function conversationName(conversation) {
    if (conversation.kind === "group") return conversation.title || "Group";
    return "1:1";
  }

  async function loadHolds() {
    try {
      if (!names.size) names = new Map((await api.adminUsers()).map((user) => [user.email, user.name]));
      const conversations = await api.adminConversations(holdParticipant ? { participant: holdParticipant } : { held: true });
      const who = holdParticipant ? (names.get(holdParticipant.toLowerCase()) || holdParticipant) : null;
      $("hold-caption").textContent = who
        ? `Conversations of ${who}: ${conversations.length}`
        : `On legal hold: ${conversations.length}`;
      const body = $("hold-table").tBodies[0];
      body.replaceChildren();
      for (const conversation of conversations) {
        const row = el("tr");
        row.dataset.id = conversation.id;
        const people = conversation.participants.map((email) => names.get(email) ? `${names.get(email)} (${email})` : email).join(", ");
        const last = conversation.last_message_at || conversation.created_at;
        row.append(el("td", null, conversationName(conversation)), el("td", "participants-cell", people),
                   el("td", null, new Date(last).toLocaleString()), el("td", "messages-cell", describeMessages(conversation)),
                   el("td", "hold-cell", conversation.legal_hold ? "On hold" : "No"));
        const actions = el("td", "actions-cell");
        const label = `${conversationName(conversation)} (${people})`;
        actions.append(conversation.legal_hold
          ? actionButton("Release", () => holdAction(conversation.id, false,
              `Release the legal hold on ${label}? Messages past the retention period are deleted at the next sweep.`))
          : actionButton("Place hold", () => holdAction(conversation.id, true, null)));
        row.append(actions);
        body.append(row);
      }
    } catch (error) {
      $("hold-table").tBodies[0].replaceChildren();
      $("hold-caption").textContent = "";
      fail(error.status === 404 && holdParticipant ? new Error(`No user has the email ${holdParticipant}.`) : error);
    }
  }

  async function holdAction(id, held, question) {
    if (question && !window.confirm(question)) return;
    try {
      await api.adminSetHold(id, held);
      say(held ? "The conversation is on legal hold: its messages are kept past the retention period."
               : "The legal hold is released.");
      await loadHolds();
    } catch (error) {
      fail(error);
    }
  }

  async function loadAudit(older) {
    try {
      const entries = await api.adminAudit(AUDIT_PAGE, older ? auditOldest : undefined);
      const body = $("audit-table").tBodies[0];
      if (!older) body.replaceChildren();
      for (const entry of entries) {
        const row = el("tr");
        row.append(el("td", null, new Date(entry.at).toLocaleString()), el("td", null, entry.actor || "system"),
                   el("td", null, entry.action), el("td", null, entry.target || ""), el("td", null, entry.outcome));
        body.append(row);
      }
      if (entries.length) auditOldest = entries[entries.length - 1].id;
      $("audit-older").hidden = entries.length < AUDIT_PAGE;
    } catch (error) {
      fail(error);
    }
  }

  function showTab(name) {
    for (const tab of ["users", "holds", "audit"]) {
      $(`admin-tab-${tab}`).setAttribute("aria-selected", String(tab === name));
      $(`admin-${tab}`).hidden = tab !== name;
    }
    if (name === "audit") loadAudit(false);
    if (name === "holds") loadHolds();
  }

  $("admin-button").addEventListener("click", async () => {
    say("");
    showTab("users");
    $("admin-dialog").showModal();
    try {
      await loadUsers();
    } catch (error) {
      fail(error);
    }
  });
  $("admin-close").addEventListener("click", () => $("admin-dialog").close());
  $("admin-tab-users").addEventListener("click", () => showTab("users"));
  $("admin-tab-holds").addEventListener("click", () => showTab("holds"));
  $("admin-tab-audit").addEventListener("click", () => showTab("audit"));
  $("hold-search").addEventListener("submit", (event) => {
    event.preventDefault();
    const email = $("hold-participant").value.trim();
    if (!email) return fail(new Error("Enter a participant's email, or show the held conversations."));
    say("");
    holdParticipant = email;
    loadHolds();
  });
  $("hold-show-held").addEventListener("click", () => {
    say("");
    holdParticipant = null;
    $("hold-participant").value = "";
    loadHolds();
  });
  $("user-form").addEventListener("submit", addUser);
  $("audit-older").addEventListener("click", () => loadAudit(true));
}
