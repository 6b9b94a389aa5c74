"""GET /healthz: can the hub reach its database and Redis, and how deep are the queues."""

from __future__ import annotations

from sqlalchemy import text

from hub import queues
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
    except Exception as exc:
        report["redis"] = f"error: {type(exc).__name__}"
        healthy = False
    report["status"] = "ok" if healthy else "fail"
    return healthy, report
