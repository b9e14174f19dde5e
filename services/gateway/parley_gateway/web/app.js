// Parley's web client: signs in with an API key, lists conversations, streams answers.
// This module wires the page together; the pieces live in modules named for what they do.

import { liveEntry, MessageActions, shownMessages, streamFor } from "./actions.js";
import { Api, ApiError } from "./api.js";
import { Attachments } from "./attach.js";
import { BudgetView } from "./budget.js";
import { ConversationList, UNTITLED } from "./conversations.js";
import { byId } from "./dom.js";
import { DraftEstimate } from "./estimate.js";
import { useMediaApi } from "./media.js";
import { Notice } from "./notice.js";
import { ConversationSearch } from "./search.js";
import { session } from "./session.js";
import { databaseName, HistoryStore, registerServiceWorker } from "./store.js";
import { ResponseStream } from "./stream.js";
import { SyncLoop } from "./sync.js";
import { messagesFromPage, ThreadView, upsertMessage } from "./thread.js";
import { followsPath, showsCurrent } from "./versions.js";

const HISTORY_PAGE = 30;
const AUTO_TITLE_CHARS = 60;
// What the page shows before the first message of a new conversation (created on the server
// only when that message is sent).
const NEW_CONVERSATION = "New conversation";
const OFFLINE_THREAD =
  "This conversation cannot be loaded while Parley cannot be reached. It loads by itself when the connection is back.";

let api = null;
let sync = null;
let currentId = null;
const threads = new Map(); // conversation id -> {messages (oldest first), olderCursor}
const streams = new Map(); // conversation id -> the ResponseStream generating an answer there
let saved = null; // the signed-in key's saved history (store.js), null where there is none
let reachable = true; // false from a request that could not reach the server until one does
let showingSaved = false; // the page shows saved history: the server could not be reached
let sending = false; // a first message waits for its conversation to be created
const found = new Map(); // conversation id -> conversation, from search (maybe not in the list yet)
// The other tabs of this app: one signing out signs out those using the same key.
const tabs = "BroadcastChannel" in window ? new BroadcastChannel("parley") : null;

const notice = new Notice(byId("notice"), byId("notice-close"));
const showNotice = (error, prefix = "") => notice.show(error, prefix);
const clearNotice = () => notice.clear();
const conversations = new ConversationList(byId("conversation-list"), byId("more-conversations"), {
  open: (id) => {
    setSidebar(false);
    openConversation(id);
  },
  rename: renameConversation,
  remove: deleteConversation,
  more: loadMoreConversations,
});
const view = new ThreadView({
  list: byId("messages"),
  scroller: byId("scroller"),
  olderButton: byId("load-older"),
  title: byId("conversation-title"),
  empty: byId("empty"),
  jumpButton: byId("jump-latest"),
  decorate: (node, message) => actions.decorate(node, message),
});
const actions = new MessageActions({
  api: () => api,
  thread: (id) => threads.get(id),
  conversationId: () => currentId,
  busy: (id) => streams.has(id),
  model: pickedModel,
  start: (stream) => {
    track(stream);
    reflect(stream);
    updateComposer();
  },
  view,
  refresh: refreshThread,
  conversation: (conversation) => keepConversation(conversation.id, conversation),
  notice: showNotice,
});
const input = byId("composer-input");
const attachments = new Attachments({
  api: () => api,
  button: byId("attach"),
  input: byId("attach-input"),
  list: byId("attachment-list"),
  message: byId("attach-message"),
  dropZone: byId("composer"),
  pasteTarget: input,
});
attachments.addEventListener("change", () => {
  updateComposer();
  estimate.refresh(); // an image uploaded or removed changes what the draft costs
});
const budget = new BudgetView(byId("budget"));
const estimate = new DraftEstimate({
  input,
  form: byId("composer"),
  modelSelect: byId("model"),
  output: byId("estimate"),
  count: (draft, signal) => api.countTokens(draft, signal),
  context: () =>
    api ? { conversation_id: currentId, model: pickedModel(), media_ids: attachments.uploadedIds() } : null,
  onChange: () => updateComposer(),
});
const search = new ConversationSearch({
  input: byId("search"),
  results: byId("search-results"),
  status: byId("search-status"),
  list: byId("search-list"),
  container: byId("sidebar"),
  search: (q, signal) => api.searchConversations(q, signal),
  open: openFound,
  describe: (error) => (error instanceof ApiError ? error.describe() : String(error?.message ?? error)),
  untitled: UNTITLED,
});

