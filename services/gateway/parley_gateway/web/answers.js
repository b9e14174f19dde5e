// Answers being written: a message sent (and the conversation created for it), the streams in
// flight (stream.js; actions.js for regenerate, edit, continue), stopping them, and picking them
// up again after a reload. A stream's state is shown in its own conversation's thread only.

import { liveEntry, shownMessages, streamFor } from "./answer-streams.js";
import { budget, pickedModel, restoreDraft, updateComposer } from "./composer.js";
import {
  createConversation,
  keepConversation,
  leaveConversation,
  openConversation,
  renameConversation,
  titleOf,
} from "./conversation.js";
import { actions, clearNotice, conversations, showNotice, view } from "./page.js";
import { session } from "./session.js";
import { changed, setEntry, setSending, state, subscribe } from "./state.js";
import { ResponseStream } from "./stream.js";
import { upsertMessage } from "./thread.js";

const AUTO_TITLE_CHARS = 60;

/** Shows a stream's state in its own conversation's thread, and nowhere else. */
export function reflect(stream) {
  changed("stream"); // (the connection and the sidebar's "generating…" marks follow it)
  const thread = state.threads.get(stream.conversationId);
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

/** A new stream (a message sent, an action under one): followed, and shown at once. */
export function startAnswer(stream) {
  track(stream);
  reflect(stream);
  updateComposer();
}

function track(stream) {
  setEntry("streams", stream.conversationId, stream);
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
  stream.addEventListener("end", () => ended(stream));
  stream.run();
}

function ended(stream) {
  const id = stream.conversationId;
  if (state.streams.get(id) === stream) setEntry("streams", id, undefined);
  if (stream.responseId) session.forgetLive(stream.responseId);
  changed("stream"); // (it ended)
  if (stream.action) actions.ended(stream); // (a new version: the thread is read again)
  if (stream.refused && stream.action) {
    updateComposer();
    return;
  }
  if (stream.refused) {
    restoreDraft(stream.content, stream.media);
    const where = state.currentId === id ? "" : ` in “${titleOf(id)}”`;
    showNotice(stream.error, `Your message${where} was not sent; it is back in the box. `);
    updateComposer();
    return;
  }
  conversations.touch(id);
  updateComposer();
  keepConversation(id);
  budget.afterAnswer(() => state.api?.models());
  if (stream.error?.code === "response_not_found") {
    // Its replay log is gone: history has the answer.
    setEntry("threads", id, undefined);
    if (state.currentId === id) openConversation(id);
  } else if (stream.error) {
    showNotice(stream.error, state.currentId === id ? "" : `In “${titleOf(id)}”: `);
  }
}

/**
 * Asks the server to stop the answer being generated in conversation `id`: `reason` "user" (the
 * Stop button, Escape) or "left" (the user left the conversation). Its stream reads on to the
 * end, so the partial answer it keeps, marked interrupted, is the text the server saved.
 */
export function stopAnswer(id, reason) {
  const stream = state.streams.get(id);
  if (!stream || stream.finished) return;
  stream.stopReason ??= reason;
  const stopping = stream.stop(); // (it marks the stream stopping at once)
  updateComposer();
  stopping.catch((error) => {
    const where = state.currentId === id ? "" : `In “${titleOf(id)}”: `;
    showNotice(error, where);
  });
}

/** The answers this tab was following before a reload (session.js): followed again. */
export function resumeLiveResponses() {
  for (const [responseId, entry] of Object.entries(session.liveResponses())) {
    if (!state.streams.has(entry.conversationId)) track(streamFor(state.api, { ...entry, responseId }));
  }
}

/** The sidebar marks "generating…" the conversations other than this one where an answer is written. */
function markGenerating() {
  const ids = new Set();
  for (const [id, stream] of state.streams) {
    if (id !== state.currentId && !stream.finished && !stream.stopRequested) ids.add(id);
  }
  conversations.showGenerating(ids);
}
subscribe(["currentId", "streams", "stream"], markGenerating);

/** Sends the composer's text (already taken out of the box) with its uploaded images `media`. */
export async function send(content, media) {
  clearNotice();
  let id = state.currentId;
  if (id === null) {
    setSending(true); // (the box is empty meanwhile: a second Enter sends nothing)
    try {
      id = await createConversation();
    } catch (error) {
      restoreDraft(content, media);
      showNotice(error, "Your message was not sent; it is back in the box. ");
      return;
    } finally {
      setSending(false);
      updateComposer();
    }
  }
  if (state.streams.has(id)) {
    restoreDraft(content, media);
    return;
  }
  const stream = new ResponseStream(state.api, { conversationId: id, content, model: pickedModel(), media });
  stream.startedHere = true;
  track(stream);
  reflect(stream);
  conversations.touch(id);
  updateComposer();
  if (state.currentId !== id) leaveConversation(id); // the user went elsewhere while it was created
}
