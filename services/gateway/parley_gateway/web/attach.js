// Images attached to the next message: picked with the "Attach image" button, pasted or dropped
// into the composer. Each is made smaller here first (longest side at most 2048 px, WebP, or
// JPEG where the browser cannot write WebP: a phone photo of 4-10 MB becomes a few hundred KB),
// then uploaded (POST /v1/media) with a progress bar of its own. The message goes out with the
// ids of the uploaded ones; while one is still uploading (or failed) the message waits.

import { ApiError } from "./api.js";
import { el } from "./dom.js";

// SendMessage.media_ids (services/gateway/parley_gateway/schemas.py) takes at most 8.
export const MAX_ATTACHMENTS = 8;
// The gateway's and the media service's upload limit (PARLEY_MAX_UPLOAD_BYTES).
export const MAX_FILE_BYTES = 20_000_000;
// The media service's largest rendition (PARLEY_MEDIA_HIGH_PX): more pixels would be thrown away.
const MAX_SIDE_PX = 2048;
// Small in pixels and in bytes: sent as it is (an animated GIF stays animated, a PNG stays exact).
const AS_IS_MAX_BYTES = 1_500_000;
const QUALITY = 0.85;
const RUNNING = new Set(["preparing", "uploading", "processing"]);

const megabytes = (bytes) => `${(bytes / 1_000_000).toFixed(1)} MB`;

function renamed(name, type) {
  const extension = type === "image/webp" ? ".webp" : ".jpg";
  const stem = (name || "image").replace(/\.[^.]*$/, "");
  return `${stem}${extension}`;
}

async function encode(bitmap, width, height, type, background) {
  const canvas = new OffscreenCanvas(width, height);
  const context = canvas.getContext("2d");
  if (background) {
    context.fillStyle = background;
    context.fillRect(0, 0, width, height);
  }
  context.imageSmoothingQuality = "high";
  context.drawImage(bitmap, 0, 0, width, height);
  return canvas.convertToBlob({ type, quality: QUALITY });
}

/**
 * What to upload for `file`: `{blob, name, width, height}`, the file itself when it is small
 * enough, else a downscaled re-encoding of it, upright (the EXIF orientation applied).
 */
export async function downscale(file) {
  let bitmap;
  try {
    bitmap = await createImageBitmap(file, { imageOrientation: "from-image" });
  } catch {
    // This browser cannot decode it (HEIC in most of them): the server can, and decides.
    return { blob: file, name: file.name, width: 0, height: 0 };
  }
  try {
    const { width, height } = bitmap;
    const scale = Math.min(1, MAX_SIDE_PX / Math.max(width, height));
    const original = { blob: file, name: file.name, width, height };
    if (scale === 1 && file.size <= AS_IS_MAX_BYTES) return original;
    const w = Math.max(1, Math.round(width * scale));
    const h = Math.max(1, Math.round(height * scale));
    let blob = await encode(bitmap, w, h, "image/webp");
    if (blob.type !== "image/webp") {
      // No WebP encoder (Safari): JPEG, on white, since JPEG has no transparency.
      blob = await encode(bitmap, w, h, "image/jpeg", "#ffffff");
    }
    if (scale === 1 && blob.size >= file.size) return original;
    return { blob, name: renamed(file.name, blob.type), width: w, height: h };
  } finally {
    bitmap.close();
  }
}

