"""Sending one conversation message (an agent's answer, a keyword's confirmation) on its
channel, through the same senders and provider libraries as notices.

Answers are few and each one is waited for by an agent, so each is a job of its own on the
`high` queue: sent at once, the provider's error shown on the message at once. A transient
failure is tried again a few times by the job's retries; after that, or on a permanent error,
the message is `failed` with the provider's words, and the agent's Retry sends it again."""

from __future__ import annotations

import html
from collections.abc import Iterator
from contextlib import contextmanager

from rq import Retry, get_current_job
from sqlalchemy import select

from channels import base as outcome
from channels.email import OutgoingEmail
from channels.sms import OutgoingSms
from channels.telegram import OutgoingTelegram
from hub import live, queues, runtime
from hub.adapters import (
    mail_domain,
    sms_sender,
    smtp_sender,
    telegram_sender,
    twilio_status_callback,
)
from hub.clock import utcnow
from hub.delivery import run_in_loop
from hub.models import ContactPoint, Conversation, Message
from hub.tokens import make_token

SEND_MESSAGE_JOB = "hub.outbound.send_message"
WEB = "web"  # the resident portal's channel (hub.portal)
RETRIES_S = [10, 60, 300]


class TryAgain(RuntimeError):
    """A transient failure: RQ runs the job again after the next retry interval."""


def job_id(message_id: int) -> str:
    return f"message-{message_id}"


def enqueue(rt: runtime.Runtime, message_id: int) -> None:
    queues.enqueue_once(
        rt.redis,
        "high",
        SEND_MESSAGE_JOB,
        (message_id,),
        job_id(message_id),
        retry=Retry(max=len(RETRIES_S), interval=RETRIES_S),
    )


def send_message(message_id: int) -> str:
    """RQ job: send a pending message; raises TryAgain on a transient failure."""
    rt = runtime.current()
    with rt.session() as session:
        message = session.get(Message, message_id)
        if message is None or message.status not in ("pending", "retry"):
            return "nothing to send"
        conversation = session.get(Conversation, message.conversation_id)
        refusal = _refusal(session, message)
        if refusal:
            message.status, message.error = "failed", refusal
            return refusal
        channel, conversation_id = message.channel, message.conversation_id
        if channel == WEB:  # the resident portal shows it: no provider carries it
            message.status, message.sent_at = "delivered", utcnow()
        else:
            outgoing = _outgoing(rt, message, conversation)
    if channel == WEB:
        live.publish(rt, "status", conversation_id, message_id=message_id, status="delivered")
        return "delivered"
    result = run_in_loop(send_one(rt, channel, outgoing))
    job = get_current_job()
    again = result.status == outcome.RETRY and job is not None and bool(job.retries_left)
    with rt.session() as session:
        message = session.get(Message, message_id)
        if result.status == outcome.SENT:
            message.status, message.provider_id = "sent", result.provider_id
            message.sent_at, message.error = utcnow(), None
        else:
            message.status, message.error = ("retry" if again else "failed"), result.error
        status, conversation_id = message.status, message.conversation_id
    live.publish(rt, "status", conversation_id, message_id=message_id, status=status)
    if again:
        raise TryAgain(result.error or "transient failure")
    return status


def _refusal(session, message: Message) -> str | None:
    """An agent's answer must not reach an address that opted out; a keyword's confirmation
    (no author) is the one message that may."""
    if message.author_id is None:
        return None
    opted_out = session.scalar(
        select(ContactPoint.opted_out_at).where(
            ContactPoint.channel == message.channel, ContactPoint.address == message.address
        )
    )
    return "the resident opted out on this channel" if opted_out else None


def _outgoing(rt: runtime.Runtime, message: Message, conversation: Conversation):
    settings = rt.settings
    if message.channel == "sms":
        return OutgoingSms(
            message.id, message.address, message.body, twilio_status_callback(settings)
        )
    if message.channel == "telegram":
        return OutgoingTelegram(message.id, message.address, html.escape(message.body))
    if message.channel == "email":
        domain = mail_domain(settings)
        token = make_token(settings.secret_key, "conversation", conversation.id)
        return OutgoingEmail(
            key=message.id,
            to=message.address,
            subject="Mestni glas",
            text=message.body,
            html=None,
            message_id=f"<m{message.id}.c{conversation.id}@{domain}>",
            envelope_from=f"bounce@{domain}",
            reply_to=f"reply+{token}@{domain}",
        )
    raise ValueError(f"cannot answer on {message.channel}")


async def send_one(rt: runtime.Runtime, channel: str, outgoing) -> outcome.Outcome:
    """Send one message (OutgoingSms, OutgoingTelegram or OutgoingEmail) on its channel."""
    if channel == "sms":
        return await sms_sender(rt).send_one(outgoing)
    if channel == "telegram":
        return await telegram_sender(rt).send_one(outgoing)
    return await _send_email(rt, outgoing)


async def _send_email(rt: runtime.Runtime, mail: OutgoingEmail) -> outcome.Outcome:
    """The SMTP sender streams; one message is a stream of one, committed as it is sent."""
    results: list[outcome.Outcome] = []

    async def one():
        yield mail

    @contextmanager
    def commit(provider_ids: dict[int, str]) -> Iterator[set[int]]:
        # The message row is written after the send (one message: nothing to group).
        yield set(provider_ids)
        results.extend(
            outcome.Outcome(k, outcome.SENT, provider_id=v) for k, v in provider_ids.items()
        )

    await smtp_sender(rt).send(one(), commit, results.append)
    failures = [r for r in results if r.status != outcome.SENT]
    return failures[-1] if failures else results[0]
