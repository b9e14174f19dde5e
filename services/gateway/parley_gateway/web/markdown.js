// Markdown from a model, rendered safely. The text becomes elements built with createElement
// and text nodes, never HTML: raw markup such as <script> or <img onerror> stays literal text,
// and a link is a link only for http:, https: and mailto: URLs.
//
// What it renders: paragraphs (a line break is a line break), headings, **bold**, *italic*,
// ~~struck~~, `code`, fenced code blocks with their language, bullet and numbered lists (nested),
// block quotes, tables, rules, [links](https://…) and bare https:// addresses. While an answer
// streams (`partial`), an unclosed ``` fence is an open code block and an unclosed **, * or `
// at the end already shows as bold, italic or code, so the markers do not flicker.
//
// Re-rendering a long answer on every update stays cheap: the top-level blocks whose source
// did not change keep their elements, and only the changed tail is built again.
//
// Code blocks with a language highlight.js knows are coloured, and LaTeX maths ($…$, $$…$$,
// \(…\), \[…\]) is typeset by KaTeX: both vendored in web/vendor/ (tools/vendor-web.sh). Neither
// ever turns text into markup: highlight.js's tokens are built here as <span>s around text
// nodes (its HTML string is never used), and KaTeX builds its elements itself (render(), not
// renderToString()) with trust off, so \href, \url, \includegraphics and \htmlClass-like
// commands show as plain words; macro expansion and sizes are capped. Maths that does not
// parse is shown as the text the model wrote. Maths still arriving shows as its source.

import katex from "./vendor/katex/katex.mjs";
import hljs from "./vendor/highlight/highlight.min.js";

