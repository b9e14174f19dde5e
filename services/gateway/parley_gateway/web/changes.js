// Sync: changes made elsewhere (another tab, another device, or while offline), as sync.js reads
// them from GET /v1/sync, applied to what the client holds (state.js) and shows.

import { forgetConversation, keepConversation, refreshThread, titleOf } from "./conversation.js";
import { conversations, view } from "./page.js";
import { state } from "./state.js";
import { upsertMessage } from "./thread.js";
import { followsPath, showsCurrent } from "./versions.js";

/** Applies one change from sync. */
export function applyChange(change) {
  const id = change.conversation_id;
  const saved = state.saved;
  if (change.type === "conversation.deleted") {
    saved?.removeConversation(id);
    if (conversations.get(id)) forgetConversation(id, "This conversation was deleted elsewhere.");
    return;
  }
  if (change.conversation) {
    conversations.offer(change.conversation);
    if (conversations.get(id)) saved?.saveConversations([conversations.get(id)]);
    if (state.currentId === id) view.setTitle(titleOf(id));
  }
  const current = change.type === "conversation.updated" ? change.current_message_id : null;
  if (current) {
    // Another version was made current (elsewhere): saved so, and the path is read again.
    const known = conversations.get(id);
    if (known && known.current_message_id !== current) keepConversation(id, { ...known, current_message_id: current });
    const shown = state.threads.get(id);
    if (shown && !shown.saved && !state.streams.has(id) && !showsCurrent(shown, current)) {
      refreshThread(id).catch(() => {});
    }
  }
  if (change.message) applyMessage(id, change);
}

/** A message written elsewhere (or settled here): into its thread, where it belongs there. */
function applyMessage(id, change) {
  const saved = state.saved;
  conversations.touch(id, change.changed_at_ms);
  const thread = state.threads.get(id);
  const live = state.streams.get(id);
  // The answer streaming here is ahead of history; it settles itself when it ends.
  if (!thread) saved?.addMessage(id, change.message);
  if (!thread || (live && live.responseId === change.message.id)) return;
  // Older than the pages loaded so far: it appears when the user loads older messages.
  if (thread.olderCursor && change.message.created_at_ms < (thread.messages[0]?.created_at_ms ?? 0)) return;
  if (!followsPath(thread, change.message)) {
    // Another version (made elsewhere): where it goes, the server's path says.
    saved?.addMessage(id, change.message);
    if (!live && !thread.saved) refreshThread(id).catch(() => {});
    return;
  }
  const message = upsertMessage(thread.messages, { ...change.message, key: change.message.id });
  if (!thread.saved) saved?.addMessage(id, change.message);
  if (view.thread === thread) view.update(message);
}
