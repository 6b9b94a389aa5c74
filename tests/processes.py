"""Real `hub worker` processes for tests that kill, restart or starve them."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from hub.config import Settings


def worker_env(settings: Settings, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "HUB_DATABASE_URL": settings.database_url,
        "HUB_REDIS_URL": settings.redis_url,
        "HUB_INSTANCE_PATH": str(settings.instance_path),
        "HUB_SECRET_KEY": settings.secret_key,
        "HUB_BASE_URL": settings.base_url,
        "HUB_SANDBOX_SMTP_PORT": str(settings.sandbox_smtp_port),
        "HUB_SANDBOX_HTTP_PORT": str(settings.sandbox_http_port),
        "HUB_CLAIM_TTL": "2",
        "HUB_SWEEP_INTERVAL": "1",
        "HUB_SWEEP_GRACE": "1",
        **extra,
    }


class WorkerProcesses:
    """Starts `python -m hub.cli worker` processes; stops every one (and its scheduler child)."""

    def __init__(self, settings: Settings, log_dir: Path):
        self.settings = settings
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen] = []

    def start(self, **extra_env: str) -> subprocess.Popen:
        log = open(self.log_dir / f"worker-{len(self.procs)}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "hub.cli", "worker"],
            env=worker_env(self.settings, **extra_env),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group, so the scheduler child goes with it
        )
        log.close()
        self.procs.append(proc)
        return proc

    def kill_hard(self, proc: subprocess.Popen) -> None:
        """SIGKILL the worker process alone, as the OOM killer would."""
        proc.kill()
        proc.wait()

    def stop_all(self) -> None:
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.log_dir.glob("*.log")))


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
