// Finding a conversation: the sidebar's search box asks GET /v1/conversations/search (titles
// and message text) 250 ms after the typing pauses; a newer query aborts the older one. While
// the box holds text its results replace the conversation list: each names the conversation
// and shows the text around the match; choosing one opens it (at the message that matched).
// Escape, or emptying the box, brings the list back.

import { el } from "./dom.js";

const DEBOUNCE_MS = 250;
export const MAX_QUERY_CHARS = 200; // the API's bound on q

export class ConversationSearch {
  /**
   * `search(q, signal)` asks the server; `open(conversationId, messageId)` opens a result;
   * `describe(error)` is the sentence for a failure; `untitled` the name of a conversation
   * without a title. `container` gets the class "searching" while results show (the style
   * hides the conversation list then).
   */
  constructor({ input, results, status, list, container, search, open, describe, untitled }) {
    this.input = input;
    this.results = results;
    this.status = status;
    this.list = list;
    this.container = container;
    this.search = search;
    this.open = open;
    this.describe = describe;
    this.untitled = untitled;
    this.timer = null;
    this.controller = null;
    input.addEventListener("input", () => this.refresh());
    input.addEventListener("keydown", (event) => {
      if (event.key === "Escape" && input.value) {
        event.preventDefault();
        event.stopPropagation(); // (not the drawer's Escape, not the composer's)
        this.clear();
      } else if (event.key === "ArrowDown" || (event.key === "Enter" && !event.isComposing)) {
        const first = this.list.querySelector("button");
        if (first) {
          event.preventDefault();
          if (event.key === "Enter") first.click();
          else first.focus();
        }
      }
    });
  }

  get active() {
    return !this.results.hidden;
  }

  /** Empties the box and shows the conversation list again. */
  clear() {
    this.input.value = "";
    this.refresh();
  }

  refresh() {
    clearTimeout(this.timer);
    this.controller?.abort();
    this.controller = null;
    const q = this.input.value.trim().slice(0, MAX_QUERY_CHARS);
    if (!q) {
      this.showResults(false);
      return;
    }
    this.showResults(true);
    this.status.textContent = "Searching…";
    this.timer = setTimeout(() => this.run(q), DEBOUNCE_MS);
  }

  showResults(yes) {
    if (yes === this.active) return;
    this.results.hidden = !yes;
    this.container.classList.toggle("searching", yes);
    if (!yes) {
      this.list.replaceChildren();
      this.status.textContent = "";
    }
  }

  async run(q) {
    const controller = new AbortController();
    this.controller = controller;
    try {
      const page = await this.search(q, controller.signal);
      if (this.controller !== controller) return;
      this.render(q, page.data);
    } catch (error) {
      if (this.controller !== controller || error?.name === "AbortError") return;
      this.list.replaceChildren();
      this.status.textContent = `Search failed. ${this.describe(error)}`;
    } finally {
      if (this.controller === controller) this.controller = null;
    }
  }

  render(q, hits) {
    this.status.textContent = hits.length
      ? `${hits.length} conversation${hits.length === 1 ? "" : "s"} found`
      : `No conversation contains “${q}”.`;
    this.list.replaceChildren(
      ...hits.map((hit) => {
        const title = hit.conversation.title || this.untitled;
        const button = el(
          "button",
          { type: "button", class: "search-hit", "data-conversation": hit.conversation.id },
          el("span", { class: "search-hit-title" }, title),
          hit.snippet ? el("span", { class: "search-hit-snippet" }, hit.snippet) : null,
        );
        button.addEventListener("click", () => this.open(hit.conversation, hit.message_id ?? null));
        return el("li", {}, button);
      }),
    );
  }
}
