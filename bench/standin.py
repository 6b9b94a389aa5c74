"""`python -m bench.standin STORE SMTP_PORT [--http PORT --twilio-sid S --twilio-token T
--telegram-token TOK]`: the hub's stand-ins in a process of their own, so the servers and the
sender under test do not share a GIL. SMTP on SMTP_PORT (0: none); with --http, the Twilio,
Telegram Bot API and Web Push stand-ins on that port, checking the credentials given (the ones
the hub under test uses). Prints `ready` once everything listens and runs until SIGTERM or
SIGINT."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading

from channels.sandbox.smtp import start_smtp_standin

READY = b"ready"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.standin", description=__doc__)
    parser.add_argument("store", help="the sandbox SQLite file")
    parser.add_argument("smtp_port", type=int, help="the SMTP stand-in's port; 0: no SMTP")
    parser.add_argument("--http", type=int, default=0, metavar="PORT", help="HTTP stand-ins")
    parser.add_argument("--twilio-sid", default="")
    parser.add_argument("--twilio-token", default="")
    parser.add_argument("--telegram-token", default="")
    args = parser.parse_args(argv)
    if args.http and not (args.twilio_sid and args.twilio_token and args.telegram_token):
        parser.error("--http needs --twilio-sid, --twilio-token and --telegram-token")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    with contextlib.ExitStack() as stack:
        if args.smtp_port:
            controller = start_smtp_standin(args.store, args.smtp_port)
            stack.callback(controller.stop)
        if args.http:
            server = http_standins(args).start()
            stack.callback(server.stop)
        sys.stdout.buffer.write(READY + b"\n")
        sys.stdout.flush()
        stopping.wait()
    return 0


def http_standins(args: argparse.Namespace):
    """Twilio, Telegram and push on one aiohttp server (as hub.providers.http_standin)."""
    from channels.sandbox.http import StandinServer
    from channels.sandbox.push import PushStandin
    from channels.sandbox.store import SandboxStore
    from channels.sandbox.telegram import TelegramStandin
    from channels.sandbox.twilio import TwilioStandin

    store = SandboxStore(args.store)
    return StandinServer(
        {
            "twilio": TwilioStandin(store, args.twilio_sid, args.twilio_token),
            "telegram": TelegramStandin(store, args.telegram_token),
            "push": PushStandin(store),
        },
        port=args.http,
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
