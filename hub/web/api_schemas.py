"""The REST API's request and response bodies as pydantic models. They validate what comes in,
shape what goes out, and are the schemas of the OpenAPI document (hub/web/api_spec.py): what
the document says is what the code does."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    RootModel,
    create_model,
)

from hub.api_queries import MAX_LIMIT
from hub.models import (
    CHANNELS,
    CONVERSATION_PRIORITIES,
    BroadcastStatus,
    ChannelPolicy,
    ConversationStatus,
    DeliveryStatus,
    Priority,
)

MAX_ID = 2**31 - 1
MAX_BULK = 5000

# Text without NUL (which PostgreSQL cannot store) of a bounded length.
NO_NUL = r"^[^\x00]*$"


def bounded(max_length: int, min_length: int = 0) -> type[str]:
    return Annotated[str, Field(min_length=min_length, max_length=max_length, pattern=NO_NUL)]


Slug = bounded(64, 1)
Locale = Annotated[str, Field(pattern=r"^[a-z]{2,3}$")]
Id = Annotated[int, Field(ge=1, le=MAX_ID)]


def _naive_utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC).replace(tzinfo=None)
    except OverflowError:  # year 1 at +01:00 is before year 1 in UTC
        raise ValueError("the time is out of range") from None


# In: a time with its offset (stored as UTC). Out: always UTC, with its Z.
TimeIn = Annotated[AwareDatetime, AfterValidator(_naive_utc)]
TimeOut = Annotated[
    datetime,
    PlainSerializer(
        lambda v: v.replace(tzinfo=UTC).isoformat().replace("+00:00", "Z"),
        return_type=str,
        when_used="json",
    ),
    Field(json_schema_extra={"format": "date-time"}),
]


class Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Output(BaseModel):
    model_config = ConfigDict(from_attributes=True)


# -- problems (RFC 9457) ------------------------------------------------------------------------


class FieldError(BaseModel):
    pointer: str = Field(description="JSON pointer (as a URI fragment) to the bad value")
    detail: str


class Problem(BaseModel):
    """An error, as RFC 9457 application/problem+json."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    errors: list[FieldError] | None = None


# -- lists --------------------------------------------------------------------------------------


class PageQuery(Input):
    limit: int = Field(50, ge=1, description=f"items per page, at most {MAX_LIMIT}")
    cursor: str | None = Field(None, max_length=500, description="`next_cursor` of the last page")


def page_of(item: type[BaseModel]) -> type[BaseModel]:
    return create_model(
        f"{item.__name__}Page",
        __base__=Output,
        items=(list[item], ...),
        next_cursor=(str | None, Field(description="pass as `cursor` for the next page")),
        next=(str | None, Field(description="the next page's URL; null on the last page")),
    )


# -- areas and topics ---------------------------------------------------------------------------


class AreaOut(Output):
    id: int
    slug: str
    names: dict[str, str]


class TopicOut(AreaOut):
    pass


# -- residents ----------------------------------------------------------------------------------


class ResidentIn(Input):
    name: bounded(200, 1)
    locale: Locale | None = Field(None, description="the hub's default language when absent")
    area: Slug = Field(description="slug of the area the resident lives in")
    topics: list[Slug] = Field([], description="topic slugs followed in the resident's area")
    email: bounded(320) | None = None
    phone: bounded(40) | None = Field(None, description="E.164, or national (Slovenian) format")
    channels: list[Literal["email", "sms"]] = Field([], description="preferred order")
    quiet_hours: bounded(20) | None = Field(None, examples=["22:00-07:00"])


class ResidentPatch(Input):
    """Only the fields given change; an empty or null `email`, `phone` or `quiet_hours`
    removes it."""

    name: bounded(200, 1) | None = None
    locale: Locale | None = None
    area: Slug | None = None
    topics: list[Slug] | None = None
    email: bounded(320) | None = None
    phone: bounded(40) | None = None
    channels: list[Literal["email", "sms"]] | None = None
    quiet_hours: bounded(20) | None = None


class ResidentBulk(RootModel[list[ResidentIn]]):
    root: list[ResidentIn] = Field(min_length=1, max_length=MAX_BULK)


class ResidentOut(Output):
    id: int
    name: str
    locale: str
    area: str | None
    topics: list[str]
    email: str | None
    phone: str | None
    channels: list[str]
    quiet_hours: str | None
    created_at: TimeOut


class ResidentIds(Output):
    ids: list[int] = Field(description="the new residents' ids, in the order sent")


# -- notices ------------------------------------------------------------------------------------


