"""Notify-style templates: a name, a type (sms or email), an e-mail's subject and a body with
`((placeholders))`. Every change makes a new version; every version stays readable, so a
notification always names the exact text it was made from."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from flask_babel import gettext as _
from flask_babel import ngettext
from sqlalchemy import select
from sqlalchemy.orm import Session

from hub.clock import utcnow
from hub.models import NotifyTemplate, NotifyTemplateVersion
from hub.notify import render
from hub.notify.errors import bad_request
from hub.staff import audit

TEMPLATE_TYPES = ("sms", "email")
MAX_NAME = 255
MAX_SUBJECT = 1000
SMS_CHAR_LIMIT = 918  # Notify's limit: six concatenated GSM-7 parts


class TemplateError(ValueError):
    pass


@dataclass(frozen=True)
class TemplateView:
    """One version of a template, as the API shows it."""

    id: str
    name: str
    template_type: str
    subject: str | None
    body: str
    version: int
    created_at: datetime
    updated_at: datetime | None
    created_by: str

    def placeholders(self) -> list[str]:
        return render.placeholders(self.subject, self.body)


def create_template(
    session: Session, *, name: str, template_type: str, body: str, subject: str | None, actor: str
) -> TemplateView:
    if template_type not in TEMPLATE_TYPES:
        raise TemplateError(_("the type must be sms or email, not %(type)s", type=template_type))
    name, subject = _checked(name, template_type, body, subject)
    template = NotifyTemplate(
        id=str(uuid.uuid4()),
        name=name,
        template_type=template_type,
        subject=subject,
        body=body,
        version=1,
        created_by=actor,
        created_at=utcnow(),
    )
    session.add(template)
    session.flush()
    row = _keep_version(session, template)
    audit(session, actor, "notify_template.create", f"notify_template:{template.id}")
    return _view(template, row)


def update_template(
    session: Session,
    template_id: str,
    *,
    actor: str,
    name: str | None = None,
    body: str | None = None,
    subject: str | None = None,
) -> TemplateView:
    """A new version with the given parts changed; the others stay as they were."""
    template = session.get(NotifyTemplate, template_id.lower()) if _is_uuid(template_id) else None
    if template is None:
        raise TemplateError(_("no template %(id)s", id=template_id))
    new_name, new_subject = _checked(
        template.name if name is None else name,
        template.template_type,
        template.body if body is None else body,
        template.subject if subject is None else subject,
    )
    template.name, template.subject = new_name, new_subject
    template.body = template.body if body is None else body
    template.version += 1
    template.updated_at = utcnow()
    row = _keep_version(session, template, actor)
    audit(session, actor, "notify_template.update", f"notify_template:{template.id}")
    return _view(template, row)


def _checked(name: str, template_type: str, body: str, subject: str | None):
    name = name.strip()
    if not name or len(name) > MAX_NAME or "\n" in name:
        raise TemplateError(_("the name must be one line of 1 to %(n)d characters", n=MAX_NAME))
    if not body.strip():
        raise TemplateError(_("the body must not be empty"))
    if template_type == "sms":
        if subject:
            raise TemplateError(_("a text message has no subject"))
        if len(body) > SMS_CHAR_LIMIT:
            raise TemplateError(
                ngettext(
                    "a text message template has at most %(num)d character",
                    "a text message template has at most %(num)d characters",
                    SMS_CHAR_LIMIT,
                )
            )
        return name, None
    subject = " ".join((subject or "").split())
    if not subject or len(subject) > MAX_SUBJECT:
        raise TemplateError(
            ngettext(
                "an e-mail needs a subject of 1 to %(num)d character",
                "an e-mail needs a subject of 1 to %(num)d characters",
                MAX_SUBJECT,
            )
        )
    return name, subject


def _keep_version(session: Session, template: NotifyTemplate, actor: str | None = None):
    row = NotifyTemplateVersion(
        template_id=template.id,
        version=template.version,
        name=template.name,
        subject=template.subject,
        body=template.body,
        created_by=actor or template.created_by,
        created_at=template.updated_at or template.created_at,
    )
    session.add(row)
    return row


def list_templates(session: Session, template_type: str | None = None) -> list[TemplateView]:
    """The current version of every template (of one type), newest first."""
    query = (
        select(NotifyTemplate, NotifyTemplateVersion)
        .join(
            NotifyTemplateVersion,
            (NotifyTemplateVersion.template_id == NotifyTemplate.id)
            & (NotifyTemplateVersion.version == NotifyTemplate.version),
        )
        .order_by(NotifyTemplate.created_at.desc(), NotifyTemplate.id)
    )
    if template_type is not None:
        query = query.where(NotifyTemplate.template_type == template_type)
    return [_view(template, row) for template, row in session.execute(query)]


def get_template(
    session: Session, template_id: str, version: int | None = None
) -> TemplateView | None:
    """The template at `version` (default: the current one), or None."""
    template = session.get(NotifyTemplate, template_id.lower()) if _is_uuid(template_id) else None
    if template is None:
        return None
    row = session.get(NotifyTemplateVersion, (template.id, version or template.version))
    return _view(template, row) if row is not None else None


def _view(template: NotifyTemplate, row: NotifyTemplateVersion) -> TemplateView:
    return TemplateView(
        id=template.id,
        name=row.name,
        template_type=template.template_type,
        subject=row.subject,
        body=row.body,
        version=row.version,
        created_at=template.created_at,
        updated_at=row.created_at if row.version > 1 else None,
        created_by=row.created_by,
    )


def _is_uuid(text: str) -> bool:
    try:
        return str(uuid.UUID(text)) == text.lower()
    except ValueError:
        return False


# -- Notify's shapes --------------------------------------------------------------------------

DATETIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def template_json(template: TemplateView) -> dict:
    updated = template.updated_at
    return {
        "id": template.id,
        "name": template.name,
        "type": template.template_type,
        "created_at": template.created_at.strftime(DATETIME_FORMAT),
        "updated_at": updated.strftime(DATETIME_FORMAT) if updated else None,
        "created_by": template.created_by,
        "version": template.version,
        "body": template.body,
        "subject": template.subject,
        "letter_contact_block": None,
        "postage": None,
        "personalisation": {name: {"required": True} for name in template.placeholders()},
    }


def preview_json(template: TemplateView, personalisation: dict) -> dict:
    """The template filled in, as Notify's preview shows it; missing values are a 400."""
    missing = render.missing(personalisation, template.subject, template.body)
    if missing:
        raise bad_request(f"Missing personalisation: {', '.join(missing)}")
    body = render.fill(template.body, personalisation)
    email = template.template_type == "email"
    return {
        "id": template.id,
        "type": template.template_type,
        "version": template.version,
        "body": body,
        "subject": render.one_line(render.fill(template.subject, personalisation))
        if email
        else None,
        "html": render.email_html(body) if email else None,
        "postage": None,
    }