const SAFE_SCHEMES = new Set(["http:", "https:", "mailto:"]);
const FENCE = /^( {0,3})(`{3,}|~{3,})[ \t]*([^`\s]*)[^`]*$/;
const HEADING = /^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$/;
const RULE = /^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$/;
const QUOTE = /^ {0,3}> ?(.*)$/;
const ITEM = /^([ \t]*)([-*+]|\d{1,9}[.)])(?:([ \t]+)(.*))?$/;
const TABLE_DIVIDER = /^[ \t]*\|?[ \t]*:?-+:?[ \t]*(?:\|[ \t]*:?-+:?[ \t]*)*\|?[ \t]*$/;
const LANGUAGE = /^[\w+#.-]{1,32}$/;
const PUNCTUATION = /[!-/:-@[-`{-~]/;
const BARE_URL = /^https?:\/\/[^\s<>"]+/;
// Characters that may start something inline; text between them is copied in one piece.
const SPECIAL = /[\\\n`[h*_~$]/g;
// Display maths on lines of its own: $$ or \[ opens it, $$ or \] at a line's end closes it.
const MATH_OPEN = /^ {0,3}(\$\$|\\\[)(.*)$/;
// Longer maths is shown as its source: typesetting cost grows with it, and no answer needs more.
const MAX_TEX = 4000;
const KATEX_OPTIONS = {
  throwOnError: true, // (its error element is styled inline, which the CSP refuses; ours is text)
  trust: false, // \href, \url, \includegraphics, \htmlClass/Id/Style/Data: shown as their name
  strict: "ignore",
  maxExpand: 500, // macro expansions per expression: \def\a{\a\a}\a stops here
  maxSize: 10, // ems: \rule{1000em}{1000em} is no bigger than this
  errorColor: "currentColor", // an untrusted command's name, in the text's own colour
  output: "htmlAndMathml", // MathML for screen readers, HTML for the eyes
};
// Highlighting costs about 3 ms per KB: bigger blocks stay plain, and while a block is still
// arriving (re-highlighted on every update) only while it is small.
const MAX_HIGHLIGHTED = 50_000;
const MAX_HIGHLIGHTED_STREAMING = 4_000;
// Typeset maths by source, kept for the next update of a streaming answer, which builds its
// last paragraph again: a node no longer on the page moves into the new one (most recent last).
const typeset = new Map(); // `${tag}:${display}:${tex}` -> {node, pass}
const TYPESET_KEPT = 300;
let pass = 0; // renderMarkdown calls: a node taken in this pass is not taken twice
const WORD_CHAR = /[\p{L}\p{N}]/u;
const rendered = new WeakMap(); // container -> [{key, node}] of its top-level blocks

/**
 * Renders `text` as markdown into `container`, replacing what it showed. `partial`: the text
 * is still arriving (see the module doc).
 */
export function renderMarkdown(container, text, { partial = false } = {}) {
  pass += 1;
  const lines = text.replace(/\r\n?/g, "\n").split("\n");
  const blocks = parseBlocks(lines, partial);
  const keyed = blocks.map((block, index) => {
    const open = partial && index === blocks.length - 1;
    return { block, open, key: `${block.type}${open ? "+" : ""}:${lines.slice(block.start, block.end).join("\n")}` };
  });
  let previous = rendered.get(container) ?? [];
  if (previous.length !== container.childNodes.length || previous.some((b, i) => b.node !== container.childNodes[i])) {
    previous = []; // someone else changed the container: start again
    container.replaceChildren();
  }
  let kept = 0;
  while (kept < previous.length && kept < keyed.length && previous[kept].key === keyed[kept].key) kept += 1;
  for (let i = previous.length - 1; i >= kept; i -= 1) previous[i].node.remove();
  const fresh = keyed.slice(kept).map(({ block, open, key }) => ({ key, node: renderBlock(block, open) }));
  container.append(...fresh.map((b) => b.node));
  rendered.set(container, [...previous.slice(0, kept), ...fresh]);
}

// blocks

function indentOf(line) {
  let width = 0;
  for (const ch of line) {
    if (ch === " ") width += 1;
    else if (ch === "\t") width += 4 - (width % 4);
    else break;
  }
  return width;
}

/** `line` without up to `columns` columns of leading whitespace. */
function dedent(line, columns) {
  let width = 0;
  let i = 0;
  while (i < line.length && width < columns && (line[i] === " " || line[i] === "\t")) {
    width += line[i] === "\t" ? 4 - (width % 4) : 1;
    i += 1;
  }
  return line.slice(i);
}

const isBlank = (line) => line.trim() === "";

function startsBlock(lines, i) {
  const line = lines[i];
  return (
    FENCE.test(line) ||
    MATH_OPEN.test(line) ||
    HEADING.test(line) ||
    RULE.test(line) ||
    QUOTE.test(line) ||
    isListItem(line) ||
    isTableStart(lines, i)
  );
}

/** A table's header row and the row of dashes under it, with as many cells. */
function isTableStart(lines, i) {
  return (
    lines[i].includes("|") &&
    i + 1 < lines.length &&
    TABLE_DIVIDER.test(lines[i + 1]) &&
    cellsOf(lines[i]).length === cellsOf(lines[i + 1]).length
  );
}

function isListItem(line) {
  const m = ITEM.exec(line);
  return m !== null && m[4] !== undefined && m[4].trim() !== "" && indentOf(m[1]) < 4;
}

function cellsOf(line) {
  let row = line.trim();
  if (row.startsWith("|")) row = row.slice(1);
  if (row.endsWith("|") && !row.endsWith("\\|")) row = row.slice(0, -1);
  return row.split(/(?<!\\)\|/).map((cell) => cell.trim().replace(/\\\|/g, "|"));
}

/**
 * Display maths starting at `lines[start]`: {type: "math", start, end, tex, source, closed}, or
 * null (`source`: the lines as written, delimiters included).
 * Unclosed, it runs to the end of `lines` (it may still be arriving).
 */
function displayMath(lines, start) {
  const [, open, rest] = MATH_OPEN.exec(lines[start]);
  const close = open === "$$" ? "$$" : "\\]";
  const body = [];
  for (let i = start; i < lines.length; i += 1) {
    const line = (i === start ? rest : lines[i]).trimEnd();
    if (line.endsWith(close)) {
      body.push(line.slice(0, -close.length));
      const tex = body.join("\n").trim();
      const source = lines.slice(start, i + 1).join("\n");
      return tex ? { type: "math", start, end: i + 1, tex, source, closed: true } : null;
    }
    if (i === start && line.includes(close)) return null; // $$a$$ and more: maths inside a paragraph
    body.push(line);
  }
  const source = lines.slice(start).join("\n");
  return { type: "math", start, end: lines.length, tex: body.join("\n").trim(), source, closed: false };
}

/**
 * The blocks of `lines`: [{type, start, end, ...}], `start`/`end` the lines they came from.
 * `partial`: the text is still arriving, so unclosed display maths at its end is kept as such.
 */
function parseBlocks(lines, partial = false) {
  const blocks = [];
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    const start = i;
    if (isBlank(line)) {
      i += 1;
      continue;
    }
    const fence = FENCE.exec(line);
    if (fence) {
      const [, indent, marker, language] = fence;
      const closing = new RegExp(`^ {0,3}${marker[0] === "`" ? "`" : "~"}{${marker.length},}[ \\t]*$`);
      const code = [];
      let closed = false;
      for (i += 1; i < lines.length; i += 1) {
        if (closing.test(lines[i])) {
          closed = true;
          i += 1;
          break;
        }
        code.push(dedent(lines[i], indent.length));
      }
      blocks.push({ type: "code", start, end: i, language, code, closed, fence: marker[0] });
      continue;
    }
    const math = MATH_OPEN.test(line) ? displayMath(lines, i) : null;
    if (math && (math.closed || partial)) {
      blocks.push(math);
      i = math.end;
      continue;
    }
    const heading = HEADING.exec(line);
    if (heading) {
      blocks.push({ type: "heading", start, end: (i += 1), level: heading[1].length, text: heading[2] ?? "" });
      continue;
    }
    if (RULE.test(line)) {
      blocks.push({ type: "rule", start, end: (i += 1) });
      continue;
    }
    if (QUOTE.test(line)) {
      const inner = [];
      while (i < lines.length && QUOTE.test(lines[i])) inner.push(QUOTE.exec(lines[i++])[1]);
      blocks.push({ type: "quote", start, end: i, children: parseBlocks(inner, partial) });
      continue;
    }
    if (isListItem(line)) {
      const list = parseList(lines, i, partial);
      blocks.push(list);
      i = list.end;
      continue;
    }
    if (isTableStart(lines, i)) {
      const header = cellsOf(line);
      const align = cellsOf(lines[i + 1]).map((c) =>
        c.startsWith(":") && c.endsWith(":") ? "center" : c.endsWith(":") ? "right" : c.startsWith(":") ? "left" : "",
      );
      const rows = [];
      for (i += 2; i < lines.length && !isBlank(lines[i]) && lines[i].includes("|"); i += 1) rows.push(cellsOf(lines[i]));
      blocks.push({ type: "table", start, end: i, header, align, rows });
      continue;
    }
    const text = [line];
    for (i += 1; i < lines.length && !isBlank(lines[i]) && !startsBlock(lines, i); i += 1) text.push(lines[i]);
    blocks.push({ type: "paragraph", start, end: i, text: text.map((l) => l.trim()).join("\n") });
  }
  return blocks;
}

/** The list starting at `lines[start]`, with its items' blocks (nested lists among them). */
function parseList(lines, start, partial) {
  const first = ITEM.exec(lines[start]);
  const ordered = /\d/.test(first[2]);
  const delimiter = first[2].at(-1);
  const baseIndent = indentOf(first[1]);
  const sameList = (m) =>
    m !== null &&
    m[4] !== undefined &&
    indentOf(m[1]) < baseIndent + 2 &&
    (ordered ? /\d/.test(m[2]) && m[2].at(-1) === delimiter : m[2] === delimiter);
  const items = [];
  let loose = false;
  let i = start;
  while (i < lines.length) {
    const m = ITEM.exec(lines[i]);
    if (!sameList(m)) break;
    const markerIndent = indentOf(m[1]);
    const gap = indentOf(m[3] ?? " ");
    const contentIndent = markerIndent + m[2].length + (gap > 4 ? 1 : gap);
    const body = [m[4] ?? ""];
    let blankBefore = false;
    for (i += 1; i < lines.length; i += 1) {
      const line = lines[i];
      if (isBlank(line)) {
        // A blank line belongs to the item when what follows is indented into it.
        let next = i + 1;
        while (next < lines.length && isBlank(lines[next])) next += 1;
        if (next < lines.length && indentOf(lines[next]) >= contentIndent) {
          body.push("");
          blankBefore = true;
          continue;
        }
        break;
      }
      const indent = indentOf(line);
      const nested = ITEM.exec(line);
      if (indent >= contentIndent || (nested && nested[4] !== undefined && indent > markerIndent)) {
        body.push(dedent(line, Math.min(indent, contentIndent)));
      } else if (!blankBefore && !startsBlock(lines, i)) {
        body.push(line.trim()); // a lazy continuation of the item's paragraph
      } else {
        break;
      }
      if (blankBefore) loose = true;
      blankBefore = false;
    }
    items.push(parseBlocks(body, partial));
    // A blank line between two items makes the list loose (paragraphs in its items).
    let next = i;
    while (next < lines.length && isBlank(lines[next])) next += 1;
    if (next > i && next < lines.length && sameList(ITEM.exec(lines[next]))) {
      loose = true;
      i = next;
    }
  }
  const number = ordered ? Number.parseInt(first[2], 10) : 1;
  return { type: "list", start, end: i, ordered, number, loose, items };
}

function renderBlock(block, open) {
  switch (block.type) {
    case "code": {
      const code = [...block.code];
      // A closing fence half arrived is not code.
      if (open && !block.closed && /^ {0,3}([`~])\1*$/.test(code.at(-1) ?? "") && code.at(-1).includes(block.fence)) {
        code.pop();
      }
      return codeBlock(code.join("\n"), block.language, open && !block.closed);
    }
    case "math": {
      if (block.closed) return mathNode(block.tex, block.source, { display: true, tag: "div" });
      const node = document.createElement("div"); // still arriving: its source, typeset once closed
      node.className = "math-pending";
      node.textContent = block.source;
      return node;
    }
    case "heading": {
      // Levels below the page's own h1 and h2.
      const node = document.createElement(`h${Math.min(block.level + 2, 6)}`);
      renderInline(node, block.text, open);
      return node;
    }
    case "rule":
      return document.createElement("hr");
    case "quote": {
      const node = document.createElement("blockquote");
      node.append(...block.children.map((child, i) => renderBlock(child, open && i === block.children.length - 1)));
      return node;
    }
    case "list": {
      const node = document.createElement(block.ordered ? "ol" : "ul");
      if (block.ordered && block.number !== 1) node.setAttribute("start", String(block.number));
      block.items.forEach((children, index) => {
        const item = document.createElement("li");
        const lastItem = open && index === block.items.length - 1;
        children.forEach((child, i) => {
          const lastChild = lastItem && i === children.length - 1;
          // A tight list's paragraphs are bare text in their item.
          if (child.type === "paragraph" && !block.loose) renderInline(item, child.text, lastChild);
          else item.append(renderBlock(child, lastChild));
        });
        node.append(item);
      });
      return node;
    }
    case "table":
      return table(block, open);
    default: {
      const node = document.createElement("p");
      renderInline(node, block.text, open);
      return node;
    }
  }
}

