// The REST API, with the session's token. Errors are thrown as ApiError.

export class ApiError extends Error {
  constructor(status, code, message, retryAfter) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

export class Api {
  constructor(getToken, onUnauthorized) {
    this.getToken = getToken;
    this.onUnauthorized = onUnauthorized;
  }

  async request(method, path, body) {
    const headers = { Accept: "application/json" };
    const token = this.getToken();
    if (token) headers.Authorization = `Bearer ${token}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let response;
    try {
      response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    } catch {
      throw new ApiError(0, "unavailable", "The server cannot be reached. Check the connection and try again.");
    }
    const text = await response.text();
    const json = text ? JSON.parse(text) : null;
    if (!response.ok) {
      const error = (json && json.error) || {};
      if (response.status === 401 && path !== "/api/auth/login") this.onUnauthorized();
      throw new ApiError(response.status, error.code || "error", error.message || `HTTP ${response.status}`,
                         Number(response.headers.get("Retry-After")) || undefined);
    }
    return json;
  }

  login(email, password) { return this.request("POST", "/api/auth/login", { email, password }); }
  logout() { return this.request("POST", "/api/auth/logout"); }
  logoutEverywhere() { return this.request("POST", "/api/auth/logout-everywhere"); }
  me() { return this.request("GET", "/api/me"); }
  adminUsers() { return this.request("GET", "/api/admin/users"); }
  adminCreateUser(user) { return this.request("POST", "/api/admin/users", user); }
  adminSetRole(email, role) { return this.request("PUT", `/api/admin/users/${encodeURIComponent(email)}/role`, { role }); }
  adminSetDisabled(email, disabled) { return this.request("POST", `/api/admin/users/${encodeURIComponent(email)}/${disabled ? "disable" : "enable"}`); }
  adminEndSessions(email) { return this.request("POST", `/api/admin/users/${encodeURIComponent(email)}/logout`); }
  adminResetPassword(email) { return this.request("POST", `/api/admin/users/${encodeURIComponent(email)}/password`); }
  retractMessage(id) { return this.request("DELETE", `/api/messages/${encodeURIComponent(id)}`); }
  updateGroup(id, change) { return this.request("PATCH", `/api/conversations/${encodeURIComponent(id)}`, change); }
  adminConversations({ participant, held }) {
    const query = [participant ? `participant=${encodeURIComponent(participant)}` : null, held ? "held=true" : null].filter(Boolean).join("&");
    return this.request("GET", `/api/admin/conversations?${query}`);
  }
  adminSetHold(id, held) { return this.request("POST", `/api/admin/conversations/${encodeURIComponent(id)}/${held ? "hold" : "release"}`); }
  adminAudit(limit, before) { return this.request("GET", `/api/admin/audit?limit=${limit}${before ? `&before=${before}` : ""}`); }
  changePassword(current, next) { return this.request("POST", "/api/me/password", { current_password: current, new_password: next }); }
  conversations() { return this.request("GET", "/api/conversations"); }
  createConversation(participants, title) { return this.request("POST", "/api/conversations", title ? { participants, title } : { participants }); }
  history(id, before, limit = 30) { return this.request("GET", `/api/conversations/${encodeURIComponent(id)}/messages?limit=${limit}${before ? `&before=${before}` : ""}`); }
  send(message) { return this.request("POST", "/api/messages", message); }
  markRead(id, upToSeq) { return this.request("POST", `/api/conversations/${encodeURIComponent(id)}/read`, { up_to_seq: upToSeq }); }
  searchUsers(q, role) { return this.request("GET", `/api/users/search?q=${encodeURIComponent(q)}${role ? `&user_role=${role}` : ""}`); }
  searchMessages(q) { return this.request("GET", `/api/messages/search?q=${encodeURIComponent(q)}`); }
}
