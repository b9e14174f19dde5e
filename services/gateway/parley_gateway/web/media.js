// Images in messages: the thumbnails of what the user attached, and the picture an answer drew.
//
// Where they come from:
// - a user message carries `media`: sent from this tab, the media the upload returned
//   (POST /v1/media, with renditions); read from history (after a reload, on another device),
//   `{id, url, content_type, width, height}` with a fresh URL;
// - a live answer carries `images`: the `image` events of its stream (a presigned URL at once);
// - an answer read from history names its picture in its text, as the server writes it
//   ('Here is an image of "…" (WxH, media med_…).'): its URL is fetched (GET /v1/media/{id}).
// Presigned URLs expire after minutes: an image that fails to load gets a fresh URL, once.

import { el } from "./dom.js";
import { setEntry, state } from "./state.js";

// The answer text of a generated picture (services/orchestrator/parley_orchestrator/image_turns.py).
const GENERATED = /"([\s\S]*)" \((\d+)x(\d+), media (med_[a-z0-9]{24})\)\.\s*$/;
const GENERATED_ID = /, media med_[a-z0-9]{24}\)(?=\.\s*$)/;
// The commands that ask for a picture (the same file): what follows them is the prompt.
const ASKS_FOR_IMAGE =
  /^\s*(?:\/image|\/imagine|draw|(?:generate|create|make)\s+(?:an?\s+)?(?:image|picture)\s+of)\s+(\S[\s\S]*)$/i;
// A URL this close to its expiry is fetched again rather than used.
const EXPIRY_MARGIN_MS = 30_000;

/** What a message asking for a picture asks to draw, or null. */
export function promptOf(content) {
  const match = ASKS_FOR_IMAGE.exec(content ?? "");
  return match ? match[1].trim() : null;
}

/**
 * An answer's text as the reader sees it: the answer of a generated picture names its media id
 * for this page to find the picture by (`… (1024x1024, media med_…).`); the id is not for people.
 */
export function withoutMediaId(content) {
  return content.replace(GENERATED_ID, ")");
}

/** The picture an answer from history names: {mediaId, width, height, prompt}, or null. */
export function generatedImageIn(content) {
  const match = GENERATED.exec(content ?? "");
  if (!match) return null;
  return { mediaId: match[4], width: Number(match[2]), height: Number(match[3]), prompt: match[1] };
}

/** The media with URLs that are still good; `fresh` asks the server again whatever the cache holds. */
function fetchMedia(mediaId, fresh = false) {
  const cached = state.media.get(mediaId); // (state.js: emptied when the user signs in or out)
  if (cached && !fresh) return cached;
  if (!state.api) return Promise.reject(new Error("signed out"));
  const forget = () => state.media.get(mediaId) === pending && setEntry("media", mediaId, undefined);
  const pending = state.api.getMedia(mediaId).then((media) => {
    // Forget it shortly before its URLs expire, so the next image asks for new ones.
    const ttl = (media.urls_expire_at_ms ?? 0) - Date.now() - EXPIRY_MARGIN_MS;
    setTimeout(forget, Math.max(ttl, 0));
    return media;
  });
  pending.catch(forget);
  setEntry("media", mediaId, pending);
  return pending;
}

function renditionOf(media, wanted) {
  const renditions = media.renditions ?? {};
  return renditions[wanted] ?? renditions.high ?? Object.values(renditions)[0] ?? null;
}

/**
 * The images a message shows: [{key, mediaId, rendition, url, width, height, alt, kind}].
 * `url` is null when it has to be fetched first.
 */
function imagesOf(message) {
  if (message.role === "user") {
    return (message.media ?? []).map((media, index) => {
      const thumb = renditionOf(media, "thumb") ?? (media.url ? media : null);
      const name = media.name ? `: ${media.name}` : ` ${index + 1}`;
      return {
        key: media.id,
        mediaId: media.id,
        rendition: "thumb",
        url: thumb?.url ?? null,
        width: thumb?.width ?? 0,
        height: thumb?.height ?? 0,
        alt: `Attached image${name}`,
        kind: "attached",
      };
    });
  }
  if (message.images?.length) {
    return message.images.map((image) => ({
      key: image.mediaId,
      mediaId: image.mediaId,
      rendition: "high",
      url: image.url || null,
      width: image.width,
      height: image.height,
      alt: image.alt || "Generated image",
      kind: "generated",
    }));
  }
  const named = message.status === "complete" ? generatedImageIn(message.content) : null;
  if (!named) return [];
  return [
    {
      key: named.mediaId,
      mediaId: named.mediaId,
      rendition: "high",
      url: null,
      width: named.width,
      height: named.height,
      alt: named.prompt || "Generated image",
      kind: "generated",
    },
  ];
}

function showUnavailable(figure, img, error) {
  img.remove();
  figure.classList.add("unavailable");
  const why = error?.describe?.() ?? "it could not be loaded";
  figure.append(el("p", { class: "media-missing" }, `Image unavailable: ${why}`));
}

/** Points `img` at a (fresh) URL of its media. */
async function loadFresh(figure, img, item, fresh) {
  try {
    const rendition = renditionOf(await fetchMedia(item.mediaId, fresh), item.rendition);
    if (!rendition?.url) throw new Error("no rendition");
    if (!item.width && rendition.width) {
      img.width = rendition.width;
      img.height = rendition.height;
    }
    img.src = rendition.url;
  } catch (error) {
    showUnavailable(figure, img, error);
  }
}

function imageNode(item) {
  const img = el("img", {
    class: "media-image",
    alt: item.alt,
    // The size before the bytes arrive: no jump when they do.
    width: item.width || null,
    height: item.height || null,
    decoding: "async",
    "data-media-id": item.mediaId,
  });
  const figure = el("figure", { class: `media-item ${item.kind}` }, img);
  let retried = false;
  img.addEventListener("error", () => {
    if (retried) {
      showUnavailable(figure, img);
      return;
    }
    retried = true; // once: an expired URL gets a fresh one, a missing image stays missing
    loadFresh(figure, img, item, true);
  });
  if (item.url) img.src = item.url;
  else loadFresh(figure, img, item, false);
  return figure;
}

/** Shows `message`'s images in `container` (its own element next to the text), keeping what is shown. */
export function showMedia(container, message) {
  const items = imagesOf(message);
  const shown = items.map((item) => item.key).join(" ");
  if (container.dataset.shown === shown) return; // already there: no reload, no flicker
  container.dataset.shown = shown;
  container.replaceChildren(...items.map(imageNode));
  container.hidden = items.length === 0;
}
