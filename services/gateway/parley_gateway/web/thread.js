// The messages of the open conversation. A message is
// {key, id, role, content, status, usage, model, error, stoppedBy, created_at_ms}; `key` stays
// the same while a streaming answer learns its server id. Text is set with textContent only.
// Images (`media` of a user message, `images` of a live answer) go in `.media`:
// media.js. While the reader has scrolled up during an answer, a "Jump to latest" button shows.
// Under a written message: its buttons (copy, edit, regenerate, continue, versions; actions.js).

import { el } from "./dom.js";
import { formatCost } from "./format.js";
import { MarkdownRenderer } from "./markdown.js";
import { showMedia, withoutMediaId } from "./media.js";
import { Typewriters } from "./typewriter.js";

const STATUS_TEXT = {
  sending: "Sending…",
  queued: "Waiting for the model…",
  streaming: "Answering…",
  reconnecting: "Connection lost, reconnecting…",
  interrupted: "Interrupted",
  failed: "Failed",
};
// Why an answer this page asked to stop was stopped (the partial answer is kept).
const STOPPED_TEXT = {
  user: "Stopped",
  left: "Stopped when you left this conversation",
};
const LIVE = new Set(["sending", "queued", "streaming", "reconnecting"]);
// Within this many pixels of the bottom, the reader follows the newest text.
const NEAR_BOTTOM_PX = 48;
const integer = new Intl.NumberFormat("en-US");
// How long a message found by search stays marked.
const FOUND_MS = 2500;

/** A page of history (newest first, from the API) as messages, oldest first. */
export function messagesFromPage(page) {
  return page.data.map((m) => ({ ...m, key: m.id })).reverse();
}

/** Puts `message` into `messages` (oldest first): replaces the one with its key or id, else inserts by time. */
export function upsertMessage(messages, message) {
  const at = messages.findIndex((m) => m.key === message.key || (message.id && m.id === message.id));
  if (at >= 0) {
    messages[at] = { ...messages[at], ...message, key: messages[at].key };
    return messages[at];
  }
  let place = messages.length;
  while (place > 0 && messages[place - 1].created_at_ms > message.created_at_ms) place -= 1;
  messages.splice(place, 0, message);
  return message;
}

function queueText({ position, waitMs }) {
  const wait = waitMs ? `, about ${Math.ceil(waitMs / 1000)} s` : "";
  return `Waiting for the model (position ${position}${wait})…`;
}

/** What an answer cost, or null when nothing was counted (an answer stopped before its first word). */
function formatUsage(usage) {
  const tokensIn = usage.input_tokens ?? 0;
  const tokensOut = usage.output_tokens ?? 0;
  if (tokensIn + tokensOut === 0) return null;
  return `${integer.format(tokensIn)} tokens in · ${integer.format(tokensOut)} out · ${formatCost(usage.cost_micros)}`;
}

export class ThreadView {
  /** `decorate(node, message)` fills the buttons under a message (actions.js). */
  constructor({ list, scroller, olderButton, title, empty, jumpButton, decorate = () => {} }) {
    this.list = list;
    this.decorate = decorate;
    this.scroller = scroller;
    this.olderButton = olderButton;
    this.title = title;
    this.empty = empty;
    this.jumpButton = jumpButton;
    this.thread = null;
    this.unseen = false; // text arrived below what the reader is looking at
    // An answer's text is markdown, typed out while it streams (typewriter.js).
    this.markdown = new MarkdownRenderer();
    this.typewriters = new Typewriters((element, text, live) => {
      const stick = this.atBottom();
      this.markdown.render(element, text, { partial: live });
      if (!element.isConnected) return;
      if (stick) this.scroller.scrollTop = this.scroller.scrollHeight;
      else this.unseen = true;
      this.updateJump();
    });
    scroller.addEventListener("scroll", () => this.updateJump(), { passive: true });
    jumpButton.addEventListener("click", () => {
      this.scroller.scrollTop = this.scroller.scrollHeight;
      this.updateJump();
      this.list.focus({ preventScroll: true });
    });
  }

  atBottom() {
    const { scrollHeight, scrollTop, clientHeight } = this.scroller;
    return scrollHeight - scrollTop - clientHeight < NEAR_BOTTOM_PX;
  }

  /** "Jump to latest" shows while the reader is scrolled up from an answer being written or new text. */
  updateJump() {
    if (this.atBottom()) this.unseen = false;
    const live = Boolean(this.thread?.messages.some((m) => LIVE.has(m.status)));
    const hide = this.atBottom() || !(live || this.unseen);
    if (this.jumpButton.hidden !== hide) this.jumpButton.hidden = hide;
  }

