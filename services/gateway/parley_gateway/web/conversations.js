// The conversation list in the sidebar: latest activity first, paged with "Load more";
// open, rename (inline, Enter saves, Escape cancels) and delete.

import { el } from "./dom.js";

export const UNTITLED = "Untitled";

export class ConversationList {
  /** `actions`: {open(id), rename(id, title), remove(id), more()}, each may return a promise. */
  constructor(listNode, moreButton, actions) {
    this.listNode = listNode;
    this.moreButton = moreButton;
    this.actions = actions;
    this.items = [];
    this.nextCursor = null;
    this.selected = null;
    this.renaming = null; // {id, draft}
    moreButton.addEventListener("click", () => actions.more());
  }

  clear() {
    this.items = [];
    this.nextCursor = null;
    this.selected = null;
    this.renaming = null;
    this.render();
  }

  get(id) {
    return this.items.find((c) => c.id === id) ?? null;
  }

  /** Adds a page from GET /v1/conversations; conversations already known are refreshed. */
  addPage(page) {
    for (const conversation of page.data) this.put(conversation);
    this.nextCursor = page.next_cursor;
    this.render();
  }

  upsert(conversation) {
    this.put(conversation);
    this.render();
  }

  /**
   * A conversation from sync. Shown if known, or if it falls within the pages loaded so far
   * (older ones appear when the user pages down to them).
   */
  offer(conversation) {
    const oldest = this.items.at(-1);
    const loaded = !this.nextCursor || !oldest || conversation.updated_at_ms >= oldest.updated_at_ms;
    if (loaded || this.get(conversation.id)) this.upsert(conversation);
  }

  remove(id) {
    this.items = this.items.filter((c) => c.id !== id);
    if (this.renaming?.id === id) this.renaming = null;
    this.render();
  }

  /** Something happened in a conversation now: it moves to the top. */
  touch(id, atMs = Date.now()) {
    const conversation = this.get(id);
    if (conversation && conversation.updated_at_ms < atMs) this.upsert({ ...conversation, updated_at_ms: atMs });
  }

  select(id) {
    this.selected = id;
    this.render();
  }

  put(conversation) {
    const at = this.items.findIndex((c) => c.id === conversation.id);
    if (at >= 0) this.items[at] = { ...this.items[at], ...conversation };
    else this.items.push(conversation);
    this.items.sort((a, b) => b.updated_at_ms - a.updated_at_ms);
  }

  render() {
    // Re-rendering must not throw the keyboard user's focus away.
    const focused = document.activeElement?.closest?.("[data-conversation]");
    const focusedRole = focused ? document.activeElement.dataset.role : null;
    const focusedId = focused?.dataset.conversation;
    this.listNode.replaceChildren(...this.items.map((c) => this.row(c)));
    this.moreButton.hidden = !this.nextCursor;
    if (focusedId && focusedRole) this.control(focusedId, focusedRole)?.focus();
  }

  /** A button (or the title field) of one conversation's row, by its data-role. */
  control(id, role) {
    return this.listNode.querySelector(`[data-conversation="${CSS.escape(id)}"] [data-role="${role}"]`);
  }

  row(conversation) {
    const title = conversation.title || UNTITLED;
    const item = el("li", { class: "conversation", "data-conversation": conversation.id });
    if (this.renaming?.id === conversation.id) {
      item.append(this.renameForm(conversation));
      return item;
    }
    const open = el(
      "button",
      { class: "open", "data-role": "open", "aria-current": this.selected === conversation.id ? "page" : null },
      title,
    );
    open.addEventListener("click", () => this.actions.open(conversation.id));
    const rename = el("button", { class: "icon", "data-role": "rename", "aria-label": `Rename “${title}”` }, "✎");
    rename.addEventListener("click", () => this.startRename(conversation.id));
    const remove = el("button", { class: "icon", "data-role": "delete", "aria-label": `Delete “${title}”` }, "✕");
    remove.addEventListener("click", () => {
      if (window.confirm(`Delete “${title}” and all its messages?`)) this.actions.remove(conversation.id);
    });
    item.append(open, rename, remove);
    return item;
  }

  startRename(id) {
    this.renaming = { id, draft: this.get(id)?.title ?? "" };
    this.render();
    this.control(id, "title")?.select();
  }

  renameForm(conversation) {
    const inputId = `rename-${conversation.id}`;
    const input = el("input", { id: inputId, maxlength: 200, required: true, "data-role": "title" });
    input.value = this.renaming.draft;
    input.addEventListener("input", () => {
      this.renaming.draft = input.value;
    });
    const form = el(
      "form",
      { class: "rename" },
      el("label", { for: inputId, class: "visually-hidden" }, "New title"),
      input,
      el("button", { type: "submit", "data-role": "save" }, "Save"),
      el("button", { type: "button", "data-role": "cancel" }, "Cancel"),
    );
    const done = (focusRole) => {
      this.renaming = null;
      this.render();
      this.control(conversation.id, focusRole)?.focus();
    };
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const title = input.value.trim();
      if (title && title !== conversation.title) await this.actions.rename(conversation.id, title);
      done("open");
    });
    form.querySelector("[data-role=cancel]").addEventListener("click", () => done("rename"));
    form.addEventListener("keydown", (event) => {
      if (event.key === "Escape") done("rename");
    });
    return form;
  }
}
