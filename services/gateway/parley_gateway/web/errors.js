// What the user reads when something fails: one plain sentence saying what happened and what to
// do next, for every error code the API returns (services/*: `code="…"`, the provider worker's
// ERROR_CODES, the gateway's stream notices; tests/browser/test_errors_plain.py checks that
// none is missing). The code itself is kept for support (data-code on the notice), never shown.

const RESTARTED = "The answer stopped because a Parley server restarted. Send your message again.";
const BUSY_SERVICE = "Parley is having trouble on its side right now. Try again in a moment.";
const BROKEN_UPLOAD = "The upload was cut off before it finished. Retry it.";
const REQUEST_REFUSED = "Parley could not accept this request. Reload the page and try again.";
const PROVIDER_FAILED = "The model's provider failed to answer. Try again, or pick another model.";

/** Code -> sentence; a function gets the server's message (for the numbers in it). */
export const ERROR_TEXT = {
  // reaching Parley, signing in
  network_error: "Parley cannot be reached. Check your connection; it tries again when you are back online.",
  invalid_api_key: "That API key was not accepted. Check it and sign in again.",
  missing_api_key: "Parley needs your API key. Sign in again.",
  authorization_too_long: "That API key is too long to be a real one. Check it and sign in again.",
  unauthenticated: "You are signed out. Sign in again with your API key.",
  header_too_large: "The request's headers were too large. Reload the page and sign in again.",

  // the message
  empty_content: "The message is empty. Type something, then send it.",
  content_too_long: (message) => {
    const limit = /(\d[\d,]*) characters/.exec(message ?? "")?.[1];
    const most = limit ? ` (at most ${Number(limit.replace(/,/g, "")).toLocaleString("en-US")} characters)` : "";
    return `This message is too long to send${most}. Shorten it or send it in parts.`;
  },
  prompt_too_long: "The description of the picture is too long. Shorten it and try again.",
  context_window_too_small:
    "This conversation no longer fits in the model's memory. Start a new conversation, or pick a model with a larger context.",
  context_length_exceeded:
    "The conversation is too long for the model. Start a new conversation, or pick a model with a larger context.",
  unknown_model: "The model you picked is no longer offered. Pick another one in the Model list and send again.",
  model_not_found: "The model you picked is no longer offered. Pick another one in the Model list and send again.",
  too_many_images: "A message can carry only a few images. Remove some of them and send again.",
  images_too_large: "These images are too large together for the model. Remove some of them and send again.",
  invalid_detail: REQUEST_REFUSED,

  // conversations, answers, sync
  conversation_not_found:
    "This conversation no longer exists: it may have been deleted on another device. Pick another one or start a new one.",
  not_found: "This no longer exists: it may have been deleted elsewhere. Reload the page to see what is there now.",
  response_not_found: "This answer can no longer be followed live. Reload the conversation to read it from history.",
  conversation_busy: "An answer is still being written in this conversation. Wait for it or stop it, then send again.",
  // (not sent to a client: the orchestrator waits for that answer, then appends again)
  answer_not_stored: "The answer before this message is still being saved. Send it again in a moment.",
  message_not_found:
    "This message no longer exists: it may have been deleted elsewhere. Reload the page to see the conversation as it is now.",
  turn_in_progress: "An answer is still being written in this conversation. Wait for it or stop it, then try again.",
  not_an_answer: REQUEST_REFUSED,
  not_a_user_message: REQUEST_REFUSED,
  not_continuable: "This answer cannot be continued: it is complete. Regenerate it for another answer.",
  continue_unsupported: "This model cannot continue a cut-off answer. Use Regenerate to have it written again.",
  invalid_cursor: "The list could not be continued. Reload the page.",
  invalid_last_event_id: "The answer could not be picked up again. Reload the page.",
  sync_cursor_expired: "You were away too long to catch up change by change. Reload the page to see everything.",
  gone: "This is no longer available. Reload the page.",
  invalid_query: "A search needs 1 to 200 characters besides spaces. Change it and search again.",
  conflict: "Something changed at the same time elsewhere. Reload the page and try again.",

  // limits and budgets
  too_many_streams:
    "You have as many answers being written as you are allowed at once. Wait for one to finish or stop it, then send again.",
  rate_limited: "You are sending requests faster than allowed. Wait a moment, then try again.",
  user_budget_exceeded:
    "You have used up this month's budget. It renews at the start of next month; ask your administrator if you need more now.",
  request_exceeds_provider_budget:
    "This request is larger than the model's provider allows at once. Shorten the message or pick another model.",
  provider_budget_timeout: "The model is busy and your message waited too long. Send it again in a minute.",

  // the model's provider and Parley's services
  provider_rate_limited: "The model's provider is busy. Send your message again in a moment.",
  provider_overloaded: "The model is overloaded right now. Try again in a moment, or pick another model.",
  provider_error: PROVIDER_FAILED,
  provider_bad_response: PROVIDER_FAILED,
  provider_bad_request: "The model's provider refused this message. Rephrase it or pick another model.",
  provider_auth_failed:
    "Parley could not sign in to the model's provider. Pick another model, and tell your administrator.",
  provider_timeout: "The model took too long to answer. Send your message again.",
  provider_unavailable: "The model's provider cannot be reached. Try again later, or pick another model.",
  worker_lost: RESTARTED,
  worker_shutdown: RESTARTED,
  gateway_shutdown: "Parley restarted while answering. The answer picks up again by itself.",
  stream_timeout: "The answer stopped coming. Reload the conversation to read what was saved, or send again.",
  replay_unavailable: "The answer cannot be followed right now. It picks up again by itself in a moment.",
  replay_truncated: "Part of this answer can no longer be shown live. Reload the conversation to read it whole.",
  queue_unavailable: BUSY_SERVICE,
  unavailable: BUSY_SERVICE,
  store_unavailable: BUSY_SERVICE,
  store_failure: BUSY_SERVICE,
  storage_unavailable: BUSY_SERVICE,
  internal: "Something went wrong on Parley's side. Try again; if it keeps happening, tell your administrator.",

  // images: uploads, and pictures drawn on request
  unsupported_media_type:
    "This kind of file is not supported. Attach a JPEG, PNG, WebP, GIF, HEIC or AVIF image instead.",
  content_type_mismatch: "The file's contents do not match its type. Save it again as an image, then attach it.",
  corrupt_image: "This image cannot be read: it may be damaged. Remove it and attach another.",
  corrupt_video: "This video cannot be read: it may be damaged. Remove it and attach another.",
  image_too_large: "This image has too many pixels. Remove it and attach a smaller one.",
  video_too_large: "This video is too large. Remove it and attach a smaller one.",
  video_too_long: "This video is too long. Remove it and attach a shorter one.",
  media_too_complex: "This file is too complex to process. Remove it and attach a simpler one.",
  payload_too_large: "This is too large to send (images may be at most 20 MB). Remove it and attach a smaller one.",
  empty_file: "This file is empty. Remove it and attach another.",
  image_unreadable: "This browser could not prepare the image for upload. Remove it and attach it in another format.",
  invalid_multipart: BROKEN_UPLOAD,
  missing_file: BROKEN_UPLOAD,
  truncated_upload: BROKEN_UPLOAD,
  upload_interrupted: BROKEN_UPLOAD,
  upload_incomplete: BROKEN_UPLOAD,
  upload_expired: "The upload took too long and expired. Retry it.",
  upload_not_found: "The upload is no longer known. Remove the image and attach it again.",
  media_not_found: "This image is no longer available. Remove it and attach it again.",
  invalid_media_id: "This image is no longer available. Remove it and attach it again.",
  invalid_size: "That picture size is not offered. Ask for the picture without a size.",
  empty_prompt: "There is nothing to draw. Say what to draw after /image, for example “/image a red bicycle”.",
  image_generation_unavailable: "Drawing pictures is not available right now. Try again later.",
  image_generation_busy: "The picture generator is busy. Try again in a moment.",
  image_generation_rejected: "The picture generator refused this request. Describe the picture differently.",

  // a request this page made wrongly: reloading fetches the current app
  invalid_request: REQUEST_REFUSED,
  invalid_json: REQUEST_REFUSED,
  unknown_field: REQUEST_REFUSED,
  missing_field: REQUEST_REFUSED,
  too_short: REQUEST_REFUSED,
  invalid_user_id: REQUEST_REFUSED,
  method_not_allowed: REQUEST_REFUSED,
  http_error: REQUEST_REFUSED,
  too_long: "Something you entered is too long. Shorten it and try again.",
  invalid_unicode: "The text contains characters that cannot be sent. Remove them and try again.",
  web_client_missing: "The web app is not installed on this server. Ask your administrator.",
};

