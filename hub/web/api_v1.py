"""/api/v1: the REST API for the city's other systems. Each view parses (done by its
operation's models), calls a domain function and answers; hub/web/api_support.py does the key,
roles, idempotency and problems, hub/web/api_spec.py the OpenAPI document."""

from __future__ import annotations

import contextlib

import redis
from flask import Blueprint, current_app, render_template, request, url_for
from flask_babel import gettext as _
from sqlalchemy.exc import IntegrityError
from werkzeug.exceptions import HTTPException

from hub import api_queries, csrf, outbound
from hub.apikeys import KeyHolder
from hub.broadcasts import (
    Actor,
    BroadcastError,
    NoticeDraft,
    SavedNotQueued,
    cancel_broadcast,
    save_draft,
    start_draft,
)
from hub.conversations import ConversationError, reply
from hub.inbox import InboxFilter
from hub.models import BroadcastStatus, Role
from hub.resident_records import (
    ResidentNotFound,
    create_residents,
    delete_resident,
    get_record,
    update_resident,
)
from hub.residents import ImportRejected
from hub.staff import audit
from hub.web import api_spec, public
from hub.web.api_schemas import (
    AreaOut,
    BroadcastCountsOut,
    BroadcastIn,
    BroadcastOut,
    ConversationOut,
    ConversationQuery,
    DeliveryOut,
    DeliveryQuery,
    FieldError,
    MessageOut,
    PageQuery,
    ReplyIn,
    ResidentBulk,
    ResidentIds,
    ResidentIn,
    ResidentOut,
    ResidentPatch,
    TopicOut,
    page_of,
)
from hub.web.api_support import (
    Api,
    ApiProblem,
    Created,
    http_problem,
    page_response,
    server_problem,
    with_link,
)

bp = Blueprint("api_v1", __name__, url_prefix="/api/v1")
csrf.exempt(bp)  # every call carries its API key; no cookies are involved
api = Api(bp)
bp.register_error_handler(HTTPException, http_problem)
bp.register_error_handler(Exception, server_problem)  # never a stack trace to a client
ID = "<int(min=1, max=2147483647):{}>"
BROADCAST_READERS = (Role.BROADCASTER, Role.APPROVER)
ALL_ROLES = (Role.BROADCASTER, Role.APPROVER, Role.AGENT)


def _rt():
    return current_app.extensions["hub"]


def _problem(status: int, error: Exception | str, pointer: str = "#") -> ApiProblem:
    """A problem about one value (or, with "#", the record as a whole)."""
    return ApiProblem(status, str(error), errors=[FieldError(pointer=pointer, detail=str(error))])


# -- the document and its page ----------------------------------------------------------------


def openapi_document() -> dict:
    return api_spec.document(api, server_url=request.host_url.rstrip("/"), version="1.0.0")


@bp.get("/openapi.json")
@public
def openapi_json():
    return openapi_document()


@bp.get("/docs")
@public
def docs():
    return render_template("pages/api_docs.html", spec=openapi_document())


# -- areas and topics -------------------------------------------------------------------------


@api.operation(
    "GET",
    "/areas",
    roles_allowed=ALL_ROLES,
    summary="List areas",
    tag="areas",
    query=PageQuery,
    response=page_of(AreaOut),
)
def list_areas(key: KeyHolder, query: PageQuery):
    with _rt().session() as session:
        page = api_queries.areas_page(session, query.cursor, api_queries.clamp(query.limit))
        return with_link(page_response(page_of(AreaOut), page, AreaOut.model_validate))


@api.operation(
    "GET",
    "/topics",
    roles_allowed=ALL_ROLES,
    summary="List topics",
    tag="topics",
    query=PageQuery,
    response=page_of(TopicOut),
)
def list_topics(key: KeyHolder, query: PageQuery):
    with _rt().session() as session:
        page = api_queries.topics_page(session, query.cursor, api_queries.clamp(query.limit))
        return with_link(page_response(page_of(TopicOut), page, TopicOut.model_validate))


# -- residents --------------------------------------------------------------------------------


@api.operation(
    "GET",
    "/residents",
    roles_allowed=BROADCAST_READERS,
    summary="List residents",
    tag="residents",
    query=PageQuery,
    response=page_of(ResidentOut),
)
def list_residents(key: KeyHolder, query: PageQuery):
    with _rt().session() as session:
        page = api_queries.residents_page(session, query.cursor, api_queries.clamp(query.limit))
        return with_link(page_response(page_of(ResidentOut), page, ResidentOut.model_validate))