// the connection

function updateConnection() {
  const reconnecting = [...streams.values()].some((s) => s.status === "reconnecting");
  const offline = !navigator.onLine || (!reachable && !reconnecting);
  const text = offline ? "Offline" : reconnecting ? "Reconnecting…" : "Online";
  const node = byId("connection");
  if (node.textContent !== text) node.textContent = text;
  node.dataset.state = text === "Online" ? "online" : "offline";
  byId("offline-note").hidden = !showingSaved;
}

// signing in and out

/**
 * `remembered`: the key this tab (or, remembered on this device, another) signed in with before
 * (it may open saved history offline). `remember`: keep the key on this device (the sign-in form).
 */
async function signIn(key, remembered = false, remember = undefined) {
  const candidate = new Api(key, (error) => {
    if (api === candidate) signOut(error.describe());
  });
  candidate.onBudget = (answer) => {
    if (api === candidate) budget.show(answer);
  };
  candidate.onReachable = (yes) => {
    if (api === candidate) setReachable(yes);
  };
  let models;
  let store = null;
  try {
    models = await candidate.models();
    reachable = true;
  } catch (error) {
    // Reloaded without the server: the saved history of this key, if there is any.
    store = remembered && error.status === 0 ? await HistoryStore.open(key) : null;
    models = await store?.meta("models");
    if (!models) {
      await store?.destroy();
      throw error;
    }
    reachable = false;
  }
  session.signIn(key, remember);
  api = candidate;
  saved = store ?? (await HistoryStore.open(key));
  if (reachable) saved?.saveMeta("models", models);
  if (candidate.budget) budget.show(candidate.budget);
  useMediaApi(api);
  byId("sign-in").hidden = true;
  byId("workspace").hidden = false;
  byId("workspace").setAttribute("aria-busy", "true");
  fillModels(models.data);
  await loadMoreConversations();
  sync = new SyncLoop(api, { get: session.syncCursor, save: session.saveSyncCursor }, applyChange, (error) => {
    if (error.status !== 0) showNotice(error); // offline: the next try will do
  });
  sync.start();
  resumeLiveResponses();
  const wanted = decodeURIComponent(location.hash.slice(1));
  const first = wanted || conversations.items[0]?.id;
  if (currentId === null) {
    // (unless the user already opened or started one)
    if (first) await openConversation(first);
    else startNewConversation();
  }
  byId("workspace").setAttribute("aria-busy", "false");
  input.focus();
}

/** `told`: another tab signed out with this key (it has said so to the others already). */
function signOut(message = "", told = false) {
  // Signing out forgets this key's saved history (and a refused key's), here and in other tabs.
  const key = api?.key ?? session.apiKey();
  if (saved) saved.destroy().catch(() => {});
  else if (key) HistoryStore.destroy(key).catch(() => {});
  if (key && !told) databaseName(key).then((digest) => tabs?.postMessage({ type: "signed-out", key: digest }));
  saved = null;
  showingSaved = false;
  reachable = true;
  budget.clear();
  estimate.clear();
  sync?.stop();
  sync = null;
  for (const stream of streams.values()) stream.close();
  streams.clear();
  threads.clear();
  conversations.clear();
  currentId = null;
  api = null;
  attachments.clear();
  useMediaApi(null);
  session.signOut();
  search.clear();
  found.clear();
  input.value = "";
  resizeComposer();
  document.title = "Parley";
  history.replaceState(null, "", location.pathname);
  clearNotice();
  byId("workspace").hidden = true;
  byId("sign-in").hidden = false;
  byId("sign-in-error").textContent = message;
  byId("api-key").value = "";
  byId("api-key").focus();
}

function fillModels(models) {
  const select = byId("model");
  select.replaceChildren(
    ...models.map((model) => new Option(model.id, model.id, model.default, model.default)),
  );
}

