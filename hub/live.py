"""Live updates for open inbox pages: what changed in a conversation is published on a Redis
channel, and each page listens through server-sent events (GET /inbox/events).

Published after the change is committed, so a page that reloads on an event sees it. Redis
pub/sub forgets what nobody hears: a page that was away reloads its list when it reconnects
(EventSource does so by itself), so nothing depends on hearing every event."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator

import redis

from hub.runtime import Runtime

CHANNEL = "hub:inbox-events"
HEARTBEAT_S = 15  # a comment line now and then: proxies close silent connections
STREAM_FOR_S = 300  # then the browser reconnects: no worker thread is held for ever


def publish(rt: Runtime, kind: str, conversation_id: int, **details) -> None:
    """Tell open inbox pages; losing Redis here loses a hint, never data."""
    event = {"kind": kind, "conversation_id": conversation_id, **details}
    with contextlib.suppress(redis.RedisError):
        rt.redis.publish(CHANNEL, json.dumps(event))


def stream(rt: Runtime, stream_for_s: float = STREAM_FOR_S) -> Iterator[str]:
    """Server-sent events: `event: <kind>` lines with the JSON as data."""
    pubsub = rt.redis.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(CHANNEL)
    try:
        yield "retry: 3000\n\n"
        ends = time.monotonic() + stream_for_s
        last_beat = time.monotonic()
        while time.monotonic() < ends:
            message = pubsub.get_message(timeout=1.0)
            if message is not None:
                data = message["data"].decode()
                kind = json.loads(data).get("kind", "message")
                yield f"event: {kind}\ndata: {data}\n\n"
            elif time.monotonic() - last_beat > HEARTBEAT_S:
                last_beat = time.monotonic()
                yield ": still here\n\n"
    finally:
        pubsub.close()
