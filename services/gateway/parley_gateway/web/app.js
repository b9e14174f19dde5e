// Parley's web client: signs in with an API key, lists conversations, streams answers.
// This module wires the page together; the pieces live in modules named for what they do.

import { Api, ApiError } from "./api.js";
import { ConversationList, UNTITLED } from "./conversations.js";
import { byId } from "./dom.js";
import { session } from "./session.js";
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
  const text = !navigator.onLine ? "Offline" : reconnecting ? "Reconnecting…" : "Online";
  const node = byId("connection");
  if (node.textContent !== text) node.textContent = text;
  node.dataset.state = text === "Online" ? "online" : "offline";
}

// signing in and out

async function signIn(key) {
  const candidate = new Api(key, (error) => {
    if (api === candidate) signOut(error.describe());
  });
  const models = await candidate.models();
  session.signIn(key);
  api = candidate;
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
  sync?.stop();
  sync = null;
  for (const stream of streams.values()) stream.close();
  streams.clear();
  threads.clear();
  conversations.clear();
  currentId = null;
  api = null;
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
    conversations.addPage(await api.listConversations(conversations.nextCursor));
  } catch (error) {
    showNotice(error);
  }
}

async function newConversation() {
  try {
    const conversation = await api.createConversation("");
    conversations.upsert(conversation);
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

async function openConversation(id) {
  currentId = id;
  history.replaceState(null, "", `#${encodeURIComponent(id)}`);
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
  const page = await api.listMessages(id, null, HISTORY_PAGE);
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
    conversations.upsert(await api.renameConversation(id, title));
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
    if (conversations.get(id)) forgetConversation(id, "This conversation was deleted elsewhere.");
    return;
  }
  if (change.conversation) {
    conversations.offer(change.conversation);
    if (currentId === id) byId("conversation-title").textContent = titleOf(id);
  }
  if (change.message) {
    conversations.touch(id, change.changed_at_ms);
    const thread = threads.get(id);
    const live = streams.get(id);
    // The answer streaming here is ahead of history; it settles itself when it ends.
    if (!thread || (live && live.responseId === change.message.id)) return;
    // Older than the pages loaded so far: it appears when the user loads older messages.
    if (thread.olderCursor && change.message.created_at_ms < (thread.messages[0]?.created_at_ms ?? 0)) return;
    const message = upsertMessage(thread.messages, { ...change.message, key: change.message.id });
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

function resumeLiveResponses() {
  for (const [responseId, entry] of Object.entries(session.liveResponses())) {
    if (!streams.has(entry.conversationId)) track(new ResponseStream(api, { ...entry, responseId }));
  }
}

async function send(content) {
  const id = currentId ?? (await newConversation());
  if (!id || streams.has(id)) return;
  clearNotice();
  const stream = new ResponseStream(api, { conversationId: id, content, model: pickedModel() });
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
  byId("send").disabled = streaming;
  byId("stop").disabled = !streaming;
  if (!streaming && document.activeElement === byId("stop")) input.focus();
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
  input.value = "";
  send(content);
});
input.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    byId("composer").requestSubmit();
  }
});
byId("stop").addEventListener("click", () => {
  streams.get(currentId)?.stop().catch((error) => showNotice(error));
});
window.addEventListener("online", () => {
  for (const stream of streams.values()) stream.retryNow();
  updateConnection();
});
window.addEventListener("offline", updateConnection);

const remembered = session.apiKey();
if (remembered) {
  signIn(remembered).catch((error) => {
    signOut(error instanceof ApiError ? error.describe() : String(error));
    if (!(error instanceof ApiError && error.status === 401)) byId("api-key").value = remembered;
  });
} else {
  byId("sign-in").hidden = false;
  byId("api-key").focus();
}
