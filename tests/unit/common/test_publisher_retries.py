"""EventPublisher and AsyncEventPublisher: what they retry, how long they wait, what they raise.

Both twins run against one fake event service behind an injected httpx transport (the sync
one through `HTTPXAdapter`). The fake stores events by `Idempotency-Key` like the real
service, and a script of failures is played before it answers: a connection refused before
the request arrives, a connection reset after the event was stored (the response is lost),
or a refusal status. The publisher's `_sleep` is replaced to record the delays it asks for,
so nothing really waits.
"""

from __future__ import annotations

import inspect
import json
import random
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import httpx
import pytest

from authbus.common._envelope import Event
from authbus.common.publisher import AsyncEventPublisher, EventPublisher, NewEvent, PublishError

URL = "http://event.test"


@dataclass
class Refused:
    """The connection is refused: the request never reached the service."""


@dataclass
class LostResponse:
    """The service stored the event, then the connection was reset before its answer."""


@dataclass
class Answer:
    """The service answers `status` without storing anything."""

    status: int
    body: dict[str, Any] | None = None
    retry_after: str | None = None


Step = Refused | LostResponse | Answer


@dataclass
class FakeEventService:
    """The publish endpoints of the event service, with idempotency keys and a failure script."""

    script: list[Step] = field(default_factory=list)
    log: list[dict[str, Any]] = field(default_factory=list)
    stored: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    requests: list[httpx.Request] = field(default_factory=list)

    @property
    def keys(self) -> list[str]:
        return [r.headers["Idempotency-Key"] for r in self.requests]

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        step = self.script.pop(0) if self.script else None
        if isinstance(step, Refused):
            raise httpx.ConnectError("[Errno 111] Connection refused", request=request)
        if isinstance(step, Answer):
            headers = {"Retry-After": step.retry_after} if step.retry_after else {}
            if step.body is None:
                return httpx.Response(step.status, text="upstream error", headers=headers)
            return httpx.Response(step.status, json=step.body, headers=headers)
        response = self._append(request)
        if isinstance(step, LostResponse):
            raise httpx.ReadError("[Errno 104] Connection reset by peer", request=request)
        return response

    def _append(self, request: httpx.Request) -> httpx.Response:
        key = request.headers["Idempotency-Key"]
        batch = request.url.path.endswith("/batch")
        channel = request.url.path.split("/")[3]
        replayed = key in self.stored
        if not replayed:
            body = json.loads(request.content)
            drafts = body["events"] if batch else [body]
            events = []
            for draft in drafts:
                event = {
                    "id": str(uuid.uuid4()),
                    "position": len(self.log) + 1,
                    "channel": channel,
                    "type": draft["type"],
                    "data": draft.get("data", {}),
                    "created_at": "2026-03-01T12:00:00Z",
                }
                self.log.append(event)
                events.append(event)
            self.stored[key] = events
        events = self.stored[key]
        payload: Any = (
            {"events": events, "next_after": events[-1]["position"]} if batch else events[0]
        )
        headers = {"Idempotent-Replayed": "true"} if replayed else {}
        return httpx.Response(201, json=payload, headers=headers)


class Twin:
    """One of the two publishers over the fake service, with sleeps recorded, not waited."""

    def __init__(self, kind: str, service: FakeEventService, **options: Any) -> None:
        self.kind = kind
        self.slept: list[float] = []
        transport = httpx.MockTransport(service.handle)
        self.publisher: EventPublisher | AsyncEventPublisher
        if kind == "sync":
            self.publisher = EventPublisher(URL, transport=transport, **options)
            self.publisher._sleep = self.slept.append
        else:
            self.publisher = AsyncEventPublisher(URL, transport=transport, **options)

            async def sleep(seconds: float) -> None:
                self.slept.append(seconds)

            self.publisher._sleep = sleep

    async def publish(self, *args: Any, **kw: Any) -> Event:
        result = self.publisher.publish(*args, **kw)
        return await result if inspect.isawaitable(result) else result

    async def publish_batch(
        self, channel: str, events: Sequence[NewEvent], **kw: Any
    ) -> list[Event]:
        result = self.publisher.publish_batch(channel, events, **kw)
        return await result if inspect.isawaitable(result) else result


@pytest.fixture(params=["sync", "async"])
def twin(request: pytest.FixtureRequest) -> Callable[..., Twin]:
    """Make the parametrized publisher (EventPublisher, then AsyncEventPublisher)."""
    kind: str = request.param

    def make(service: FakeEventService, **options: Any) -> Twin:
        return Twin(kind, service, **options)

    return make


UNAVAILABLE = {"error": "temporarily_unavailable", "error_description": "the database is down"}