/** A code block; `arriving`: its closing fence has not come yet (it grows on every update). */
function codeBlock(code, language, arriving = false) {
  const wrapper = document.createElement("div");
  wrapper.className = "code-block";
  const pre = document.createElement("pre");
  pre.className = "hljs"; // the vendored theme's colours, highlighted or not
  const node = document.createElement("code");
  if (!highlight(node, code, language, arriving ? MAX_HIGHLIGHTED_STREAMING : MAX_HIGHLIGHTED)) node.textContent = code;
  pre.append(node);
  if (LANGUAGE.test(language)) {
    // Shown by the style sheet (attr()), so the label is not part of the answer's text.
    wrapper.dataset.language = language;
    pre.setAttribute("aria-label", `${language} code`);
  }
  if (navigator.clipboard) {
    const copy = document.createElement("button");
    copy.type = "button";
    copy.className = "copy";
    copy.setAttribute("aria-label", "Copy code");
    copy.addEventListener("click", () => {
      navigator.clipboard.writeText(node.textContent).then(
        () => {
          copy.dataset.copied = "";
          setTimeout(() => delete copy.dataset.copied, 1500);
        },
        () => {},
      );
    });
    wrapper.append(copy);
  }
  wrapper.append(pre);
  return wrapper;
}

/**
 * Fills `node` with `code` coloured as `language` (a name or alias highlight.js knows), built
 * from highlight.js's token tree as <span class="hljs-…"> elements around text nodes. False,
 * leaving `node` untouched, for an unknown language, code longer than `limit`, or a failure.
 */
