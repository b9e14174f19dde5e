// Parley's web client: signs in with an API key, lists conversations, streams answers.
// This module wires the page together; the pieces live in modules named for what they do.

import { Api, ApiError } from "./api.js";
import { Attachments } from "./attach.js";
import { BudgetView } from "./budget.js";
import { ConversationList, UNTITLED } from "./conversations.js";
import { byId } from "./dom.js";
import { DraftEstimate } from "./estimate.js";
import { promptOf, useMediaApi } from "./media.js";
import { session } from "./session.js";
import { HistoryStore, registerServiceWorker } from "./store.js";
import { ResponseStream } from "./stream.js";
import { SyncLoop } from "./sync.js";
import { messagesFromPage, ThreadView, upsertMessage } from "./thread.js";

const HISTORY_PAGE = 30;
const AUTO_TITLE_CHARS = 60;

let api = null;
let sync = null;
let currentId = null;
const threads = new Map(); // conversation id -> {messages (oldest first), olderCursor}
const streams = new Map(); // conversation id -> the ResponseStream generating an answer there
let saved = null; // the signed-in key's saved history (store.js), null where there is none
let reachable = true; // false from a request that could not reach the server until one does
let showingSaved = false; // the page shows saved history: the server could not be reached

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
});

// notices

function showNotice(error, prefix = "") {
  if (error?.name === "AbortError") return;
  const text = error instanceof ApiError ? error.describe() : String(error?.message ?? error);
  byId("notice").textContent = prefix + text;
  byId("notice-close").hidden = false;
}

function clearNotice() {
  byId("notice").textContent = "";
  byId("notice-close").hidden = true;
}

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

/** `remembered`: the key this tab signed in with before a reload (it may open saved history offline). */
async function signIn(key, remembered = false) {
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
  session.signIn(key);
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
    else view.show(UNTITLED, { messages: [], olderCursor: null });
  }
  byId("workspace").setAttribute("aria-busy", "false");
  input.focus();
}

function signOut(message = "") {
  // Signing out forgets this key's saved history (and a refused key's).
  const key = api?.key ?? session.apiKey();
  if (saved) saved.destroy().catch(() => {});
  else if (key) HistoryStore.destroy(key).catch(() => {});
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

async function newConversation() {
  try {
    const conversation = await api.createConversation("");
    conversations.upsert(conversation);
    saved?.saveConversations([conversation]);
    await openConversation(conversation.id);
    return conversation.id;
  } catch (error) {
    showNotice(error);
    return null;
  }
}

function titleOf(id) {
  return conversations.get(id)?.title || UNTITLED;
}

/** Opens a conversation. Leaving one whose answer is still being generated stops that answer. */
async function openConversation(id) {
  if (currentId !== null && currentId !== id) stopAnswer(currentId);
  currentId = id;
  history.replaceState(null, "", `#${encodeURIComponent(id)}`);
  saved?.opened(id);
  estimate.refresh();
  conversations.select(id);
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
      if (currentId === id) showNotice(error);
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
    const kept = error.status === 0 ? await saved?.messages(id) : null;
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
    if (currentId === id) byId("conversation-title").textContent = titleOf(id);
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
    view.show(UNTITLED, { messages: [], olderCursor: null });
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
    if (currentId === id) byId("conversation-title").textContent = titleOf(id);
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
    const message = upsertMessage(thread.messages, { ...change.message, key: change.message.id });
    if (!thread.saved) saved?.addMessage(id, change.message);
    if (view.thread === thread) view.update(message);
  }
}

// streaming answers

function userMessageOf(stream) {
  const unsent = stream.error !== null && stream.responseId === null;
  return {
    key: stream.clientMessageId,
    id: stream.clientMessageId,
    role: "user",
    content: stream.content,
    media: stream.media,
    status: unsent ? "unsent" : "complete",
    created_at_ms: stream.startedAt,
  };
}

function answerOf(stream) {
  return {
    key: `answer:${stream.clientMessageId}`,
    id: stream.responseId,
    role: "assistant",
    content: stream.text,
    images: stream.images.map((image) => ({ ...image, alt: promptOf(stream.content) })),
    status: stream.status,
    usage: stream.usage,
    model: stream.model,
    error: stream.error,
    stopping: stream.stopRequested,
    queue: stream.queue,
    created_at_ms: stream.startedAt + 1,
  };
}

