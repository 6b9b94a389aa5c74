"""What every benchmark's command line shares: its errors, its progress lines, and a main that
prints one JSON object and cleans up on Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from collections.abc import Callable

from bench.processes import ChildFailed


class BenchFailed(RuntimeError):
    """The run measured something wrong (say the stand-in got a message twice)."""


def positive(raw: str) -> int:
    """argparse type: a whole number of at least 1."""
    value = int(raw)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run_bench(
    run: Callable[[argparse.Namespace], dict],
    args: argparse.Namespace,
    summary: Callable[[dict], str] | None = None,
) -> int:
    """Run, print the JSON (and a summary unless --json); 130 on Ctrl-C or SIGTERM, after the
    run's own clean-up has unwound; 1 when the run measured something wrong."""
    signal.signal(signal.SIGTERM, _interrupt)  # unwind (and clean up) as on Ctrl-C
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started ignoring it
    try:
        result = run(args)
    except KeyboardInterrupt:
        say("interrupted; everything the bench started is stopped and removed")
        return 130
    except (BenchFailed, ChildFailed) as exc:
        say(f"benchmark failed: {exc}")
        return 1
    print(json.dumps(result, indent=None if args.json else 2))
    if summary is not None and not args.json:
        say(summary(result))
    return 0


def _interrupt(*_) -> None:
    raise KeyboardInterrupt