class BroadcastIn(Input):
    title: bounded(200, 1)
    topic: Slug
    areas: list[Slug] = Field([], description="area slugs; none means the whole city")
    priority: Literal[Priority.EMERGENCY, Priority.NORMAL, Priority.BULK] = Priority.NORMAL
    channel_policy: Literal[ChannelPolicy.PREFERRED, ChannelPolicy.ALL_CHANNELS] = (
        ChannelPolicy.PREFERRED
    )
    bodies: dict[Locale, bounded(10_000)] = Field(description="text per locale; Slovenian required")
    titles: dict[Locale, bounded(200)] = Field(
        {}, description="title per locale, where not `title`"
    )
    scheduled_at: TimeIn | None = Field(None, description="send later; with a UTC offset")
    sms_transliterate: bool = Field(False, description="SMS in GSM-7 (č → c): fewer segments")


BroadcastStatusName = Literal[
    BroadcastStatus.DRAFT,
    BroadcastStatus.SCHEDULED,
    BroadcastStatus.PLANNING,
    BroadcastStatus.SENDING,
    BroadcastStatus.DONE,
    BroadcastStatus.CANCELLED,
]


class BroadcastOut(Output):
    id: int
    title: str
    topic: str
    areas: list[str]
    priority: str
    channel_policy: str
    status: BroadcastStatusName
    scheduled_at: TimeOut | None
    created_by: str
    approved_by: str | None
    created_at: TimeOut
    finished_at: TimeOut | None
    bodies: dict[str, str]
    titles: dict[str, str]

    @classmethod
    def of(cls, broadcast) -> BroadcastOut:
        return cls(
            **{name: getattr(broadcast, name) for name in _BROADCAST_COLUMNS},
            topic=broadcast.topic.slug,
            areas=[area.slug for area in broadcast.areas],
            bodies={c.locale: c.body for c in broadcast.contents},
            titles={c.locale: c.title for c in broadcast.contents},
        )


_BROADCAST_COLUMNS = (
    "id",
    "title",
    "priority",
    "channel_policy",
    "status",
    "scheduled_at",
    "created_by",
    "approved_by",
    "created_at",
    "finished_at",
)


class BroadcastCountsOut(Output):
    broadcast_id: int
    status: BroadcastStatusName
    total: int
    open: int = Field(description="deliveries not final yet: pending, sending, retry")
    final: int
    by_status: dict[str, int]
    by_channel: dict[str, dict[str, int]] = Field(description="channel -> status -> count")


DeliveryStatusName = Literal[
    DeliveryStatus.PENDING,
    DeliveryStatus.SENDING,
    DeliveryStatus.RETRY,
    DeliveryStatus.SENT,
    DeliveryStatus.DELIVERED,
    DeliveryStatus.UNDELIVERED,
    DeliveryStatus.GONE,
    DeliveryStatus.FAILED,
    DeliveryStatus.CANCELLED,
]


class DeliveryQuery(PageQuery):
    broadcast_id: Id | None = None
    resident_id: Id | None = None
    status: DeliveryStatusName | None = None


class DeliveryOut(Output):
    id: int
    broadcast_id: int
    resident_id: int
    channel: str
    locale: str
    status: DeliveryStatusName
    attempts: int
    not_before: TimeOut | None
    provider_id: str | None
    error: str | None
    sent_at: TimeOut | None
    created_at: TimeOut


# -- conversations ------------------------------------------------------------------------------

Channel = Literal[CHANNELS]  # type: ignore[valid-type]


class ConversationQuery(PageQuery):
    status: Literal[(*ConversationStatus.ALL, "any")] = ConversationStatus.OPEN  # type: ignore[valid-type]
    channel: Literal[CHANNELS] | None = None  # type: ignore[valid-type]
    label: bounded(64) | None = None
    topic: Slug | None = None
    unread: bool = False
    text: bounded(200) | None = Field(None, description="in any message of the conversation")


class ConversationOut(Output):
    id: int
    resident_id: int | None
    channel: str
    address: str
    status: Literal[ConversationStatus.ALL]  # type: ignore[valid-type]
    priority: Literal[CONVERSATION_PRIORITIES]  # type: ignore[valid-type]
    unread: int
    broadcast_id: int | None = Field(description="the notice the conversation answers")
    waiting_since: TimeOut | None
    last_message_at: TimeOut
    created_at: TimeOut
    labels: list[str]

    @classmethod
    def of(cls, record) -> ConversationOut:
        conversation = record.conversation
        fields = {
            name: getattr(conversation, name) for name in cls.model_fields if name != "labels"
        }
        return cls(**fields, labels=record.labels)


class MessageOut(Output):
    id: int
    conversation_id: int
    direction: Literal["in", "out", "note"]
    channel: str | None
    address: str | None
    body: str
    status: str
    error: str | None
    broadcast_id: int | None
    created_at: TimeOut
    sent_at: TimeOut | None


class ReplyIn(Input):
    text: bounded(4000, 1)
    channel: Literal[CHANNELS] | None = Field(  # type: ignore[valid-type]
        None, description="another of the resident's channels; default: the one they used last"
    )
