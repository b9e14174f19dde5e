// Markdown's blocks (markdown.js renders them): paragraphs, headings, fenced code, display
// maths, block quotes, lists (nested), tables and rules, read from the lines of a text that may
// still be arriving (`partial`: an unclosed fence or maths block is open to the end).

const FENCE = /^( {0,3})(`{3,}|~{3,})[ \t]*([^`\s]*)[^`]*$/;
const HEADING = /^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$/;
const RULE = /^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$/;
const QUOTE = /^ {0,3}> ?(.*)$/;
const ITEM = /^([ \t]*)([-*+]|\d{1,9}[.)])(?:([ \t]+)(.*))?$/;
const TABLE_DIVIDER = /^[ \t]*\|?[ \t]*:?-+:?[ \t]*(?:\|[ \t]*:?-+:?[ \t]*)*\|?[ \t]*$/;
// Display maths on lines of its own: $$ or \[ opens it, $$ or \] at a line's end closes it.
const MATH_OPEN = /^ {0,3}(\$\$|\\\[)(.*)$/;

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
export function parseBlocks(lines, partial = false) {
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