@api.operation(
    "GET",
    "/residents/" + ID.format("resident_id"),
    roles_allowed=BROADCAST_READERS,
    summary="Read a resident",
    tag="residents",
    response=ResidentOut,
)
def get_resident(key: KeyHolder, resident_id: int):
    with _rt().session() as session:
        return ResidentOut.model_validate(_resident(session, resident_id))


def _resident(session, resident_id: int):
    try:
        return get_record(session, resident_id)
    except ResidentNotFound as exc:
        raise ApiProblem(404, str(exc)) from None


def _raw(resident: ResidentIn | ResidentPatch, only_given: bool = False) -> dict[str, str]:
    """A record as the CSV import reads it: lists `;`-joined, absent values empty."""
    fields = resident.model_fields_set if only_given else type(resident).model_fields
    raw = {}
    for name in fields:
        value = getattr(resident, name)
        raw[name] = ";".join(value) if isinstance(value, list) else (value or "")
    return raw


def _address_race() -> ApiProblem:
    """Checked, then taken by a request at the same moment: the unique address index says no."""
    return ApiProblem(409, _("Another request took the same address at the same time; try again."))


def _create(key: KeyHolder, records: list[dict[str, str]], pointer: str) -> list[int]:
    rt = _rt()
    try:
        with rt.session() as session:
            return create_residents(
                session,
                records,
                locales=rt.settings.locales,
                default_locale=rt.settings.default_locale,
                actor=key.name,
            )
    except IntegrityError:
        raise _address_race() from None
    except ImportRejected as rejected:
        raise ApiProblem(
            422,
            rejected.errors[0].reason
            if len(rejected.errors) == 1
            else _("Some records are not valid, so none was imported; see errors."),
            errors=[
                FieldError(pointer=pointer.format(e.line - 1), detail=e.reason)
                for e in rejected.errors
            ],
        ) from None


@api.operation(
    "POST",
    "/residents",
    roles_allowed=(),
    summary="Create a resident",
    tag="residents",
    body=ResidentIn,
    response=ResidentOut,
    status=201,
)
def create_resident(key: KeyHolder, body: ResidentIn):
    [resident_id] = _create(key, [_raw(body)], "#")
    with _rt().session() as session:
        created = ResidentOut.model_validate(get_record(session, resident_id))
    return Created(created, url_for(".get_resident", resident_id=resident_id))


@api.operation(
    "POST",
    "/residents/import",
    roles_allowed=(),
    tag="residents",
    summary="Import residents: all or none",
    body=ResidentBulk,
    response=ResidentIds,
    status=201,
)
def import_residents(key: KeyHolder, body: ResidentBulk):
    ids = _create(key, [_raw(r) for r in body.root], "#/{}")
    return Created(ResidentIds(ids=ids), url_for(".list_residents"))


@api.operation(
    "PATCH",
    "/residents/" + ID.format("resident_id"),
    roles_allowed=(),
    summary="Change a resident",
    tag="residents",
    body=ResidentPatch,
    response=ResidentOut,
)
def patch_resident(key: KeyHolder, resident_id: int, body: ResidentPatch):
    rt = _rt()
    try:
        with rt.session() as session:
            update_resident(
                session,
                resident_id,
                _raw(body, only_given=True),
                locales=rt.settings.locales,
                default_locale=rt.settings.default_locale,
                actor=key.name,
            )
    except ResidentNotFound as exc:
        raise ApiProblem(404, str(exc)) from None
    except IntegrityError:
        raise _address_race() from None
    except ImportRejected as rejected:
        raise _problem(422, rejected.errors[0].reason) from None
    with rt.session() as session:
        return ResidentOut.model_validate(get_record(session, resident_id))


@api.operation(
    "DELETE",
    "/residents/" + ID.format("resident_id"),
    roles_allowed=(),
    summary="Erase a resident",
    tag="residents",
    status=204,
)
def erase_resident(key: KeyHolder, resident_id: int):
    try:
        with _rt().session() as session:
            delete_resident(session, resident_id, actor=key.name)
    except ResidentNotFound as exc:
        raise ApiProblem(404, str(exc)) from None


# -- notices ----------------------------------------------------------------------------------