TRANSIENT: dict[str, Step] = {
    "connection refused": Refused(),
    "connection reset after the store": LostResponse(),
    "503 with Retry-After": Answer(503, UNAVAILABLE, retry_after="1"),
    "429": Answer(429, {"error": "too_many_requests"}),
    "500 without a JSON body": Answer(500),
    "502": Answer(502, {"error": "bad_gateway"}),
    "408": Answer(408, {"error": "request_timeout"}),
}


@pytest.mark.parametrize("failure", TRANSIENT.values(), ids=TRANSIENT.keys())
async def test_a_transient_failure_is_retried_with_the_same_key_and_stores_one_event(
    twin: Callable[..., Twin], failure: Step
) -> None:
    service = FakeEventService(script=[failure])
    publisher = twin(service)

    event = await publisher.publish("orders", "order.placed", {"id": "o-1"})

    assert len(service.requests) == 2
    first, retry = service.keys
    assert first == retry  # the retry is recognisable as the same publish
    assert len(service.log) == 1  # no duplicate in the log
    assert event.id == service.log[0]["id"] and event.position == 1
    assert len(publisher.slept) == 1


async def test_a_lost_response_is_answered_on_retry_by_the_event_stored_the_first_time(
    twin: Callable[..., Twin],
) -> None:
    service = FakeEventService(script=[LostResponse(), LostResponse()])
    publisher = twin(service)

    event = await publisher.publish("orders", "order.placed", idempotency_key="order-42")

    assert service.keys == ["order-42"] * 3
    assert [e["id"] for e in service.log] == [event.id]


async def test_a_batch_is_retried_with_the_same_key_and_stored_once(
    twin: Callable[..., Twin],
) -> None:
    service = FakeEventService(script=[LostResponse(), Answer(503, UNAVAILABLE, "2")])
    publisher = twin(service)

    events = await publisher.publish_batch(
        "orders", [NewEvent("order.placed"), NewEvent("order.paid")]
    )

    assert len(set(service.keys)) == 1 and len(service.requests) == 3
    assert all(r.url.path == "/v1/channels/orders/events/batch" for r in service.requests)
    assert [e.id for e in events] == [e["id"] for e in service.log]
    assert [e.type for e in events] == ["order.placed", "order.paid"]
    assert len(service.log) == 2


async def test_each_call_has_its_own_key(twin: Callable[..., Twin]) -> None:
    service = FakeEventService()
    publisher = twin(service)

    one = await publisher.publish("orders", "order.placed")
    two = await publisher.publish("orders", "order.placed")

    assert one.id != two.id and len(service.log) == 2
    assert service.keys[0] != service.keys[1]


async def test_retry_after_is_honoured(twin: Callable[..., Twin]) -> None:
    service = FakeEventService(
        script=[
            Answer(503, UNAVAILABLE, retry_after="3"),
            Answer(429, {"error": "too_many_requests"}, retry_after="7"),
            Answer(503, UNAVAILABLE, retry_after="0"),
        ]
    )
    publisher = twin(service)

    await publisher.publish("orders", "order.placed")

    assert publisher.slept == [3.0, 7.0, 0.0]
    assert len(service.log) == 1


async def test_retry_after_as_an_http_date_in_the_past_retries_at_once(
    twin: Callable[..., Twin],
) -> None:
    past = "Wed, 21 Oct 2015 07:28:00 GMT"
    service = FakeEventService(script=[Answer(503, UNAVAILABLE, retry_after=past)])
    publisher = twin(service)

    await publisher.publish("orders", "order.placed")

    assert publisher.slept == [0.0]


async def test_without_retry_after_the_wait_is_a_jittered_backoff_doubling_to_its_max(
    twin: Callable[..., Twin],
) -> None:
    service = FakeEventService(script=[Refused(), Answer(500), Refused(), Answer(502), Refused()])
    publisher = twin(service, max_attempts=6, backoff_s=0.5, max_backoff_s=2.0)
    publisher.publisher._rng = random.Random(11)

    await publisher.publish("orders", "order.placed")

    caps = [0.5, 1.0, 2.0, 2.0, 2.0]
    assert len(publisher.slept) == len(caps)
    assert all(0.0 <= s <= cap for s, cap in zip(publisher.slept, caps, strict=True))
    assert len(set(publisher.slept)) == len(caps)  # jittered, not one fixed delay


async def test_the_retry_budget_ends_with_temporarily_unavailable_and_the_attempts(
    twin: Callable[..., Twin],
) -> None:
    service = FakeEventService(script=[Refused()] * 10)
    publisher = twin(service, max_attempts=4)

    with pytest.raises(PublishError) as caught:
        await publisher.publish("orders", "order.placed")

    assert caught.value.error == "temporarily_unavailable"
    assert caught.value.attempts == 4 and caught.value.status_code is None
    assert caught.value.transient is True
    assert len(service.requests) == 4 and len(set(service.keys)) == 1
    assert len(publisher.slept) == 3  # no wait after the last attempt
    assert service.log == []


