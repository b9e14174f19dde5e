// Saved history: the conversation list and each conversation's newest messages (every version
// of them that sync or the page brought: path() picks the current one's path), kept in
// IndexedDB so they can be read without the server. One database per API key, named after
// the key's SHA-256 (the key itself is never stored), so one key's history is never shown to
// another; signing out deletes it. Bounded: the CONVERSATIONS most recently opened (or, never
// opened, most recently active) conversations, each with its newest MESSAGES messages.
//
// Also registers the service worker (sw.js) that keeps the app's own files for offline use.

import { pathOf } from "./versions.js";

const PREFIX = "parley-history-";
const VERSION = 1;
export const CONVERSATIONS = 100;
export const MESSAGES = 200;
// Still changing: only settled messages are saved (live ones come back through sync).
const LIVE = new Set(["sending", "queued", "streaming", "reconnecting", "unsent"]);

/** The database name for an API key: "parley-history-" and the key's SHA-256 in hex. */
export async function databaseName(key) {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(key));
  return PREFIX + Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

function done(request) {
  return new Promise((resolve, reject) => {
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

function finished(transaction) {
  return new Promise((resolve, reject) => {
    transaction.oncomplete = () => resolve();
    transaction.onerror = () => reject(transaction.error);
    transaction.onabort = () => reject(transaction.error ?? new DOMException("aborted", "AbortError"));
  });
}

/** What of a message is worth keeping, as plain data (an ApiError or a Blob does not clone). */
function plainMessage(conversationId, message) {
  const { key: _key, error, stopping: _stopping, queue: _queue, ...rest } = message;
  const plain = JSON.parse(JSON.stringify(rest));
  plain.conversation_id = conversationId;
  // (shown as text: thread.js writes a non-ApiError error with String())
  if (error) plain.error = error.describe?.() ?? String(error.message ?? error);
  return plain;
}

/** Every key [conversationId, anything]: an array key sorts after any number or string. */
function messageRange(conversationId) {
  return IDBKeyRange.bound([conversationId], [conversationId, []]);
}

export class HistoryStore {
  /** The store for this API key, or null where IndexedDB or crypto.subtle is not available. */
  static async open(key) {
    if (!globalThis.indexedDB || !globalThis.crypto?.subtle) return null;
    try {
      const name = await databaseName(key);
      const request = indexedDB.open(name, VERSION);
      request.onupgradeneeded = () => {
        const db = request.result;
        // {id, conversation, opened_at_ms, has_messages}
        db.createObjectStore("conversations", { keyPath: "id" });
        const messages = db.createObjectStore("messages", { keyPath: ["conversation_id", "id"] });
        messages.createIndex("by_time", ["conversation_id", "created_at_ms"]);
        db.createObjectStore("meta");
      };
      return new HistoryStore(name, await done(request));
    } catch {
      return null; // private mode, quota, a blocked upgrade: the app works without saved history
    }
  }

  /** Deletes the saved history of this API key. */
  static async destroy(key) {
    if (!globalThis.indexedDB || !globalThis.crypto?.subtle) return;
    await done(indexedDB.deleteDatabase(await databaseName(key)));
  }

  constructor(name, db) {
    this.name = name;
    this.db = db;
    // Another tab deleting this database (signing out) must not wait for this one.
    db.onversionchange = () => db.close();
  }

  close() {
    this.db.close();
  }

  /** Closes and deletes this database. */
  async destroy() {
    this.db.close();
    await done(indexedDB.deleteDatabase(this.name));
  }

  async write(stores, work) {
    try {
      const tx = this.db.transaction(stores, "readwrite");
      const end = finished(tx);
      const result = work(tx);
      await end;
      return result;
    } catch {
      return undefined; // closed (signed out) or out of space: saving is best effort
    }
  }

  /** What `work(tx)` resolves to, or `fallback` when the database cannot be read. */
  async read(stores, work, fallback) {
    try {
      const tx = this.db.transaction(stores, "readonly");
      const end = finished(tx);
      const result = await work(tx);
      await end;
      return result;
    } catch {
      return fallback;
    }
  }

  // the conversation list

  /** Adds or refreshes conversations (as the API gives them). */
  async saveConversations(list) {
    if (!list.length) return;
    await this.write(["conversations"], (tx) => {
      const store = tx.objectStore("conversations");
      for (const conversation of list) {
        const plain = JSON.parse(JSON.stringify(conversation));
        store.get(plain.id).onsuccess = (event) => {
          const known = event.target.result;
          store.put({ opened_at_ms: 0, has_messages: false, ...known, id: plain.id, conversation: plain });
        };
      }
    });
    await this.evict();
  }

  async removeConversation(id) {
    await this.write(["conversations", "messages"], (tx) => {
      tx.objectStore("conversations").delete(id);
      tx.objectStore("messages").delete(messageRange(id));
    });
  }

  /** Saved conversations, latest activity first. */
  async conversations() {
    const rows = await this.read(["conversations"], (tx) => done(tx.objectStore("conversations").getAll()), []);
    return rows.map((row) => row.conversation).sort((a, b) => b.updated_at_ms - a.updated_at_ms);
  }

  /** The user opened this conversation now: it is the last to be evicted. */
  async opened(id) {
    await this.write(["conversations"], (tx) => {
      const store = tx.objectStore("conversations");
      store.get(id).onsuccess = (event) => {
        const row = event.target.result;
        if (row) store.put({ ...row, opened_at_ms: Date.now() });
      };
    });
  }

  // messages

  /**
   * Saves what the client holds of a conversation's messages (its newest pages, with what sync
   * and live answers added). Only the newest MESSAGES settled ones are kept.
   */
  async saveMessages(conversationId, messages) {
    const settled = messages.filter((m) => m.id && !LIVE.has(m.status)).map((m) => plainMessage(conversationId, m));
    await this.write(["conversations", "messages"], (tx) => {
      const rows = tx.objectStore("conversations");
      rows.get(conversationId).onsuccess = (event) => {
        const row = event.target.result;
        if (row && !row.has_messages) rows.put({ ...row, has_messages: true });
      };
      const store = tx.objectStore("messages");
      for (const message of settled) store.put(message);
      this.trim(store, conversationId);
    });
  }

  /** One message from sync, kept only where this conversation's messages are saved already. */
  async addMessage(conversationId, message) {
    if (!message.id || LIVE.has(message.status)) return;
    await this.write(["conversations", "messages"], (tx) => {
      tx.objectStore("conversations").get(conversationId).onsuccess = (event) => {
        if (!event.target.result?.has_messages) return;
        const store = tx.objectStore("messages");
        store.put(plainMessage(conversationId, message));
        this.trim(store, conversationId);
      };
    });
  }

  /** Deletes all but the newest MESSAGES messages of a conversation (inside a write). */
  trim(store, conversationId) {
    const index = store.index("by_time");
    index.count(messageRange(conversationId)).onsuccess = (event) => {
      let extra = event.target.result - MESSAGES;
      if (extra <= 0) return;
      index.openCursor(messageRange(conversationId)).onsuccess = (cursorEvent) => {
        const cursor = cursorEvent.target.result;
        if (!cursor || extra <= 0) return;
        cursor.delete();
        extra -= 1;
        cursor.continue();
      };
    };
  }

  /** A conversation's saved messages, oldest first; null when they were never saved. */
  async messages(conversationId) {
    const read = (tx) =>
      new Promise((resolve, reject) => {
        const row = tx.objectStore("conversations").get(conversationId);
        row.onerror = () => reject(row.error);
        row.onsuccess = () => {
          if (!row.result?.has_messages) {
            resolve(null);
            return;
          }
          resolve(done(tx.objectStore("messages").index("by_time").getAll(messageRange(conversationId))));
        };
      });
    return this.read(["conversations", "messages"], read, null);
  }

  /**
   * The messages of a conversation's current path (its saved `current_message_id`), oldest
   * first, with the versions of each (versions.js); null when they were never saved.
   */
  async path(conversationId) {
    const messages = await this.messages(conversationId);
    if (!messages) return null;
    const row = await this.read(["conversations"], (tx) => done(tx.objectStore("conversations").get(conversationId)), null);
    return pathOf(messages, row?.conversation?.current_message_id);
  }

  /** Forgets the least recently opened conversations beyond CONVERSATIONS. */
  async evict() {
    await this.write(["conversations", "messages"], (tx) => {
      const rows = tx.objectStore("conversations");
      rows.getAll().onsuccess = (event) => {
        const all = event.target.result;
        if (all.length <= CONVERSATIONS) return;
        all.sort(
          (a, b) =>
            b.opened_at_ms - a.opened_at_ms || (b.conversation.updated_at_ms ?? 0) - (a.conversation.updated_at_ms ?? 0),
        );
        for (const row of all.slice(CONVERSATIONS)) {
          rows.delete(row.id);
          tx.objectStore("messages").delete(messageRange(row.id));
        }
      };
    });
  }

  // anything else the page needs offline

  async saveMeta(name, value) {
    await this.write(["meta"], (tx) => tx.objectStore("meta").put(JSON.parse(JSON.stringify(value)), name));
  }

  async meta(name) {
    return this.read(["meta"], (tx) => done(tx.objectStore("meta").get(name)), undefined);
  }
}

/** Registers sw.js, which keeps the app's files so the page opens without the server. */
export async function registerServiceWorker() {
  if (!("serviceWorker" in navigator)) return;
  try {
    await navigator.serviceWorker.register("/web/sw.js", { scope: "/" });
    const registration = await navigator.serviceWorker.ready;
    // The files this page loaded before the worker ran (modules other than the few it knows).
    const files = performance
      .getEntriesByType("resource")
      .map((entry) => new URL(entry.name))
      .filter((url) => url.origin === location.origin && url.pathname.startsWith("/web/"))
      .map((url) => url.pathname);
    registration.active?.postMessage({ type: "keep", files: ["/", ...new Set(files)] });
  } catch {
    // Not a secure context, or storage is off: the app still works online.
  }
}