// conversations

async function loadMoreConversations() {
  try {
    const page = await api.listConversations(conversations.nextCursor);
    conversations.addPage(page);
    saved?.saveConversations(page.data);
  } catch (error) {
    if (!(await showSavedConversations(error))) showNotice(error);
  }
}

/** A new conversation: an empty thread here; the server has it once its first message is sent. */
function startNewConversation() {
  if (currentId !== null) leaveConversation(currentId);
  currentId = null;
  history.replaceState(null, "", location.pathname);
  conversations.select(null);
  markGenerating();
  view.show(NEW_CONVERSATION, { messages: [], olderCursor: null });
  estimate.refresh();
  updateComposer();
  input.focus();
}

/** Creates the conversation a first message goes into; its thread is the one on the page. */
async function createConversation() {
  const thread = view.thread;
  const conversation = await api.createConversation("");
  conversations.upsert(conversation);
  saved?.saveConversations([conversation]);
  threads.set(conversation.id, thread ?? { messages: [], olderCursor: null });
  if (currentId === null && view.thread === thread) {
    currentId = conversation.id;
    history.replaceState(null, "", `#${encodeURIComponent(conversation.id)}`);
    saved?.opened(conversation.id);
    conversations.select(conversation.id);
  }
  return conversation.id;
}

function titleOf(id) {
  return conversations.get(id)?.title || found.get(id)?.title || UNTITLED;
}

/**
 * Leaving conversation `id` stops the answer being written there, unless the user lets answers
 * finish in the background (Settings).
 */
function leaveConversation(id) {
  if (!session.settings().backgroundAnswers) stopAnswer(id, "left");
}

/** A search result: opens its conversation, at the message that matched when it is loaded. */
async function openFound(conversation, messageId) {
  found.set(conversation.id, conversation);
  conversations.offer(conversation);
  setSidebar(false);
  await openConversation(conversation.id);
  if (messageId && currentId === conversation.id) view.reveal(messageId);
}

/** Opens a conversation (see leaveConversation for the answer being written in the one left). */
async function openConversation(id) {
  if (currentId !== null && currentId !== id) leaveConversation(currentId);
  currentId = id;
  history.replaceState(null, "", `#${encodeURIComponent(id)}`);
  saved?.opened(id);
  estimate.refresh();
  conversations.select(id);
  markGenerating();
  updateComposer();
  let thread = threads.get(id);
  if (!thread) {
    // Messages sent while the history loads go here, and stay when it arrives.
    thread = { messages: [], olderCursor: null };
    threads.set(id, thread);
    view.show(titleOf(id), null);
    try {
      await loadThread(id, thread);
    } catch (error) {
      if (threads.get(id) === thread) threads.delete(id);
      if (currentId === id) {
        showNotice(error);
        // Offline: it loads when the server answers again (reopenWaiting).
        if (error.status === 0) view.show(titleOf(id), null, OFFLINE_THREAD);
      }
      if (error instanceof ApiError && error.status === 404) forgetConversation(id);
      return;
    }
  }
  if (currentId !== id) return; // another conversation was opened meanwhile
  view.show(titleOf(id), thread);
  input.focus();
}

/** The newest page of history, with what happened here while it loaded on top. */
async function loadThread(id, thread) {
  let page;
  try {
    page = await api.listMessages(id, null, HISTORY_PAGE);
  } catch (error) {
    // The server cannot be reached: the saved messages, if this conversation has some.
    const kept = error.status === 0 ? await saved?.path(id) : null;
    if (!kept) throw error;
    page = { data: kept.reverse(), next_cursor: null }; // newest first, as the API pages
    thread.saved = true;
    showSaved();
  }
  const meanwhile = thread.messages;
  thread.messages = messagesFromPage(page);
  thread.olderCursor = page.next_cursor;
  const oldest = thread.messages[0]?.created_at_ms ?? 0;
  for (const message of meanwhile) {
    // (sync may have brought older ones: they wait for "Load older messages")
    if (!thread.olderCursor || message.created_at_ms >= oldest) upsertMessage(thread.messages, message);
  }
  const stream = streams.get(id);
  if (stream) reflect(stream);
  if (!thread.saved) saved?.saveMessages(id, thread.messages);
}