export class Attachments extends EventTarget {
  /**
   * `api()` is the signed-in Api; `button` opens `input` (type=file); chips go into `list`,
   * refusals into `message`; files dropped on `dropZone` or pasted into `pasteTarget` are
   * attached too. Fires "change" whenever `pending` or the attached media may have changed.
   */
  constructor({ api, button, input, list, message, dropZone, pasteTarget }) {
    super();
    this.api = api;
    this.input = input;
    this.list = list;
    this.message = message;
    this.items = [];
    this.counter = 0;
    this.refusals = ""; // why files just picked were not attached
    button.addEventListener("click", () => input.click());
    input.addEventListener("change", () => {
      this.add([...input.files]);
      input.value = ""; // the same file may be picked again
    });
    pasteTarget.addEventListener("paste", (event) => {
      const data = event.clipboardData;
      // Text with a picture in it (from a word processor) is pasted as text.
      if (!data || data.files.length === 0 || data.types.includes("text/plain")) return;
      event.preventDefault();
      this.add([...data.files]);
    });
    const carriesFiles = (event) => event.dataTransfer?.types.includes("Files");
    dropZone.addEventListener("dragover", (event) => {
      if (!carriesFiles(event)) return;
      event.preventDefault();
      event.dataTransfer.dropEffect = "copy";
      dropZone.classList.add("dropping");
    });
    dropZone.addEventListener("dragleave", (event) => {
      if (!dropZone.contains(event.relatedTarget)) dropZone.classList.remove("dropping");
    });
    dropZone.addEventListener("drop", (event) => {
      dropZone.classList.remove("dropping");
      if (!carriesFiles(event)) return;
      event.preventDefault();
      this.add([...event.dataTransfer.files]);
    });
  }

  /** An upload is running or failed: the message must wait (or the failed one be removed). */
  get pending() {
    return this.items.some((item) => RUNNING.has(item.status) || item.status === "failed");
  }

  get uploading() {
    return this.items.some((item) => RUNNING.has(item.status));
  }

  /** Why the message must wait: {text, shownIn (the id of the element saying it)}, or null. */
  holdsBack() {
    if (this.items.some((item) => item.status === "failed")) {
      return { text: this.failureText(), shownIn: this.message.id };
    }
    if (this.uploading) return { text: "Sending waits until the images have uploaded.", shownIn: null };
    return null;
  }

  /** What to do about the images that did not upload, in plain words ("" when none failed). */
  failureText() {
    const failed = this.items.filter((item) => item.status === "failed");
    if (failed.length === 0) return "";
    if (failed.length > 1) {
      return `${failed.length} images did not upload. Retry or remove them to send your message.`;
    }
    const [item] = failed;
    return item.error.retryable
      ? `“${item.name}” did not upload. Retry it, or remove it to send your message without it.`
      : `“${item.name}” cannot be sent. Remove it to send your message.`;
  }

  /** Checks and starts uploading `files`; refusals are said in the message area. */
  add(files) {
    const refusals = [];
    for (const file of files) {
      const name = file.name || "The pasted file";
      if (this.items.length >= MAX_ATTACHMENTS) {
        refusals.push(`At most ${MAX_ATTACHMENTS} images go with one message; “${name}” was not attached.`);
        continue;
      }
      if (!file.type.startsWith("image/")) {
        refusals.push(`“${name}” is not an image: only images can be attached.`);
        continue;
      }
      if (file.size > MAX_FILE_BYTES) {
        refusals.push(`“${name}” is ${megabytes(file.size)}: images may be at most ${megabytes(MAX_FILE_BYTES)}.`);
        continue;
      }
      const item = { key: `a${++this.counter}`, file, name: file.name || "pasted image", status: "preparing" };
      item.node = this.chip(item);
      this.items.push(item);
      this.list.append(item.node);
      this.start(item);
    }
    this.refusals = refusals.join(" ");
    this.changed();
  }

  /** Attaches again media uploaded before (a message that was not sent goes back in the box). */
  restore(media) {
    for (const uploaded of media) {
      if (this.items.length >= MAX_ATTACHMENTS) break;
      const { name, ...rest } = uploaded;
      const item = { key: `a${++this.counter}`, file: null, name: name || "image", status: "done", media: rest };
      item.node = this.chip(item);
      const thumb = rest.renditions?.thumb?.url;
      if (thumb) item.node.querySelector(".attachment-thumb").src = thumb;
      this.items.push(item);
      this.list.append(item.node);
      this.show(item);
    }
    if (media.length) this.changed();
  }

  /** The ids of the images uploaded so far (what the draft would carry if sent now). */
  uploadedIds() {
    return this.items.filter((item) => item.status === "done").map((item) => item.media.id);
  }

  /** The uploaded media for the message being sent; the composer is emptied. */
  take() {
    const done = this.items.filter((item) => item.status === "done");
    const media = done.map((item) => ({ ...item.media, name: item.name }));
    this.clear();
    return media;
  }

