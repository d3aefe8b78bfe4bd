"""Keys the tests leave on the shared Redis, deleted by prefix."""

from __future__ import annotations


def drop_redis_prefixes(url: str, prefixes: list[str]) -> None:
    """Delete the keys of checkpoint stores under ``prefixes`` (``<prefix>:*``)."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        for prefix in prefixes:
            keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
            for i in range(0, len(keys), 1000):
                client.delete(*keys[i : i + 1000])
    finally:
        client.close()