/**
 * Reads conversation `id`'s path again (another version is current) and shows it in place, once
 * `ready(thread)` (false: not shown; history may not have saved an answer just ended).
 */
async function refreshThread(id, ready = () => true) {
  const thread = { messages: [], olderCursor: null };
  await loadThread(id, thread);
  if (!ready(thread)) return false;
  const shown = view.thread === threads.get(id);
  threads.set(id, thread);
  if (shown) view.redraw(thread);
  // Saved history shows this path offline (store.js path()).
  const conversation = conversations.get(id);
  const leaf = thread.messages.at(-1)?.id;
  if (conversation && leaf) keepConversation(id, { ...conversation, current_message_id: leaf });
  return true;
}

async function loadOlder() {
  const thread = threads.get(currentId);
  if (!thread?.olderCursor) return;
  const button = byId("load-older");
  button.disabled = true;
  try {
    const page = await api.listMessages(currentId, thread.olderCursor, HISTORY_PAGE);
    const older = messagesFromPage(page).filter((m) => !thread.messages.some((known) => known.id === m.id));
    thread.messages.unshift(...older);
    thread.olderCursor = page.next_cursor;
    if (view.thread === thread) view.showOlder();
    if (!thread.olderCursor) byId("messages").focus();
  } catch (error) {
    showNotice(error);
  } finally {
    button.disabled = false;
  }
}

async function renameConversation(id, title) {
  try {
    const renamed = await api.renameConversation(id, title);
    conversations.upsert(renamed);
    saved?.saveConversations([renamed]);
    if (currentId === id) view.setTitle(titleOf(id));
  } catch (error) {
    showNotice(error);
    if (error instanceof ApiError && error.status === 404) forgetConversation(id);
  }
}

async function deleteConversation(id) {
  try {
    await streams.get(id)?.stop();
    await api.deleteConversation(id);
    forgetConversation(id);
  } catch (error) {
    showNotice(error);
    if (error instanceof ApiError && error.status === 404) forgetConversation(id);
  }
}

function forgetConversation(id, why = "") {
  streams.get(id)?.close();
  streams.delete(id);
  threads.delete(id);
  conversations.remove(id);
  saved?.removeConversation(id);
  if (currentId === id) {
    currentId = null;
    history.replaceState(null, "", location.pathname);
    view.show(NEW_CONVERSATION, { messages: [], olderCursor: null });
    updateComposer();
    if (why) showNotice(why);
  }
}

// sync: changes made elsewhere (another tab, another device, or while offline)

function applyChange(change) {
  const id = change.conversation_id;
  if (change.type === "conversation.deleted") {
    saved?.removeConversation(id);
    if (conversations.get(id)) forgetConversation(id, "This conversation was deleted elsewhere.");
    return;
  }
  if (change.conversation) {
    conversations.offer(change.conversation);
    if (conversations.get(id)) saved?.saveConversations([conversations.get(id)]);
    if (currentId === id) view.setTitle(titleOf(id));
  }
  const current = change.type === "conversation.updated" ? change.current_message_id : null;
  if (current) {
    // Another version was made current (elsewhere): saved so, and the path is read again.
    const known = conversations.get(id);
    if (known && known.current_message_id !== current) keepConversation(id, { ...known, current_message_id: current });
    const shown = threads.get(id);
    if (shown && !shown.saved && !streams.has(id) && !showsCurrent(shown, current)) refreshThread(id).catch(() => {});
  }
  if (change.message) {
    conversations.touch(id, change.changed_at_ms);
    const thread = threads.get(id);
    const live = streams.get(id);
    // The answer streaming here is ahead of history; it settles itself when it ends.
    if (!thread) saved?.addMessage(id, change.message);
    if (!thread || (live && live.responseId === change.message.id)) return;
    // Older than the pages loaded so far: it appears when the user loads older messages.
    if (thread.olderCursor && change.message.created_at_ms < (thread.messages[0]?.created_at_ms ?? 0)) return;
    if (!followsPath(thread, change.message)) {
      // Another version (made elsewhere): where it goes, the server's path says.
      saved?.addMessage(id, change.message);
      if (!live && !thread.saved) refreshThread(id).catch(() => {});
      return;
    }
    const message = upsertMessage(thread.messages, { ...change.message, key: change.message.id });
    if (!thread.saved) saved?.addMessage(id, change.message);
    if (view.thread === thread) view.update(message);
  }
}

