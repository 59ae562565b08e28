"""The Redis client every shared-state user in one portal process builds its connection from."""

from __future__ import annotations

from typing import Any

# Each streaming answer, sign-in and rate check borrows a connection briefly; hundreds of answers stream at once.
# A blocking pool makes a burst wait its turn for a few milliseconds instead of failing with "Too many connections"
# (redis-py's default pool holds 100 and raises at once), which turned a burst of 200 questions into 500 errors.
MAX_CONNECTIONS = 256
WAIT_FOR_CONNECTION_S = 10.0


def redis_client(url: str) -> Any:
    import redis.asyncio as aioredis

    pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=MAX_CONNECTIONS, timeout=WAIT_FOR_CONNECTION_S)
    return aioredis.Redis.from_pool(pool)  # closing the client closes its pool
