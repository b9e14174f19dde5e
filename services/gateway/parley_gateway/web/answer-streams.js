// The streams of answers in flight, as the client follows them: an action's stream (regenerate,
// edit, continue: an ActionStream, a ResponseStream that sends another request), what a tab
// keeps of one to pick it up after a reload, and the messages a stream shows in its thread.

import { promptOf } from "./media.js";
import { ResponseStream } from "./stream.js";

/** Reads the answer of POST …/messages/{messageId}/{action} (regenerate, edit, continue). */
export class ActionStream extends ResponseStream {
  /**
   * `action`, the `messageId` it acts on; `content` and `media` (edit: the new version), `prefix`
   * (continue: the text written so far; the stream brings only what follows). The request id
   * (`clientMessageId`) makes sending it again (a dropped connection) harmless.
   */
  constructor(api, { action, messageId, prefix = "", ...turn }) {
    super(api, { content: "", ...turn });
    this.action = action;
    this.messageId = messageId;
    this.prefix = prefix;
    this.text = prefix;
  }

  send(signal) {
    return this.api.messageAction(this.conversationId, this.messageId, this.action, this.body(), signal);
  }

  body() {
    const body = { client_request_id: this.clientMessageId };
    if (this.action === "edit") {
      body.content = this.content;
      if (this.media.length) body.media_ids = this.media.map((media) => media.id);
    }
    if (this.model && this.action !== "continue") body.model = this.model;
    return body;
  }
}

/** What a tab keeps of an answer being written, to pick it up after a reload (session.js). */
export function liveEntry(stream) {
  const { conversationId, clientMessageId, content, action, messageId, prefix } = stream;
  const entry = { conversationId, clientMessageId, content };
  return action ? { ...entry, action, messageId, prefix } : entry;
}

/** The stream of a kept entry (liveEntry, with its responseId): an answer or an action's. */
export function streamFor(api, entry) {
  return entry.action ? new ActionStream(api, entry) : new ResponseStream(api, entry);
}

/**
 * The messages a stream shows in its conversation's `thread`: the message sent (if any), and its
 * answer, each with its `parent_id` (the message before it when the stream was first shown), so
 * that saved history can place them among the versions (versions.js).
 */
export function shownMessages(stream, thread) {
  const sentKey = stream.action ? `edit:${stream.clientMessageId}` : stream.clientMessageId;
  const answerKey = `answer:${stream.clientMessageId}`;
  if (stream.parentId === undefined && thread) {
    const own = new Set([sentKey, answerKey, stream.clientMessageId, stream.responseId, stream.messageId]);
    stream.parentId = thread.messages.filter((m) => !own.has(m.key) && !own.has(m.id)).at(-1)?.id ?? null;
  }
  const answer = {
    key: answerKey,
    id: stream.responseId,
    role: "assistant",
    content: stream.text,
    images: stream.images.map((image) => ({ ...image, alt: promptOf(stream.content) })),
    status: stream.status,
    finish_reason: stream.finishReason ?? null,
    usage: stream.usage,
    model: stream.model,
    error: stream.error,
    stopping: stream.stopRequested,
    stoppedBy: stream.stopReason,
    queue: stream.queue,
    created_at_ms: stream.startedAt + 1,
  };
  if (stream.action === "continue") {
    // Written on in the message it continues (which keeps its place, time and parent).
    const { created_at_ms: _time, ...continued } = answer;
    return [{ ...continued, key: stream.messageId, id: stream.messageId }];
  }
  if (stream.action === "regenerate") return [{ ...answer, parent_id: stream.parentId }];
  // The server names a sent message by its client id; an edit's new version by an id of its own
  // (known once the path is read again; until then its answer has no parent_id).
  if (!stream.action) answer.parent_id = stream.clientMessageId;
  const sent = {
    key: sentKey,
    id: stream.action ? null : stream.clientMessageId,
    role: "user",
    parent_id: stream.parentId ?? null,
    content: stream.content,
    media: stream.media,
    status: "complete",
    created_at_ms: stream.startedAt,
  };
  return [sent, answer];
}
