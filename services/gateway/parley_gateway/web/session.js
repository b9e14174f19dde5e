// What this browser tab remembers: the API key, the sync cursor and the answers still being
// generated (so a reload picks them up again). sessionStorage: gone when the tab closes.
// "Remember on this device" keeps the key in localStorage too, so a new tab or a restarted
// browser signs in by itself; signing out forgets it there as well. The page's settings (a
// choice of this device, not of the key) live in localStorage.

const API_KEY = "parley.apiKey";
const SYNC_CURSOR = "parley.syncCursor";
const LIVE = "parley.liveResponses";
const SETTINGS = "parley.settings";
const DEFAULT_SETTINGS = { backgroundAnswers: false };

function readJson(name, fallback) {
  try {
    return JSON.parse(sessionStorage.getItem(name) ?? "") ?? fallback;
  } catch {
    return fallback;
  }
}

export const session = {
  /** This tab's key, else the one remembered on this device, else null. */
  apiKey: () => sessionStorage.getItem(API_KEY) ?? localStorage.getItem(API_KEY),
  /** The key remembered on this device (other tabs may sign in with it), or null. */
  rememberedKey: () => localStorage.getItem(API_KEY),
  /** `remember`: keep the key on this device (true), forget it there (false), leave it (undefined). */
  signIn(key, remember = undefined) {
    sessionStorage.setItem(API_KEY, key);
    if (remember === true) localStorage.setItem(API_KEY, key);
    else if (remember === false && localStorage.getItem(API_KEY) !== null) localStorage.removeItem(API_KEY);
  },
  signOut() {
    for (const name of [API_KEY, SYNC_CURSOR, LIVE]) sessionStorage.removeItem(name);
    localStorage.removeItem(API_KEY);
  },

  settings() {
    try {
      return { ...DEFAULT_SETTINGS, ...JSON.parse(localStorage.getItem(SETTINGS) ?? "{}") };
    } catch {
      return { ...DEFAULT_SETTINGS };
    }
  },
  saveSettings(changes) {
    localStorage.setItem(SETTINGS, JSON.stringify({ ...session.settings(), ...changes }));
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
