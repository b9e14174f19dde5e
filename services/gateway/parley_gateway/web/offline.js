// Online or not: the indicator in the top bar, and what the page shows without the server (the
// saved history store.js keeps; sw.js keeps the app's files). Whether the server answers lives
// in state.js (reachable, showingSaved); the indicator shows it, and the streams reconnecting.

import { loadThread, openConversation, titleOf } from "./conversation.js";
import { byId } from "./dom.js";
import { clearNotice, conversations, notice, showNotice, view } from "./page.js";
import { setConnection, setEntry, state, subscribe } from "./state.js";

/** The indicator: Online, Reconnecting… (an answer's stream) or Offline; the saved-history note. */
function updateConnection() {
  const reconnecting = [...state.streams.values()].some((s) => s.status === "reconnecting");
  const offline = !navigator.onLine || (!state.reachable && !reconnecting);
  const text = offline ? "Offline" : reconnecting ? "Reconnecting…" : "Online";
  const node = byId("connection");
  if (node.textContent !== text) node.textContent = text;
  node.dataset.state = text === "Online" ? "online" : "offline";
  byId("offline-note").hidden = !state.showingSaved;
}
subscribe(["connection", "streams", "stream"], updateConnection);
window.addEventListener("online", () => {
  for (const stream of state.streams.values()) stream.retryNow();
  updateConnection();
});
window.addEventListener("offline", updateConnection);

/** The page shows saved history: the server could not be reached. */
export function showSaved() {
  setConnection({ showingSaved: true });
}

/** Whether a request reached the server (Api.onReachable). */
export function setReachable(yes) {
  if (state.reachable === yes) return;
  setConnection({ reachable: yes });
  if (!yes) return;
  if (notice.aboutNetwork) clearNotice(); // (it said the server cannot be reached)
  leaveSavedHistory();
  reopenWaiting();
}

/** The conversation on the page could not be loaded offline: load it now. */
function reopenWaiting() {
  if (state.api && state.currentId !== null && !state.threads.has(state.currentId)) openConversation(state.currentId);
}

/** The server cannot be reached at sign-in: the saved conversation list instead. */
export async function showSavedConversations(error) {
  if (error.status !== 0 || !state.saved || conversations.items.length) return false;
  const list = await state.saved.conversations();
  if (!list.length) return false;
  conversations.addPage({ data: list, next_cursor: null });
  showSaved();
  return true;
}

/** The server answers again: what was shown from saved history comes from it now. */
async function leaveSavedHistory() {
  if (!state.showingSaved || !state.api) return;
  setConnection({ showingSaved: false });
  try {
    const page = await state.api.listConversations(null);
    conversations.addPage(page);
    state.saved?.saveConversations(page.data);
  } catch (error) {
    if (error.status === 0) {
      showSaved(); // gone again
      return;
    }
    showNotice(error);
  }
  for (const [id, thread] of [...state.threads]) {
    if (!thread.saved) continue;
    if (id !== state.currentId) {
      setEntry("threads", id, undefined); // loaded again when opened
      continue;
    }
    delete thread.saved;
    try {
      await loadThread(id, thread);
    } catch (error) {
      if (error.status !== 0) showNotice(error);
      continue;
    }
    if (view.thread === thread) view.show(titleOf(id), thread);
  }
  state.sync?.now();
}