/** For codes this page does not know (a newer server), by HTTP status. */
function byStatus(status) {
  if (status === 0) return ERROR_TEXT.network_error;
  if (status === 401) return ERROR_TEXT.unauthenticated;
  if (status === 404) return ERROR_TEXT.not_found;
  if (status === 413) return ERROR_TEXT.payload_too_large;
  if (status === 429) return ERROR_TEXT.rate_limited;
  if (status >= 500) return ERROR_TEXT.internal;
  return REQUEST_REFUSED;
}

function waitText(seconds) {
  if (seconds < 90) return `${seconds} seconds`;
  if (seconds < 90 * 60) return `${Math.round(seconds / 60)} minutes`;
  if (seconds < 36 * 3600) return `${Math.round(seconds / 3600)} hours`;
  return `${Math.round(seconds / 86400)} days`;
}

/** The sentence for an error `{status, code, message, retryAfterS}` (an ApiError). */
export function plainError({ status = 0, code = "", message = "", retryAfterS = null } = {}) {
  const known = Object.hasOwn(ERROR_TEXT, code) ? ERROR_TEXT[code] : null;
  const text = typeof known === "function" ? known(message) : (known ?? byStatus(status));
  // A wait of a minute or more is worth saying (a budget says when it renews itself).
  const worthSaying = retryAfterS && retryAfterS > 1 && code !== "user_budget_exceeded";
  const wait = worthSaying ? ` You can try again in ${waitText(retryAfterS)}.` : "";
  return text + wait;
}
