"""GET /healthz: can the hub reach its database and Redis, how deep are the queues, and when
each provider webhook last received a request that passed its signature check (a webhook
that is not registered, or a proxy that blocks it, shows as a time long ago, or none)."""

from __future__ import annotations

import contextlib
import time

import redis
from sqlalchemy import text

from hub import queues
from hub.clock import utcnow
from hub.runtime import Runtime


def check(rt: Runtime) -> tuple[bool, dict]:
    report: dict = {}
    healthy = True
    try:
        with rt.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        report["database"] = "ok"
    except Exception as exc:  # any driver error means "down"; only its kind is shown
        report["database"] = f"error: {type(exc).__name__}"
        healthy = False
    try:
        rt.redis.ping()
        report["redis"] = "ok"
        report["queues"] = queues.queue_depths(rt.redis)
        report["webhooks_last_valid"] = webhooks_last_valid(rt)
    except Exception as exc:
        report["redis"] = f"error: {type(exc).__name__}"
        healthy = False
    report["status"] = "ok" if healthy else "fail"
    return healthy, report


WEBHOOK_SEEN_KEY = "hub:webhook-seen"
WEBHOOKS = ("twilio-sms", "twilio-status", "telegram")


SEEN_EVERY_S = 1.0  # the time is shown to the second: one write a second is enough


def webhook_seen(rt: Runtime, name: str) -> None:
    """A webhook request passed its signature check now (kept in Redis: a hint, not data).
    Written at most once a second per process: at 200 replies a second this saves a Redis
    round trip on nearly every webhook."""
    now = time.monotonic()
    if now - rt.webhooks_seen.get(name, -SEEN_EVERY_S) < SEEN_EVERY_S:
        return
    rt.webhooks_seen[name] = now
    with contextlib.suppress(redis.RedisError):
        rt.redis.hset(WEBHOOK_SEEN_KEY, name, utcnow().isoformat(timespec="seconds") + "Z")


def webhooks_last_valid(rt: Runtime) -> dict[str, str | None]:
    seen = rt.redis.hgetall(WEBHOOK_SEEN_KEY)
    return {name: (seen.get(name.encode()) or b"").decode() or None for name in WEBHOOKS}
