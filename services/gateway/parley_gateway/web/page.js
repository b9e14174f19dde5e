// The views every part of the page shares: the notice bar, the sidebar (the conversation list
// and search), the thread on the page and the actions under its messages. They show what
// state.js holds; what they are asked to do goes to the modules named for it.

import { MessageActions } from "./actions.js";
import { startAnswer } from "./answers.js";
import { ApiError } from "./api.js";
import { pickedModel } from "./composer.js";
import {
  deleteConversation,
  keepConversation,
  loadMoreConversations,
  openConversation,
  openFound,
  refreshThread,
  renameConversation,
} from "./conversation.js";
import { ConversationList, UNTITLED } from "./conversations.js";
import { byId } from "./dom.js";
import { Notice } from "./notice.js";
import { ConversationSearch } from "./search.js";
import { state } from "./state.js";
import { ThreadView } from "./thread.js";

export const notice = new Notice(byId("notice"), byId("notice-close"));
export const showNotice = (error, prefix = "") => notice.show(error, prefix);
export const clearNotice = () => notice.clear();

/** The conversation list in the sidebar. */
export const conversations = new ConversationList(byId("conversation-list"), byId("more-conversations"), {
  open: (id) => {
    setSidebar(false);
    openConversation(id);
  },
  rename: renameConversation,
  remove: deleteConversation,
  more: loadMoreConversations,
});

/** The thread on the page. */
export const view = new ThreadView({
  list: byId("messages"),
  scroller: byId("scroller"),
  olderButton: byId("load-older"),
  title: byId("conversation-title"),
  empty: byId("empty"),
  jumpButton: byId("jump-latest"),
  decorate: (node, message) => actions.decorate(node, message),
});

/** Copy, edit, regenerate, continue and the version switcher under the thread's messages. */
export const actions = new MessageActions({
  api: () => state.api,
  thread: (id) => state.threads.get(id),
  conversationId: () => state.currentId,
  busy: (id) => state.streams.has(id),
  model: pickedModel,
  start: startAnswer,
  view,
  refresh: refreshThread,
  conversation: (conversation) => keepConversation(conversation.id, conversation),
  notice: showNotice,
});

export const search = new ConversationSearch({
  input: byId("search"),
  results: byId("search-results"),
  status: byId("search-status"),
  list: byId("search-list"),
  container: byId("sidebar"),
  search: (q, signal) => state.api.searchConversations(q, signal),
  open: openFound,
  describe: (error) => (error instanceof ApiError ? error.describe() : String(error?.message ?? error)),
  untitled: UNTITLED,
});

/** Opens or closes the sidebar (a drawer on phones). */
export function setSidebar(open) {
  byId("sidebar").classList.toggle("open", open);
  byId("toggle-sidebar").setAttribute("aria-expanded", String(open));
}
