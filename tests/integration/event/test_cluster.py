"""The event service and EventSubscriber on a real 3-master Redis Cluster (`?cluster=true`).

The delivery scripts themselves run against the cluster in tests/contracts/test_delivery.py.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from authbus.cli import cli
from authbus.common._envelope import Event, format_delivery, parse_delivery
from authbus.common._keys import ChannelKeys
from authbus.common._scripts import connect
from authbus.common.subscriber import EventSubscriber
from authbus.core.settings import EventSettings, Settings
from authbus.event.app import create_app
from tests.contracts.redis_cluster import shared_cluster
from tests.integration.event.helpers import eventually
from tests.support.tokens import TokenMinter

SCOPES = ["events:publish", "events:read", "events:admin"]
FAST: dict[str, Any] = {"poll_interval": 0.2, "retry_backoff_ms": 20, "lease_ms": 2000}


@pytest.fixture
def cluster_url(request: pytest.FixtureRequest) -> str:
    return shared_cluster(request).url


def recorder(channel_name: str, subscriber: str, seen: list[str]) -> type[EventSubscriber]:
    class Recorder(EventSubscriber):
        channel = channel_name
        name = subscriber

        async def process_event(self, event: Event) -> None:
            if event.data.get("poison"):
                raise RuntimeError("cannot handle this one")
            seen.append(event.id)

    return Recorder


@pytest.fixture
async def service(
    event_db: str, cluster_url: str, redis_prefix: str, tmp_path: Path
) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, str]]]:
    settings = Settings(
        data_dir=tmp_path,
        redis_url=cluster_url,
        redis_prefix=redis_prefix,
        event=EventSettings(database_url=event_db, dispatch_interval_s=0.1),
    )
    minter = TokenMinter()
    headers = {"Authorization": f"Bearer {minter.mint('shop', SCOPES, client_id='shop')}"}
    app = create_app(settings, token_validator=minter.validator())
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://event.test") as http,
    ):
        yield http, headers


async def test_service_and_subscribers_deliver_every_event_on_a_cluster(
    service: tuple[httpx.AsyncClient, dict[str, str]], cluster_url: str, redis_prefix: str
) -> None:
    http, headers = service
    ready = await http.get("/readyz")
    assert ready.status_code == 200, ready.text

    # Two channels hash to different slots; two subscriber names, two instances each.
    seen: dict[tuple[str, str], list[str]] = {}
    subs: list[EventSubscriber] = []
    for channel in ("orders", "payments"):
        for name in ("billing", "shipping"):
            got = seen.setdefault((channel, name), [])
            cls = recorder(channel, name, got)
            subs += [cls(cluster_url, prefix=redis_prefix, **FAST) for _ in range(2)]
    tasks = [asyncio.create_task(s.serve()) for s in subs]
    try:
        assert all(await asyncio.gather(*(s.wait_ready() for s in subs)))
        published: dict[str, list[str]] = {"orders": [], "payments": []}
        for i in range(20):
            channel = "orders" if i % 2 else "payments"
            r = await http.post(
                f"/v1/channels/{channel}/events", json={"type": f"t{i}"}, headers=headers
            )
            assert r.status_code == 201, r.text
            published[channel].append(r.json()["id"])
        r = await http.post(
            "/v1/channels/orders/events",
            json={"type": "bad", "data": {"poison": True}},
            headers=headers,
        )
        poison_id = r.json()["id"]

        async def all_seen() -> bool:
            return all(len(ids) == 10 for ids in seen.values())

        await eventually(all_seen, timeout=120)

        async def poison_is_dead() -> bool:
            stats = (await http.get("/v1/channels/orders", headers=headers)).json()
            return all(s["dead"] == 1 for s in stats["subscribers"])

        await eventually(poison_is_dead, timeout=120)
    finally:
        for s in subs:
            s.stop()
        await asyncio.wait_for(asyncio.gather(*tasks), 60)

    for (channel, _name), ids in seen.items():
        assert sorted(ids) == sorted(published[channel])  # each once, none lost
    dead = (
        await http.get("/v1/channels/orders/subscribers/billing/dead-letters", headers=headers)
    ).json()["dead_letters"]
    assert [d["event"]["id"] for d in dead] == [poison_id]
    requeued = await http.post(
        "/v1/channels/orders/subscribers/billing/dead-letters/requeue", headers=headers
    )
    assert requeued.json() == {"requeued": 1}


async def test_subscribe_with_replay_on_a_cluster(
    service: tuple[httpx.AsyncClient, dict[str, str]], cluster_url: str, redis_prefix: str
) -> None:
    http, headers = service
    for i in range(3):
        await http.post("/v1/channels/orders/events", json={"type": f"t{i}"}, headers=headers)
    r = await http.put(
        "/v1/channels/orders/subscribers/audit", json={"start": "beginning"}, headers=headers
    )
    assert r.status_code == 201 and r.json()["replayed"] == 3

    client = connect(cluster_url, decode_responses=True)
    try:
        waiting = await client.lrange(ChannelKeys(redis_prefix, "orders").published("audit"), 0, -1)
    finally:
        await client.aclose()
    assert [parse_delivery(i).event.type for i in reversed(waiting)] == ["t0", "t1", "t2"]


def test_cli_stats_and_dead_letters_on_a_cluster(
    cluster_url: str, redis_prefix: str, event_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Synchronous: the CLI runs its own event loop, as it does from a shell.
    keys = ChannelKeys(redis_prefix, "orders")

    async def setup() -> None:
        client = connect(cluster_url, decode_responses=True)
        try:
            await client.sadd(keys.subscribers, "audit")
            for p in (1, 2):
                event = Event(id=f"e-{p}", position=p, channel="orders", type="t")
                await client.lpush(keys.dead("audit"), format_delivery(event, attempt=5))
        finally:
            await client.aclose()

    asyncio.run(setup())
    monkeypatch.setenv("AUTHBUS_REDIS_URL", cluster_url)
    monkeypatch.setenv("AUTHBUS_REDIS_PREFIX", redis_prefix)
    monkeypatch.setenv("AUTHBUS_EVENT__DATABASE_URL", event_db)
    runner = CliRunner()

    stats = runner.invoke(cli, ["events", "stats", "orders"])
    requeue = runner.invoke(
        cli, ["events", "dead", "requeue", "orders", "audit", "--event-id", "e-2"]
    )
    purge = runner.invoke(cli, ["events", "dead", "purge", "orders", "audit", "--yes"])
    after = runner.invoke(cli, ["events", "stats", "orders", "--json"])

    assert stats.exit_code == 0, stats.output
    assert stats.stdout.strip().splitlines()[1].split()[:5] == ["orders", "audit", "0", "0", "2"]
    assert "requeued 1" in requeue.stdout and "purged 1" in purge.stdout
    [audit] = json.loads(after.stdout)["channels"][0]["subscribers"]
    assert (audit["waiting"], audit["dead"]) == (1, 0)
