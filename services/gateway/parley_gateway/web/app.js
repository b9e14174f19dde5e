// Parley's web client: signs in with an API key, lists conversations, streams answers.
// This module wires the page together; the pieces live in modules named for what they do:
// state.js holds the client's state (who is signed in, the conversation on the page, the
// threads, the answers streaming, the connection); page.js, composer.js and offline.js are the
// views that show it; signin.js, conversation.js, answers.js and changes.js change it (api.js,
// stream.js and sync.js talk to the server; store.js and sw.js keep what is read offline).

import { stopAnswer } from "./answers.js";
import { input } from "./composer.js";
import { loadOlder, startNewConversation } from "./conversation.js";
import { byId } from "./dom.js";
import { clearNotice, setSidebar } from "./page.js";
import { session } from "./session.js";
import { signInAgain } from "./signin.js";
import { state } from "./state.js";
import { registerServiceWorker } from "./store.js";

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
// Escape stops the answer being written here (the drawer, the rename box and the search box
// have an Escape of their own).
document.addEventListener("keydown", (event) => {
  if (event.key !== "Escape" || event.defaultPrevented || event.isComposing) return;
  if (event.target.closest?.("#sidebar, #sign-in") || state.currentId === null) return;
  const stream = state.streams.get(state.currentId);
  if (!stream || stream.finished || stream.stopRequested) return;
  event.preventDefault();
  stopAnswer(state.currentId, "user");
});
byId("background-answers").checked = session.settings().backgroundAnswers;
byId("background-answers").addEventListener("change", (event) => {
  session.saveSettings({ backgroundAnswers: event.target.checked });
});

registerServiceWorker();
signInAgain();
