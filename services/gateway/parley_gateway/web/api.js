// The Parley HTTP API, one method per endpoint. Failures become ApiError carrying the server's
// `{"error": {"code", "message"}}`; a request that never reached the server has status 0.

import { plainError } from "./errors.js";

export class ApiError extends Error {
  constructor(status, code, message, retryAfterS = null) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfterS = retryAfterS;
  }

  /** Worth trying again unchanged: the network, or a server that is restarting. */
  get retryable() {
    return this.status === 0 || this.status === 502 || this.status === 503 || this.status === 504;
  }

  /** A plain sentence for the user, saying what to do next (errors.js); the code is for support. */
  describe() {
    return plainError(this);
  }
}

async function errorFrom(response) {
  const retryAfter = Number.parseInt(response.headers.get("Retry-After") ?? "", 10);
  let code = `http_${response.status}`;
  let message = response.statusText || "the server refused the request";
  try {
    const body = await response.json();
    code = body.error?.code ?? code;
    message = body.error?.message ?? message;
  } catch {
    // Not JSON (a proxy's page, say): keep the status line.
  }
  return new ApiError(response.status, code, message, Number.isNaN(retryAfter) ? null : retryAfter);
}

function withQuery(path, params) {
  const given = Object.entries(params).filter(([, value]) => value !== null && value !== undefined && value !== "");
  const query = new URLSearchParams(given);
  const text = query.toString();
  return text ? `${path}?${text}` : path;
}

const id = (value) => encodeURIComponent(value);

/**
 * The user's monthly budget from an answer's X-Budget-* headers: {plan, resetAt (epoch s),
 * tokensRemaining, costRemainingMicros} (null: no such limit), or null without the headers.
 */
export function budgetOf(headers) {
  const plan = headers.get("X-Budget-Plan");
  if (plan === null) return null;
  const number = (name) => {
    const value = Number.parseInt(headers.get(name) ?? "", 10);
    return Number.isNaN(value) ? null : value;
  };
  return {
    plan,
    resetAt: number("X-Budget-Reset"),
    tokensRemaining: number("X-Budget-Tokens-Remaining"),
    costRemainingMicros: number("X-Budget-Cost-Remaining-Micros"),
  };
}

export class Api {
  /** `onUnauthorized` is called when the server no longer accepts the key. */
  constructor(key, onUnauthorized = () => {}) {
    this.key = key;
    this.onUnauthorized = onUnauthorized;
    this.budget = null; // the newest budgetOf() an answer carried
    this.onBudget = () => {}; // (budget) after every answer that carried one
    this.onReachable = () => {}; // (true) an answer came, (false) the server could not be reached
  }

  /** The parsed JSON answer, or the Response itself with `raw` (for event streams). */
  async request(method, path, { body, headers = {}, signal, raw = false } = {}) {
    const init = { method, signal, cache: "no-store", headers: { Authorization: `Bearer ${this.key}`, ...headers } };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (err) {
      if (err.name === "AbortError") throw err;
      this.onReachable(false);
      throw new ApiError(0, "network_error", "Parley cannot be reached; check your connection");
    }
    this.onReachable(true);
    const budget = budgetOf(response.headers);
    if (budget) {
      this.budget = budget;
      this.onBudget(budget);
    }
    if (!response.ok) {
      const error = await errorFrom(response);
      if (response.status === 401) this.onUnauthorized(error);
      throw error;
    }
    if (raw) return response;
    return response.status === 204 ? null : response.json();
  }

  models() {
    return this.request("GET", "/v1/models");
  }

  listConversations(cursor, limit = 20) {
    return this.request("GET", withQuery("/v1/conversations", { cursor, limit }));
  }

  /** Conversations whose title or messages contain `q`: {data: [{conversation, message_id, snippet}]}. */
  searchConversations(q, signal, limit = 20) {
    return this.request("GET", withQuery("/v1/conversations/search", { q, limit }), { signal });
  }

  createConversation(title = "") {
    return this.request("POST", "/v1/conversations", { body: { title } });
  }

  renameConversation(conversationId, title) {
    return this.request("PATCH", `/v1/conversations/${id(conversationId)}`, { body: { title } });
  }

  deleteConversation(conversationId) {
    return this.request("DELETE", `/v1/conversations/${id(conversationId)}`);
  }

