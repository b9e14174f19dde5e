// The conversation list in the sidebar: latest activity first, under date headings (Today,
// Yesterday, Previous 7 days, Previous 30 days, then by month), paged with "Load more"; open,
// rename (inline, Enter saves, Escape cancels) and delete. A conversation whose answer is being
// written in the background is marked "generating…".

import { byId, el } from "./dom.js";
import { setConversationList, state } from "./state.js";

export const UNTITLED = "Untitled";
// A row's buttons, left to right. The list is one tab stop (a roving tabindex): Tab comes to the
// button last used (or the open conversation's), Up/Down/Home/End move between rows and
// Left/Right between a row's buttons.
const ROW_ROLES = ["open", "rename", "delete"];
const ROW_CONTROL = ROW_ROLES.map((role) => `[data-conversation] [data-role="${role}"]`).join(", ");

const monthFormat = new Intl.DateTimeFormat("en-US", { month: "long" });
const monthYearFormat = new Intl.DateTimeFormat("en-US", { month: "long", year: "numeric" });

/** The heading a conversation last active at `ms` is listed under, seen at `now` (local time). */
export function dateGroup(ms, now = new Date()) {
  const daysAgo = (days) => new Date(now.getFullYear(), now.getMonth(), now.getDate() - days).getTime();
  if (ms >= daysAgo(0)) return "Today"; // (a clock a little ahead of this one's too)
  if (ms >= daysAgo(1)) return "Yesterday";
  if (ms >= daysAgo(7)) return "Previous 7 days";
  if (ms >= daysAgo(30)) return "Previous 30 days";
  const date = new Date(ms);
  return (date.getFullYear() === now.getFullYear() ? monthFormat : monthYearFormat).format(date);
}

export class ConversationList {
  /**
   * `actions`: {open(id), rename(id, title), remove(id), more()}, each may return a promise. The
   * conversations listed, and the cursor of the next page, are state.js's.
   */
  constructor(listNode, moreButton, actions) {
    this.listNode = listNode;
    this.moreButton = moreButton;
    this.actions = actions;
    this.selected = null;
    this.renaming = null; // {id, draft}
    this.generating = new Set(); // ids of conversations whose answer is being written
    this.tabStop = null; // {id, role}: the one control of the list that Tab reaches
    moreButton.addEventListener("click", () => actions.more());
    listNode.addEventListener("keydown", (event) => this.moveFocus(event));
    listNode.addEventListener("focusin", (event) => {
      const control = event.target.closest?.(ROW_CONTROL);
      if (!control) return;
      this.tabStop = { id: control.closest("[data-conversation]").dataset.conversation, role: control.dataset.role };
      this.updateTabStop();
    });
  }

  /** The conversations listed, latest activity first. */
  get items() {
    return state.conversations;
  }

  /** The cursor of the next page of the list (null: all of it is here). */
  get nextCursor() {
    return state.conversationsCursor;
  }

  clear() {
    setConversationList({ conversations: [], conversationsCursor: null });
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
    setConversationList({ conversationsCursor: page.next_cursor });
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
    // Focus in the row going away (its Delete button, most often) moves to the row that takes its
    // place, else the one above, else "New conversation": never lost to the page.
    const at = this.items.findIndex((c) => c.id === id);
    const row = this.listNode.querySelector(`[data-conversation="${CSS.escape(id)}"]`);
    const hadFocus = row?.contains(document.activeElement) ?? false;
    setConversationList({ conversations: this.items.filter((c) => c.id !== id) });
    if (this.renaming?.id === id) this.renaming = null;
    this.render();
    if (!hadFocus) return;
    const next = this.items[Math.min(at, this.items.length - 1)];
    (next ? this.control(next.id, "open") : byId("new-conversation"))?.focus();
  }

  /** Something happened in a conversation now: it moves to the top. */
  touch(id, atMs = Date.now()) {
    const conversation = this.get(id);
    if (conversation && conversation.updated_at_ms < atMs) this.upsert({ ...conversation, updated_at_ms: atMs });
  }

  select(id) {
    this.selected = id;
    if (!this.listNode.contains(document.activeElement)) this.tabStop = null; // Tab comes to this one
    this.render();
  }

  /** The conversations whose answer is being written while the user is elsewhere (a Set of ids). */
  showGenerating(ids) {
    if (ids.size === this.generating.size && [...ids].every((id) => this.generating.has(id))) return;
    this.generating = new Set(ids);
    this.render();
  }

  put(conversation) {
    const at = this.items.findIndex((c) => c.id === conversation.id);
    const items = [...this.items];
    if (at >= 0) items[at] = { ...items[at], ...conversation };
    else items.push(conversation);
    setConversationList({ conversations: items.sort((a, b) => b.updated_at_ms - a.updated_at_ms) });
  }

  render() {
    // Re-rendering must not throw the keyboard user's focus away.
    const focused = document.activeElement?.closest?.("[data-conversation]");
    const focusedRole = focused ? document.activeElement.dataset.role : null;
    const focusedId = focused?.dataset.conversation;
    const groups = [];
    const now = new Date();
    for (const conversation of this.items) {
      const name = dateGroup(conversation.updated_at_ms, now);
      if (groups.at(-1)?.name !== name) groups.push({ name, rows: [] });
      groups.at(-1).rows.push(this.row(conversation));
    }
    this.listNode.replaceChildren(
      ...groups.flatMap(({ name, rows }, index) => [
        el("h2", { class: "conversation-group-title", id: `conversation-group-${index}` }, name),
        el("ul", { class: "conversation-group", "aria-labelledby": `conversation-group-${index}` }, ...rows),
      ]),
    );
    this.moreButton.hidden = !this.nextCursor;
    this.updateTabStop();
    if (focusedId && focusedRole) this.control(focusedId, focusedRole)?.focus();
  }

  /** Makes the tab stop (else the open conversation's row, else the first row) the only one. */
  updateTabStop() {
    const controls = this.listNode.querySelectorAll(ROW_CONTROL);
    const stop =
      (this.tabStop && this.control(this.tabStop.id, this.tabStop.role)) ||
      (this.selected && this.control(this.selected, "open")) ||
      this.listNode.querySelector(ROW_CONTROL);
    for (const control of controls) control.tabIndex = control === stop ? 0 : -1;
  }

  /** The arrow keys, Home and End on a row's button (see ROW_ROLES). */
  moveFocus(event) {
    const control = event.target.closest?.(ROW_CONTROL);
    if (!control || event.altKey || event.ctrlKey || event.metaKey || event.shiftKey) return;
    const rows = [...this.listNode.querySelectorAll("[data-conversation]")]
      .map((row) => ROW_ROLES.map((role) => row.querySelector(`[data-role="${role}"]`)).filter(Boolean))
      .filter((row) => row.length > 0);
    const r = rows.findIndex((row) => row.includes(control));
    if (r < 0) return;
    const c = rows[r].indexOf(control);
    const inRow = (row, column) => row?.[Math.min(column, row.length - 1)];
    const target = {
      ArrowDown: inRow(rows[r + 1], c),
      ArrowUp: inRow(rows[r - 1], c),
      Home: rows[0][0],
      End: rows.at(-1)[0],
      ArrowRight: rows[r][c + 1],
      ArrowLeft: rows[r][c - 1],
    }[event.key];
    if (!target) return;
    event.preventDefault();
    target.focus(); // (focusin makes it the tab stop)
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
      el("span", { class: "open-title" }, title),
      this.generating.has(conversation.id) ? el("span", { class: "generating" }, " generating…") : null,
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
