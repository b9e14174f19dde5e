// What markdown.js shows of code and maths: code blocks coloured by highlight.js and LaTeX
// typeset by KaTeX, both vendored in web/vendor/ (tools/vendor-web.sh); see markdown.js for
// why neither ever turns text into markup.

import katex from "./vendor/katex/katex.mjs";
import hljs from "./vendor/highlight/highlight.min.js";

const LANGUAGE = /^[\w+#.-]{1,32}$/;
// Longer maths is shown as its source: typesetting cost grows with it, and no answer needs more.
export const MAX_TEX = 4000;
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

/** A code block; `arriving`: its closing fence has not come yet (it grows on every update). */
export function codeBlock(code, language, arriving = false) {
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
 * Typeset maths by source, kept for the next update of a streaming answer, which builds its last
 * paragraph again: a node no longer on the page moves into the new one (most recent last).
 */
export class TypesetMaths {
  static KEPT = 300;

  constructor() {
    this.typeset = new Map(); // `${tag}:${display}:${tex}` -> {node, pass}
    this.pass = 0; // renders (MarkdownRenderer.render): a node taken in this pass is not taken twice
  }

  /** A new render begins. */
  nextPass() {
    this.pass += 1;
  }

  /**
   * `tex` typeset by KaTeX in a new `tag` element ("span" in a line of text, "div" on its own);
   * `source` (the maths as written, delimiters included) is what shows when it does not parse.
   */
  node(tex, source, { display = false, tag = "span" } = {}) {
    const key = `${tag}:${display}:${tex}`;
    const kept = this.typeset.get(key);
    if (kept && kept.pass !== this.pass && !kept.node.isConnected) {
      // (a node still shown, in another message or a block that did not change, stays there)
      this.keep(key, kept.node);
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
    this.keep(key, node);
    if (this.typeset.size > TypesetMaths.KEPT) this.typeset.delete(this.typeset.keys().next().value);
    return node;
  }

  /** `node` is the newest of the kept ones. */
  keep(key, node) {
    this.typeset.delete(key);
    this.typeset.set(key, { node, pass: this.pass });
  }
}