// streaming answers

/** Shows a stream's state in its own conversation's thread, and nowhere else. */
function reflect(stream) {
  updateConnection();
  markGenerating();
  const thread = threads.get(stream.conversationId);
  if (!thread || stream.error?.code === "response_not_found") return;
  if (stream.refused) {
    if (stream.action) return; // (actions.js reads the thread again)
    // Never accepted: no trace of it in the thread (its draft goes back in the box).
    const keys = new Set(shownMessages(stream, thread).map((m) => m.key));
    thread.messages = thread.messages.filter((m) => !keys.has(m.key));
    if (view.thread === thread) view.show(titleOf(stream.conversationId), thread);
    return;
  }
  const shown = shownMessages(stream, thread).map((m) => upsertMessage(thread.messages, m));
  if (view.thread === thread) for (const message of shown) view.update(message);
}

function track(stream) {
  streams.set(stream.conversationId, stream);
  stream.addEventListener("change", () => reflect(stream));
  stream.addEventListener("started", () => {
    session.rememberLive(stream.responseId, liveEntry(stream));
    // The message is accepted: a conversation without a title is named after it.
    const conversation = conversations.get(stream.conversationId);
    if (conversation && !conversation.title && stream.startedHere) {
      const title = stream.content.replace(/\s+/g, " ").trim().slice(0, AUTO_TITLE_CHARS);
      renameConversation(stream.conversationId, title);
    }
  });
  stream.addEventListener("end", () => {
    if (streams.get(stream.conversationId) === stream) streams.delete(stream.conversationId);
    if (stream.responseId) session.forgetLive(stream.responseId);
    markGenerating();
    if (stream.action) actions.ended(stream); // (a new version: the thread is read again)
    if (stream.refused && stream.action) {
      updateComposer();
      return;
    }
    if (stream.refused) {
      restoreDraft(stream.content, stream.media);
      const where = currentId === stream.conversationId ? "" : ` in “${titleOf(stream.conversationId)}”`;
      showNotice(stream.error, `Your message${where} was not sent; it is back in the box. `);
      updateComposer();
      return;
    }
    conversations.touch(stream.conversationId);
    updateComposer();
    updateConnection();
    keepConversation(stream.conversationId);
    budget.afterAnswer(() => api?.models());
    if (stream.error?.code === "response_not_found") {
      // Its replay log is gone: history has the answer.
      threads.delete(stream.conversationId);
      if (currentId === stream.conversationId) openConversation(currentId);
    } else if (stream.error) {
      const where = currentId === stream.conversationId ? "" : `In “${titleOf(stream.conversationId)}”: `;
      showNotice(stream.error, where);
    }
  });
  stream.run();
}

/**
 * Asks the server to stop the answer being generated in conversation `id`: `reason` "user" (the
 * Stop button, Escape) or "left" (the user left the conversation). Its stream reads on to the
 * end, so the partial answer it keeps, marked interrupted, is the text the server saved.
 */
function stopAnswer(id, reason) {
  const stream = streams.get(id);
  if (!stream || stream.finished) return;
  stream.stopReason ??= reason;
  const stopping = stream.stop(); // (it marks the stream stopping at once)
  updateComposer();
  stopping.catch((error) => {
    const where = currentId === id ? "" : `In “${titleOf(id)}”: `;
    showNotice(error, where);
  });
}

function resumeLiveResponses() {
  for (const [responseId, entry] of Object.entries(session.liveResponses())) {
    if (!streams.has(entry.conversationId)) track(streamFor(api, { ...entry, responseId }));
  }
}

/** The sidebar marks "generating…" the conversations other than this one where an answer is written. */
function markGenerating() {
  const ids = new Set();
  for (const [id, stream] of streams) {
    if (id !== currentId && !stream.finished && !stream.stopRequested) ids.add(id);
  }
  conversations.showGenerating(ids);
}

