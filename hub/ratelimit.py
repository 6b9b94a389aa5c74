"""Rate limits in Redis, shared by every process on every host: per-provider token buckets,
and fixed-window counters for sign-in failures and residents' code requests."""

from __future__ import annotations

from dataclasses import dataclass

import redis

# Refill, then grant as many whole tokens as are there (up to `want`); Redis's own clock, so
# workers on several hosts agree. Returns {granted, seconds until the next token}.
_TAKE = """
local rate, burst, want = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or burst
local ts = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local granted = math.min(want, math.floor(tokens))
tokens = tokens - granted
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(burst / rate) + 60)
local wait = 0
if granted < want then wait = (1 - (tokens - math.floor(tokens))) / rate end
return {granted, tostring(wait)}
"""


@dataclass(frozen=True)
class Grant:
    granted: int
    wait_s: float  # how long until another token, when fewer than wanted were granted


class TokenBucket:
    def __init__(self, connection: redis.Redis, name: str, rate_per_s: float, burst: float = 0):
        self.key = f"hub:rate:{name}"
        self.rate = rate_per_s
        self.burst = burst or max(1.0, rate_per_s)
        self._script = connection.register_script(_TAKE)

    def take(self, want: int) -> Grant:
        granted, wait = self._script(keys=[self.key], args=[self.rate, self.burst, want])
        return Grant(int(granted), float(wait))


def count_in_window(client: redis.Redis, key: str, window_s: int) -> tuple[int, int]:
    """Count one more event under `key` in a fixed window that starts with the first one;
    returns (events so far, seconds left in the window). Sign-in failures and residents'
    code requests are limited this way."""
    with client.pipeline() as pipe:
        pipe.set(key, 0, ex=window_s, nx=True)
        pipe.incr(key)
        pipe.ttl(key)
        _, count, seconds_left = pipe.execute()
    return count, seconds_left
