"""`hub worker` (and `python worker.py`): one process working every queue in priority order,
with the RQ scheduler (retries, quiet hours, notices for later) and the periodic sweeper."""

from __future__ import annotations

import logging
import os
import socket
import threading

from flask import Flask
from rq import SimpleWorker

from hub import queues, runtime
from hub.adapters import close_senders
from hub.delivery import run_in_loop
from hub.sweeper import sweep_if_free

log = logging.getLogger("hub.worker")


def run_worker(app: Flask, *, burst: bool = False, sweeper: bool = True) -> bool:
    """Work until stopped (SIGTERM or Ctrl-C finish the current job first) or, with burst,
    until the queues are empty. Jobs run in this process: the app is built once."""
    rt = app.extensions["hub"]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    quiet_provider_libraries()
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
    runtime.freeze_startup_objects()
    try:
        return worker.work(burst=burst, with_scheduler=not burst, logging_level="INFO")
    finally:
        stop.set()
        run_in_loop(close_senders())


def quiet_provider_libraries() -> None:
    """Provider libraries log every request at INFO: twilio eight lines a message, and httpx
    (under python-telegram-bot) the request URL, which holds the bot token. Warnings only."""
    for name in ("twilio", "httpx", "httpcore", "telegram", "aiohttp.access"):
        logging.getLogger(name).setLevel(logging.WARNING)


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
