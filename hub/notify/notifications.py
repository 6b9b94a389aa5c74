"""Sending SMS and e-mail through /v2, reading them back, and the received text messages.

A notification is stored (`created`) and answered at once; a job on the `default` queue sends
it through the same channel senders as an agent's answer (hub.outbound.send_one), and Twilio's
receipts move it on (hub.notify.statuses). A test key's notification is never sent: it is
`delivered` at once, as Notify's test keys are. A team key sends only to staff members."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from email.utils import parseaddr

from rq import Retry, get_current_job
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from channels import base as outcome
from channels.email import OutgoingEmail
from channels.sms import OutgoingSms
from hub import outbound, queues, runtime
from hub.adapters import mail_domain, twilio_status_callback
from hub.apikeys import KeyHolder, service_id
from hub.clock import utcnow
from hub.contacts import InvalidAddress, normalise_email, normalise_phone
from hub.delivery import run_in_loop
from hub.models import (
    ApiKeyType,
    ContactPoint,
    Message,
    MessageDirection,
    NotifyNotification,
    StaffUser,
)
from hub.notify import render, statuses
from hub.notify.errors import bad_request, rate_limit_error, validation_error
from hub.notify.templates import DATETIME_FORMAT, MAX_SUBJECT, SMS_CHAR_LIMIT, get_template
from hub.providers import twilio_account
from hub.ratelimit import TokenBucket

SEND_JOB = "hub.notify.notifications.send_notification"
RETRIES_S = [10, 60, 300]
MAX_REFERENCE = 1000
PAGE_SIZE = 250  # Notify's API_PAGE_SIZE
RATE_INTERVAL_S = 60
ADDRESS_FIELD = {"sms": "phone_number", "email": "email_address"}
# Received messages are the hub's inbox messages; their ids are shown as UUIDs (Notify's
# clients page by a UUID found in the `next` link) with the message id in the low 64 bits.
RECEIVED_ID_PREFIX = 0x6D676C61_73000000  # "mglas"


class TryAgain(RuntimeError):
    """A transient failure: RQ runs the job again after the next retry interval."""


@dataclass(frozen=True)
class SendRequest:
    notification_type: str  # sms | email
    recipient: str  # normalised
    template_id: str
    personalisation: dict
    reference: str | None


# -- the request ------------------------------------------------------------------------------


def parse_send_request(notification_type: str, data: object) -> SendRequest:
    """A POST body checked as Notify's JSON schema does, every fault reported at once."""
    if not isinstance(data, dict):
        raise bad_request("Invalid JSON supplied in POST data")
    field = ADDRESS_FIELD[notification_type]
    sender_field = "sms_sender_id" if notification_type == "sms" else "email_reply_to_id"
    faults = [
        f"{name} is a required property" for name in (field, "template_id") if name not in data
    ]
    for name in ("template_id", sender_field):
        if name in data and not is_uuid(data[name]):
            faults.append(f"{name} is not a valid UUID")
    if "personalisation" in data and not isinstance(data["personalisation"], dict):
        faults.append("personalisation should contain key value pairs")
    reference = data.get("reference")
    if reference is not None and not isinstance(reference, str):
        faults.append(f"reference {reference} is not of type string")
    elif reference is not None and len(reference) > MAX_REFERENCE:
        faults.append(f"reference is longer than {MAX_REFERENCE} characters")
    recipient = _recipient(notification_type, data.get(field), faults) if field in data else ""
    if faults:
        raise validation_error(*faults)
    return SendRequest(
        notification_type,
        recipient,
        str(data["template_id"]).lower(),
        data.get("personalisation") or {},
        reference,
    )


def _recipient(notification_type: str, raw: object, faults: list[str]) -> str:
    try:
        if not isinstance(raw, str):
            raise InvalidAddress("not a string")
        if notification_type == "sms":
            return normalise_phone(raw)
        return normalise_email(raw)
    except InvalidAddress:
        if notification_type == "sms":
            faults.append("phone_number Not a valid international number")
        else:
            faults.append("email_address Not a valid email address")
        return ""


def is_uuid(value: object) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return isinstance(value, str) and len(value) == 36


# -- sending ----------------------------------------------------------------------------------


def send(rt: runtime.Runtime, key: KeyHolder, request: SendRequest) -> dict:
    """Check, store and queue one notification; Notify's 201 answer. Raises ApiError, and
    then nothing is stored or sent."""
    _count_against_rate_limit(rt, key)
    with rt.session() as session:
        row = _notification(session, key, request)
        session.add(row)
        session.flush()
        answer = _post_response(rt, row)
    if row.status == statuses.CREATED:
        enqueue(rt, row.seq)
    return answer


