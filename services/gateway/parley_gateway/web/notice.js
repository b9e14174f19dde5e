// The notice bar above the conversation: what failed, as one plain sentence with a next step
// (errors.js, through ApiError.describe()), its code in data-code for support, and Dismiss.

export class Notice {
  constructor(node, closeButton) {
    this.node = node;
    this.closeButton = closeButton;
    this.aboutNetwork = false; // it says the server cannot be reached (cleared once it can)
  }

  /** Shows `error`: an ApiError's plain sentence (and its code), else its message; `prefix` first. */
  show(error, prefix = "") {
    if (error?.name === "AbortError") return;
    const fromApi = typeof error?.describe === "function";
    this.node.textContent = prefix + (fromApi ? error.describe() : String(error?.message ?? error));
    if (fromApi) this.node.dataset.code = error.code;
    else delete this.node.dataset.code;
    this.aboutNetwork = fromApi && error.status === 0;
    this.closeButton.hidden = false;
  }

  clear() {
    this.node.textContent = "";
    delete this.node.dataset.code;
    this.aboutNetwork = false;
    this.closeButton.hidden = true;
  }
}
