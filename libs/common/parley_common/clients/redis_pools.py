"""Redis clients with pools sized for how they are used.

Short commands share a bounded pool that makes a caller wait for a free connection instead of
failing (a burst of a thousand new streams must queue, not error). Blocking reads (XREAD BLOCK
on replay logs, one per resumed stream) hold their connection for seconds, so they get a
pool of their own that cannot starve the short commands.
"""

from __future__ import annotations

from redis.asyncio import BlockingConnectionPool, ConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError, TimeoutError

# A pooled connection broken by a Redis restart fails once; the command is retried on a new one.
_RETRY = {
    "retry": Retry(ExponentialBackoff(cap=1.0, base=0.05), 3),
    "retry_on_error": [ConnectionError, TimeoutError],
}


def command_client(url: str, max_connections: int, wait_s: float = 10.0) -> Redis:
    pool = BlockingConnectionPool.from_url(url, max_connections=max_connections, timeout=wait_s, **_RETRY)
    return Redis(connection_pool=pool)


def follower_client(url: str, max_connections: int) -> Redis:
    return Redis(connection_pool=ConnectionPool.from_url(url, max_connections=max_connections, **_RETRY))
