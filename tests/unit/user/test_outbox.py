"""The outbox relay: in order, retried with backoff, deduplicated by Idempotency-Key."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import httpx
import pytest

from authbus.user.domain import OutboxEvent
from authbus.user.memory_repository import InMemoryUserRepository
from authbus.user.outbox import EventServicePublisher, EventTooLarge, OutboxRelay, PublishRejected
from authbus.user.service import UserService

PW = "correct horse battery staple"


class Recorder:
    """A publisher that records events and fails on demand."""

    def __init__(self) -> None:
        self.events: list[OutboxEvent] = []
        self.fail_with: Exception | None = None
        self.reject_types: set[str] = set()

    async def __call__(self, event: OutboxEvent) -> None:
        if event.type in self.reject_types:
            raise PublishRejected("422 refused")
        if self.fail_with is not None:
            raise self.fail_with
        self.events.append(event)


async def test_changes_are_relayed_in_order(
    service: UserService, repo: InMemoryUserRepository
) -> None:
    recorder = Recorder()
    relay = OutboxRelay(repo, recorder)
    made = await service.create_user(username="alice", password=PW, actor="admin")
    await service.update_user(made.user.id, actor="admin", disabled=True)
    assert await relay.relay_once() == 2
    assert [e.type for e in recorder.events] == ["user.created", "user.disabled"]
    assert recorder.events[0].data["username"] == "alice"
    assert recorder.events[1].data == {
        "id": str(made.user.id),
        "username": "alice",
        "actor": "admin",
    }
    assert await relay.relay_once() == 0


async def test_no_secret_ever_reaches_an_event(
    service: UserService, repo: InMemoryUserRepository
) -> None:
    made = await service.create_user(username="alice", password=PW, actor="admin")
    await service.reset_password(made.user.id, "another passphrase", actor="admin")
    await service.change_password(made.user.id, "another passphrase", "third passphrase!")
    dumped = json.dumps([e.data for e in await repo.pending_events(100)])
    for secret in (PW, "another passphrase", "third passphrase!", "argon2"):
        assert secret not in dumped


async def test_a_failing_publish_stops_the_round_and_is_retried(
    service: UserService, repo: InMemoryUserRepository
) -> None:
    recorder = Recorder()
    relay = OutboxRelay(repo, recorder)
    await service.create_role("a-role", actor="admin")
    await service.create_role("b-role", actor="admin")
    recorder.fail_with = httpx.ConnectError("event service down")
    with pytest.raises(httpx.ConnectError):
        await relay.relay_once()
    assert recorder.events == []
    pending = await repo.pending_events(10)
    assert [e.attempts for e in pending] == [1, 0]
    recorder.fail_with = None
    assert await relay.relay_once() == 2
    assert [e.data["name"] for e in recorder.events] == ["a-role", "b-role"]


async def test_a_refused_event_is_given_up_and_the_rest_go_on(
    service: UserService, repo: InMemoryUserRepository
) -> None:
    recorder = Recorder()
    recorder.reject_types = {"role.created"}
    relay = OutboxRelay(repo, recorder)
    await service.create_role("a-role", actor="admin")
    await service.create_user(username="alice", password=PW, actor="admin")
    assert await relay.relay_once() == 1
    assert [e.type for e in recorder.events] == ["user.created"]
    assert await repo.pending_events(10) == []
    assert repo.given_up == {1}


async def test_prune_keeps_recent_and_pending_events(
    service: UserService, repo: InMemoryUserRepository
) -> None:
    relay = OutboxRelay(repo, Recorder(), retention=timedelta(0))
    await service.create_role("a-role", actor="admin")
    await relay.relay_once()
    await service.create_role("b-role", actor="admin")
    assert await relay.prune() == 1
    assert [e.data["name"] for e in repo.outbox] == ["b-role"]


async def test_running_relay_is_woken_by_changes(
    repo: InMemoryUserRepository, service: UserService
) -> None:
    recorder = Recorder()
    # A long interval: only the wake-up can deliver within the test's wait.
    relay = OutboxRelay(repo, recorder, interval_s=3600)
    woken = UserService(repo, service.hasher, throttle=service.throttle, on_change=relay.wake)
    task = asyncio.create_task(relay.run())
    try:
        await asyncio.sleep(0)
        await woken.create_role("ops", actor="admin")
        for _ in range(100):
            if recorder.events:
                break
            await asyncio.sleep(0.01)
        assert [e.type for e in recorder.events] == ["role.created"]
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_run_survives_an_outage(repo: InMemoryUserRepository, service: UserService) -> None:
    recorder = Recorder()
    relay = OutboxRelay(repo, recorder, interval_s=0.01, max_backoff_s=0.02)
    await service.create_role("ops", actor="admin")
    repo.available = False
    task = asyncio.create_task(relay.run())
    try:
        await asyncio.sleep(0.05)
        repo.available = True
        for _ in range(100):
            if recorder.events:
                break
            await asyncio.sleep(0.01)
        assert [e.type for e in recorder.events] == ["role.created"]
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


class _NoAuth(httpx.Auth):
    pass


async def test_http_publisher_posts_with_idempotency_key(
    service: UserService, repo: InMemoryUserRepository
) -> None:
    seen: list[httpx.Request] = []
    status = {"code": 201}

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(status["code"], json={"error": "x"})

    publisher = EventServicePublisher(
        "http://events.test/", _NoAuth(), transport=httpx.MockTransport(handler)
    )
    await service.create_role("ops", actor="admin")
    (event,) = await repo.pending_events(10)
    try:
        await publisher(event)
        request = seen[0]
        assert request.url == "http://events.test/v1/channels/users/events"
        assert request.headers["Idempotency-Key"] == str(event.event_id)
        assert json.loads(request.content) == {
            "type": "role.created",
            "data": {"name": "ops", "description": "", "permissions": [], "actor": "admin"},
            "aggregate_type": "role",
            "aggregate_id": "ops",
        }
        status["code"] = 422
        with pytest.raises(PublishRejected):
            await publisher(event)
        status["code"] = 503
        with pytest.raises(RuntimeError):
            await publisher(event)
    finally:
        await publisher.aclose()


async def test_a_413_is_logged_as_a_bug_with_the_event_and_its_size(
    service: UserService, repo: InMemoryUserRepository, caplog: pytest.LogCaptureFixture
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if json.loads(request.content)["type"] == "role.created":
            return httpx.Response(413, json={"error": "payload_too_large"})
        return httpx.Response(201, json={})

    publisher = EventServicePublisher(
        "http://events.test/", _NoAuth(), transport=httpx.MockTransport(handler)
    )
    relay = OutboxRelay(repo, publisher)
    await service.create_role("ops", actor="admin", description="x" * 1000)
    await service.create_user(username="alice", password=PW, actor="admin")
    (role_event, _) = await repo.pending_events(10)
    try:
        with caplog.at_level("ERROR", logger="authbus.user.outbox"):
            assert await relay.relay_once() == 1  # the others go on
    finally:
        await publisher.aclose()

    [record] = [r for r in caplog.records if r.name == "authbus.user.outbox"]
    assert record.levelname == "ERROR" and record.getMessage().startswith("BUG:")
    assert "AUTHBUS_EVENT__MAX_PAYLOAD_BYTES" in record.getMessage()
    assert record.__dict__["event_id"] == str(role_event.event_id)
    assert record.__dict__["event_type"] == "role.created"
    assert record.__dict__["size_bytes"] > 1000
    assert await repo.pending_events(10) == []
    assert repo.given_up == {role_event.id}  # kept, failed, for inspection


async def test_a_413_raises_event_too_large(
    service: UserService, repo: InMemoryUserRepository
) -> None:
    publisher = EventServicePublisher(
        "http://events.test/",
        _NoAuth(),
        transport=httpx.MockTransport(lambda _request: httpx.Response(413)),
    )
    await service.create_role("ops", actor="admin")
    (event,) = await repo.pending_events(10)
    try:
        with pytest.raises(EventTooLarge) as refused:
            await publisher(event)
    finally:
        await publisher.aclose()
    assert isinstance(refused.value, PublishRejected)
    assert refused.value.size == len(
        json.dumps(
            {
                "type": event.type,
                "data": event.data,
                "aggregate_type": event.aggregate_type,
                "aggregate_id": event.aggregate_id,
            },
            separators=(",", ":"),
        ).encode()
    )
