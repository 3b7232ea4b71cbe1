"""`authbus events stats` and `authbus events dead list|requeue|purge` on a real Redis and log."""

from __future__ import annotations

import asyncio
import json

import pytest
import redis.asyncio as aioredis
from typer.testing import CliRunner

from authbus.cli import cli
from authbus.common._envelope import format_delivery, parse_delivery
from authbus.common._scripts import DeliveryOps
from authbus.core.db import create_engine, create_sessionmaker
from authbus.event.log import NewEvent, SqlEventLog


@pytest.fixture
def env(
    monkeypatch: pytest.MonkeyPatch, event_db: str, redis_url: str, redis_prefix: str
) -> dict[str, str]:
    values = {
        "AUTHBUS_REDIS_URL": redis_url,
        "AUTHBUS_REDIS_PREFIX": redis_prefix,
        "AUTHBUS_EVENT__DATABASE_URL": event_db,
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return values


def prepare(env: dict[str, str], *, dead: int = 2, waiting: int = 1) -> list[str]:
    """Publish `dead + waiting` events to orders; subscribe billing; kill the first `dead`."""

    async def work() -> list[str]:
        engine = create_engine(env["AUTHBUS_EVENT__DATABASE_URL"])
        client = aioredis.Redis.from_url(env["AUTHBUS_REDIS_URL"], decode_responses=True)
        log = SqlEventLog(create_sessionmaker(engine))
        try:
            drafts = [NewEvent(type=f"t{i}") for i in range(dead + waiting)]
            result = await log.append("orders", drafts, producer="shop")
            ops = DeliveryOps(client, env["AUTHBUS_REDIS_PREFIX"], "orders")
            await client.sadd(ops.keys.subscribers, "billing")
            for event in result.events[:dead]:
                await client.lpush(ops.keys.dead("billing"), format_delivery(event, attempt=5))
            for event in result.events[dead:]:
                await client.lpush(ops.keys.published("billing"), format_delivery(event))
            await client.zadd(ops.keys.instances("billing"), {"billing-1": 0})  # long gone
            return [e.id for e in result.events]
        finally:
            await client.aclose()
            await log.close()
            await engine.dispose()

    return asyncio.run(work())


def lists(env: dict[str, str]) -> tuple[list[str], list[str]]:
    """(dead event ids, waiting event ids), oldest first."""

    async def work() -> tuple[list[str], list[str]]:
        client = aioredis.Redis.from_url(env["AUTHBUS_REDIS_URL"], decode_responses=True)
        try:
            ops = DeliveryOps(client, env["AUTHBUS_REDIS_PREFIX"], "orders")
            dead = await client.lrange(ops.keys.dead("billing"), 0, -1)
            waiting = await client.lrange(ops.keys.published("billing"), 0, -1)
        finally:
            await client.aclose()
        return (
            [parse_delivery(i).event.id for i in reversed(dead)],
            [parse_delivery(i).event.id for i in reversed(waiting)],
        )

    return asyncio.run(work())


runner = CliRunner()


def test_stats_prints_a_table_per_subscriber(env: dict[str, str]) -> None:
    prepare(env, dead=2, waiting=1)

    result = runner.invoke(cli, ["events", "stats"])

    assert result.exit_code == 0, result.output
    header, row = result.stdout.strip().splitlines()
    assert header.split()[:5] == ["CHANNEL", "SUBSCRIBER", "WAITING", "PROCESSING", "DEAD"]
    cells = row.split()
    assert cells[:5] == ["orders", "billing", "1", "0", "2"]
    assert "stale" in row and "dead letters" in row


def test_stats_json_has_the_api_figures(env: dict[str, str]) -> None:
    prepare(env, dead=1, waiting=2)

    result = runner.invoke(cli, ["events", "stats", "orders", "--json"])

    assert result.exit_code == 0, result.output
    [billing] = json.loads(result.stdout)["channels"][0]["subscribers"]
    assert (billing["waiting"], billing["processing"], billing["dead"]) == (2, 0, 1)
    assert billing["stale"] is True and billing["oldest_waiting_age_s"] >= 0
    assert billing["instances"][0]["id"] == "billing-1"


def test_dead_list_shows_each_dead_event(env: dict[str, str]) -> None:
    ids = prepare(env, dead=2)

    table = runner.invoke(cli, ["events", "dead", "list", "orders", "billing"])
    as_json = runner.invoke(cli, ["events", "dead", "list", "orders", "billing", "--json"])

    assert table.exit_code == 0, table.output
    assert ids[0] in table.stdout and ids[1] in table.stdout
    letters = json.loads(as_json.stdout)["dead_letters"]
    assert [d["event"]["id"] for d in letters] == [ids[1], ids[0]]  # newest first
    assert {d["attempt"] for d in letters} == {5}


def test_dead_requeue_one_event_moves_it_back_to_waiting(env: dict[str, str]) -> None:
    ids = prepare(env, dead=2, waiting=1)

    result = runner.invoke(
        cli, ["events", "dead", "requeue", "orders", "billing", "--event-id", ids[1]]
    )

    assert result.exit_code == 0, result.output
    assert "requeued 1" in result.stdout
    # Requeued at the consuming end: retried before the event that was already waiting.
    assert lists(env) == ([ids[0]], [ids[1], ids[2]])


def test_dead_requeue_all_keeps_their_order(env: dict[str, str]) -> None:
    ids = prepare(env, dead=3, waiting=0)

    result = runner.invoke(cli, ["events", "dead", "requeue", "orders", "billing"])

    assert result.exit_code == 0, result.output
    assert lists(env) == ([], ids)


def test_dead_purge_asks_then_deletes(env: dict[str, str]) -> None:
    ids = prepare(env, dead=2, waiting=1)

    refused = runner.invoke(cli, ["events", "dead", "purge", "orders", "billing"], input="n\n")
    assert refused.exit_code == 1 and lists(env)[0] == ids[:2]

    result = runner.invoke(cli, ["events", "dead", "purge", "orders", "billing", "--yes"])

    assert result.exit_code == 0, result.output
    assert "purged 2" in result.stdout
    assert lists(env) == ([], [ids[2]])


def test_an_unknown_event_id_or_subscriber_is_an_error(env: dict[str, str]) -> None:
    prepare(env)

    unknown_event = runner.invoke(
        cli, ["events", "dead", "requeue", "orders", "billing", "--event-id", "nope"]
    )
    unknown_subscriber = runner.invoke(cli, ["events", "dead", "requeue", "orders", "shipping"])

    assert unknown_event.exit_code == 1 and "no dead letter" in unknown_event.stderr
    assert unknown_subscriber.exit_code == 1
    assert "does not subscribe" in unknown_subscriber.stderr


@pytest.mark.parametrize(
    "command",
    [["list"], ["requeue"], ["purge", "--yes"], ["purge"]],
    ids=["list", "requeue", "purge", "purge-asking"],
)
@pytest.mark.parametrize(("channel", "name"), [("orders", "shipping"), ("nochannel", "billing")])
def test_dead_letters_of_an_unknown_subscriber_are_an_error(
    env: dict[str, str], command: list[str], channel: str, name: str
) -> None:
    prepare(env)

    result = runner.invoke(cli, ["events", "dead", command[0], channel, name, *command[1:]])

    assert result.exit_code == 1, result.output
    assert result.stderr.strip() == f"error: {name} does not subscribe to {channel}"
    assert "Delete" not in result.stdout  # refused before asking
    assert "redis" not in result.stderr


def test_dead_letters_a_removed_subscriber_left_can_be_listed_and_purged(
    env: dict[str, str],
) -> None:
    ids = prepare(env, dead=2, waiting=0)

    async def unsubscribe_but_keep_dead() -> None:
        client = aioredis.Redis.from_url(env["AUTHBUS_REDIS_URL"], decode_responses=True)
        try:
            ops = DeliveryOps(client, env["AUTHBUS_REDIS_PREFIX"], "orders")
            await client.srem(ops.keys.subscribers, "billing")
        finally:
            await client.aclose()

    asyncio.run(unsubscribe_but_keep_dead())

    listed = runner.invoke(cli, ["events", "dead", "list", "orders", "billing", "--json"])
    requeued = runner.invoke(cli, ["events", "dead", "requeue", "orders", "billing"])
    purged = runner.invoke(cli, ["events", "dead", "purge", "orders", "billing", "--yes"])

    assert listed.exit_code == 0, listed.output
    assert len(json.loads(listed.stdout)["dead_letters"]) == len(ids)
    assert requeued.exit_code == 1 and "can be listed and purged" in requeued.stderr
    assert purged.exit_code == 0 and "purged 2" in purged.stdout
    assert lists(env) == ([], [])


def test_a_bad_name_is_refused_before_touching_redis(env: dict[str, str]) -> None:
    result = runner.invoke(cli, ["events", "dead", "list", "orders", "bad{name}"])

    assert result.exit_code == 2
    assert "not a valid channel or subscriber name" in result.stderr


def test_unreachable_redis_is_a_clear_error_without_the_password(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str]
) -> None:
    from tests.conftest import free_port

    monkeypatch.setenv("AUTHBUS_REDIS_URL", f"redis://:s3cret@127.0.0.1:{free_port()}/0")

    result = runner.invoke(cli, ["events", "stats", "orders"])

    assert result.exit_code == 1
    assert "Redis is unavailable" in result.stderr
    assert "s3cret" not in result.output


def test_without_redis_configured_it_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AUTHBUS_REDIS_URL", raising=False)

    result = runner.invoke(cli, ["events", "stats"])

    assert result.exit_code == 1 and "AUTHBUS_REDIS_URL is not set" in result.stderr