def _count_against_rate_limit(rt: runtime.Runtime, key: KeyHolder) -> None:
    limit = rt.settings.notify_rate_limit
    bucket = TokenBucket(rt.redis, f"notify-api:{key.id}", limit / RATE_INTERVAL_S, limit)
    if not bucket.take(1).granted:
        raise rate_limit_error(key.key_type, limit, RATE_INTERVAL_S)


def _notification(session: Session, key: KeyHolder, request: SendRequest) -> NotifyNotification:
    kind = request.notification_type
    template = get_template(session, request.template_id)
    if template is None:
        raise bad_request("Template not found")
    if template.template_type != kind:
        raise bad_request(
            f"{template.template_type} template is not suitable for {kind} notification"
        )
    missing = render.missing(request.personalisation, template.subject, template.body)
    if missing:
        raise bad_request(f"Missing personalisation: {', '.join(missing)}")
    body = render.fill(template.body, request.personalisation).strip()
    if kind == "sms" and len(body) > SMS_CHAR_LIMIT:
        raise bad_request(
            f"Text messages cannot be longer than {SMS_CHAR_LIMIT} characters. "
            f"Your message is {len(body)} characters"
        )
    if key.key_type == ApiKeyType.TEAM and not _is_team_member(session, kind, request.recipient):
        raise bad_request("Can't send to this recipient using a team-only API key")
    subject = (
        render.one_line(render.fill(template.subject, request.personalisation))
        if kind == "email"
        else None
    )
    if subject is not None and len(subject) > MAX_SUBJECT:
        raise bad_request(f"The subject is longer than {MAX_SUBJECT} characters")
    now = utcnow()
    simulated = key.key_type == ApiKeyType.TEST
    return NotifyNotification(
        id=str(uuid.uuid4()),
        api_key_id=key.id,
        key_type=key.key_type,
        notification_type=kind,
        recipient=request.recipient,
        template_id=template.id,
        template_version=template.version,
        reference=request.reference,
        subject=subject,
        body=body,
        status=statuses.DELIVERED if simulated else statuses.CREATED,
        created_at=now,
        sent_at=now if simulated else None,
        completed_at=now if simulated else None,
    )


def _is_team_member(session: Session, kind: str, recipient: str) -> bool:
    """Staff members have e-mail addresses only, so a team key sends no SMS."""
    if kind != "email":
        return False
    found = select(StaffUser.id).where(
        func.lower(StaffUser.email) == recipient.lower(), StaffUser.active
    )
    return session.scalar(found) is not None


def job_id(seq: int) -> str:
    return f"notify-{seq}"


def enqueue(rt: runtime.Runtime, seq: int) -> None:
    queues.enqueue_once(
        rt.redis,
        "default",
        SEND_JOB,
        (seq,),
        job_id(seq),
        retry=Retry(max=len(RETRIES_S), interval=RETRIES_S),
    )


def send_notification(seq: int) -> str:
    """RQ job: send a `created` notification; raises TryAgain on a transient failure."""
    rt = runtime.current()
    with rt.session() as session:
        row = session.get(NotifyNotification, seq)
        if row is None or row.status != statuses.CREATED:
            return "nothing to send"
        if _opted_out(session, row):
            row.status, row.completed_at = statuses.PERMANENT_FAILURE, utcnow()
            row.error = "the recipient opted out (STOP) on this channel"
            return row.status
        kind, outgoing = row.notification_type, _outgoing(rt, row)
    result = run_in_loop(outbound.send_one(rt, kind, outgoing))
    job = get_current_job()
    again = result.status == outcome.RETRY and job is not None and bool(job.retries_left)
    values = statuses.after_send(kind, result, retrying=again)
    with rt.session() as session:
        session.execute(
            update(NotifyNotification)
            .where(NotifyNotification.seq == seq, NotifyNotification.status == statuses.CREATED)
            .values(**values)
        )
    if again:
        raise TryAgain(result.error or "transient failure")
    return values["status"]


def _opted_out(session: Session, row: NotifyNotification) -> bool:
    """A resident who answered STOP gets nothing more on that channel, from the API either."""
    opted_out = select(ContactPoint.id).where(
        ContactPoint.channel == row.notification_type,
        ContactPoint.address == row.recipient,
        ContactPoint.opted_out_at.is_not(None),
    )
    return session.scalar(opted_out) is not None


def _outgoing(rt: runtime.Runtime, row: NotifyNotification):
    settings = rt.settings
    if row.notification_type == "sms":
        return OutgoingSms(row.seq, row.recipient, row.body, twilio_status_callback(settings))
    domain = mail_domain(settings)
    return OutgoingEmail(
        key=row.seq,
        to=row.recipient,
        subject=row.subject or "",
        text=render.email_text(row.body),
        html=render.email_html(row.body),
        message_id=f"<notify-{row.id}@{domain}>",
        envelope_from=f"bounce@{domain}",
    )


