// Markdown inside a block (markdown.js): **bold**, *italic*, ~~struck~~, `code`, maths,
// [links](https://…) and bare https:// addresses, line breaks and backslash escapes. Only
// http:, https: and mailto: URLs become links.

import { MAX_TEX } from "./markdown-typeset.js";

const SAFE_SCHEMES = new Set(["http:", "https:", "mailto:"]);
const PUNCTUATION = /[!-/:-@[-`{-~]/;
const BARE_URL = /^https?:\/\/[^\s<>"]+/;
// Characters that may start something inline; text between them is copied in one piece.
const SPECIAL = /[\\\n`[h*_~$]/g;
const WORD_CHAR = /[\p{L}\p{N}]/u;

/** The length of the run of `ch` at `text[at]`. */
function runAt(text, at, ch) {
  let end = at;
  while (text[end] === ch) end += 1;
  return end - at;
}

/** Where the code span opened by `size` backticks before `from` closes, or -1. */
function closingBackticks(text, from, size) {
  for (let at = text.indexOf("`", from); at >= 0; at = text.indexOf("`", at)) {
    const run = runAt(text, at, "`");
    if (run === size) return at;
    at += run;
  }
  return -1;
}

/** Where the closing `size` delimiters `ch` of an emphasis opened before `from` start, or -1. */
function closingDelimiter(text, from, ch, size) {
  for (let at = from; at < text.length; at += 1) {
    const c = text[at];
    if (c === "\\") {
      at += 1;
    } else if (c === "`") {
      const run = runAt(text, at, "`");
      const close = closingBackticks(text, at + run, run);
      at = (close >= 0 ? close : at) + run - 1;
    } else if (c === ch) {
      const run = runAt(text, at, ch);
      const end = at + run;
      const usable = size === 1 ? run !== 2 : run >= size; // a pair of single markers is bold's
      const closer = end - size;
      if (usable && closer > from && !/\s/.test(text[at - 1]) && (ch !== "_" || !WORD_CHAR.test(text[end] ?? ""))) {
        return closer;
      }
      at = end - 1;
    }
  }
  return -1;
}

/** The link `[label](url)` starting at `text[at]`: {label, url, end}, or null. */
function linkAt(text, at) {
  let depth = 0;
  let close = -1;
  for (let i = at; i < text.length; i += 1) {
    const c = text[i];
    if (c === "\\") i += 1;
    else if (c === "[") depth += 1;
    else if (c === "]" && --depth === 0) {
      close = i;
      break;
    }
  }
  if (close < 0 || text[close + 1] !== "(") return null;
  let i = close + 2;
  while (text[i] === " ") i += 1;
  let url = "";
  if (text[i] === "<") {
    const end = text.indexOf(">", i);
    if (end < 0 || text.slice(i, end).includes("\n")) return null;
    url = text.slice(i + 1, end);
    i = end + 1;
  } else {
    let parens = 0;
    const from = i;
    for (; i < text.length && !/\s/.test(text[i]); i += 1) {
      if (text[i] === "(") parens += 1;
      else if (text[i] === ")" && --parens < 0) break;
    }
    url = text.slice(from, i);
  }
  while (text[i] === " ") i += 1;
  const quote = text[i];
  if (quote === '"' || quote === "'") {
    const end = text.indexOf(quote, i + 1);
    if (end < 0) return null;
    i = end + 1; // a title: not shown
    while (text[i] === " ") i += 1;
  }
  if (text[i] !== ")") return null;
  return { label: text.slice(at + 1, close), url, end: i + 1 };
}

/** `url` when it is an http:, https: or mailto: URL, else null (javascript:, data:, relative…). */
export function safeUrl(url) {
  if (!/^(?:https?:\/\/|mailto:)/i.test(url)) return null;
  try {
    return SAFE_SCHEMES.has(new URL(url).protocol) ? url : null;
  } catch {
    return null;
  }
}

/** The bare address starting at `text[at]`, without the sentence punctuation after it. */
function bareUrlAt(text, at) {
  const match = BARE_URL.exec(text.slice(at, at + 2048));
  if (!match) return null;
  let url = match[0];
  const count = (ch) => url.split(ch).length - 1;
  while (/[.,:;!?'")\]*_~]$/.test(url) && !(url.endsWith(")") && count("(") >= count(")"))) url = url.slice(0, -1);
  return /^https?:\/\/./.test(url) ? url : null;
}

function link(url, fill) {
  const node = document.createElement("a");
  node.href = url;
  node.rel = "noopener noreferrer nofollow";
  node.target = "_blank";
  fill(node);
  return node;
}

const EMPHASIS = { "*": ["em", "strong"], _: ["em", "strong"], "~": [null, "del"] };
const MATH_DELIMITERS = [
  // [opening, closing, display]; $ is checked last, $$ being two of it
  ["$$", "$$", true],
  ["\\[", "\\]", true],
  ["\\(", "\\)", false],
  ["$", "$", false],
];

/**
 * Where the maths whose content starts at `text[from]` closes with `close`, or -1: the first
 * `close` not escaped by a backslash, within MAX_TEX characters. A single $ follows Pandoc's
 * rule, so that prices are not maths: no space just inside either $, no digit just after
 * the closing one ("$5 and $10" stays text). `misses` (close -> [from, to) known to hold no
 * closer) keeps a text with many unclosed $ linear.
 */
function closingMath(text, from, close, misses) {
  const end = Math.min(text.length, from + MAX_TEX + close.length);
  const miss = misses.get(close);
  let at = miss && from >= miss[0] && from < miss[1] ? miss[1] : from;
  for (; at < end; at += 1) {
    if (text.startsWith(close, at)) {
      if (close === "$" && (/\s/.test(text[at - 1]) || /\d/.test(text[at + 1] ?? ""))) continue;
      return at > from ? at : -1;
    }
    if (text[at] === "\\") at += 1; // an escaped character (\$, or \\ a TeX line break) closes nothing
  }
  misses.set(close, [from, end]);
  return -1;
}

/** The inline maths starting at `text[at]`: {tex, source, display, end}, or null. */
function mathAt(text, at, misses) {
  for (const [open, close, display] of MATH_DELIMITERS) {
    if (!text.startsWith(open, at)) continue;
    const from = at + open.length;
    if (open === "$" && /^\s?$/.test(text[from] ?? "")) return null;
    const closing = closingMath(text, from, close, misses);
    if (closing < 0) return null;
    const end = closing + close.length;
    return { tex: text.slice(from, closing), source: text.slice(at, end), display, end };
  }
  return null;
}

/**
 * Appends the inline content of `text` to `parent`. `open`: the text may be cut mid-way
 * (streaming), so an unclosed marker runs to the end instead of showing literally.
 */
export function renderInline(parent, text, maths, open = false) {
  let plain = "";
  const flush = () => {
    if (plain) parent.append(plain);
    plain = "";
  };
  const noCloser = new Map(); // delimiter -> a position after which it has no closer
  const closer = (from, ch, size) => {
    const key = ch + size;
    if (noCloser.has(key) && from >= noCloser.get(key)) return -1;
    const found = closingDelimiter(text, from, ch, size);
    if (found < 0) noCloser.set(key, from);
    return found;
  };
  const lastLinkMiddle = text.lastIndexOf("](");
  const mathMisses = new Map();
  let found = null;
  let i = 0;
  while (i < text.length) {
    const c = text[i];
    const mathOpens = c === "$" || (c === "\\" && (text[i + 1] === "(" || text[i + 1] === "["));
    if (mathOpens && (found = mathAt(text, i, mathMisses))) {
      flush();
      parent.append(maths.node(found.tex, found.source, { display: found.display }));
      i = found.end;
    } else if (c === "\\" && PUNCTUATION.test(text[i + 1] ?? "")) {
      plain += text[i + 1];
      i += 2;
    } else if (c === "\n") {
      flush();
      parent.append(document.createElement("br"));
      i += 1;
    } else if (open && (c === "`" || c in EMPHASIS) && i + runAt(text, i, c) === text.length) {
      break; // markers at the very end of a text still arriving: what they mark comes next
    } else if (c === "`") {
      const run = runAt(text, i, "`");
      let close = closingBackticks(text, i + run, run);
      if (close < 0 && open && i + run < text.length) close = text.length;
      if (close < 0) {
        plain += text.slice(i, i + run);
        i += run;
        continue;
      }
      let code = text.slice(i + run, close).replace(/\n/g, " ");
      if (code.length > 2 && code.startsWith(" ") && code.endsWith(" ") && code.trim()) code = code.slice(1, -1);
      flush();
      const node = document.createElement("code");
      node.textContent = code;
      parent.append(node);
      i = Math.min(close + run, text.length);
    } else if (c === "[" && i < lastLinkMiddle && (found = linkAt(text, i))) {
      const url = safeUrl(found.url);
      if (url === null || !found.label.trim()) {
        plain += text.slice(i, found.end); // not a link: shown as written
      } else {
        flush();
        parent.append(link(url, (node) => renderInline(node, found.label, maths)));
      }
      i = found.end;
    } else if (c === "h" && text.startsWith("http", i) && !WORD_CHAR.test(text[i - 1] ?? "") && bareUrlAt(text, i)) {
      const url = bareUrlAt(text, i);
      flush();
      if (safeUrl(url)) parent.append(link(url, (node) => node.append(url)));
      else plain += url;
      i += url.length;
    } else if (c in EMPHASIS) {
      const run = runAt(text, i, c);
      const [single, double] = EMPHASIS[c];
      const size = run >= 2 ? 2 : single ? 1 : 0;
      const after = text[i + size];
      const canOpen =
        size > 0 && after !== undefined && !/\s/.test(after) && (c !== "_" || !WORD_CHAR.test(text[i - 1] ?? ""));
      let close = canOpen ? closer(i + size, c, size) : -1;
      if (close < 0 && canOpen && open) {
        // Still arriving: the emphasis runs to the end (a half-arrived closer is left out).
        const rest = text.slice(i + size);
        const inner = rest.replace(c === "~" ? /~+$/ : c === "*" ? /\*+$/ : /_+$/, "");
        if (inner && !inner.includes(c)) close = i + size + inner.length;
      }
      if (close < 0) {
        plain += text.slice(i, i + run);
        i += run;
        continue;
      }
      flush();
      const node = document.createElement(size === 2 ? double : single);
      renderInline(node, text.slice(i + size, close), maths, open && close === text.length);
      parent.append(node);
      i = close + size;
    } else {
      SPECIAL.lastIndex = i + 1;
      const next = SPECIAL.exec(text)?.index ?? text.length;
      plain += text.slice(i, next);
      i = next;
    }
  }
  flush();
}