function highlight(node, code, language, limit) {
  if (!language || code.length > limit || !hljs.getLanguage(language)) return false;
  let tree;
  try {
    // The tree highlight.js renders its HTML from (its HTML string is never used here).
    tree = hljs.highlight(code, { language, ignoreIllegals: true })._emitter?.root;
  } catch {
    return false;
  }
  if (!Array.isArray(tree?.children)) return false;
  const fragment = document.createDocumentFragment();
  appendTokens(fragment, tree.children);
  if (fragment.textContent !== code) return false; // it must show exactly what the model wrote
  node.className = `language-${language.toLowerCase().replace(/[^\w-]/g, "_")}`;
  node.append(fragment);
  return true;
}

function appendTokens(parent, tokens) {
  for (const token of tokens) {
    if (typeof token === "string") {
      parent.append(token);
    } else if (Array.isArray(token?.children)) {
      const classes = typeof token.scope === "string" ? scopeClasses(token.scope) : [];
      if (classes.length === 0) {
        appendTokens(parent, token.children);
        continue;
      }
      const span = document.createElement("span");
      span.classList.add(...classes);
      appendTokens(span, token.children);
      parent.append(span);
    }
  }
}

/** highlight.js's class names for a scope: "title.function" -> hljs-title function_ (its rule). */
function scopeClasses(scope) {
  if (scope.startsWith("language:")) return [];
  const [first, ...rest] = scope.split(".");
  return [`hljs-${first}`, ...rest.map((part, i) => `${part}${"_".repeat(i + 1)}`)].filter((name) =>
    /^[\w-]+$/.test(name),
  );
}