  /** The conversation's title, on the page and in the tab. */
  setTitle(title) {
    this.title.textContent = title;
    document.title = `${title} · Parley`;
  }

  /**
   * Shows a conversation's thread ({messages, olderCursor}), or nothing when `thread` is null
   * (`waiting` says why: its messages are loading, by default).
   */
  show(title, thread, waiting = "Loading…") {
    this.thread = thread;
    this.setTitle(title);
    this.list.replaceChildren(...(thread?.messages ?? []).map((m) => this.node(m, true)));
    this.olderButton.hidden = !thread?.olderCursor;
    this.empty.textContent = thread ? "No messages yet. Ask anything." : waiting;
    this.empty.hidden = Boolean(thread?.messages.length);
    this.scroller.scrollTop = this.scroller.scrollHeight;
    this.unseen = false;
    this.updateJump();
  }

  /** Brings the message with server id `id` into view and marks it for a moment (a search hit). */
  reveal(id) {
    const node = [...this.list.children].find((child) => child.dataset.id === id);
    if (!node) return false;
    node.scrollIntoView({ block: "center" });
    node.classList.add("found");
    setTimeout(() => node.classList.remove("found"), FOUND_MS);
    this.updateJump();
    return true;
  }

  /** Older messages were added at the top: keep what the reader was looking at in place. */
  showOlder() {
    const fromBottom = this.scroller.scrollHeight - this.scroller.scrollTop;
    this.list.replaceChildren(...this.thread.messages.map((m) => this.node(m, true)));
    this.olderButton.hidden = !this.thread.olderCursor;
    this.scroller.scrollTop = this.scroller.scrollHeight - fromBottom;
  }

  /** Shows `thread` (this conversation's, read again: another version) in place, keeping the reader's place. */
  redraw(thread = this.thread) {
    const top = this.scroller.scrollTop;
    this.thread = thread;
    this.list.replaceChildren(...thread.messages.map((m) => this.node(m, true)));
    this.olderButton.hidden = !thread.olderCursor;
    this.empty.hidden = Boolean(thread.messages.length);
    this.scroller.scrollTop = top;
    this.updateJump();
  }

  /** One message changed or arrived. */
  update(message) {
    const stick = this.atBottom();
    const existing = this.list.querySelector(`[data-key="${CSS.escape(message.key)}"]`);
    if (existing) {
      this.fill(existing, message);
    } else {
      const index = this.thread.messages.indexOf(message);
      const next = index >= 0 ? this.thread.messages[index + 1] : undefined;
      const before = next ? this.list.querySelector(`[data-key="${CSS.escape(next.key)}"]`) : null;
      this.list.insertBefore(this.node(message), before);
      this.empty.hidden = true;
    }
    if (stick) this.scroller.scrollTop = this.scroller.scrollHeight;
    else this.unseen = true;
    this.updateJump();
  }

  /** A message's element; `whole`: its text appears at once, even while it streams. */
  node(message, whole = false) {
    const node = el(
      "li",
      { class: `message ${message.role}`, "data-key": message.key },
      el("p", { class: "author" }, message.role === "user" ? "You" : "Parley"),
      el("div", { class: "text" }),
      el("div", { class: "media", hidden: true }),
      el("p", { class: "meta" }),
      el("div", { class: "actions", hidden: true }),
    );
    this.fill(node, message, whole);
    return node;
  }

  fill(node, message, whole = false) {
    const text = node.querySelector(".text");
    if (message.role === "assistant") {
      const live = LIVE.has(message.status);
      this.typewriters.show(message.key, text, withoutMediaId(message.content ?? ""), { live, whole });
    } else {
      text.textContent = message.content;
    }
    if (message.id) node.dataset.id = message.id;
    node.dataset.status = message.status;
    showMedia(node.querySelector(".media"), message);
    node.setAttribute("aria-busy", String(LIVE.has(message.status)));
    const parts = [];
    if (message.stopping && LIVE.has(message.status)) parts.push("Stopping…");
    else if (message.status === "queued" && message.queue?.position) parts.push(queueText(message.queue));
    else if (message.status === "interrupted" && message.stoppedBy in STOPPED_TEXT) {
      parts.push(STOPPED_TEXT[message.stoppedBy]);
    } else if (message.status in STATUS_TEXT) parts.push(STATUS_TEXT[message.status]);
    if (message.error) parts.push(message.error.describe?.() ?? String(message.error));
    if (message.role === "assistant") {
      const usage = message.usage && !LIVE.has(message.status) ? formatUsage(message.usage) : null;
      if (usage) parts.push(usage);
      if (message.model) parts.push(message.model);
    }
    node.querySelector(".meta").textContent = parts.join(" — ");
    this.decorate(node, message);
  }
}
