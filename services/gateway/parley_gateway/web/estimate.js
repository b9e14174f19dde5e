// What the draft would cost, shown under the composer while the user types: the input tokens
// of the prompt the server would assemble (the conversation's latest messages and the draft)
// and the cost of that prompt plus the longest answer allowed, from POST /v1/tokens/count.
// "≈" marks a count made with a stand-in tokenizer. Asked 300 ms after the last keystroke;
// a newer draft aborts the request for the older one.

import { ApiError } from "./api.js";
import { formatCost } from "./format.js";

const DEBOUNCE_MS = 300;
const integer = new Intl.NumberFormat("en-US");
// A count refused with these statuses means sending the same draft would be refused too.
const REFUSED = new Set([400, 413, 422]);

/** An answer of POST /v1/tokens/count as one line: "≈ 1,234 tokens · up to $0.0031". */
export function describeCount(count) {
  const tokens = `${count.estimated ? "≈ " : ""}${integer.format(count.input_tokens)} tokens`;
  const cost = `up to ${formatCost(count.cost_estimate_micros)}`;
  const parts = [tokens, cost];
  const dropped = count.dropped_messages ?? 0;
  if (dropped > 0) parts.push(`${integer.format(dropped)} earlier message${dropped === 1 ? "" : "s"} won't fit`);
  return parts.join(" · ");
}

export class DraftEstimate {
  /**
   * `count(draft, signal)` asks the server; `context()` is {conversation_id, model} for the
   * draft (either may be null), or null while signed out. `onChange()` runs when `refusal`
   * changes: the sentence saying why this draft cannot be sent, or null.
   */
  constructor({ input, form, modelSelect, output, count, context, onChange = () => {} }) {
    Object.assign(this, { input, output, count, context, onChange });
    this.refusal = null;
    this.timer = null; // the count waits for typing to pause
    this.controller = null; // aborts the count in flight
    input.addEventListener("input", () => this.refresh());
    modelSelect.addEventListener("change", () => this.refresh());
    // After the page's own submit handler has emptied (or kept) the box.
    form.addEventListener("submit", () => setTimeout(() => this.refresh()));
  }

  /** The draft, its conversation or the model changed: estimate again (after a pause). */
  refresh() {
    clearTimeout(this.timer);
    this.controller?.abort();
    this.controller = null;
    if (!this.input.value.trim() || !this.context()) {
      this.clear();
      return;
    }
    this.timer = setTimeout(() => this.run(), DEBOUNCE_MS);
  }

  clear() {
    clearTimeout(this.timer);
    this.controller?.abort();
    this.controller = null;
    this.output.textContent = "";
    delete this.output.dataset.state;
    this.setRefusal(null);
  }

  setRefusal(reason) {
    if (this.refusal === reason) return;
    this.refusal = reason;
    this.onChange();
  }

  async run() {
    const context = this.context();
    const content = this.input.value.trim();
    if (!context || !content) {
      this.clear();
      return;
    }
    const draft = { content };
    if (context.conversation_id) draft.conversation_id = context.conversation_id;
    if (context.model) draft.model = context.model;
    if (context.media_ids?.length) draft.media_ids = context.media_ids;
    const controller = new AbortController();
    this.controller = controller;
    try {
      const answer = await this.count(draft, controller.signal);
      if (this.controller !== controller) return; // a newer draft is being counted
      this.output.textContent = describeCount(answer);
      this.output.dataset.state = answer.estimated ? "estimated" : "exact";
      this.setRefusal(null);
    } catch (error) {
      if (this.controller !== controller || error?.name === "AbortError") return;
      if (error instanceof ApiError && error.status !== 0) {
        // Too long, a conversation gone: the user should know before sending.
        this.output.textContent = error.describe();
        this.output.dataset.state = "error";
        this.setRefusal(REFUSED.has(error.status) ? error.describe() : null);
      } else {
        this.clear(); // offline: nothing to say about the cost
      }
    } finally {
      if (this.controller === controller) this.controller = null;
    }
  }
}