  /** Newest first; `before` is the `next_cursor` of the previous page. */
  listMessages(conversationId, before, limit = 30) {
    return this.request("GET", withQuery(`/v1/conversations/${id(conversationId)}/messages`, { before, limit }));
  }

  /** The answer as an event stream (a Response); the response id is in X-Parley-Response-Id. */
  sendMessage(conversationId, message, signal) {
    return this.request("POST", `/v1/conversations/${id(conversationId)}/messages`, {
      body: message,
      headers: { Accept: "text/event-stream" },
      signal,
      raw: true,
    });
  }

  /**
   * Another version of a message, answered as an event stream like sendMessage: `action`
   * "regenerate" (an assistant message: a new answer), "edit" (a user message: a new version of
   * it, and its answer) or "continue" (an interrupted or length-stopped answer, written on).
   */
  messageAction(conversationId, messageId, action, body, signal) {
    return this.request("POST", `/v1/conversations/${id(conversationId)}/messages/${id(messageId)}/${action}`, {
      body,
      headers: { Accept: "text/event-stream" },
      signal,
      raw: true,
    });
  }

  /** Makes version `messageId` the one shown (its newest answers below it): the conversation. */
  setCurrent(conversationId, messageId) {
    return this.request("PUT", `/v1/conversations/${id(conversationId)}/current`, { body: { message_id: messageId } });
  }

  /** The frames of a response after `lastEventId`, then its live tail. */
  resumeResponse(responseId, lastEventId, signal) {
    return this.request("GET", `/v1/responses/${id(responseId)}/events`, {
      headers: { Accept: "text/event-stream", "Last-Event-ID": String(lastEventId) },
      signal,
      raw: true,
    });
  }

  cancelResponse(responseId) {
    return this.request("POST", `/v1/responses/${id(responseId)}/cancel`);
  }

  /** What a draft would cost: {input_tokens, estimated, cost_estimate_micros, ...} (POST /v1/tokens/count). */
  countTokens(draft, signal) {
    return this.request("POST", "/v1/tokens/count", { body: draft, signal });
  }

  /** Changes oldest first since `since`: {data, next_cursor, has_more}. */
  sync(since, limit = 200) {
    return this.request("GET", withQuery("/v1/sync", { since, limit }));
  }

  /**
   * Uploads a file (POST /v1/media, multipart field `file`); resolves with the media. Sent with
   * XMLHttpRequest, which unlike fetch reports upload progress: `onProgress(sentBytes, totalBytes)`.
   * `signal` aborts it (an AbortError).
   */
  uploadMedia(blob, filename, { onProgress = () => {}, signal } = {}) {
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open("POST", "/v1/media");
      xhr.setRequestHeader("Authorization", `Bearer ${this.key}`);
      xhr.responseType = "json";
      xhr.upload.addEventListener("progress", (event) => {
        if (event.lengthComputable) onProgress(event.loaded, event.total);
      });
      xhr.addEventListener("load", () => {
        if (xhr.status >= 200 && xhr.status < 300) {
          resolve(xhr.response);
          return;
        }
        const retryAfter = Number.parseInt(xhr.getResponseHeader("Retry-After") ?? "", 10);
        const error = new ApiError(
          xhr.status,
          xhr.response?.error?.code ?? `http_${xhr.status}`,
          xhr.response?.error?.message ?? (xhr.statusText || "the server refused the upload"),
          Number.isNaN(retryAfter) ? null : retryAfter,
        );
        if (xhr.status === 401) this.onUnauthorized(error);
        reject(error);
      });
      xhr.addEventListener("error", () => {
        reject(new ApiError(0, "network_error", "the upload did not reach Parley; check your connection"));
      });
      xhr.addEventListener("abort", () => reject(new DOMException("the upload was cancelled", "AbortError")));
      if (signal?.aborted) {
        reject(new DOMException("the upload was cancelled", "AbortError"));
        return;
      }
      signal?.addEventListener("abort", () => xhr.abort(), { once: true });
      const form = new FormData();
      form.append("file", blob, filename);
      xhr.send(form);
    });
  }

  /** A media with fresh presigned URLs (they expire: ask again for new ones). */
  getMedia(mediaId) {
    return this.request("GET", `/v1/media/${id(mediaId)}`);
  }
}
