"""Limits kept in Redis and shared by every replica: provider requests and tokens per minute (providers),
per-user monthly tokens and cost (users), waiting for provider budget with the client informed (waiting) and
per-user open streams (stream_slots)."""
