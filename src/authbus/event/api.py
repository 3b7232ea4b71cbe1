"""HTTP API of the event service: translate requests to `EventService` / `Subscriptions` calls.

Scopes: `events:publish` to publish to any channel, or `events:publish:<channel>` to that
channel only; `events:read` to read the log, channel stats and dead letters, or
`events:read:<channel>` for those of one channel (the channel list and aggregate trails, which
span channels, need `events:read`); `events:admin` to change delivery state (subscribe,
unsubscribe, requeue, purge).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Header, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    ValidationError,
    ValidatorFunctionWrapHandler,
    field_validator,
)
from pydantic_core import PydanticCustomError

from authbus.common._envelope import NAME_PATTERN, Event, valid_name
from authbus.common.security import Caller, authenticate, insufficient_scope, requires
from authbus.event.errors import DeliveryUnavailable, EventTooLarge, SubscriberNotFound
from authbus.event.log import EventLog, NewEvent
from authbus.event.service import (
    MAX_BATCH,
    MAX_DATA_DEPTH,
    MAX_POSITION,
    MAX_VERSION,
    EventService,
    control_character,
)
from authbus.event.subscriptions import Subscriptions

router = APIRouter(tags=["events"])

NAME_RULE = "must be 1 to 128 letters, digits, '.', '_' or '-', starting with a letter or digit"


def _name(value: str) -> str:
    # One error with a sentence, rather than pydantic's pattern error (which repeats the regex).
    if not valid_name(value):
        raise PydanticCustomError("invalid_name", NAME_RULE)
    return value


def _plain_text(value: str) -> str:
    # Nothing stored holds a control character, and Postgres text cannot even hold a NUL to
    # look it up with.
    if (c := control_character(value)) is not None:
        raise PydanticCustomError(
            "invalid_text",
            "must not contain control characters (found U+{code})",
            {"code": f"{ord(c):04X}"},
        )
    return value


def _name_param(what: str) -> Any:
    # The pattern is documented in the schema; `_name` enforces it with one clear message.
    return Path(description=f"{what} name", json_schema_extra={"pattern": NAME_PATTERN})


ChannelName = Annotated[str, _name_param("channel"), AfterValidator(_name)]
SubscriberName = Annotated[str, _name_param("subscriber"), AfterValidator(_name)]
IdempotencyKey = Annotated[
    str | None,
    Header(alias="Idempotency-Key", max_length=200, description="retry-safe publish key"),
]
TYPE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,199}$"


class PublishRequest(BaseModel):
    """One event to publish."""

    model_config = ConfigDict(extra="forbid")

    type: str = Field(pattern=TYPE_PATTERN, examples=["order.placed"])
    data: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            "any JSON object, nested at most "
            f"{MAX_DATA_DEPTH} levels; NaN, Infinity and lone surrogates are refused"
        ),
    )
    aggregate_type: str | None = Field(default=None, min_length=1, max_length=128)
    aggregate_id: str | None = Field(default=None, min_length=1, max_length=200)
    aggregate_version: StrictInt | None = Field(default=None, ge=1, le=MAX_VERSION)
    expected_version: StrictInt | None = Field(
        default=None,
        ge=0,
        le=MAX_VERSION - 1,
        description="the aggregate's current version; 0 when new",
    )
    correlation_id: str | None = Field(default=None, max_length=200)
    causation_id: str | None = Field(default=None, max_length=200)

    def draft(self) -> NewEvent:
        return NewEvent(**self.model_dump())


class BatchRequest(BaseModel):
    """Several events published in one transaction, fanned out with one call."""

    model_config = ConfigDict(extra="forbid")

    events: list[PublishRequest] = Field(min_length=1, max_length=MAX_BATCH)


class EventsPage(BaseModel):
    """A page of the log; pass `next_after` as `after` for the next page."""

    events: list[Event]
    next_after: int


class AggregateTrail(BaseModel):
    """One aggregate's events by version, and its current version."""

    aggregate_type: str
    aggregate_id: str
    version: int
    events: list[Event]