/** Sends the composer's text (already taken out of the box) with its uploaded images. */
async function send(content) {
  const media = attachments.take();
  clearNotice();
  let id = currentId;
  if (id === null) {
    sending = true; // (the box is empty meanwhile: a second Enter sends nothing)
    try {
      id = await createConversation();
    } catch (error) {
      restoreDraft(content, media);
      showNotice(error, "Your message was not sent; it is back in the box. ");
      return;
    } finally {
      sending = false;
      updateComposer();
    }
  }
  if (streams.has(id)) {
    restoreDraft(content, media);
    return;
  }
  const stream = new ResponseStream(api, { conversationId: id, content, model: pickedModel(), media });
  stream.startedHere = true;
  track(stream);
  reflect(stream);
  conversations.touch(id);
  updateComposer();
  if (currentId !== id) leaveConversation(id); // the user went elsewhere while it was created
}

/** A message that was not sent goes back in the box (before whatever was typed since). */
function restoreDraft(content, media = []) {
  const typed = input.value.trim();
  input.value = typed && typed !== content.trim() ? `${content}\n\n${input.value}` : content;
  attachments.restore(media);
  resizeComposer();
  estimate.refresh();
  updateComposer();
}

/** The composer grows with its text, up to its CSS max-height (then it scrolls). */
function resizeComposer() {
  input.style.height = "auto";
  if (input.value) input.style.height = `${input.scrollHeight + input.offsetHeight - input.clientHeight}px`;
}

/** The model the user picked; null for the default, which leaves the server free to route. */
function pickedModel() {
  const picked = byId("model").selectedOptions[0];
  return picked && !picked.defaultSelected ? picked.value : null;
}

/** Why the draft cannot be sent now: {text, shownIn (the id of the element saying it)}, or null. */
function sendRefusal() {
  if (sending) return { text: "Sending…", shownIn: null };
  const held = attachments.holdsBack();
  if (held) return held;
  if (estimate.refusal) return { text: estimate.refusal, shownIn: "estimate" };
  return null;
}

/** The one button: Stop while an answer is written here, else Send (disabled, with the reason, when it cannot). */
function updateComposer() {
  const button = byId("send");
  const stream = currentId === null ? null : streams.get(currentId);
  const refusal = stream ? null : sendRefusal();
  const label = stream ? "Stop" : "Send";
  if (button.textContent !== label) button.textContent = label;
  button.dataset.action = stream ? "stop" : "send";
  button.classList.toggle("primary", !stream);
  button.disabled = stream ? stream.stopRequested || stream.finished : refusal !== null;
  button.title = stream ? "Stop the answer (Escape)" : (refusal?.text ?? "");
  if (refusal?.shownIn) button.setAttribute("aria-describedby", refusal.shownIn);
  else button.removeAttribute("aria-describedby");
  if (button.disabled && document.activeElement === button) input.focus();
}

// saved history: read without the server (store.js keeps it, sw.js keeps the app's files)

function showSaved() {
  showingSaved = true;
  updateConnection();
}

function setReachable(yes) {
  if (reachable === yes) return;
  reachable = yes;
  updateConnection();
  if (!yes) return;
  if (notice.aboutNetwork) clearNotice(); // (it said the server cannot be reached)
  leaveSavedHistory();
  reopenWaiting();
}

/** The conversation on the page could not be loaded offline: load it now. */
function reopenWaiting() {
  if (api && currentId !== null && !threads.has(currentId)) openConversation(currentId);
}

/** The server cannot be reached at sign-in: the saved conversation list instead. */
async function showSavedConversations(error) {
  if (error.status !== 0 || !saved || conversations.items.length) return false;
  const list = await saved.conversations();
  if (!list.length) return false;
  conversations.addPage({ data: list, next_cursor: null });
  showSaved();
  return true;
}

/** Saves a conversation as it is now: its place in the list and the messages held here. */
function keepConversation(id, changed = null) {
  if (changed) conversations.upsert(changed);
  const conversation = conversations.get(id);
  if (conversation) saved?.saveConversations([conversation]);
  const thread = threads.get(id);
  if (thread && !thread.saved) saved?.saveMessages(id, thread.messages);
}

