// The composer: the message box, its images, what the draft costs and the one button (Send, or
// Stop while an answer is written in the conversation on the page). It reads the conversation
// on the page and the answers streaming from state.js, and redraws its button when they change.

import { send, stopAnswer } from "./answers.js";
import { Attachments } from "./attach.js";
import { BudgetView } from "./budget.js";
import { byId } from "./dom.js";
import { DraftEstimate } from "./estimate.js";
import { showNotice } from "./page.js";
import { state, subscribe } from "./state.js";

export const input = byId("composer-input");

export const attachments = new Attachments({
  api: () => state.api,
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

export const budget = new BudgetView(byId("budget"));

export const estimate = new DraftEstimate({
  input,
  form: byId("composer"),
  modelSelect: byId("model"),
  output: byId("estimate"),
  count: (draft, signal) => state.api.countTokens(draft, signal),
  context: () =>
    state.api
      ? { conversation_id: state.currentId, model: pickedModel(), media_ids: attachments.uploadedIds() }
      : null,
  onChange: () => updateComposer(),
});

/** A message that was not sent goes back in the box (before whatever was typed since). */
export function restoreDraft(content, media = []) {
  const typed = input.value.trim();
  input.value = typed && typed !== content.trim() ? `${content}\n\n${input.value}` : content;
  attachments.restore(media);
  resizeComposer();
  estimate.refresh();
  updateComposer();
}

/** Empties the box (signing out). */
export function clearComposer() {
  input.value = "";
  resizeComposer();
}

/** The composer grows with its text, up to its CSS max-height (then it scrolls). */
function resizeComposer() {
  input.style.height = "auto";
  if (input.value) input.style.height = `${input.scrollHeight + input.offsetHeight - input.clientHeight}px`;
}

/** The model the user picked; null for the default, which leaves the server free to route. */
export function pickedModel() {
  const picked = byId("model").selectedOptions[0];
  return picked && !picked.defaultSelected ? picked.value : null;
}

/** Fills the model picker (GET /v1/models), the default selected. */
export function fillModels(models) {
  const select = byId("model");
  select.replaceChildren(
    ...models.map((model) => new Option(model.id, model.id, model.default, model.default)),
  );
}

/** Why the draft cannot be sent now: {text, shownIn (the id of the element saying it)}, or null. */
function sendRefusal() {
  if (state.sending) return { text: "Sending…", shownIn: null };
  const held = attachments.holdsBack();
  if (held) return held;
  if (estimate.refusal) return { text: estimate.refusal, shownIn: "estimate" };
  return null;
}

/** The one button: Stop while an answer is written here, else Send (disabled, with the reason, when it cannot). */
export function updateComposer() {
  const button = byId("send");
  const stream = state.currentId === null ? null : state.streams.get(state.currentId);
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
subscribe(["currentId", "streams"], updateComposer);

byId("composer").addEventListener("submit", (event) => {
  event.preventDefault();
  const content = input.value.trim();
  // (while an answer is written here the button is Stop: Enter keeps the draft for later)
  if (!content || byId("send").disabled || byId("send").dataset.action === "stop") return;
  if (!navigator.onLine || !state.reachable) {
    showNotice("You are offline: the message was not sent. It stays in the box; send it once Parley can be reached.");
    state.sync?.now(); // (it may be back: then the next try goes out)
    return;
  }
  input.value = "";
  resizeComposer();
  send(content, attachments.take());
});
input.addEventListener("input", resizeComposer);
input.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    byId("composer").requestSubmit();
  }
});
byId("send").addEventListener("click", () => {
  if (byId("send").dataset.action === "stop") stopAnswer(state.currentId, "user");
  else byId("composer").requestSubmit();
});
