"""The one JSON object a run prints, with the targets next to the figures, and its summary."""

from __future__ import annotations

import argparse

from bench.environment import BenchHub

PLANNING_TARGET_S_PER_MILLION = {"sqlite": 60.0, "postgresql": 30.0}
PEAK_RSS_TARGET_MB = 500.0


def report(
    hub: BenchHub,
    args: argparse.Namespace,
    seed_s: float,
    planning: dict,
    hub_send: dict,
    bare_send: dict,
    naive_send: dict,
) -> dict:
    hub_rate = args.send_sample / hub_send["span"]
    bare_rate = args.send_sample / bare_send["span"]
    naive_rate = args.naive_sample / naive_send["span"]
    rows_per_s = planning["deliveries"] / planning["seconds"]
    target_rows_per_s = 1_000_000 / PLANNING_TARGET_S_PER_MILLION[hub.dialect]
    return {
        "residents": args.residents,
        "deliveries_planned": planning["deliveries"],
        "database": hub.dialect,
        "planning_seconds": round(planning["seconds"], 3),
        "planning_rows_per_s": round(rows_per_s),
        "peak_rss_mb": round(planning["peak_rss_mb"], 1),
        "send_sample": args.send_sample,
        "hub_msgs_per_s": round(hub_rate, 1),
        "bare_msgs_per_s": round(bare_rate, 1),
        "naive_msgs_per_s": round(naive_rate, 1),
        "ratio_vs_bare": round(hub_rate / bare_rate, 3),
        "ratio_vs_naive": round(hub_rate / naive_rate, 2),
        "concurrency": args.concurrency,
        "naive_sample": args.naive_sample,
        "redis": "external" if args.redis_url else "embedded",
        "throughput_basis": "messages / seconds from first to last accepted by the stand-in",
        "hub_worker_wall_s": round(hub_send["wall"], 2),
        "bare_wall_s": round(bare_send["wall"], 2),
        "naive_worker_wall_s": round(naive_send["wall"], 2),
        "message_body_chars": round(bare_send["body_chars"]),
        "send_jobs_enqueued": planning["send_jobs"],
        "planning_rss_before_mb": round(planning["rss_before_mb"], 1),
        "planning_sql_seconds": round(planning["sql_seconds"], 3),
        "planning_top_statements": planning["statements"],
        "seed_seconds": round(seed_s, 1),
        "targets": {
            "planning_rows_per_s": round(target_rows_per_s),
            "planning_basis": f"1,000,000 deliveries in "
            f"{PLANNING_TARGET_S_PER_MILLION[hub.dialect]:.0f} s on {hub.dialect}",
            "peak_rss_mb": PEAK_RSS_TARGET_MB,
        },
        "meets_targets": {
            "planning": rows_per_s >= target_rows_per_s,
            "peak_rss": planning["peak_rss_mb"] < PEAK_RSS_TARGET_MB,
        },
    }


def summary(r: dict) -> str:
    return "\n".join(
        [
            f"planning  {r['deliveries_planned']:>9} deliveries in {r['planning_seconds']:.2f} s"
            f" = {r['planning_rows_per_s']} rows/s (target {r['targets']['planning_rows_per_s']})"
            f", peak RSS {r['peak_rss_mb']:.0f} MB (target < {PEAK_RSS_TARGET_MB:.0f})",
            f"e-mail    hub {r['hub_msgs_per_s']:.0f}/s, bare aiosmtplib "
            f"{r['bare_msgs_per_s']:.0f}/s, naive {r['naive_msgs_per_s']:.0f}/s"
            f" (C={r['concurrency']})",
            f"ratios    hub/bare {r['ratio_vs_bare']:.2f}, hub/naive {r['ratio_vs_naive']:.1f}",
        ]
    )
