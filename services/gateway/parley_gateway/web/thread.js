// The messages of the open conversation. A message is
// {key, id, role, content, status, usage, model, error, created_at_ms}; `key` stays the same
// while a streaming answer learns its server id. Text is set with textContent only. Images
// (`media` of a user message sent here, `images` of a live answer) go in `.media`: media.js.

import { el } from "./dom.js";
import { renderMarkdown } from "./markdown.js";
import { showMedia } from "./media.js";
import { Typewriters } from "./typewriter.js";

const STATUS_TEXT = {
  sending: "Sending…",
  queued: "Waiting for the model…",
  streaming: "Answering…",
  reconnecting: "Connection lost, reconnecting…",
  interrupted: "Interrupted",
  failed: "Failed",
  unsent: "Not sent",
};
const LIVE = new Set(["sending", "queued", "streaming", "reconnecting"]);

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

function formatUsage(usage) {
  const dollars = (usage.cost_micros ?? 0) / 1_000_000;
  return `${usage.input_tokens} tokens in · ${usage.output_tokens} out · $${dollars.toFixed(6)}`;
}

export class ThreadView {
  constructor({ list, scroller, olderButton, title, empty }) {
    this.list = list;
    this.scroller = scroller;
    this.olderButton = olderButton;
    this.title = title;
    this.empty = empty;
    this.thread = null;
    // An answer's text is markdown, typed out while it streams (typewriter.js).
    this.typewriters = new Typewriters((element, text, live) => {
      const stick = this.scroller.scrollHeight - this.scroller.scrollTop - this.scroller.clientHeight < 48;
      renderMarkdown(element, text, { partial: live });
      if (stick && element.isConnected) this.scroller.scrollTop = this.scroller.scrollHeight;
    });
  }

  /** Shows a conversation's thread ({messages, olderCursor}), or nothing when `thread` is null. */
  show(title, thread) {
    this.thread = thread;
    this.title.textContent = title;
    this.list.replaceChildren(...(thread?.messages ?? []).map((m) => this.node(m, true)));
    this.olderButton.hidden = !thread?.olderCursor;
    this.empty.textContent = thread ? "No messages yet. Ask anything." : "Loading…";
    this.empty.hidden = Boolean(thread?.messages.length);
    this.scroller.scrollTop = this.scroller.scrollHeight;
  }

  /** Older messages were added at the top: keep what the reader was looking at in place. */
  showOlder() {
    const fromBottom = this.scroller.scrollHeight - this.scroller.scrollTop;
    this.list.replaceChildren(...this.thread.messages.map((m) => this.node(m, true)));
    this.olderButton.hidden = !this.thread.olderCursor;
    this.scroller.scrollTop = this.scroller.scrollHeight - fromBottom;
  }

  /** One message changed or arrived. */
  update(message) {
    const stick = this.scroller.scrollHeight - this.scroller.scrollTop - this.scroller.clientHeight < 48;
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
    );
    this.fill(node, message, whole);
    return node;
  }

  fill(node, message, whole = false) {
    const text = node.querySelector(".text");
    if (message.role === "assistant") {
      const live = LIVE.has(message.status);
      this.typewriters.show(message.key, text, message.content ?? "", { live, whole });
    } else {
      text.textContent = message.content;
    }
    node.dataset.status = message.status;
    showMedia(node.querySelector(".media"), message);
    node.setAttribute("aria-busy", String(LIVE.has(message.status)));
    const parts = [];
    if (message.stopping && LIVE.has(message.status)) parts.push("Stopping…");
    else if (message.status === "queued" && message.queue?.position) parts.push(queueText(message.queue));
    else if (message.status in STATUS_TEXT) parts.push(STATUS_TEXT[message.status]);
    if (message.error) parts.push(message.error.describe?.() ?? String(message.error));
    if (message.role === "assistant") {
      if (message.usage && !LIVE.has(message.status)) parts.push(formatUsage(message.usage));
      if (message.model) parts.push(message.model);
    }
    node.querySelector(".meta").textContent = parts.join(" — ");
  }
}
