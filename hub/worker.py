"""`hub worker` (and `python worker.py`): one process working every queue in priority order,
with the RQ scheduler (retries, quiet hours, notices for later) and the periodic sweeper."""

from __future__ import annotations

import logging
import os
import socket
import threading

from flask import Flask
from rq import SimpleWorker

from hub import queues
from hub.sweeper import sweep_if_free

log = logging.getLogger("hub.worker")


def run_worker(app: Flask, *, burst: bool = False, sweeper: bool = True) -> bool:
    """Work until stopped (SIGTERM or Ctrl-C finish the current job first) or, with burst,
    until the queues are empty. Jobs run in this process: the app is built once."""
    rt = app.extensions["hub"]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    worker = SimpleWorker(
        queues.all_queues(rt.redis),
        connection=rt.redis,
        name=f"hub-{socket.gethostname()}-{os.getpid()}",
    )
    stop = threading.Event()
    if sweeper and not burst:
        threading.Thread(
            target=_sweep_loop, args=(app, stop), name="hub-sweeper", daemon=True
        ).start()
    try:
        return worker.work(burst=burst, with_scheduler=not burst, logging_level="INFO")
    finally:
        stop.set()


def _sweep_loop(app: Flask, stop: threading.Event) -> None:
    rt = app.extensions["hub"]
    # A first sweep straight away: a restarted worker picks up what its predecessor left.
    while True:
        try:
            with app.app_context():
                report = sweep_if_free(rt)
            if report and (report.released or report.requeued_chunks or report.started):
                log.info("sweeper: %s", report)
        except Exception:
            # The sweeper is a safety net: one failed round (say Redis restarting) must not
            # end it; the next round tries again.
            log.exception("sweeper round failed")
        if stop.wait(rt.settings.sweep_interval_s):
            return