/**
 * `tex` typeset by KaTeX in a new `tag` element ("span" in a line of text, "div" on its own);
 * `source` (the maths as written, delimiters included) is what shows when it does not parse.
 */
function mathNode(tex, source, { display = false, tag = "span" } = {}) {
  const key = `${tag}:${display}:${tex}`;
  const kept = typeset.get(key);
  if (kept && kept.pass !== pass && !kept.node.isConnected) {
    // (a node still shown, in another message or a block that did not change, stays there)
    typeset.delete(key);
    typeset.set(key, { node: kept.node, pass });
    return kept.node;
  }
  const node = document.createElement(tag);
  node.className = display ? "math math-display" : "math";
  try {
    if (tex.length > MAX_TEX) throw new RangeError(`longer than ${MAX_TEX} characters`);
    katex.render(tex, node, { ...KATEX_OPTIONS, displayMode: display });
  } catch (error) {
    node.className = "math-error";
    node.textContent = source;
    node.title = `Not typeset: ${error instanceof Error ? error.message : "unknown error"}`;
  }
  typeset.delete(key);
  typeset.set(key, { node, pass });
  if (typeset.size > TYPESET_KEPT) typeset.delete(typeset.keys().next().value);
  return node;
}

function table(block, open) {
  const node = document.createElement("table");
  const row = (cells, tag, last) => {
    const tr = document.createElement("tr");
    block.header.forEach((_, column) => {
      const cell = document.createElement(tag);
      if (block.align[column]) cell.className = `align-${block.align[column]}`;
      renderInline(cell, cells[column] ?? "", last && column === block.header.length - 1);
      tr.append(cell);
    });
    return tr;
  };
  const head = document.createElement("thead");
  head.append(row(block.header, "th", open && block.rows.length === 0));
  node.append(head);
  if (block.rows.length) {
    const body = document.createElement("tbody");
    block.rows.forEach((cells, i) => body.append(row(cells, "td", open && i === block.rows.length - 1)));
    node.append(body);
  }
  const scroller = document.createElement("div");
  scroller.className = "table-scroller";
  scroller.append(node);
  return scroller;
}

// inline

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
function renderInline(parent, text, open = false) {
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
      parent.append(mathNode(found.tex, found.source, { display: found.display }));
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
        parent.append(link(url, (node) => renderInline(node, found.label)));
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
      renderInline(node, text.slice(i + size, close), open && close === text.length);
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
