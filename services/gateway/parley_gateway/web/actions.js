// What can be done to a message once it is written, from the buttons under it: copy it; edit a
// message of yours and send it again (inline, Send / Cancel; a new version of it, answered
// anew); regenerate an answer (a new version of it); continue an answer that was cut off
// (interrupted, or stopped at the length limit: written on in the same message; a model that
// cannot continue offers Regenerate instead); and ‹ i/n › to switch between the versions of a
// message (PUT …/current, then the conversation's path is read again). Each of these answers as
// an event stream, read by an ActionStream (answer-streams.js), so Stop, reconnecting, a reload
// mid-answer and switching conversation work as for any answer.

import { ActionStream } from "./answer-streams.js";
import { ApiError } from "./api.js";
import { el } from "./dom.js";
import { withoutMediaId } from "./media.js";
import { newMessageId } from "./stream.js";
import { versionsOf } from "./versions.js";

const SETTLED = new Set(["complete", "interrupted", "failed"]);
const SAID_MS = 2000; // how long "Copied" shows on the Copy button
const SAVED_WAIT_MS = 6400; // how long an answer just ended may take to show in history (about)

/** The text a message's Copy button copies: what the reader sees, as written (markdown unrendered). */
function copiedText(message) {
  const content = message.content ?? "";
  return message.role === "assistant" ? withoutMediaId(content) : content;
}

/** Copies with a hidden text field where the Clipboard API is missing or refused. */
function copyByHand(text, focusBack) {
  const field = el("textarea", { class: "clipboard-helper", readonly: true, "aria-hidden": "true", tabindex: "-1" });
  field.value = text;
  document.body.append(field);
  field.select();
  let copied = false;
  try {
    copied = document.execCommand("copy");
  } catch {
    copied = false;
  }
  field.remove();
  focusBack.focus();
  return copied;
}

export class MessageActions {
  /**
   * `app`: what the page lends these actions: {api(), thread(id), conversationId(), busy(id),
   * model(), start(stream) (track and show a new stream), view (the ThreadView), refresh(id,
   * ready) (read its path again and show it once `ready(thread)`: a promise of whether it did),
   * conversation(c) (a conversation the server answered), notice(error, prefix)}.
   */
  constructor(app) {
    this.app = app;
    this.editing = null; // {key, draft}: the user message being edited
    this.cannotContinue = new Set(); // answers whose model cannot continue them (422)
  }

  /** Fills the buttons under a message (thread.js calls this whenever the message is shown). */
  decorate(node, message) {
    const bar = node.querySelector(".actions");
    const editing = this.editing?.key === message.key;
    node.querySelector(".text").hidden = editing;
    const settled = SETTLED.has(message.status) && Boolean(message.id);
    const versions = settled ? versionsOf(message) : null;
    const shape = JSON.stringify([settled, message.id, versions?.index, versions?.count, this.canContinue(message), editing]);
    if (bar.dataset.shape === shape) return; // unchanged: the focus stays where it is
    bar.dataset.shape = shape;
    node.querySelector(".editor")?.remove();
    if (editing) node.querySelector(".text").after(this.editor(message));
    bar.hidden = !settled || editing;
    if (bar.hidden) {
      bar.replaceChildren();
      return;
    }
    const noun = message.role === "user" ? "message" : "answer";
    const buttons = [];
    if (versions) {
      const { index, count, ids } = versions;
      const previous = this.button("‹", "previous-version", () => this.switchTo(ids[index - 2], "previous-version"));
      const next = this.button("›", "next-version", () => this.switchTo(ids[index], "next-version"));
      previous.setAttribute("aria-label", `Previous version of this ${noun}`);
      next.setAttribute("aria-label", `Next version of this ${noun}`);
      previous.disabled = index <= 1;
      next.disabled = index >= count;
      buttons.push(
        el(
          "span",
          { class: "versions", role: "group", "aria-label": `Version ${index} of ${count}` },
          previous,
          el("span", { class: "version-number", "aria-hidden": "true" }, `${index}/${count}`),
          next,
        ),
      );
    }
    const copy = this.button("Copy", "copy", () => this.copy(this.now(message), copy));
    buttons.push(copy);
    if (message.role === "user") {
      buttons.push(this.button("Edit", "edit", () => this.startEditing(this.now(message))));
    } else {
      const act = (action) => () => this[action](this.now(message));
      if (this.canContinue(message)) buttons.push(this.button("Continue", "continue", act("continue")));
      buttons.push(this.button("Regenerate", "regenerate", act("regenerate")));
    }
    bar.replaceChildren(...buttons);
  }

