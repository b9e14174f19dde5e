// The service worker: keeps the app's own files (the page, its scripts, style and icon) so the
// app opens without the server. Network first, the saved copy only when the network fails, so a
// deploy is seen at once. The API (/v1/...) is never touched: its answers are not kept here
// (saved history lives in IndexedDB, per API key; see store.js).
// Served with `Service-Worker-Allowed: /` so that, though it lives in /web/, it serves `/`.

const CACHE = "parley-shell-v1";
const SHELL = [
  "/",
  "/web/app.js",
  "/web/state.js",
  "/web/page.js",
  "/web/composer.js",
  "/web/offline.js",
  "/web/signin.js",
  "/web/conversation.js",
  "/web/answers.js",
  "/web/changes.js",
  "/web/actions.js",
  "/web/answer-streams.js",
  "/web/versions.js",
  "/web/notice.js",
  "/web/api.js",
  "/web/conversations.js",
  "/web/dom.js",
  "/web/session.js",
  "/web/sse.js",
  "/web/stream.js",
  "/web/sync.js",
  "/web/thread.js",
  "/web/store.js",
  "/web/estimate.js",
  "/web/budget.js",
  "/web/markdown.js",
  "/web/markdown-blocks.js",
  "/web/markdown-inline.js",
  "/web/markdown-typeset.js",
  "/web/typewriter.js",
  "/web/media.js",
  "/web/attach.js",
  "/web/errors.js",
  "/web/format.js",
  "/web/search.js",
  "/web/style.css",
  "/web/icon.svg",
  // vendored (tools/vendor-web.sh): code colours and maths, KaTeX's fonts included, so that an
  // answer read offline looks as it did online
  "/web/vendor/highlight/highlight.min.js",
  "/web/vendor/highlight/a11y-light.min.css",
  "/web/vendor/highlight/a11y-dark.min.css",
  "/web/vendor/katex/katex.mjs",
  "/web/vendor/katex/katex.min.css",
  ...[
    "AMS-Regular", "Caligraphic-Bold", "Caligraphic-Regular", "Fraktur-Bold", "Fraktur-Regular", "Main-Bold",
    "Main-BoldItalic", "Main-Italic", "Main-Regular", "Math-BoldItalic", "Math-Italic", "SansSerif-Bold",
    "SansSerif-Italic", "SansSerif-Regular", "Script-Regular", "Size1-Regular", "Size2-Regular", "Size3-Regular",
    "Size4-Regular", "Typewriter-Regular",
  ].map((font) => `/web/vendor/katex/fonts/KaTeX_${font}.woff2`),
];

/** The app's files: the page itself and what lives under /web/ (this worker aside). */
function isShell(url) {
  if (url.origin !== self.location.origin) return false;
  return url.pathname === "/" || (url.pathname.startsWith("/web/") && url.pathname !== "/web/sw.js");
}

/** Fetches each file and keeps it; one that fails (renamed, offline) does not stop the others. */
async function keep(paths) {
  const cache = await caches.open(CACHE);
  await Promise.all(
    paths.map(async (path) => {
      try {
        const response = await fetch(path, { cache: "no-cache" });
        if (response.ok) await cache.put(path, response);
      } catch {
        // kept the next time the page loads it
      }
    }),
  );
}

self.addEventListener("install", (event) => {
  event.waitUntil(keep(SHELL).then(() => self.skipWaiting()));
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    (async () => {
      for (const name of await caches.keys()) if (name !== CACHE) await caches.delete(name);
      await self.clients.claim();
    })(),
  );
});

// The page lists the files it loaded before this worker controlled it (new modules included).
self.addEventListener("message", (event) => {
  if (event.data?.type !== "keep" || !Array.isArray(event.data.files)) return;
  const paths = event.data.files.filter((path) => typeof path === "string" && isShell(new URL(path, self.location)));
  event.waitUntil(keep(paths));
});

async function networkFirst(event, url) {
  const key = url.pathname; // "/#abc" and "/?x" are the same page
  try {
    const response = await fetch(event.request);
    if (response.ok && response.type === "basic") {
      const copy = response.clone();
      event.waitUntil(caches.open(CACHE).then((cache) => cache.put(key, copy)));
    }
    return response;
  } catch (error) {
    const saved = await caches.match(key, { cacheName: CACHE });
    if (saved) return saved;
    throw error;
  }
}

self.addEventListener("fetch", (event) => {
  const url = new URL(event.request.url);
  if (event.request.method !== "GET" || !isShell(url)) return; // the API and the rest: the network, untouched
  event.respondWith(networkFirst(event, url));
});
