// One answer being generated. Sends the message, reads its frames, resumes by itself after a
// dropped connection (GET /v1/responses/{id}/events with Last-Event-ID = the last frame id
// seen, so no text arrives twice) and stops when asked. It knows nothing of the page: it
// fires "change" whenever something the page shows changed.

import { ApiError } from "./api.js";
import { readEvents } from "./sse.js";

// The server sends a heartbeat after 15 s of silence; three missed ones mean a dead connection.
const SILENCE_LIMIT_MS = 45_000;
const RETRY_DELAYS_MS = [250, 500, 1000, 2000, 4000];
const FINISHED = new Set(["complete", "interrupted", "failed"]);

export function newMessageId() {
  const bytes = crypto.getRandomValues(new Uint8Array(12));
  return `m_${Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("")}`;
}

export class ResponseStream extends EventTarget {
  /**
   * A new turn: `{conversationId, content, model, media}` (`media`: uploaded media, as
   * POST /v1/media returned them, sent as `media_ids`). To pick up an answer already being
   * generated (after a reload), also pass its `responseId` and `clientMessageId`.
   */
  constructor(
    api,
    { conversationId, content, model = null, media = [], clientMessageId = newMessageId(), responseId = null },
  ) {
    super();
    this.api = api;
    this.conversationId = conversationId;
    this.content = content;
    this.media = media;
    this.images = []; // pictures the answer drew: {mediaId, url, mimeType, width, height}
    this.model = model;
    this.clientMessageId = clientMessageId;
    this.responseId = responseId;
    this.startedAt = Date.now();
    this.text = "";
    this.lastEventId = 0;
    this.status = responseId ? "reconnecting" : "sending";
    this.queue = null; // {position, waitMs} while waiting for the model
    this.usage = null;
    this.finishReason = null; // the `done` frame's finish_reason
    this.error = null; // an ApiError once the answer failed
    this.stopRequested = false;
    this.stopReason = null; // why the page asked to stop it ("user", "left"), for the thread to say
    this.closed = false;
    this.controller = null;
    this.silenceTimer = null;
    this.wake = null;
  }

  get finished() {
    return FINISHED.has(this.status);
  }

  /** The server refused the message itself (it was never accepted, nothing of it is saved). */
  get refused() {
    return this.error !== null && this.responseId === null;
  }

  /** Runs until the answer ends (done or a final error) or close() is called. */
  async run() {
    let failures = 0;
    while (!this.finished && !this.closed) {
      this.controller = new AbortController();
      try {
        const response =
          this.responseId === null
            ? await this.send(this.controller.signal)
            : await this.api.resumeResponse(this.responseId, this.lastEventId, this.controller.signal);
        this.receivedResponseId(response.headers.get("X-Parley-Response-Id"));
        this.watchSilence();
        for await (const frame of readEvents(response.body)) {
          this.watchSilence();
          if (frame.comment !== undefined) continue;
          failures = 0;
          if (this.onFrame(frame) === "resume") break;
          if (this.finished) break;
        }
      } catch (err) {
        if (this.closed) return;
        if (err instanceof ApiError && !err.retryable) {
          this.finish(this.text ? "interrupted" : "failed", err);
          return;
        }
        // The network, a restarting gateway or a silent connection: resume below.
      } finally {
        clearTimeout(this.silenceTimer);
        this.controller.abort();
      }
      if (this.finished || this.closed) return;
      this.update({ status: "reconnecting" });
      await this.pause(RETRY_DELAYS_MS[Math.min(failures++, RETRY_DELAYS_MS.length - 1)]);
    }
  }

  /** Sends the request whose answer this stream reads (actions.js sends others). */
  send(signal) {
    return this.api.sendMessage(this.conversationId, this.body(), signal);
  }

  body() {
    const body = { content: this.content, client_message_id: this.clientMessageId };
    if (this.media.length) body.media_ids = this.media.map((media) => media.id);
    if (this.model) body.model = this.model;
    return body;
  }

  receivedResponseId(responseId) {
    if (!responseId || this.responseId) return;
    this.responseId = responseId;
    this.dispatchEvent(new Event("started"));
    if (this.stopRequested) this.stop().catch((error) => this.update({ error }));
  }

  /** Applies one frame; "resume" when the gateway says to reconnect. */
  onFrame(frame) {
    const id = frame.id === null ? null : Number(frame.id);
    if (id !== null) {
      if (id <= this.lastEventId) return "seen"; // already shown: never twice
      this.lastEventId = id;
    }
    const data = JSON.parse(frame.data);
    this.receivedResponseId(data.response_id);
    switch (frame.event) {
      case "meta":
        this.update({ model: data.model || this.model, status: "streaming" });
        break;
      case "queued":
        this.update({ status: "queued", queue: { position: data.position ?? 0, waitMs: data.estimated_wait_ms ?? 0 } });
        break;
      case "delta":
        this.text += data.text;
        this.update({ status: "streaming" });
        break;
      case "usage":
        this.update({ usage: data });
        break;
      case "done":
        this.finishReason = data.finish_reason ?? null; // ("length": cut off at the limit, it may be continued)
        this.finish(data.finish_reason === "cancelled" ? "interrupted" : "complete");
        break;
      case "error":
        // The gateway's own notice (no id: restarting, timed out) means "resume"; an error
        // from the replay log is how this answer ended.
        if (id === null && data.retryable) return "resume";
        this.finish(this.text ? "interrupted" : "failed", new ApiError(200, data.code, data.message));
        break;
      case "image":
        this.images = [
          ...this.images,
          { mediaId: data.media_id, url: data.url, mimeType: data.mime_type, width: data.width, height: data.height },
        ];
        this.update({ status: "streaming" });
        break;
      default:
        break; // kinds this client does not show
    }
    return "applied";
  }

  /** Ask the server to stop generating; the partial answer is kept, marked interrupted. */
  async stop() {
    this.stopRequested = true;
    if (this.responseId === null || this.finished) return; // sent once the response id is known
    this.update({});
    await this.api.cancelResponse(this.responseId);
  }

  /** Try to reconnect now instead of after the back-off (the browser is online again). */
  retryNow() {
    this.wake?.();
  }

  /** Stop reading (signing out). The answer goes on being generated and saved. */
  close() {
    this.closed = true;
    this.controller?.abort();
    this.wake?.();
  }

  watchSilence() {
    clearTimeout(this.silenceTimer);
    this.silenceTimer = setTimeout(() => this.controller.abort(), SILENCE_LIMIT_MS);
  }

  pause(ms) {
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ms);
      this.wake = () => {
        clearTimeout(timer);
        resolve();
      };
    }).finally(() => {
      this.wake = null;
    });
  }

  update(fields) {
    Object.assign(this, fields);
    this.dispatchEvent(new Event("change"));
  }

  finish(status, error = null) {
    this.update({ status, error });
    this.dispatchEvent(new Event("end"));
  }
}
