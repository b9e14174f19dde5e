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

import { parseBlocks } from "./markdown-blocks.js";
import { renderInline } from "./markdown-inline.js";
import { codeBlock, TypesetMaths } from "./markdown-typeset.js";

/**
 * Renders markdown into containers (thread.js has one for its messages), keeping what it built
 * for the next update: each container's top-level blocks, and typeset maths (markdown-typeset.js).
 */
export class MarkdownRenderer {
  constructor() {
    this.blocks = new WeakMap(); // container -> [{key, node}] of its top-level blocks
    this.maths = new TypesetMaths();
  }

  /**
   * Renders `text` as markdown into `container`, replacing what it showed. `partial`: the text
   * is still arriving (see the module doc).
   */
  render(container, text, { partial = false } = {}) {
    this.maths.nextPass();
    const lines = text.replace(/\r\n?/g, "\n").split("\n");
    const blocks = parseBlocks(lines, partial);
    const keyed = blocks.map((block, index) => {
      const open = partial && index === blocks.length - 1;
      return { block, open, key: `${block.type}${open ? "+" : ""}:${lines.slice(block.start, block.end).join("\n")}` };
    });
    let previous = this.blocks.get(container) ?? [];
    if (previous.length !== container.childNodes.length || previous.some((b, i) => b.node !== container.childNodes[i])) {
      previous = []; // someone else changed the container: start again
      container.replaceChildren();
    }
    let kept = 0;
    while (kept < previous.length && kept < keyed.length && previous[kept].key === keyed[kept].key) kept += 1;
    for (let i = previous.length - 1; i >= kept; i -= 1) previous[i].node.remove();
    const fresh = keyed.slice(kept).map(({ block, open, key }) => ({ key, node: renderBlock(block, open, this.maths) }));
    container.append(...fresh.map((b) => b.node));
    this.blocks.set(container, [...previous.slice(0, kept), ...fresh]);
  }
}

function renderBlock(block, open, maths) {
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
      if (block.closed) return maths.node(block.tex, block.source, { display: true, tag: "div" });
      const node = document.createElement("div"); // still arriving: its source, typeset once closed
      node.className = "math-pending";
      node.textContent = block.source;
      return node;
    }
    case "heading": {
      // Levels below the page's own h1 and h2.
      const node = document.createElement(`h${Math.min(block.level + 2, 6)}`);
      renderInline(node, block.text, maths, open);
      return node;
    }
    case "rule":
      return document.createElement("hr");
    case "quote": {
      const node = document.createElement("blockquote");
      node.append(...block.children.map((child, i) => renderBlock(child, open && i === block.children.length - 1, maths)));
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
          if (child.type === "paragraph" && !block.loose) renderInline(item, child.text, maths, lastChild);
          else item.append(renderBlock(child, lastChild, maths));
        });
        node.append(item);
      });
      return node;
    }
    case "table":
      return table(block, open, maths);
    default: {
      const node = document.createElement("p");
      renderInline(node, block.text, maths, open);
      return node;
    }
  }
}

function table(block, open, maths) {
  const node = document.createElement("table");
  const row = (cells, tag, last) => {
    const tr = document.createElement("tr");
    block.header.forEach((_, column) => {
      const cell = document.createElement(tag);
      if (block.align[column]) cell.className = `align-${block.align[column]}`;
      renderInline(cell, cells[column] ?? "", maths, last && column === block.header.length - 1);
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
