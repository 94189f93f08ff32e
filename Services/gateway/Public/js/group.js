// A group's members, for anyone in it: add people, rename it, leave it; its creator and
// admins also remove others (the server decides; the page only hides what it would refuse).
// Every member's page hears of a change as `conversation_updated`. Data goes on the page
// with textContent only.

export function setupGroups({ api, el, $, state, onChanged }) {
  let conversationID = null;

  const me = () => state.session.user;
  const current = () => state.conversations.get(conversationID);
  const nameOf = (email) => (state.people.get(email) || {}).name || email;
  const mayRemoveOthers = (conversation) => me().role === "admin" || conversation.created_by === me().email;

  function say(message) {
    $("members-error").textContent = "";
    $("members-message").textContent = message;
  }

  function fail(error) {
    $("members-message").textContent = "";
    $("members-error").textContent = error.message;
  }

  function button(label, className, onClick) {
    const node = el("button", className, label);
    node.type = "button";
    node.addEventListener("click", onClick);
    return node;
  }

  function render() {
    const conversation = current();
    if (!$("members-dialog").open) return;
    if (!conversation) {
      $("members-dialog").close();
      return;
    }
    $("members-dialog-title").textContent = `Members of ${conversation.title || "the group"}`;
    const list = $("member-list");
    list.replaceChildren();
    for (const email of conversation.participants) {
      const item = el("li", "person");
      item.dataset.email = email;
      item.append(el("span", "person-name", email === me().email ? `${nameOf(email)} (you)` : nameOf(email)),
                  el("span", "role", (state.people.get(email) || {}).role || ""));
      if (email === conversation.created_by) item.append(el("span", "hint", "created the group"));
      if (email !== me().email && mayRemoveOthers(conversation)) {
        const actions = el("span", "member-actions");
        actions.append(button("Remove", "link", () => {
          if (!window.confirm(`Remove ${nameOf(email)} from ${conversation.title}? They no longer see its messages.`)) return;
          change({ remove_members: [email] }, () => `${nameOf(email)} was removed.`);
        }));
        item.append(actions);
      }
      list.append(item);
    }
    searchCandidates();
  }

  async function change(body, done) {
    try {
      const result = await api.updateGroup(conversationID, body);
      say(done(result));
      await onChanged(result);
      render();
    } catch (error) {
      fail(error);
    }
  }

  let searchTimer;
  function searchCandidates() {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(async () => {
      const conversation = current();
      if (!conversation) return;
      const list = $("member-candidates");
      try {
        const users = await api.searchUsers($("member-search").value.trim(), "");
        list.replaceChildren();
        for (const user of users.filter((u) => !conversation.participants.includes(u.email))) {
          state.people.set(user.email, { name: user.name, role: user.role });
          const item = el("li", "person");
          item.dataset.email = user.email;
          item.append(el("span", "person-name", user.name), el("span", "role", user.role), el("span", "person-email", user.email),
                      button("Add", "link", () => change({ add_members: [user.email] }, () => `${user.name} was added: they see the group's messages.`)));
          list.append(item);
        }
        if (!list.children.length) list.append(el("li", "empty", "Nobody else found"));
      } catch (error) {
        fail(error);
      }
    }, 200);
  }

  function open(id) {
    conversationID = id;
    say("");
    $("member-search").value = "";
    $("rename-title").value = (current() || {}).title || "";
    $("members-dialog").showModal();
    render();
  }

  $("members-close").addEventListener("click", () => $("members-dialog").close());
  $("member-search").addEventListener("input", searchCandidates);
  $("rename-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const title = $("rename-title").value.trim();
    if (!title) return fail(new Error("A group needs a title."));
    change({ title }, () => "The group was renamed.");
  });
  $("leave-group").addEventListener("click", async () => {
    const conversation = current();
    if (!conversation || !window.confirm(`Leave ${conversation.title}? You no longer see its messages.`)) return;
    try {
      const result = await api.updateGroup(conversationID, { remove_members: [me().email] });
      $("members-dialog").close();
      await onChanged(result);
    } catch (error) {
      fail(error);
    }
  });

  // Shown again after any change to the group, by this page or anyone else's.
  return { open, refresh: render };
}
