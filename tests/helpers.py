"""Helpers shared by the tests (importable, unlike conftest)."""

from __future__ import annotations

from rq import SimpleWorker

from hub import queues


def work(rt) -> None:
    """Run every queued job in this process until the queues are empty."""
    worker = SimpleWorker(queues.all_queues(rt.redis), connection=rt.redis)
    worker.work(burst=True, with_scheduler=False, logging_level="WARNING")