/** Shows a stream's state in its own conversation's thread, and nowhere else. */
function reflect(stream) {
  updateConnection();
  const thread = threads.get(stream.conversationId);
  if (!thread || stream.error?.code === "response_not_found") return;
  const shown = [userMessageOf(stream), answerOf(stream)].map((m) => upsertMessage(thread.messages, m));
  if (view.thread === thread) for (const message of shown) view.update(message);
}

function track(stream) {
  streams.set(stream.conversationId, stream);
  stream.addEventListener("change", () => reflect(stream));
  stream.addEventListener("started", () => {
    const { conversationId, clientMessageId, content } = stream;
    session.rememberLive(stream.responseId, { conversationId, clientMessageId, content });
  });
  stream.addEventListener("end", () => {
    if (streams.get(stream.conversationId) === stream) streams.delete(stream.conversationId);
    if (stream.responseId) session.forgetLive(stream.responseId);
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
 * Asks the server to stop the answer being generated in conversation `id` (the Stop button, or
 * leaving the conversation). Its stream reads on to the end, so the partial answer it keeps,
 * marked interrupted, is the text the server saved.
 */
function stopAnswer(id) {
  const stream = streams.get(id);
  if (!stream || stream.finished) return;
  stream.stop().catch((error) => {
    const where = currentId === id ? "" : `In “${titleOf(id)}”: `;
    showNotice(error, where);
  });
}

function resumeLiveResponses() {
  for (const [responseId, entry] of Object.entries(session.liveResponses())) {
    if (!streams.has(entry.conversationId)) track(new ResponseStream(api, { ...entry, responseId }));
  }
}

async function send(content) {
  const id = currentId ?? (await newConversation());
  if (!id || streams.has(id)) return;
  clearNotice();
  const media = attachments.take();
  const stream = new ResponseStream(api, { conversationId: id, content, model: pickedModel(), media });
  track(stream);
  reflect(stream);
  conversations.touch(id);
  updateComposer();
  const conversation = conversations.get(id);
  if (conversation && !conversation.title) {
    renameConversation(id, content.replace(/\s+/g, " ").trim().slice(0, AUTO_TITLE_CHARS));
  }
}

/** The model the user picked; null for the default, which leaves the server free to route. */
function pickedModel() {
  const picked = byId("model").selectedOptions[0];
  return picked && !picked.defaultSelected ? picked.value : null;
}

function updateComposer() {
  const streaming = currentId !== null && streams.has(currentId);
  // An image still uploading (or failed) holds the message back.
  byId("send").disabled = streaming || attachments.pending;
  byId("stop").disabled = !streaming;
  if (!streaming && document.activeElement === byId("stop")) input.focus();
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
  if (yes) leaveSavedHistory();
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
function keepConversation(id) {
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
    await signIn(key);
  } catch (error) {
    byId("sign-in-error").textContent = error instanceof ApiError ? error.describe() : String(error);
  } finally {
    button.disabled = false;
  }
});
byId("sign-out").addEventListener("click", () => signOut());
byId("new-conversation").addEventListener("click", () => {
  setSidebar(false);
  newConversation();
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
byId("composer").addEventListener("submit", (event) => {
  event.preventDefault();
  const content = input.value.trim();
  if (!content || byId("send").disabled) return;
  if (!navigator.onLine || !reachable) {
    showNotice("You are offline: the message was not sent. It stays in the box; send it once Parley can be reached.");
    sync?.now(); // (it may be back: then the next try goes out)
    return;
  }
  input.value = "";
  send(content);
});
input.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    byId("composer").requestSubmit();
  }
});
byId("stop").addEventListener("click", () => stopAnswer(currentId));
window.addEventListener("online", () => {
  for (const stream of streams.values()) stream.retryNow();
  updateConnection();
});
window.addEventListener("offline", updateConnection);

registerServiceWorker();
const remembered = session.apiKey();
if (remembered) {
  signIn(remembered, true).catch((error) => {
    signOut(error instanceof ApiError ? error.describe() : String(error));
    if (!(error instanceof ApiError && error.status === 401)) byId("api-key").value = remembered;
  });
} else {
  byId("sign-in").hidden = false;
  byId("api-key").focus();
}
