"""`python -m bench.standin STORE PORT`: the hub's SMTP stand-in in a process of its own, so the
server and the sender under test do not share a GIL. Prints `ready` once it listens and runs
until SIGTERM or SIGINT."""

from __future__ import annotations

import signal
import sys
import threading

from channels.sandbox.smtp import start_smtp_standin

READY = b"ready"


def main(argv: list[str]) -> int:
    store_path, port = argv[0], int(argv[1])
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    controller = start_smtp_standin(store_path, port)
    try:
        sys.stdout.buffer.write(READY + b"\n")
        sys.stdout.flush()
        stopping.wait()
    finally:
        controller.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