/** The server answers again: what was shown from saved history comes from it now. */
async function leaveSavedHistory() {
  if (!showingSaved || !api) return;
  showingSaved = false;
  updateConnection();
  try {
    const page = await api.listConversations(null);
    conversations.addPage(page);
    saved?.saveConversations(page.data);
  } catch (error) {
    if (error.status === 0) {
      showSaved(); // gone again
      return;
    }
    showNotice(error);
  }
  for (const [id, thread] of [...threads]) {
    if (!thread.saved) continue;
    if (id !== currentId) {
      threads.delete(id); // loaded again when opened
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
  sync?.now();
}

// the page

function setSidebar(open) {
  byId("sidebar").classList.toggle("open", open);
  byId("toggle-sidebar").setAttribute("aria-expanded", String(open));
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
byId("new-conversation").addEventListener("click", () => {
  setSidebar(false);
  startNewConversation();
});
byId("load-older").addEventListener("click", loadOlder);
byId("notice-close").addEventListener("click", () => {
  clearNotice();
  input.focus();
});
byId("toggle-sidebar").addEventListener("click", () => {
  const open = !byId("sidebar").classList.contains("open");
  setSidebar(open);
  if (open) byId("new-conversation").focus();
});
byId("sidebar").addEventListener("keydown", (event) => {
  if (event.key === "Escape" && byId("sidebar").classList.contains("open")) {
    setSidebar(false);
    byId("toggle-sidebar").focus();
  }
});
// A tap outside the open drawer (on the veil the style sheet lays over the page, which belongs
// to the workspace itself) closes it.
byId("workspace").addEventListener("click", (event) => {
  if (event.target !== byId("workspace") || !byId("sidebar").classList.contains("open")) return;
  const hadFocus = byId("sidebar").contains(document.activeElement);
  setSidebar(false);
  if (hadFocus) byId("toggle-sidebar").focus();
});
byId("composer").addEventListener("submit", (event) => {
  event.preventDefault();
  const content = input.value.trim();
  // (while an answer is written here the button is Stop: Enter keeps the draft for later)
  if (!content || byId("send").disabled || byId("send").dataset.action === "stop") return;
  if (!navigator.onLine || !reachable) {
    showNotice("You are offline: the message was not sent. It stays in the box; send it once Parley can be reached.");
    sync?.now(); // (it may be back: then the next try goes out)
    return;
  }
  input.value = "";
  resizeComposer();
  send(content);
});
input.addEventListener("input", resizeComposer);
input.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    byId("composer").requestSubmit();
  }
});
byId("send").addEventListener("click", () => {
  if (byId("send").dataset.action === "stop") stopAnswer(currentId, "user");
  else byId("composer").requestSubmit();
});
// Escape stops the answer being written here (the drawer, the rename box and the search box
// have an Escape of their own).
document.addEventListener("keydown", (event) => {
  if (event.key !== "Escape" || event.defaultPrevented || event.isComposing) return;
  if (event.target.closest?.("#sidebar, #sign-in") || currentId === null) return;
  const stream = streams.get(currentId);
  if (!stream || stream.finished || stream.stopRequested) return;
  event.preventDefault();
  stopAnswer(currentId, "user");
});
byId("background-answers").checked = session.settings().backgroundAnswers;
byId("background-answers").addEventListener("change", (event) => {
  session.saveSettings({ backgroundAnswers: event.target.checked });
});
// Signing out in another tab deleted this key's saved history and forgot it on this device:
// this tab signs out too. (Told by the key's digest, never the key.)
tabs?.addEventListener("message", async (event) => {
  if (event.data?.type !== "signed-out" || !api) return;
  const key = api.key;
  if ((await databaseName(key)) === event.data.key && api?.key === key) signOut("", true);
});
window.addEventListener("online", () => {
  for (const stream of streams.values()) stream.retryNow();
  updateConnection();
});
window.addEventListener("offline", updateConnection);

registerServiceWorker();
const remembered = session.apiKey();
if (remembered) {
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
} else {
  byId("sign-in").hidden = false;
  byId("api-key").focus();
}
