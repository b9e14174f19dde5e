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
const SPECIAL = /[\\\n`[h*_~]/g;
const WORD_CHAR = /[\p{L}\p{N}]/u;
const rendered = new WeakMap(); // container -> [{key, node}] of its top-level blocks

/**
 * Renders `text` as markdown into `container`, replacing what it showed. `partial`: the text
 * is still arriving (see the module doc).
 */
export function renderMarkdown(container, text, { partial = false } = {}) {
  const lines = text.replace(/\r\n?/g, "\n").split("\n");
  const blocks = parseBlocks(lines);
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

/** The blocks of `lines`: [{type, start, end, ...}], `start`/`end` the lines they came from. */
function parseBlocks(lines) {
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
      blocks.push({ type: "quote", start, end: i, children: parseBlocks(inner) });
      continue;
    }
    if (isListItem(line)) {
      const list = parseList(lines, i);
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
function parseList(lines, start) {
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
    items.push(parseBlocks(body));
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
      return codeBlock(code.join("\n"), block.language);
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

function codeBlock(code, language) {
  const wrapper = document.createElement("div");
  wrapper.className = "code-block";
  const pre = document.createElement("pre");
  const node = document.createElement("code");
  node.textContent = code;
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
  let found = null;
  let i = 0;
  while (i < text.length) {
    const c = text[i];
    if (c === "\\" && PUNCTUATION.test(text[i + 1] ?? "")) {
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
