// Versions of a message. Regenerating an answer or editing a message makes a new version of it
// beside the old ones (the same `parent_id`); the conversation shows one path, from its first
// message down to its `current_message_id`. The server sends that path
// (GET …/messages, each message with `versions: {index, count, ids}`); saved history holds every
// version sync brought, and the path is worked out here from `parent_id` (pathOf).

/** The versions a message has (`versions` from the server): {index (1-based), count, ids}, or null. */
export function versionsOf(message) {
  const versions = message.versions;
  if (!versions || !Array.isArray(versions.ids) || versions.count < 2) return null;
  return versions;
}

/**
 * The path of saved `messages` (every version of a conversation, any order) through `leafId`,
 * oldest first, each with its `versions` among the saved ones. Like the server, the path goes on
 * below `leafId` by the newest answers (turns saved since it was current); without `leafId` (or
 * when it is not saved), it ends at the newest message. A message saved without a `parent_id`
 * field (before versions existed) follows the message saved before it.
 */
export function pathOf(messages, leafId) {
  const byTime = [...messages].sort((a, b) => a.created_at_ms - b.created_at_ms);
  const parentOf = (m, i) => ("parent_id" in m ? (m.parent_id ?? "") : (byTime[i - 1]?.id ?? ""));
  const parents = new Map(byTime.map((m, i) => [m.id, parentOf(m, i)]));
  const byId = new Map(byTime.map((m) => [m.id, m]));
  const children = new Map(); // parent id ("" for the first message) -> its versions, oldest first
  for (const message of byTime) {
    const parent = parents.get(message.id);
    if (!children.has(parent)) children.set(parent, []);
    children.get(parent).push(message);
  }
  let leaf = byId.get(leafId) ?? byTime.at(-1);
  if (!leaf) return [];
  for (let n = 0, below; n < byTime.length && (below = children.get(leaf.id)); n += 1) leaf = below.at(-1);
  const path = [];
  const seen = new Set();
  for (let m = leaf; m && !seen.has(m.id); m = byId.get(parents.get(m.id))) {
    seen.add(m.id);
    const ids = children.get(parents.get(m.id)).filter((s) => s.role === m.role).map((s) => s.id);
    path.push({ ...m, versions: { index: ids.indexOf(m.id) + 1, count: ids.length, ids } });
  }
  return path.reverse();
}

/**
 * Whether `message` (from sync) belongs at the end of the path `thread` shows: known already,
 * or an answer to (a message following) its last one. One that does not is another version,
 * made elsewhere: the page asks the server for the path again.
 */
export function followsPath(thread, message) {
  if (!message.parent_id) return true; // (a server without versions)
  if (thread.messages.some((m) => m.id === message.id)) return true;
  const last = thread.messages.at(-1);
  return !last || last.id === message.parent_id;
}

/** Whether what `thread` shows ends at the conversation's current version (`current_message_id`). */
export function showsCurrent(thread, current) {
  return !current || thread.messages.at(-1)?.id === current;
}