# -- reading back -----------------------------------------------------------------------------


def get_notification(rt: runtime.Runtime, notification_id: str) -> dict | None:
    with rt.session() as session:
        row = session.scalar(
            select(NotifyNotification).where(NotifyNotification.id == notification_id.lower())
        )
        return notification_json(rt, row) if row is not None else None


@dataclass(frozen=True)
class NotificationFilter:
    template_types: list[str]
    statuses: list[str]
    reference: str | None
    older_than: str | None


def list_notifications(rt: runtime.Runtime, key: KeyHolder, wanted: NotificationFilter) -> list:
    """Up to a page of the key type's notifications, newest first, older than `older_than`.
    A test key sees its test notifications, the others theirs, as in Notify."""
    query = select(NotifyNotification).where(NotifyNotification.key_type == key.key_type)
    if wanted.template_types:
        query = query.where(NotifyNotification.notification_type.in_(wanted.template_types))
    if wanted.statuses:
        query = query.where(NotifyNotification.status.in_(statuses.statuses_for(wanted.statuses)))
    if wanted.reference is not None:
        query = query.where(NotifyNotification.reference == wanted.reference)
    if wanted.older_than is not None:
        older = select(NotifyNotification.seq).where(
            NotifyNotification.id == wanted.older_than.lower()
        )
        query = query.where(NotifyNotification.seq < older.scalar_subquery())
    with rt.session() as session:
        rows = session.scalars(query.order_by(NotifyNotification.seq.desc()).limit(PAGE_SIZE))
        return [notification_json(rt, row) for row in rows]


def received_texts(rt: runtime.Runtime, older_than: str | None) -> list[dict]:
    """Up to a page of the SMS residents sent the city, newest first."""
    query = select(Message).where(
        Message.channel == "sms", Message.direction == MessageDirection.IN
    )
    if older_than is not None:
        message_id = _message_id(older_than)
        if message_id is None:
            return []
        query = query.where(Message.id < message_id)
    notify_number, service = sms_sender(rt), service_id(rt)
    with rt.session() as session:
        rows = session.scalars(query.order_by(Message.id.desc()).limit(PAGE_SIZE))
        return [
            {
                "id": str(uuid.UUID(int=(RECEIVED_ID_PREFIX << 64) | row.id)),
                "created_at": row.created_at.strftime(DATETIME_FORMAT),
                "notify_number": notify_number,
                "user_number": row.address,
                "service_id": service,
                "content": row.body,
            }
            for row in rows
        ]


def _message_id(received_id: str) -> int | None:
    value = uuid.UUID(received_id).int
    return value & (2**64 - 1) if value >> 64 == RECEIVED_ID_PREFIX else None


# -- Notify's shapes --------------------------------------------------------------------------


def sms_sender(rt: runtime.Runtime) -> str:
    """The hub's one SMS sender: its number, or its Twilio Messaging Service."""
    account = twilio_account(rt)
    return account.from_number or account.messaging_service_sid


def _template_ref(rt: runtime.Runtime, row: NotifyNotification) -> dict:
    uri = f"{rt.settings.base_url}/v2/template/{row.template_id}/version/{row.template_version}"
    return {"id": row.template_id, "version": row.template_version, "uri": uri}


def _post_response(rt: runtime.Runtime, row: NotifyNotification) -> dict:
    if row.notification_type == "sms":
        content = {"body": row.body, "from_number": sms_sender(rt)}
    else:
        content = {
            "body": row.body,
            "subject": row.subject,
            "from_email": parseaddr(rt.settings.mail_from)[1],
            "one_click_unsubscribe_url": None,
        }
    return {
        "id": row.id,
        "reference": row.reference,
        "content": content,
        "uri": f"{rt.settings.base_url}/v2/notifications/{row.id}",
        "template": _template_ref(rt, row),
        "scheduled_for": None,
    }


def notification_json(rt: runtime.Runtime, row: NotifyNotification) -> dict:
    kind = row.notification_type
    return {
        "id": row.id,
        "reference": row.reference,
        "email_address": row.recipient if kind == "email" else None,
        "phone_number": row.recipient if kind == "sms" else None,
        **dict.fromkeys(("line_1", "line_2", "line_3", "line_4", "line_5", "line_6")),
        "postcode": None,
        "type": kind,
        "status": row.status,
        "template": _template_ref(rt, row),
        "body": row.body,
        "subject": row.subject,
        "created_at": row.created_at.strftime(DATETIME_FORMAT),
        "created_by_name": None,
        "sent_at": _when(row.sent_at),
        "completed_at": _when(row.completed_at),
        "scheduled_for": None,
        "postage": None,
    }


def _when(moment) -> str | None:
    return moment.strftime(DATETIME_FORMAT) if moment is not None else None
