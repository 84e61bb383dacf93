"""What a call to Redis raises when Redis is not there for it."""

from __future__ import annotations

from redis.exceptions import RedisError

# RuntimeError: uvloop refuses to write on a connection redis-py has just closed under the call
# (after a timeout, or while reconnecting): the same failure in other words. Seen under load.
REDIS_FAILURES: tuple[type[Exception], ...] = (RedisError, OSError, RuntimeError)
