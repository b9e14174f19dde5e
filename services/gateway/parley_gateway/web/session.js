// What this browser tab remembers: the API key, the sync cursor and the answers still being
// generated (so a reload picks them up again). sessionStorage: gone when the tab closes.

const API_KEY = "parley.apiKey";
const SYNC_CURSOR = "parley.syncCursor";
const LIVE = "parley.liveResponses";

function readJson(name, fallback) {
  try {
    return JSON.parse(sessionStorage.getItem(name) ?? "") ?? fallback;
  } catch {
    return fallback;
  }
}

export const session = {
  apiKey: () => sessionStorage.getItem(API_KEY),
  signIn(key) {
    sessionStorage.setItem(API_KEY, key);
  },
  signOut() {
    for (const name of [API_KEY, SYNC_CURSOR, LIVE]) sessionStorage.removeItem(name);
  },

  syncCursor: () => sessionStorage.getItem(SYNC_CURSOR),
  saveSyncCursor(cursor) {
    sessionStorage.setItem(SYNC_CURSOR, cursor);
  },

  /** Answers started here and not finished: response id -> {conversationId, clientMessageId, content}. */
  liveResponses: () => readJson(LIVE, {}),
  rememberLive(responseId, entry) {
    sessionStorage.setItem(LIVE, JSON.stringify({ ...readJson(LIVE, {}), [responseId]: entry }));
  },
  forgetLive(responseId) {
    const live = readJson(LIVE, {});
    delete live[responseId];
    sessionStorage.setItem(LIVE, JSON.stringify(live));
  },
};