  button(text, role, onClick) {
    const button = el("button", { type: "button", class: "action", "data-role": role }, text);
    button.addEventListener("click", onClick);
    return button;
  }

  /** Shows the message with this key again, if it is on the page. */
  show(key) {
    const { view } = this.app;
    for (const message of view.thread?.messages.filter((m) => m.key === key) ?? []) view.update(message);
  }

  /** The message with this one's key as the thread holds it now (its text may have grown since). */
  now(message) {
    return this.app.thread(this.app.conversationId())?.messages.find((m) => m.key === message.key) ?? message;
  }

  /** An answer cut off (stopped, failed part way, or at the length limit) that its model can write on. */
  canContinue(message) {
    if (message.role !== "assistant" || !message.id || this.cannotContinue.has(message.id)) return false;
    if (message.status === "interrupted") return Boolean(message.content);
    return message.status === "complete" && message.finish_reason === "length";
  }

  async copy(message, button) {
    const text = copiedText(message);
    let copied = false;
    try {
      await navigator.clipboard.writeText(text);
      copied = true;
    } catch {
      copied = copyByHand(text, button); // (no Clipboard API here, or it was refused)
    }
    button.textContent = copied ? "Copied" : "Not copied";
    setTimeout(() => {
      button.textContent = "Copy";
    }, SAID_MS);
  }

  /** The conversation this message is in, or null (with the reason shown) when it cannot change now. */
  changeable() {
    const id = this.app.conversationId();
    if (id === null) return null;
    if (this.app.thread(id)?.saved) {
      this.app.notice(new ApiError(0, "network_error", "offline")); // (saved history is shown: offline)
      return null;
    }
    if (this.app.busy(id)) {
      this.app.notice(new ApiError(409, "conversation_busy", "an answer is being written"));
      return null;
    }
    return id;
  }

  // edit and send again

  startEditing(message) {
    if (this.editing) this.stopEditing();
    this.editing = { key: message.key, draft: message.content ?? "" };
    this.show(message.key);
  }

