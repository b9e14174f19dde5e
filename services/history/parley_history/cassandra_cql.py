"""Every statement the Cassandra store runs, by name; prepared once at start-up.

The tables are in migrations/0002_history_tables.cql; docs/history-data-model.md says which
query each one serves.
"""

from __future__ import annotations

from cassandra.query import PreparedStatement

from .cassandra_session import CassandraSession

_MESSAGE_COLUMNS = (
    "conversation_id, bucket_ms, created_at_ms, message_id, role, content, status, model, reply_to_id,"
    " input_tokens, output_tokens, cost_micros, parent_id, media_ids, finish_reason"
)
_CHANGE_COLUMNS = (
    "user_id, bucket_ms, changed_at_ms, change_id, kind, conversation_id, message_id,"
    " message_bucket_ms, message_created_at_ms"
)

CQL = {
    # Readiness: a quorum read in the keyspace (a node that answers but cannot reach its
    # replicas is not ready).
    "ready": "SELECT version FROM schema_migrations LIMIT 1",
    # conversations: the canonical row
    "conversation_get": "SELECT user_id, title, created_at_ms, updated_at_ms, deleted_at_ms, listed_at_ms,"
    " current_message_id FROM conversations WHERE conversation_id = ?",
    # The current path's leaf (migration 5).
    "conversation_leaf": "UPDATE conversations SET current_message_id = ? WHERE conversation_id = ?",
    "conversation_insert": "INSERT INTO conversations (conversation_id, user_id, title, created_at_ms)"
    " VALUES (?, ?, ?, ?)",
    # The write timestamp is the activity time: concurrent touches converge on the latest one.
    "conversation_touch": "UPDATE conversations USING TIMESTAMP ? SET updated_at_ms = ? WHERE conversation_id = ?",
    # Where the list row is (moved at most once a minute), written like the activity time.
    "conversation_listed": "UPDATE conversations USING TIMESTAMP ? SET listed_at_ms = ? WHERE conversation_id = ?",
    "conversation_rename": "UPDATE conversations SET title = ? WHERE conversation_id = ?",
    "conversation_delete": "UPDATE conversations SET deleted_at_ms = ?, title = null WHERE conversation_id = ?",
    # conversations_by_user: the list
    "listed_insert": "INSERT INTO conversations_by_user (user_id, updated_at_ms, conversation_id) VALUES (?, ?, ?)",
    "listed_delete": "DELETE FROM conversations_by_user"
    " WHERE user_id = ? AND updated_at_ms = ? AND conversation_id = ?",
    "listed_first": "SELECT updated_at_ms, conversation_id FROM conversations_by_user WHERE user_id = ? LIMIT ?",
    "listed_after": "SELECT updated_at_ms, conversation_id FROM conversations_by_user WHERE user_id = ?"
    " AND (updated_at_ms, conversation_id) < (?, ?) LIMIT ?",
    # message_claims: idempotency, one Paxos partition per message
    "message_claim": "INSERT INTO message_claims (conversation_id, message_id, bucket_ms, created_at_ms)"
    " VALUES (?, ?, ?, ?) IF NOT EXISTS",
    "message_recorded": "UPDATE message_claims SET recorded = true WHERE conversation_id = ? AND message_id = ?",
    "message_claim_get": "SELECT bucket_ms, created_at_ms, recorded, continues_id, base_chars FROM message_claims"
    " WHERE conversation_id = ? AND message_id = ?",
    # A continuation: its response id claimed with the message it continues and where it began.
    "continuation_claim": "INSERT INTO message_claims (conversation_id, message_id, bucket_ms, created_at_ms,"
    " continues_id, base_chars, base_input_tokens, base_output_tokens, base_cost_micros)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) IF NOT EXISTS",
    "message_continue": "UPDATE messages_by_bucket SET content = ?, status = ?, finish_reason = ?, input_tokens = ?,"
    " output_tokens = ?, cost_micros = ?"
    " WHERE conversation_id = ? AND bucket_ms = ? AND created_at_ms = ? AND message_id = ?",
    "message_set_parent": "UPDATE messages_by_bucket SET parent_id = ?"
    " WHERE conversation_id = ? AND bucket_ms = ? AND created_at_ms = ? AND message_id = ?",
    # message_children: versions and the way down a path
    "child_insert": "INSERT INTO message_children (conversation_id, parent_id, created_at_ms, message_id, role,"
    " bucket_ms) VALUES (?, ?, ?, ?, ?, ?)",
    "children_of": "SELECT parent_id, created_at_ms, message_id, role, bucket_ms FROM message_children"
    " WHERE conversation_id = ? AND parent_id IN ?",
    "children_drop": "DELETE FROM message_children WHERE conversation_id = ?",
    # messages_by_bucket and message_buckets. The write timestamp comes from the claim: the
    # claimer's write outranks any other writer's of the same message (first answer kept).
    "message_insert": f"INSERT INTO messages_by_bucket ({_MESSAGE_COLUMNS})"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) USING TIMESTAMP ?",
    "message_get": f"SELECT {_MESSAGE_COLUMNS} FROM messages_by_bucket"
    " WHERE conversation_id = ? AND bucket_ms = ? AND created_at_ms = ? AND message_id = ?",
    "messages_first": f"SELECT {_MESSAGE_COLUMNS} FROM messages_by_bucket"
    " WHERE conversation_id = ? AND bucket_ms = ? LIMIT ?",
    "messages_before": f"SELECT {_MESSAGE_COLUMNS} FROM messages_by_bucket"
    " WHERE conversation_id = ? AND bucket_ms = ? AND (created_at_ms, message_id) < (?, ?) LIMIT ?",
    # Search reads a message's id and text only.
    "message_texts_first": "SELECT created_at_ms, message_id, content FROM messages_by_bucket"
    " WHERE conversation_id = ? AND bucket_ms = ? LIMIT ?",
    "message_texts_before": "SELECT created_at_ms, message_id, content FROM messages_by_bucket"
    " WHERE conversation_id = ? AND bucket_ms = ? AND (created_at_ms, message_id) < (?, ?) LIMIT ?",
    # Keys only: the walks that need no text (legacy parents, media, finding a message).
    "message_keys_first": "SELECT created_at_ms, message_id, parent_id, role, media_ids FROM messages_by_bucket"
    " WHERE conversation_id = ? AND bucket_ms = ? LIMIT ?",
    "message_keys_before": "SELECT created_at_ms, message_id, parent_id, role, media_ids FROM messages_by_bucket"
    " WHERE conversation_id = ? AND bucket_ms = ? AND (created_at_ms, message_id) < (?, ?) LIMIT ?",
    "messages_drop": "DELETE FROM messages_by_bucket WHERE conversation_id = ? AND bucket_ms = ?",
    "message_bucket_insert": "INSERT INTO message_buckets (conversation_id, bucket_ms) VALUES (?, ?)",
    "message_buckets_upto": "SELECT bucket_ms FROM message_buckets WHERE conversation_id = ? AND bucket_ms <= ?"
    " LIMIT ?",
    "message_buckets_drop": "DELETE FROM message_buckets WHERE conversation_id = ?",
    # changes_by_user and change_buckets: sync
    # Both expire after the retention (PARLEY_HISTORY_CHANGES_RETENTION_DAYS).
    "change_insert": f"INSERT INTO changes_by_user ({_CHANGE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) USING TTL ?",
    "change_bucket_insert": "INSERT INTO change_buckets (user_id, bucket_ms) VALUES (?, ?) USING TTL ?",
    "sync_user_get": "SELECT first_change_at_ms FROM sync_users WHERE user_id = ?",
    "sync_user_insert": "INSERT INTO sync_users (user_id, first_change_at_ms) VALUES (?, ?)",
    "change_buckets_from": "SELECT bucket_ms FROM change_buckets WHERE user_id = ? AND bucket_ms >= ? LIMIT ?",
    "changes_first": f"SELECT {_CHANGE_COLUMNS} FROM changes_by_user WHERE user_id = ? AND bucket_ms = ? LIMIT ?",
    "changes_after": f"SELECT {_CHANGE_COLUMNS} FROM changes_by_user WHERE user_id = ? AND bucket_ms = ?"
    " AND (changed_at_ms, change_id) > (?, ?) LIMIT ?",
}

# Not safe to send twice blindly: a lightweight transaction's second try reports "not applied".
_NOT_IDEMPOTENT = frozenset({"message_claim", "continuation_claim"})


async def prepare_all(session: CassandraSession) -> dict[str, PreparedStatement]:
    return {name: await session.prepare(cql, idempotent=name not in _NOT_IDEMPOTENT) for name, cql in CQL.items()}