async def test_a_service_unavailable_to_the_end_raises_its_answer_with_the_attempts(
    twin: Callable[..., Twin],
) -> None:
    service = FakeEventService(script=[Answer(503, UNAVAILABLE, retry_after="1")] * 10)
    publisher = twin(service, max_attempts=3)

    with pytest.raises(PublishError) as caught:
        await publisher.publish("orders", "order.placed")

    assert caught.value.error == "temporarily_unavailable"
    assert caught.value.status_code == 503 and caught.value.attempts == 3
    assert publisher.slept == [1.0, 1.0]


async def test_no_retry_starts_after_the_retry_deadline(twin: Callable[..., Twin]) -> None:
    service = FakeEventService(script=[Answer(503, UNAVAILABLE, retry_after="20")] * 10)
    publisher = twin(service, max_attempts=10, retry_deadline_s=30.0)
    clock = [1000.0]
    publisher.publisher._clock = lambda: clock[0]
    sleep = publisher.publisher._sleep

    def advancing(seconds: float) -> Any:  # the fake clock moves by each recorded sleep
        clock[0] += seconds
        return sleep(seconds)

    publisher.publisher._sleep = advancing

    with pytest.raises(PublishError) as caught:
        await publisher.publish("orders", "order.placed")

    # The first retry starts at 20 s; a second would start at 40 s, past the 30 s deadline.
    assert publisher.slept == [20.0]
    assert caught.value.attempts == 2 and len(service.requests) == 2


FINAL: dict[str, Answer] = {
    "409 version_conflict": Answer(
        409,
        {
            "error": "version_conflict",
            "error_description": "order o-1 is at 4",
            "current_version": 4,
        },
    ),
    "409 idempotency_key_reused": Answer(409, {"error": "idempotency_key_reused"}),
    "422 validation_error": Answer(
        422, {"error": "validation_error", "error_description": "type: String should match"}
    ),
    "400 invalid_request": Answer(400, {"error": "invalid_request"}),
    "401 invalid_token": Answer(401, {"error": "invalid_token"}),
    "403 insufficient_scope": Answer(403, {"error": "insufficient_scope"}),
    "413 payload_too_large": Answer(413, {"error": "payload_too_large"}),
}


@pytest.mark.parametrize("refusal", FINAL.values(), ids=FINAL.keys())
async def test_a_final_refusal_is_raised_at_once_without_retry(
    twin: Callable[..., Twin], refusal: Answer
) -> None:
    # Even with a Retry-After, a refusal is the caller's to fix: no second request.
    service = FakeEventService(script=[replace(refusal, retry_after="1"), Answer(500)])
    publisher = twin(service)

    with pytest.raises(PublishError) as caught:
        await publisher.publish(
            "orders", "order.paid", aggregate=("order", "o-1"), expected_version=3
        )

    assert len(service.requests) == 1 and publisher.slept == []
    assert caught.value.attempts == 1
    assert caught.value.status_code == refusal.status
    assert refusal.body is not None and caught.value.error == refusal.body["error"]
    assert caught.value.transient is False


async def test_a_version_conflict_carries_the_current_version(twin: Callable[..., Twin]) -> None:
    service = FakeEventService(script=[FINAL["409 version_conflict"]])
    publisher = twin(service)

    with pytest.raises(PublishError) as caught:
        await publisher.publish(
            "orders", "order.paid", aggregate=("order", "o-1"), expected_version=3
        )

    assert caught.value.current_version == 4
    assert caught.value.description == "order o-1 is at 4"


async def test_a_refusal_after_a_transient_failure_is_raised_with_both_attempts(
    twin: Callable[..., Twin],
) -> None:
    service = FakeEventService(script=[Refused(), FINAL["422 validation_error"]])
    publisher = twin(service)

    with pytest.raises(PublishError) as caught:
        await publisher.publish("orders", "order.placed")

    assert caught.value.error == "validation_error" and caught.value.attempts == 2
    assert len(service.requests) == 2 and len(publisher.slept) == 1


async def test_a_batch_refusal_is_raised_at_once(twin: Callable[..., Twin]) -> None:
    service = FakeEventService(script=[FINAL["409 version_conflict"]])
    publisher = twin(service)

    with pytest.raises(PublishError) as caught:
        await publisher.publish_batch("orders", [NewEvent("order.paid")])

    assert caught.value.error == "version_conflict" and caught.value.attempts == 1
    assert len(service.requests) == 1 and publisher.slept == []


async def test_one_attempt_means_no_retry(twin: Callable[..., Twin]) -> None:
    service = FakeEventService(script=[Refused()])
    publisher = twin(service, max_attempts=1)

    with pytest.raises(PublishError) as caught:
        await publisher.publish("orders", "order.placed")

    assert caught.value.error == "temporarily_unavailable" and caught.value.attempts == 1
    assert len(service.requests) == 1 and publisher.slept == []