class SubscribeRequest(BaseModel):
    """Where a new subscriber starts: `now`, `beginning` (replays the log) or after a position.

    A name that is subscribed already keeps its state: `start` only applies to a new one.
    """

    model_config = ConfigDict(extra="forbid")

    start: Literal["now", "beginning"] | Annotated[StrictInt, Field(ge=0, le=MAX_POSITION - 1)] = (
        "now"
    )

    @field_validator("start", mode="wrap")
    @classmethod
    def _one_message(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        # One sentence instead of an error per member of the union.
        try:
            return handler(value)
        except ValidationError:
            raise PydanticCustomError(
                "invalid_start",
                'must be "now", "beginning" or a log position (an integer from 0 to {max})',
                {"max": MAX_POSITION - 1},
            ) from None


class RequeueRequest(BaseModel):
    """Requeue every dead letter, or those of one event id."""

    model_config = ConfigDict(extra="forbid")

    event_id: str | None = Field(default=None, max_length=36)


# Dependencies are coroutines: FastAPI runs a plain `def` dependency in a worker thread, a
# thread hop on every request for what is an attribute read.
async def _service(request: Request) -> EventService:
    service: EventService = request.app.state.event_service
    return service


async def _log(request: Request) -> EventLog:
    event_log: EventLog = request.app.state.event_log
    return event_log


async def _subscriptions(request: Request) -> Subscriptions:
    subs: Subscriptions = request.app.state.subscriptions
    return subs


async def _size_limit(request: Request) -> None:
    # The middleware refuses a large Content-Length before reading; this catches chunked bodies.
    limit: int = request.app.state.settings.event.max_payload_bytes
    if len(await request.body()) > limit:
        raise EventTooLarge(f"the request body is above {limit} bytes")


_bearer = HTTPBearer(auto_error=False, description="An access token from the token service")


def channel_scope(action: Literal["publish", "read"]) -> Any:
    """A dependency: a token holding `events:<action>` or `events:<action>:<channel>`.

    The 403 names the channel and both scopes that would do (RFC 6750 §3.1
    `insufficient_scope`; the challenge's `scope` is the narrowest one that suffices).
    """
    broad = f"events:{action}"

    async def check(
        request: Request,
        credentials: HTTPAuthorizationCredentials | None = Depends(_bearer),
    ) -> Caller:
        caller = await authenticate(request, credentials)
        # The endpoint declares `channel` (and validates it); declared here too, a bad name
        # would be reported twice.
        channel: str = request.path_params["channel"]
        if not valid_name(channel):
            raise RequestValidationError(
                [{"type": "invalid_name", "loc": ("path", "channel"), "msg": NAME_RULE}]
            )
        narrow = f"{broad}:{channel}"
        if broad in caller.scopes or narrow in caller.scopes:
            return caller
        refused = insufficient_scope((narrow,), [narrow])
        assert isinstance(refused.detail, dict)
        refused.detail["error_description"] = (
            f"the token may not {action} on channel {channel!r}: "
            f"it needs the scope {broad} or {narrow}"
        )
        raise refused

    return Depends(check)


def _producer(caller: Caller) -> str:
    return caller.client_id or caller.subject


@router.post(
    "/v1/channels/{channel}/events",
    status_code=201,
    response_model=Event,
    summary="Publish an event",
    dependencies=[Depends(_size_limit)],
)
async def publish(
    channel: ChannelName,
    body: PublishRequest,
    response: Response,
    idempotency_key: IdempotencyKey = None,
    caller: Caller = channel_scope("publish"),
    service: EventService = Depends(_service),
) -> Event:
    """Append one event to the channel's log and fan it out to its subscribers."""
    result = await service.publish(
        channel, [body.draft()], producer=_producer(caller), idempotency_key=idempotency_key
    )
    if result.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return result.events[0]


@router.post(
    "/v1/channels/{channel}/events/batch",
    status_code=201,
    response_model=EventsPage,
    summary="Publish several events atomically",
    dependencies=[Depends(_size_limit)],
)
async def publish_batch(
    channel: ChannelName,
    body: BatchRequest,
    response: Response,
    idempotency_key: IdempotencyKey = None,
    caller: Caller = channel_scope("publish"),
    service: EventService = Depends(_service),
) -> EventsPage:
    """Append all events in one transaction (all or none), then one fan-out call."""
    result = await service.publish(
        channel,
        [e.draft() for e in body.events],
        producer=_producer(caller),
        idempotency_key=idempotency_key,
    )
    if result.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return EventsPage(events=result.events, next_after=result.events[-1].position)


@router.get(
    "/v1/channels/{channel}/events", response_model=EventsPage, summary="Read a channel's log"
)
async def read_channel(
    channel: ChannelName,
    after: Annotated[int, Query(ge=0, le=MAX_POSITION)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    _caller: Caller = channel_scope("read"),
    event_log: EventLog = Depends(_log),
) -> EventsPage:
    """Events of the channel with position > `after`, oldest first (replay)."""
    found = await event_log.read_channel(channel, after=after, limit=limit)
    return EventsPage(events=found, next_after=found[-1].position if found else after)


@router.get(
    "/v1/aggregates/{aggregate_type}/{aggregate_id}/events",
    response_model=AggregateTrail,
    summary="The audit trail of one aggregate",
)
async def read_aggregate(
    aggregate_type: Annotated[str, Path(max_length=128), AfterValidator(_plain_text)],
    aggregate_id: Annotated[str, Path(max_length=200), AfterValidator(_plain_text)],
    after_version: Annotated[int, Query(ge=0, le=MAX_POSITION)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    _caller: Caller = Depends(requires("events:read")),
    event_log: EventLog = Depends(_log),
) -> AggregateTrail:
    """Every event of the aggregate by version."""
    found = await event_log.read_aggregate(
        aggregate_type, aggregate_id, after_version=after_version, limit=limit
    )
    version = await event_log.aggregate_version(aggregate_type, aggregate_id)
    return AggregateTrail(
        aggregate_type=aggregate_type, aggregate_id=aggregate_id, version=version, events=found
    )


@router.get("/v1/channels", summary="Channels in the log, with delivery stats")
async def list_channels(
    _caller: Caller = Depends(requires("events:read")),
    event_log: EventLog = Depends(_log),
    subs: Subscriptions = Depends(_subscriptions),
) -> dict[str, Any]:
    """Every channel with its event count, last position and per-subscriber delivery figures.

    When Redis is down or not configured the log part is still answered: `subscribers` is
    null and `delivery` says `unavailable` (the log does not depend on Redis).
    """
    found = []
    delivery = "ok"
    for c in await event_log.channels():
        subscribers = None
        if delivery == "ok":
            try:
                subscribers = [s.__dict__ for s in (await subs.stats(c.channel)).subscribers]
            except DeliveryUnavailable:
                delivery = "unavailable"
        found.append(
            {
                "channel": c.channel,
                "events": c.events,
                "last_position": c.last_position,
                "subscribers": subscribers,
            }
        )
    return {"channels": found, "delivery": delivery}


@router.get("/v1/channels/{channel}", summary="Delivery stats of a channel")
async def channel_stats(
    channel: ChannelName,
    _caller: Caller = channel_scope("read"),
    subs: Subscriptions = Depends(_subscriptions),
    event_log: EventLog = Depends(_log),
) -> dict[str, Any]:
    """Per subscriber: waiting, processing, dead, instances (with heartbeat age), lagging."""
    stats = await subs.stats(channel)
    summary = next((c for c in await event_log.channels() if c.channel == channel), None)
    return {
        "channel": channel,
        "events": summary.events if summary else 0,
        "last_position": summary.last_position if summary else 0,
        "subscribers": [s.__dict__ for s in stats.subscribers],
    }


@router.put(
    "/v1/channels/{channel}/subscribers/{name}",
    summary="Subscribe a service",
    responses={201: {"description": "Subscribed"}, 200: {"description": "Subscribed already"}},
)
async def subscribe(
    channel: ChannelName,
    name: SubscriberName,
    response: Response,
    body: Annotated[SubscribeRequest | None, Body()] = None,
    _caller: Caller = Depends(requires("events:admin")),
    subs: Subscriptions = Depends(_subscriptions),
) -> dict[str, Any]:
    """Add `name` to the channel (201); `start: beginning` (or a position) replays the log.

    Idempotent: for a name that is subscribed already nothing changes and the answer is 200
    with `created: false` and `replayed: 0` (unsubscribe first to replay for it). The replay
    is fed under the subscriber's waiting limit: `replayed` is what went into its list now,
    and `lagging_since_position` (when not null) the position from which the dispatcher goes
    on feeding it as it drains.
    """
    start = (body or SubscribeRequest()).start
    done = await subs.subscribe(channel, name, start)
    response.status_code = 201 if done.created else 200
    return {
        "channel": channel,
        "name": name,
        "start": start,
        "created": done.created,
        "replayed": done.replayed,
        "lagging_since_position": done.lagging_since_position,
    }


@router.delete("/v1/channels/{channel}/subscribers/{name}", status_code=204, summary="Unsubscribe")
async def unsubscribe(
    channel: ChannelName,
    name: SubscriberName,
    _caller: Caller = Depends(requires("events:admin")),
    subs: Subscriptions = Depends(_subscriptions),
) -> Response:
    """Remove `name` from the channel with its waiting, in-flight and dead deliveries.

    Running `EventSubscriber` instances re-register on their next heartbeat: stop the
    subscribing service first.
    """
    if not await subs.unsubscribe(channel, name):
        raise SubscriberNotFound(f"{name} does not subscribe to {channel}")
    return Response(status_code=204)


@router.get("/v1/channels/{channel}/subscribers/{name}/dead-letters", summary="List dead letters")
async def dead_letters(
    channel: ChannelName,
    name: SubscriberName,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    _caller: Caller = channel_scope("read"),
    subs: Subscriptions = Depends(_subscriptions),
) -> dict[str, Any]:
    """The newest dead deliveries, with the attempt at which each gave up.

    404 `subscriber_not_found` when `name` neither subscribes to the channel nor has dead
    letters left there.
    """
    letters = await subs.dead_letters(channel, name, limit=limit)
    return {
        "dead_letters": [
            {
                "attempt": d.attempt,
                "event": d.event.model_dump(mode="json") if d.event else None,
                "raw": None if d.event else d.raw,
            }
            for d in letters
        ]
    }


@router.post(
    "/v1/channels/{channel}/subscribers/{name}/dead-letters/requeue",
    summary="Requeue dead letters",
)
async def requeue_dead_letters(
    channel: ChannelName,
    name: SubscriberName,
    body: Annotated[RequeueRequest | None, Body()] = None,
    _caller: Caller = Depends(requires("events:admin")),
    subs: Subscriptions = Depends(_subscriptions),
) -> dict[str, int]:
    """Move dead letters (all, or one event's) back to the subscriber's queue.

    404 `subscriber_not_found` when `name` does not subscribe to the channel (the dead letters
    of a removed subscriber can be listed and purged, not requeued).
    """
    event_id = body.event_id if body else None
    return {"requeued": await subs.requeue_dead(channel, name, event_id)}


@router.delete(
    "/v1/channels/{channel}/subscribers/{name}/dead-letters", summary="Purge dead letters"
)
async def purge_dead_letters(
    channel: ChannelName,
    name: SubscriberName,
    event_id: Annotated[str | None, Query(max_length=36)] = None,
    _caller: Caller = Depends(requires("events:admin")),
    subs: Subscriptions = Depends(_subscriptions),
) -> dict[str, int]:
    """Delete dead letters (all, or one event's).

    404 `subscriber_not_found` when `name` neither subscribes to the channel nor has dead
    letters left there.
    """
    return {"purged": await subs.purge_dead(channel, name, event_id)}
