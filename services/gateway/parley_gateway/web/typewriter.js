// The typewriter: a smoothing buffer between the text that arrives and the text on screen.
// Tokens come in bursts (a frame may carry many words, a slow network delivers several frames
// at once); the page shows them a few characters at a time, at a steady pace, instead.
//
// It reveals `chars` characters every `interval-ms` milliseconds (5 and 50 by default, set in
// index.html's <meta name="parley-typewriter">), more when it falls behind: a backlog is
// worked off in about CATCH_UP_MS, and no text waits longer than MAX_LAG_MS to appear. An
// answer that ends (done, stopped, failed) or is shown again (another conversation, a
// reload) appears whole at once. `chars=0`, or the reader's "reduce motion" setting, turns
// the smoothing off.

const DEFAULTS = { chars: 5, intervalMs: 50 };
const CATCH_UP_MS = 500;
const MAX_LAG_MS = 1200;

/** The settings from `<meta name="parley-typewriter" content="chars=5; interval-ms=50">`. */
export function typewriterSettings(doc = document) {
  const settings = { ...DEFAULTS };
  const content = doc.querySelector('meta[name="parley-typewriter"]')?.getAttribute("content") ?? "";
  for (const part of content.split(/[;,]/)) {
    const [name, value] = part.split("=").map((s) => s.trim());
    const number = Number(value);
    if (!value || !Number.isFinite(number) || number < 0) continue;
    if (name === "chars") settings.chars = Math.floor(number);
    else if (name === "interval-ms") settings.intervalMs = Math.max(10, number);
  }
  return settings;
}

const reducedMotion = window.matchMedia?.("(prefers-reduced-motion: reduce)");

/** Shows a growing text through `show(text)`, a few characters at a time. */
export class Typewriter {
  constructor(show, settings = typewriterSettings()) {
    this.show = show;
    this.settings = settings;
    this.target = "";
    this.shown = "";
    this.arrivals = []; // [{length, at}]: when the text reached each length
    this.timer = null;
  }

  get smoothing() {
    return this.settings.chars > 0 && !reducedMotion?.matches;
  }

  /** The whole text so far (it only grows while an answer streams). */
  write(text) {
    if (!this.smoothing || !text.startsWith(this.shown)) {
      this.flush(text); // not a continuation of what is shown: nothing to type out
      return;
    }
    if (text.length <= this.target.length && this.target.startsWith(text)) return;
    this.target = text;
    this.arrivals.push({ length: text.length, at: performance.now() });
    if (this.timer === null) {
      this.tick(); // the first characters appear at once, the rest at the typewriter's pace
      if (this.shown !== this.target) this.timer = setInterval(() => this.tick(), this.settings.intervalMs);
    }
  }

  /** Shows all of `text` now. */
  flush(text = this.target) {
    this.stop();
    this.target = text;
    this.shown = text;
    this.arrivals = [];
    this.show(text);
  }

  /** Stops typing; what is shown stays. */
  stop() {
    clearInterval(this.timer);
    this.timer = null;
  }

  tick() {
    const { chars, intervalMs } = this.settings;
    const backlog = this.target.length - this.shown.length;
    let next = this.shown.length + Math.max(chars, Math.ceil((backlog * intervalMs) / CATCH_UP_MS));
    const overdue = performance.now() - MAX_LAG_MS;
    while (this.arrivals.length && (this.arrivals[0].at <= overdue || this.arrivals[0].length <= next)) {
      const arrival = this.arrivals.shift();
      if (arrival.at <= overdue) next = Math.max(next, arrival.length);
    }
    next = Math.min(next, this.target.length);
    // Never split a character made of two UTF-16 units (an emoji, say).
    const code = this.target.charCodeAt(next - 1);
    if (code >= 0xd800 && code <= 0xdbff && next < this.target.length) next += 1;
    this.shown = this.target.slice(0, next);
    this.show(this.shown);
    if (this.shown === this.target) this.stop();
  }
}

/**
 * The typewriters of the answers on the page, one per message key: `render(element, text,
 * live)` draws a message's text, `show` decides how much of it is on screen.
 */
export class Typewriters {
  constructor(render, settings = typewriterSettings()) {
    this.render = render;
    this.settings = settings;
    this.byKey = new Map(); // message key -> {element, typewriter}
  }

  /**
   * Shows `text` in `element`: typed out while `live` (the answer streams), whole otherwise
   * or when `whole` (the message was just put on screen again).
   */
  show(key, element, text, { live, whole = false }) {
    let entry = this.byKey.get(key);
    if (!live) {
      entry?.typewriter.stop();
      this.byKey.delete(key);
      this.render(element, text, false);
      return;
    }
    if (!entry) {
      const typewriter = new Typewriter((shown) => this.render(entry.element, shown, true), this.settings);
      entry = { element, typewriter };
      this.byKey.set(key, entry);
    }
    const moved = entry.element !== element;
    entry.element = element;
    if (whole) entry.typewriter.flush(text);
    else {
      if (moved) this.render(element, entry.typewriter.shown, true);
      entry.typewriter.write(text);
    }
  }
}
