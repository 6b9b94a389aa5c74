"""Child processes of a benchmark run: started from the project root with the current Python,
output to a log file, and always stopped (terminate, then kill) when the run ends or fails."""

from __future__ import annotations

import contextlib
import resource
import selectors
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
STOP_GRACE_S = 10


class ChildFailed(RuntimeError):
    """A child process exited non-zero or timed out; the message ends with its log's tail."""


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


@contextlib.contextmanager
def running(
    command: list[str], *, env: dict[str, str] | None, log: Path, stdout=None
) -> Iterator[subprocess.Popen]:
    """Start a child; however the block ends, make sure it is gone afterwards."""
    with log.open("ab") as log_file:
        child = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=stdout or log_file, stderr=log_file
        )
        try:
            yield child
        finally:
            stop(child)


def stop(child: subprocess.Popen) -> None:
    if child.poll() is None:
        child.terminate()
        try:
            child.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    if child.stdout:
        child.stdout.close()


def run_to_end(
    command: list[str], *, env: dict[str, str], log: Path, timeout_s: float
) -> tuple[float, bytes]:
    """Run a child to completion; returns (wall seconds, its stdout). Raises ChildFailed."""
    started = time.perf_counter()
    with running(command, env=env, log=log, stdout=subprocess.PIPE) as child:
        try:
            out, _ = child.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise ChildFailed(f"{' '.join(command[2:])} timed out\n{tail(log)}") from None
        wall = time.perf_counter() - started
        if child.returncode != 0:
            raise ChildFailed(f"{' '.join(command[2:])} exited {child.returncode}\n{tail(log)}")
    return wall, out


def wait_for_line(child: subprocess.Popen, line: bytes, timeout_s: float, log: Path) -> None:
    """Wait until a child prints `line` (say, that it listens); ChildFailed if it never does."""
    with selectors.DefaultSelector() as selector:
        selector.register(child.stdout, selectors.EVENT_READ)
        ready = selector.select(timeout_s)
    got = child.stdout.readline().strip() if ready else b""
    if got != line:
        raise ChildFailed(f"{' '.join(child.args[2:])} did not start\n{tail(log)}")


def tail(log: Path, lines: int = 20) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def children_cpu_s() -> float:
    """CPU seconds of every child (and its children) that has ended and been waited for."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def process_cpu_s(pid: int) -> float:
    """CPU seconds a running process has used so far."""
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system
