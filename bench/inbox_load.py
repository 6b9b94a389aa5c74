"""The load generator of `python -m bench.inbox`: signed Twilio SMS webhooks, open loop.

Runs in a process of its own (bench.inbox starts it with the multiprocessing "spawn" method),
so neither the hub's web server nor the bench's own poller shares its interpreter. Every
request is built and signed before the clock starts; then request i is sent at t0 + i / rate
whatever happened to the ones before it (open loop: a slow server gets more requests in
flight, not fewer requests), over at most `connections` keep-alive connections.

Times are time.time() (the same wall clock the hub and the bench's poller read on this one
machine), so a send time here and a "visible" time in another process can be subtracted.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass

import aiohttp
from twilio.request_validator import RequestValidator

# What residents write about; the marker that follows makes each message findable.
PHRASES = (
    "Na Koroški cesti je velika luknja, prosim popravite jo",
    "Kdaj bo spet voda v Stražišču?",
    "Hvala za obvestilo o zapori ceste",
    "Smetnjaki na Planini niso bili izpraznjeni že dva tedna",
    "Ali avtobus 2 vozi po stari trasi tudi v soboto?",
    "Ulična svetilka pred hišo št. 14 ne sveti",
    "Kje lahko oddam kosovne odpadke?",
    "Pes brez nadzora na otroškem igrišču v Zlatem polju",
)
WARMUP_TAG = "W"
MEASURED_TAG = "M"


@dataclass(frozen=True)
class Plan:
    url: str  # the public URL the signature is computed over (HUB_BASE_URL + path)
    auth_token: str
    account_sid: str
    to_number: str
    senders: list[str]
    rate: float
    seconds: float
    connections: int
    run_id: str  # makes MessageSids unique across runs
    warmup: int = 0  # requests sent (and excluded) before the measured schedule
    seed: int = 1


def marker(tag: str, i: int) -> str:
    return f"[{tag}{i}]"


def parse_marker(body: str) -> tuple[str, int] | None:
    """("M", 17) for a body ending in [M17]; None for anything else."""
    if not body.endswith("]") or "[" not in body:
        return None
    inside = body[body.rindex("[") + 1 : -1]
    if len(inside) < 2 or inside[0] not in (WARMUP_TAG, MEASURED_TAG) or not inside[1:].isdigit():
        return None
    return inside[0], int(inside[1:])


def message_sid(plan: Plan, tag: str, i: int) -> str:
    return f"SM{plan.run_id}{tag}{i:010d}"


def build_requests(plan: Plan, tag: str, count: int) -> list[tuple[dict, str]]:
    """(form parameters as Twilio posts them, X-Twilio-Signature) for each request."""
    validator = RequestValidator(plan.auth_token)
    rng = random.Random(f"{plan.seed}-{tag}")
    built = []
    for i in range(count):
        sid = message_sid(plan, tag, i)
        params = {
            "ToCountry": "SI",
            "ToState": "",
            "SmsMessageSid": sid,
            "NumMedia": "0",
            "ToCity": "",
            "FromZip": "",
            "SmsSid": sid,
            "FromState": "",
            "SmsStatus": "received",
            "FromCity": "",
            "Body": f"{rng.choice(PHRASES)} {marker(tag, i)}",
            "FromCountry": "SI",
            "To": plan.to_number,
            "ToZip": "",
            "NumSegments": "1",
            "MessageSid": sid,
            "AccountSid": plan.account_sid,
            "From": rng.choice(plan.senders),
            "ApiVersion": "2010-04-01",
        }
        built.append((params, validator.compute_signature(plan.url, params)))
    return built


def send_all(plan: Plan) -> dict:
    """Entry point in the child process: the warm-up, a pause, then the measured schedule.
    Returns, per measured request: [scheduled, sent, answered, HTTP status (0: no answer)]."""
    return asyncio.run(_send_all(plan))


async def _send_all(plan: Plan) -> dict:
    count = round(plan.rate * plan.seconds)
    warmup = build_requests(plan, WARMUP_TAG, plan.warmup)
    measured = build_requests(plan, MEASURED_TAG, count)
    timeout = aiohttp.ClientTimeout(total=60)
    connector = aiohttp.TCPConnector(limit=plan.connections)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        warm = await _schedule(session, plan, warmup, min(plan.rate, 50.0)) if warmup else []
        await asyncio.sleep(3.0 if warmup else 0.0)  # let the warm-up drain through the workers
        rows = await _schedule(session, plan, measured, plan.rate)
    return {"warmup": warm, "measured": rows}


async def _schedule(session, plan: Plan, requests: list, rate: float) -> list[list[float]]:
    rows: list[list[float]] = [[0.0, 0.0, 0.0, 0] for _ in requests]
    tasks = []
    t0 = time.time() + 0.2
    for i, (params, signature) in enumerate(requests):
        at = t0 + i / rate
        delay = at - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(_one(session, plan.url, params, signature, at, rows[i])))
    await asyncio.gather(*tasks)
    return rows


async def _one(session, url: str, params: dict, signature: str, at: float, row: list) -> None:
    row[0] = at
    row[1] = time.time()
    try:
        async with session.post(url, data=params, headers={"X-Twilio-Signature": signature}) as r:
            await r.read()
            row[3] = r.status
    except (aiohttp.ClientError, TimeoutError):
        row[3] = 0
    row[2] = time.time()
