// The client's state, all of it in one place: who is signed in, the conversation on the page,
// the threads loaded, the answers streaming, the connection and the saved history. Modules read
// `state`; they change it only through the functions below, each of which tells the listeners
// subscribed to what it changed (synchronously, in the order they subscribed).
//
// What changes, by name (the names `subscribe` takes):
// - "session": api (the signed-in Api, null when signed out), sync (its SyncLoop), saved (its
//   HistoryStore, store.js: null where there is none);
// - "conversations": conversations (the list in the sidebar, latest activity first: the pages
//   loaded, with what sync and search added), conversationsCursor (of its next page, null: no more);
// - "currentId": the conversation on the page (null: a new conversation, not created yet);
// - "threads": conversation id -> {messages (oldest first), olderCursor, saved (read from saved history)};
// - "streams": conversation id -> the ResponseStream generating an answer there (added, removed);
// - "stream": one of those streams changed (its status: reconnecting, stopping, finished…);
// - "connection": reachable (false from a request that could not reach the server until one
//   does), showingSaved (the page shows saved history: the server could not be reached);
// - "sending": a first message waits for its conversation to be created;
// - "found": conversation id -> conversation, from search (maybe not in the list yet);
// - "media": media id -> Promise of the media (GET /v1/media/{id}), the URLs media.js shows.

const current = {
  api: null,
  sync: null,
  saved: null,
  conversations: [],
  conversationsCursor: null,
  currentId: null,
  threads: new Map(),
  streams: new Map(),
  reachable: true,
  showingSaved: false,
  sending: false,
  found: new Map(),
  media: new Map(),
};

/** What the client holds now: read it here, change it with the functions below. */
export const state = new Proxy(current, {
  set(_target, name) {
    throw new TypeError(`state.${String(name)} changes through state.js`);
  },
  deleteProperty(_target, name) {
    throw new TypeError(`state.${String(name)} changes through state.js`);
  },
});

const listeners = []; // [{names (a Set), listener}]

/** Calls `listener(name)` after each change of one of `names`; returns the unsubscribe function. */
export function subscribe(names, listener) {
  const entry = { names: new Set(names), listener };
  listeners.push(entry);
  return () => {
    const at = listeners.indexOf(entry);
    if (at >= 0) listeners.splice(at, 1);
  };
}

/** Tells the listeners that `name` changed. */
export function changed(name) {
  for (const { names, listener } of [...listeners]) if (names.has(name)) listener(name);
}

/** Sets fields of `name` (see above), then tells the listeners if any of them changed. */
function assign(name, fields) {
  let differs = false;
  for (const [field, value] of Object.entries(fields)) {
    if (!(field in current)) throw new TypeError(`state.${field} is not part of the state`);
    differs ||= current[field] !== value;
    current[field] = value;
  }
  if (differs) changed(name);
}

export const setSession = (fields) => assign("session", fields);
export const setConversationList = (fields) => assign("conversations", fields);
export const setCurrentId = (id) => assign("currentId", { currentId: id });
export const setConnection = (fields) => assign("connection", fields);
export const setSending = (sending) => assign("sending", { sending });

/** Changes one entry of a map of the state ("threads", "streams", "found", "media"): `value` undefined deletes it. */
export function setEntry(name, id, value) {
  const map = current[name];
  if (value === undefined ? !map.delete(id) : map.get(id) === value) return;
  if (value !== undefined) map.set(id, value);
  changed(name);
}

/** Empties maps of the state (signing out). */
export function clearEntries(...names) {
  for (const name of names) {
    if (!current[name].size) continue;
    current[name].clear();
    changed(name);
  }
}