  /** Drops every attachment, stopping uploads that still run. */
  clear() {
    for (const item of [...this.items]) this.remove(item, false);
    this.refusals = "";
    this.changed();
  }

  remove(item, focus = true) {
    item.controller?.abort();
    if (item.preview) URL.revokeObjectURL(item.preview);
    this.items = this.items.filter((other) => other !== item);
    item.node.remove();
    item.status = "removed";
    if (focus) this.input.closest("form")?.querySelector("textarea")?.focus();
    this.changed();
  }

  async start(item) {
    item.status = "preparing";
    item.error = null;
    this.show(item);
    this.changed();
    try {
      const prepared = item.prepared ?? (await downscale(item.file));
      if (item.status === "removed") return;
      item.prepared = prepared;
      if (!item.preview) {
        item.preview = URL.createObjectURL(prepared.blob);
        item.node.querySelector(".attachment-thumb").src = item.preview;
      }
      item.status = "uploading";
      item.sent = 0;
      this.show(item);
      item.controller = new AbortController();
      item.media = await this.api().uploadMedia(prepared.blob, prepared.name, {
        signal: item.controller.signal,
        onProgress: (sent, total) => {
          item.sent = total ? sent / total : 0;
          // Every byte is out: the server is still decoding and resizing it.
          if (sent >= total) item.status = "processing";
          this.show(item);
        },
      });
      item.status = "done";
    } catch (error) {
      if (item.status === "removed" || error?.name === "AbortError") return;
      item.status = "failed";
      const message = String(error?.message ?? error);
      item.error = error instanceof ApiError ? error : new ApiError(400, "image_unreadable", message);
    } finally {
      item.controller = null;
    }
    this.show(item);
    this.changed();
  }

  chip(item) {
    const name = item.name;
    const progress = el("progress", { class: "attachment-progress", max: "100", "aria-label": `Upload of ${name}` });
    const retry = el("button", { type: "button", class: "attachment-retry", "aria-label": `Retry ${name}` }, "Retry");
    const remove = el("button", { type: "button", class: "attachment-remove", "aria-label": `Remove ${name}` }, "×");
    retry.addEventListener("click", () => this.start(item));
    remove.addEventListener("click", () => this.remove(item));
    const thumb = el("img", { class: "attachment-thumb", alt: "", width: "48", height: "48" });
    thumb.addEventListener("error", () => thumb.classList.add("broken")); // not decodable here
    return el(
      "li",
      { class: "attachment", "data-key": item.key },
      thumb,
      el(
        "div",
        { class: "attachment-body" },
        el("span", { class: "attachment-name" }, item.name),
        el("span", { class: "attachment-state" }, progress, el("span", { class: "attachment-percent" })),
        el("span", { class: "attachment-error", role: "alert" }),
      ),
      retry,
      remove,
    );
  }

  show(item) {
    const node = item.node;
    node.dataset.status = item.status;
    const progress = node.querySelector("progress");
    const percent = node.querySelector(".attachment-percent");
    const error = node.querySelector(".attachment-error");
    progress.hidden = !RUNNING.has(item.status);
    if (item.status === "preparing") {
      progress.removeAttribute("value"); // indeterminate
      percent.textContent = "Resizing…";
    } else if (item.status === "uploading" || item.status === "processing") {
      const value = Math.round(item.sent * 100);
      progress.value = value;
      percent.textContent = item.status === "processing" ? "100% · processing…" : `${value}%`;
    } else if (item.status === "done") {
      percent.textContent = `Uploaded · ${item.media.width}×${item.media.height}`;
    } else {
      percent.textContent = "";
    }
    error.textContent = item.status === "failed" ? `Not uploaded. ${item.error.describe()}` : "";
    node.querySelector(".attachment-retry").hidden = !(item.status === "failed" && item.error.retryable);
  }

  changed() {
    const text = [this.refusals, this.failureText()].filter(Boolean).join(" ");
    if (this.message.textContent !== text) this.message.textContent = text;
    this.dispatchEvent(new Event("change"));
  }
}