@api.operation(
    "GET",
    "/broadcasts",
    roles_allowed=BROADCAST_READERS,
    summary="List notices, newest first",
    tag="broadcasts",
    query=PageQuery,
    response=page_of(BroadcastOut),
)
def list_broadcasts(key: KeyHolder, query: PageQuery):
    with _rt().session() as session:
        page = api_queries.broadcasts_page(session, query.cursor, api_queries.clamp(query.limit))
        return with_link(page_response(page_of(BroadcastOut), page, BroadcastOut.of))


@api.operation(
    "POST",
    "/broadcasts",
    roles_allowed=BROADCAST_READERS,
    summary="Write a draft notice",
    tag="broadcasts",
    body=BroadcastIn,
    response=BroadcastOut,
    status=201,
)
def create_broadcast(key: KeyHolder, body: BroadcastIn):
    rt = _rt()
    unknown = [loc for loc in (*body.bodies, *body.titles) if loc not in rt.settings.locales]
    if unknown:
        message = _("unknown locale %(locale)s", locale=unknown[0])
        raise _problem(422, message, f"#/bodies/{unknown[0]}")
    draft = NoticeDraft(
        title=body.title,
        topic=body.topic,
        areas=tuple(body.areas),
        priority=body.priority,
        channel_policy=body.channel_policy,
        bodies=body.bodies,
        titles=body.titles,
        scheduled_at=body.scheduled_at,
        sms_transliterate=body.sms_transliterate,
    )
    try:
        broadcast_id = save_draft(rt, draft, actor=Actor(key.name, key.role))
    except BroadcastError as exc:
        raise _problem(422, exc) from None
    return Created(_broadcast(broadcast_id), url_for(".get_broadcast", broadcast_id=broadcast_id))


def _broadcast(broadcast_id: int) -> BroadcastOut:
    with _rt().session() as session:
        try:
            return BroadcastOut.of(api_queries.get_broadcast(session, broadcast_id))
        except api_queries.NotFound as exc:
            raise ApiProblem(404, str(exc)) from None


@api.operation(
    "GET",
    "/broadcasts/" + ID.format("broadcast_id"),
    roles_allowed=BROADCAST_READERS,
    summary="Read a notice",
    tag="broadcasts",
    response=BroadcastOut,
)
def get_broadcast(key: KeyHolder, broadcast_id: int):
    return _broadcast(broadcast_id)


@api.operation(
    "GET",
    "/broadcasts/" + ID.format("broadcast_id") + "/status",
    roles_allowed=BROADCAST_READERS,
    summary="How a notice is doing: counts by status",
    tag="broadcasts",
    response=BroadcastCountsOut,
)
def broadcast_status(key: KeyHolder, broadcast_id: int):
    with _rt().session() as session:
        try:
            counts = api_queries.broadcast_counts(session, broadcast_id)
        except api_queries.NotFound as exc:
            raise ApiProblem(404, str(exc)) from None
        return BroadcastCountsOut.model_validate(counts)


@api.operation(
    "POST",
    "/broadcasts/" + ID.format("broadcast_id") + "/approve",
    roles_allowed=BROADCAST_READERS,
    summary="Approve a draft and start sending it",
    tag="broadcasts",
    response=BroadcastOut,
    sends=True,
)
def approve_broadcast(key: KeyHolder, broadcast_id: int):
    status = _broadcast(broadcast_id).status
    try:
        start_draft(_rt(), broadcast_id, actor=Actor(key.name, key.role))
    except SavedNotQueued:
        pass  # approved and stored; the sweeper plans it once Redis is back
    except BroadcastError as exc:
        # Not a draft any more: a conflict. A draft this key may not start: refused.
        raise ApiProblem(409 if status != BroadcastStatus.DRAFT else 403, str(exc)) from None
    return _broadcast(broadcast_id)


@api.operation(
    "POST",
    "/broadcasts/" + ID.format("broadcast_id") + "/cancel",
    roles_allowed=BROADCAST_READERS,
    summary="Cancel what has not gone out yet",
    tag="broadcasts",
    response=BroadcastOut,
)
def cancel(key: KeyHolder, broadcast_id: int):
    _broadcast(broadcast_id)
    try:
        with _rt().session() as session:
            cancelled = cancel_broadcast(session, broadcast_id)
            audit(session, key.name, "broadcast.cancel", f"broadcast:{broadcast_id}", n=cancelled)
    except BroadcastError as exc:
        raise ApiProblem(409, str(exc)) from None
    return _broadcast(broadcast_id)