  editor(message) {
    const id = `edit-${message.key}`;
    const field = el("textarea", { id, class: "editor-input", rows: "3", required: true });
    field.value = this.editing.draft;
    const send = el("button", { type: "submit", class: "primary" }, "Send");
    const cancel = el("button", { type: "button" }, "Cancel");
    const form = el(
      "form",
      { class: "editor" },
      el("label", { for: id, class: "visually-hidden" }, "Edit your message"),
      field,
      el("div", { class: "editor-buttons" }, cancel, send),
    );
    const stop = (focusEdit) => {
      this.stopEditing();
      if (focusEdit) this.find(message.key)?.querySelector('[data-role="edit"]')?.focus();
    };
    field.addEventListener("input", () => {
      this.editing.draft = field.value;
      send.disabled = !field.value.trim();
    });
    field.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        form.requestSubmit();
      } else if (event.key === "Escape") {
        event.preventDefault(); // (not the page's Escape, which stops an answer)
        stop(true);
      }
    });
    cancel.addEventListener("click", () => stop(true));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const content = field.value.trim();
      if (!content) return;
      if (content === (message.content ?? "").trim()) {
        stop(true); // unchanged: nothing to send
        return;
      }
      if (this.run("edit", message, { content, media: message.media ?? [] })) stop(false);
    });
    requestAnimationFrame(() => {
      // (not when the user got there first: their caret and selection stay as they are)
      if (!field.isConnected || document.activeElement === field) return;
      field.focus();
      field.setSelectionRange(field.value.length, field.value.length);
    });
    return form;
  }

  /** Closes the editor open (its message shows its text again). */
  stopEditing() {
    const key = this.editing?.key;
    this.editing = null;
    if (key) this.show(key);
  }

  // regenerate and continue

  regenerate(message) {
    this.run("regenerate", message);
  }

  continue(message) {
    this.run("continue", message, { prefix: message.content ?? "" });
  }

  /** Starts `action` on `message`; false when it cannot start now (said why). */
  run(action, message, fields = {}) {
    const conversationId = this.changeable();
    const thread = conversationId === null ? null : this.app.thread(conversationId);
    if (!thread) return false;
    const stream = new ActionStream(this.app.api(), {
      action,
      messageId: message.id,
      conversationId,
      model: this.app.model(),
      clientMessageId: newMessageId(),
      ...fields,
    });
    if (action !== "continue") {
      // The new version takes the place of this one (and of what followed it) on the page.
      const at = thread.messages.findIndex((m) => m.key === message.key);
      if (at >= 0) thread.messages = thread.messages.slice(0, at);
      stream.startedAt = Math.max(Date.now(), (thread.messages.at(-1)?.created_at_ms ?? 0) + 1);
    }
    if (this.app.view.thread === thread) this.app.view.redraw();
    this.app.start(stream);
    return true;
  }

  /** An action's answer ended (answers.js has shown its error, if any): the path is read again. */
  async ended(stream) {
    const id = stream.conversationId;
    if (stream.refused) {
      if (stream.error?.code === "continue_unsupported") {
        this.cannotContinue.add(stream.messageId);
        this.app.notice(stream.error);
      } else {
        this.app.notice(stream.error, "Nothing was changed. ");
        // An edit that was not sent opens again with its text (read again, the message's key is its id).
        if (stream.action === "edit") this.editing = { key: stream.messageId, draft: stream.content };
      }
    }
    // History saves an answer a moment after its stream ends: until then the path is read again.
    const saved = (thread) => {
      const answer = thread.messages.find((m) => m.id === (stream.action === "continue" ? stream.messageId : stream.responseId));
      return stream.refused || (answer && SETTLED.has(answer.status) && (answer.content ?? "").length >= stream.text.length);
    };
    try {
      for (let wait = 100; !(await this.app.refresh(id, wait > SAVED_WAIT_MS ? () => true : saved)); wait *= 2) {
        await new Promise((resolve) => setTimeout(resolve, wait));
      }
    } catch (error) {
      this.app.notice(error);
    }
    if (stream.error?.code === "continue_unsupported") {
      this.find(stream.messageId, "id")?.querySelector('[data-role="regenerate"]')?.focus();
    }
  }

  // versions

  /** Shows version `messageId` (and the newest answers below it) in place of the one shown. */
  async switchTo(messageId, role) {
    const conversationId = this.changeable();
    if (conversationId === null || !messageId) return;
    try {
      this.app.conversation(await this.app.api().setCurrent(conversationId, messageId));
      await this.app.refresh(conversationId);
    } catch (error) {
      this.app.notice(error);
      return;
    }
    // The switcher of the version now shown keeps the focus (or its other arrow, at an end).
    const switcher = this.find(messageId, "id")?.querySelector(".versions");
    const target = switcher?.querySelector(`[data-role="${role}"]`);
    (target && !target.disabled ? target : switcher?.querySelector("button:not(:disabled)"))?.focus();
  }

  /** The element of the message shown with this key (or, with `by` "id", this server id). */
  find(value, by = "key") {
    return document.querySelector(`#messages [data-${by}="${CSS.escape(value)}"]`);
  }
}
