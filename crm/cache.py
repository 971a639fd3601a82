"""Clients of the serving cache, from one URL: the embedded server, a plain Redis, Azure Cache for
Redis (``rediss://:<access key>@<name>.redis.cache.windows.net:6380/0``) or a Redis Cluster.

Whether the URL points at a cluster is asked of the server itself (``INFO cluster``), so the same
setting (``CRM_REDIS_URL`` or the Airflow Connection ``crm_redis``) works for each deployment;
TLS options go in the URL's query (``ssl_ca_certs=...``, ``ssl_cert_reqs=...``), as redis-py reads
them.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import redis
    import redis.asyncio


@functools.lru_cache(maxsize=16)
def is_cluster(url: str) -> bool:
    """True when ``url`` is a node of a Redis Cluster (cluster mode enabled)."""
    if url.startswith("unix://"):
        return False
    import redis

    with redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=5) as probe:
        try:
            return bool(probe.info("cluster").get("cluster_enabled"))
        except redis.ResponseError:  # INFO cluster refused: a server without cluster support
            return False


def connect(url: str, **kwargs) -> redis.Redis | redis.RedisCluster:
    """A synchronous client for ``url`` (a cluster client when the server is a cluster node)."""
    import redis

    if is_cluster(url):
        return redis.RedisCluster.from_url(url, **kwargs)
    return redis.Redis.from_url(url, **kwargs)


def connect_async(url: str, **kwargs) -> redis.asyncio.Redis | redis.asyncio.RedisCluster:
    """An asyncio client for ``url`` (a cluster client when the server is a cluster node)."""
    import redis.asyncio as aioredis

    if is_cluster(url):
        return aioredis.RedisCluster.from_url(url, **kwargs)
    return aioredis.Redis.from_url(url, **kwargs)