@api.operation(
    "GET",
    "/deliveries",
    roles_allowed=BROADCAST_READERS,
    tag="deliveries",
    summary="Deliveries by notice, resident and status",
    query=DeliveryQuery,
    response=page_of(DeliveryOut),
)
def list_deliveries(key: KeyHolder, query: DeliveryQuery):
    with _rt().session() as session:
        page = api_queries.deliveries_page(
            session,
            query.cursor,
            api_queries.clamp(query.limit),
            broadcast_id=query.broadcast_id,
            resident_id=query.resident_id,
            status=query.status,
        )
        return with_link(page_response(page_of(DeliveryOut), page, DeliveryOut.model_validate))


# -- conversations ----------------------------------------------------------------------------


@api.operation(
    "GET",
    "/conversations",
    roles_allowed=(Role.AGENT,),
    tag="conversations",
    summary="The inbox: longest waiting first",
    query=ConversationQuery,
    response=page_of(ConversationOut),
)
def list_conversations(key: KeyHolder, query: ConversationQuery):
    filters = InboxFilter(
        status=None if query.status == "any" else query.status,
        channel=query.channel,
        label=query.label,
        topic=query.topic,
        unread=query.unread,
        text=query.text,
    )
    with _rt().session() as session:
        try:
            page = api_queries.conversations_page(
                session, filters, query.cursor, api_queries.clamp(query.limit)
            )
        except ConversationError as exc:
            raise _problem(400, exc, "#/cursor") from None
        return with_link(page_response(page_of(ConversationOut), page, ConversationOut.of))


def _conversation(session, conversation_id: int):
    try:
        return api_queries.get_conversation(session, conversation_id)
    except api_queries.NotFound as exc:
        raise ApiProblem(404, str(exc)) from None


@api.operation(
    "GET",
    "/conversations/" + ID.format("conversation_id"),
    roles_allowed=(Role.AGENT,),
    summary="Read a conversation",
    tag="conversations",
    response=ConversationOut,
)
def get_conversation(key: KeyHolder, conversation_id: int):
    with _rt().session() as session:
        return ConversationOut.of(_conversation(session, conversation_id))


@api.operation(
    "GET",
    "/conversations/" + ID.format("conversation_id") + "/messages",
    roles_allowed=(Role.AGENT,),
    summary="A conversation's messages, oldest first",
    tag="conversations",
    query=PageQuery,
    response=page_of(MessageOut),
)
def list_messages(key: KeyHolder, conversation_id: int, query: PageQuery):
    with _rt().session() as session:
        _conversation(session, conversation_id)
        page = api_queries.messages_page(
            session, conversation_id, query.cursor, api_queries.clamp(query.limit)
        )
        return with_link(
            page_response(
                page_of(MessageOut),
                page,
                MessageOut.model_validate,
                conversation_id=conversation_id,
            )
        )


@api.operation(
    "POST",
    "/conversations/" + ID.format("conversation_id") + "/messages",
    roles_allowed=(Role.AGENT,),
    summary="Answer the resident",
    tag="conversations",
    body=ReplyIn,
    response=MessageOut,
    status=201,
    sends=True,
)
def reply_to(key: KeyHolder, conversation_id: int, body: ReplyIn):
    rt = _rt()
    try:
        with rt.session() as session:
            _conversation(session, conversation_id)
            message = reply(
                session, conversation_id, body.text, author_id=None, channel=body.channel
            )
            audit(session, key.name, "conversation.reply", f"conversation:{conversation_id}")
            answer = MessageOut.model_validate(message)
    except ConversationError as exc:
        raise _problem(422, exc) from None
    # Stored as pending either way: the sweeper queues pending answers once Redis is back.
    with contextlib.suppress(redis.RedisError):
        outbound.enqueue(rt, answer.id)
    location = url_for(".list_messages", conversation_id=conversation_id)
    return Created(answer, location)


@bp.app_errorhandler(404)
@bp.app_errorhandler(405)
def _problem_under_api(exc: HTTPException):
    """Unknown addresses and wrong methods under /api/v1 (no view ran) as problems too."""
    if request.path.startswith(bp.url_prefix + "/"):
        return http_problem(exc)
    return exc
