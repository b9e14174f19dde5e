"""Redis clients with pools sized for how they are used.

Short commands share a bounded pool that makes a caller wait for a free connection instead of
failing (a burst of a thousand new streams must queue, not error). Blocking reads (XREAD BLOCK
on replay logs, one per resumed stream) hold their connection for seconds, so they get a
pool of their own that cannot starve the short commands.
"""

from __future__ import annotations

from redis.asyncio import BlockingConnectionPool, ConnectionPool, Redis


def command_client(url: str, max_connections: int, wait_s: float = 10.0) -> Redis:
    return Redis(connection_pool=BlockingConnectionPool.from_url(url, max_connections=max_connections, timeout=wait_s))


def follower_client(url: str, max_connections: int) -> Redis:
    return Redis(connection_pool=ConnectionPool.from_url(url, max_connections=max_connections))
