// Conversations: opening one (its thread loaded from the server, else from saved history),
// starting, creating, renaming, deleting and forgetting one, and paging through the list and
// a thread's older messages. What is loaded lives in state.js; the sidebar and the thread on the
// page (page.js) show it.

import { reflect, stopAnswer } from "./answers.js";
import { ApiError } from "./api.js";
import { estimate, input, updateComposer } from "./composer.js";
import { UNTITLED } from "./conversations.js";
import { byId } from "./dom.js";
import { showSaved, showSavedConversations } from "./offline.js";
import { conversations, setSidebar, showNotice, view } from "./page.js";
import { session } from "./session.js";
import { setCurrentId, setEntry, state } from "./state.js";
import { messagesFromPage, upsertMessage } from "./thread.js";

const HISTORY_PAGE = 30;
// What the page shows before the first message of a new conversation (created on the server
// only when that message is sent).
const NEW_CONVERSATION = "New conversation";
const OFFLINE_THREAD =
  "This conversation cannot be loaded while Parley cannot be reached. It loads by itself when the connection is back.";
const emptyThread = () => ({ messages: [], olderCursor: null });

/** The conversation on the page is `id` (null: a new one): in the address and the sidebar too. */
function setCurrent(id) {
  setCurrentId(id);
  history.replaceState(null, "", id === null ? location.pathname : `#${encodeURIComponent(id)}`);
  if (id !== null) state.saved?.opened(id);
}

export async function loadMoreConversations() {
  try {
    const page = await state.api.listConversations(conversations.nextCursor);
    conversations.addPage(page);
    state.saved?.saveConversations(page.data);
  } catch (error) {
    if (!(await showSavedConversations(error))) showNotice(error);
  }
}

/** A new conversation: an empty thread here; the server has it once its first message is sent. */
export function startNewConversation() {
  if (state.currentId !== null) leaveConversation(state.currentId);
  setCurrent(null);
  conversations.select(null);
  view.show(NEW_CONVERSATION, emptyThread());
  estimate.refresh();
  updateComposer();
  input.focus();
}

/** Creates the conversation a first message goes into; its thread is the one on the page. */
export async function createConversation() {
  const thread = view.thread;
  const conversation = await state.api.createConversation("");
  conversations.upsert(conversation);
  state.saved?.saveConversations([conversation]);
  setEntry("threads", conversation.id, thread ?? emptyThread());
  if (state.currentId === null && view.thread === thread) {
    setCurrent(conversation.id);
    conversations.select(conversation.id);
  }
  return conversation.id;
}

export function titleOf(id) {
  return conversations.get(id)?.title || state.found.get(id)?.title || UNTITLED;
}

/**
 * Leaving conversation `id` stops the answer being written there, unless the user lets answers
 * finish in the background (Settings).
 */
export function leaveConversation(id) {
  if (!session.settings().backgroundAnswers) stopAnswer(id, "left");
}

/** A search result: opens its conversation, at the message that matched when it is loaded. */
export async function openFound(conversation, messageId) {
  setEntry("found", conversation.id, conversation);
  conversations.offer(conversation);
  setSidebar(false);
  await openConversation(conversation.id);
  if (messageId && state.currentId === conversation.id) view.reveal(messageId);
}

/** Opens a conversation (see leaveConversation for the answer being written in the one left). */
export async function openConversation(id) {
  // The composer gets the focus once the thread shows, unless the user has moved it meanwhile
  // (typing in the search box while the history loads keeps its keys there).
  const focused = document.activeElement;
  if (state.currentId !== null && state.currentId !== id) leaveConversation(state.currentId);
  setCurrent(id);
  estimate.refresh();
  conversations.select(id);
  updateComposer();
  let thread = state.threads.get(id);
  if (!thread) {
    // Messages sent while the history loads go here, and stay when it arrives.
    thread = emptyThread();
    setEntry("threads", id, thread);
    view.show(titleOf(id), null);
    try {
      await loadThread(id, thread);
    } catch (error) {
      if (state.threads.get(id) === thread) setEntry("threads", id, undefined);
      if (state.currentId === id) {
        showNotice(error);
        // Offline: it loads when the server answers again (reopenWaiting).
        if (error.status === 0) view.show(titleOf(id), null, OFFLINE_THREAD);
      }
      if (error instanceof ApiError && error.status === 404) forgetConversation(id);
      return;
    }
  }
  if (state.currentId !== id) return; // another conversation was opened meanwhile
  view.show(titleOf(id), thread);
  const now = document.activeElement;
  if (now === focused || now === null || now === document.body) input.focus();
}

/** The newest page of history, with what happened here while it loaded on top. */
export async function loadThread(id, thread) {
  let page;
  try {
    page = await state.api.listMessages(id, null, HISTORY_PAGE);
  } catch (error) {
    // The server cannot be reached: the saved messages, if this conversation has some.
    const kept = error.status === 0 ? await state.saved?.path(id) : null;
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
  const stream = state.streams.get(id);
  if (stream) reflect(stream);
  if (!thread.saved) state.saved?.saveMessages(id, thread.messages);
}

/**
 * Reads conversation `id`'s path again (another version is current) and shows it in place, once
 * `ready(thread)` (false: not shown; history may not have saved an answer just ended).
 */
export async function refreshThread(id, ready = () => true) {
  const thread = emptyThread();
  await loadThread(id, thread);
  if (!ready(thread)) return false;
  const shown = view.thread === state.threads.get(id);
  setEntry("threads", id, thread);
  if (shown) view.redraw(thread);
  // Saved history shows this path offline (store.js path()).
  const conversation = conversations.get(id);
  const leaf = thread.messages.at(-1)?.id;
  if (conversation && leaf) keepConversation(id, { ...conversation, current_message_id: leaf });
  return true;
}

export async function loadOlder() {
  const id = state.currentId;
  const thread = state.threads.get(id);
  if (!thread?.olderCursor) return;
  const button = byId("load-older");
  button.disabled = true;
  try {
    const page = await state.api.listMessages(id, thread.olderCursor, HISTORY_PAGE);
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

/** Saves a conversation as it is now: its place in the list and the messages held here. */
export function keepConversation(id, changed = null) {
  if (changed) conversations.upsert(changed);
  const conversation = conversations.get(id);
  if (conversation) state.saved?.saveConversations([conversation]);
  const thread = state.threads.get(id);
  if (thread && !thread.saved) state.saved?.saveMessages(id, thread.messages);
}

export async function renameConversation(id, title) {
  try {
    const renamed = await state.api.renameConversation(id, title);
    conversations.upsert(renamed);
    state.saved?.saveConversations([renamed]);
    if (state.currentId === id) view.setTitle(titleOf(id));
  } catch (error) {
    showNotice(error);
    if (error instanceof ApiError && error.status === 404) forgetConversation(id);
  }
}

export async function deleteConversation(id) {
  try {
    await state.streams.get(id)?.stop();
    await state.api.deleteConversation(id);
    forgetConversation(id);
  } catch (error) {
    showNotice(error);
    if (error instanceof ApiError && error.status === 404) forgetConversation(id);
  }
}

export function forgetConversation(id, why = "") {
  state.streams.get(id)?.close();
  setEntry("streams", id, undefined);
  setEntry("threads", id, undefined);
  conversations.remove(id);
  state.saved?.removeConversation(id);
  if (state.currentId === id) {
    setCurrent(null);
    view.show(NEW_CONVERSATION, emptyThread());
    updateComposer();
    if (why) showNotice(why);
  }
}
