// Signing in and out: the API key checked (GET /v1/models), or, reloaded without the server,
// the saved history of the key this tab used before; the signed-in session (state.js) set up,
// and all of it forgotten on signing out, here and in the other tabs using the same key.

import { resumeLiveResponses } from "./answers.js";
import { Api, ApiError } from "./api.js";
import { applyChange } from "./changes.js";
import { attachments, budget, clearComposer, estimate, fillModels, input } from "./composer.js";
import { loadMoreConversations, openConversation, startNewConversation } from "./conversation.js";
import { byId } from "./dom.js";
import { setReachable } from "./offline.js";
import { clearNotice, conversations, search, showNotice } from "./page.js";
import { session } from "./session.js";
import { clearEntries, setConnection, setCurrentId, setSession, state } from "./state.js";
import { databaseName, HistoryStore } from "./store.js";
import { SyncLoop } from "./sync.js";

// The other tabs of this app: one signing out signs out those using the same key.
const tabs = "BroadcastChannel" in window ? new BroadcastChannel("parley") : null;

/**
 * `remembered`: the key this tab (or, remembered on this device, another) signed in with before
 * (it may open saved history offline). `remember`: keep the key on this device (the sign-in form).
 */
export async function signIn(key, remembered = false, remember = undefined) {
  const candidate = new Api(key, (error) => {
    if (state.api === candidate) signOut(error.describe());
  });
  candidate.onBudget = (answer) => {
    if (state.api === candidate) budget.show(answer);
  };
  candidate.onReachable = (yes) => {
    if (state.api === candidate) setReachable(yes);
  };
  let models;
  let store = null;
  try {
    models = await candidate.models();
    setConnection({ reachable: true });
  } catch (error) {
    // Reloaded without the server: the saved history of this key, if there is any.
    store = remembered && error.status === 0 ? await HistoryStore.open(key) : null;
    models = await store?.meta("models");
    if (!models) {
      await store?.destroy();
      throw error;
    }
    setConnection({ reachable: false });
  }
  session.signIn(key, remember);
  setSession({ api: candidate });
  setSession({ saved: store ?? (await HistoryStore.open(key)) });
  if (state.reachable) state.saved?.saveMeta("models", models);
  if (candidate.budget) budget.show(candidate.budget);
  clearEntries("media");
  byId("sign-in").hidden = true;
  byId("workspace").hidden = false;
  byId("workspace").setAttribute("aria-busy", "true");
  fillModels(models.data);
  await loadMoreConversations();
  const cursor = { get: session.syncCursor, save: session.saveSyncCursor };
  const sync = new SyncLoop(state.api, cursor, applyChange, (error) => {
    if (error.status !== 0) showNotice(error); // offline: the next try will do
  });
  setSession({ sync });
  sync.start();
  resumeLiveResponses();
  const wanted = decodeURIComponent(location.hash.slice(1));
  const first = wanted || conversations.items[0]?.id;
  if (state.currentId === null) {
    // (unless the user already opened or started one)
    if (first) await openConversation(first);
    else startNewConversation();
  }
  byId("workspace").setAttribute("aria-busy", "false");
  input.focus();
}

/** `told`: another tab signed out with this key (it has said so to the others already). */
export function signOut(message = "", told = false) {
  // Signing out forgets this key's saved history (and a refused key's), here and in other tabs.
  const key = state.api?.key ?? session.apiKey();
  if (state.saved) state.saved.destroy().catch(() => {});
  else if (key) HistoryStore.destroy(key).catch(() => {});
  if (key && !told) databaseName(key).then((digest) => tabs?.postMessage({ type: "signed-out", key: digest }));
  setSession({ saved: null });
  setConnection({ showingSaved: false, reachable: true });
  budget.clear();
  estimate.clear();
  state.sync?.stop();
  setSession({ sync: null });
  for (const stream of state.streams.values()) stream.close();
  clearEntries("streams", "threads");
  conversations.clear();
  setCurrentId(null);
  setSession({ api: null });
  attachments.clear();
  clearEntries("media");
  session.signOut();
  search.clear();
  clearEntries("found");
  clearComposer();
  document.title = "Parley";
  history.replaceState(null, "", location.pathname);
  clearNotice();
  byId("workspace").hidden = true;
  byId("sign-in").hidden = false;
  byId("sign-in-error").textContent = message;
  byId("api-key").value = "";
  byId("api-key").focus();
}

byId("sign-in-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const key = byId("api-key").value.trim();
  const button = event.submitter ?? byId("sign-in-form").querySelector("button");
  button.disabled = true;
  byId("sign-in-error").textContent = "";
  try {
    await signIn(key, false, byId("remember").checked);
  } catch (error) {
    byId("sign-in-error").textContent = error instanceof ApiError ? error.describe() : String(error);
  } finally {
    button.disabled = false;
  }
});
byId("sign-out").addEventListener("click", () => signOut());
// Signing out in another tab deleted this key's saved history and forgot it on this device:
// this tab signs out too. (Told by the key's digest, never the key.)
tabs?.addEventListener("message", async (event) => {
  if (event.data?.type !== "signed-out" || !state.api) return;
  const key = state.api.key;
  if ((await databaseName(key)) === event.data.key && state.api?.key === key) signOut("", true);
});

/** Signs in with the key this tab (or this device) remembers, else shows the sign-in form. */
export function signInAgain() {
  const remembered = session.apiKey();
  if (!remembered) {
    byId("sign-in").hidden = false;
    byId("api-key").focus();
    return;
  }
  signIn(remembered, true).catch((error) => {
    const why = error instanceof ApiError ? error.describe() : String(error);
    if (error instanceof ApiError && error.status === 401) {
      signOut(why); // the key no longer works: forget it
      return;
    }
    // The server cannot be reached and nothing is saved to show: the form, the key (and
    // "remember me", and this key's saved history) kept for the next try.
    byId("sign-in").hidden = false;
    byId("sign-in-error").textContent = why;
    byId("api-key").value = remembered;
    byId("remember").checked = session.rememberedKey() === remembered;
    byId("api-key").focus();
  });
}
