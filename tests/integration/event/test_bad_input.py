"""Input the event service cannot store or give back is a 422 naming the field, written
nowhere, on SQLite and Postgres: never a 500, never an event that breaks reads and delivery
afterwards."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from fastapi import FastAPI

from authbus.common._envelope import parse_delivery
from authbus.common._keys import ChannelKeys
from authbus.event.service import MAX_DATA_DEPTH

Bearer = Callable[..., dict[str, str]]

TOO_BIG = 99999999999999999999999  # above any SQL integer column
JUST_TOO_BIG = 2**63  # one above Postgres bigint / SQLite INTEGER


async def post_raw(
    http: httpx.AsyncClient, url: str, body: str, headers: dict[str, str]
) -> httpx.Response:
    """POST `body` exactly as written (JSON escapes, NaN and all)."""
    return await http.post(
        url, content=body.encode(), headers={**headers, "Content-Type": "application/json"}
    )


async def assert_nothing_written(http: httpx.AsyncClient, bearer: Bearer) -> None:
    """The channel's log is empty and still readable, and a new subscriber replays nothing."""
    read = await http.get("/v1/channels/orders/events", headers=bearer())
    assert read.status_code == 200, read.text
    assert read.json()["events"] == []
    replay = await http.put(
        "/v1/channels/orders/subscribers/late", json={"start": "beginning"}, headers=bearer()
    )
    assert replay.status_code == 201, replay.text
    assert replay.json()["replayed"] == 0


# ------------------------------------------------------------------ data that is not JSON text

UNSTORABLE_DATA = pytest.mark.parametrize(
    ("data", "fault"),
    [
        ('{"k": "\\ud800"}', "lone surrogate"),
        ('{"k": ["ok", {"deep": "x\\udfffy"}]}', "lone surrogate"),
        ('{"k\\ud800": 1}', "lone surrogate"),
        ('{"n": NaN}', "NaN"),
        ('{"n": Infinity}', "inf"),
        ('{"n": [-Infinity]}', "-inf"),
        ('{"n": 1e400}', "inf"),
    ],
    ids=["surrogate", "nested-surrogate", "surrogate-key", "nan", "inf", "-inf", "overflow"],
)


@UNSTORABLE_DATA
async def test_unstorable_data_is_a_422_and_nothing_is_written(
    http: httpx.AsyncClient, bearer: Bearer, data: str, fault: str
) -> None:
    r = await post_raw(
        http, "/v1/channels/orders/events", f'{{"type": "a.b", "data": {data}}}', bearer()
    )

    assert r.status_code == 422, r.text
    assert r.json()["error"] == "validation_error"
    assert r.json()["error_description"].startswith("event: data")
    assert fault in r.json()["error_description"]
    await assert_nothing_written(http, bearer)


@UNSTORABLE_DATA
async def test_unstorable_data_in_a_batch_is_a_422_and_nothing_is_written(
    http: httpx.AsyncClient, bearer: Bearer, data: str, fault: str
) -> None:
    body = f'{{"events": [{{"type": "ok"}}, {{"type": "a.b", "data": {data}}}]}}'

    r = await post_raw(http, "/v1/channels/orders/events/batch", body, bearer())

    assert r.status_code == 422, r.text
    assert r.json()["error_description"].startswith("events[1]: data")
    await assert_nothing_written(http, bearer)


async def test_data_nested_too_deep_for_subscribers_is_a_422(
    http: httpx.AsyncClient, bearer: Bearer
) -> None:
    deep: Any = 1
    for _ in range(MAX_DATA_DEPTH - 1):  # inside `data`, itself the first level
        deep = [deep]
    ok = await http.post(
        "/v1/channels/orders/events", json={"type": "a", "data": {"k": deep}}, headers=bearer()
    )
    assert ok.status_code == 201, ok.text

    r = await http.post(
        "/v1/channels/orders/events",
        json={"type": "a", "data": {"k": [deep]}},
        headers=bearer(),
    )
    assert r.status_code == 422, r.text
    assert "nested deeper than" in r.json()["error_description"]


async def test_nul_and_other_control_characters_in_data_are_stored_and_read_back_intact(
    http: httpx.AsyncClient, bearer: Bearer, redis_url: str, redis_prefix: str
) -> None:
    # JSON may carry any character escaped; the `json` column keeps the escape as written
    # (Postgres `jsonb` would refuse \u0000, `json` does not).
    data = {"nul": "a\u0000b", "k\u0000ey": ["\u0001", "\u001b[0m", "\u007f"], "big": 10**30}
    await http.put("/v1/channels/orders/subscribers/billing", headers=bearer())

    r = await http.post(
        "/v1/channels/orders/events", json={"type": "a", "data": data}, headers=bearer()
    )

    assert r.status_code == 201, r.text
    assert r.json()["data"] == data
    read = await http.get("/v1/channels/orders/events", headers=bearer())
    assert [e["data"] for e in read.json()["events"]] == [data]
    replay = await http.put(
        "/v1/channels/orders/subscribers/late", json={"start": "beginning"}, headers=bearer()
    )
    assert replay.json()["replayed"] == 1
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    keys = ChannelKeys(redis_prefix, "orders")
    delivered = [
        parse_delivery(item).event.data
        for name in ("billing", "late")
        for item in await client.lrange(keys.published(name), 0, -1)
    ]
    await client.aclose()
    assert delivered == [data, data]


# ------------------------------------------------------------------ text fields

TEXT_FIELDS = pytest.mark.parametrize(
    "field", ["correlation_id", "causation_id", "aggregate_type", "aggregate_id"]
)
BAD_TEXT = pytest.mark.parametrize(
    "bad", ["\\u0000", "\\u001b", "\\u0085", "\\ud800"], ids=["nul", "esc", "c1", "surrogate"]
)


def _event_json(field: str, bad: str) -> str:
    body: dict[str, str] = {"type": "a", "aggregate_type": "order", "aggregate_id": "o-1"}
    body[field] = "x@BAD@y"
    return json.dumps(body).replace("@BAD@", bad)


@TEXT_FIELDS
@BAD_TEXT
async def test_control_characters_in_an_event_field_are_a_422_naming_it(
    http: httpx.AsyncClient, bearer: Bearer, field: str, bad: str
) -> None:
    single = await post_raw(http, "/v1/channels/orders/events", _event_json(field, bad), bearer())
    batch = await post_raw(
        http,
        "/v1/channels/orders/events/batch",
        f'{{"events": [{{"type": "ok"}}, {_event_json(field, bad)}]}}',
        bearer(),
    )

    for r in (single, batch):
        assert r.status_code == 422, r.text
        assert field in r.json()["error_description"]
    await assert_nothing_written(http, bearer)


@pytest.mark.parametrize("bad", [b"\x00", b"\x01", b"\x7f", b"\x85"], ids=str)
async def test_control_characters_in_the_idempotency_key_are_a_422(
    http: httpx.AsyncClient, bearer: Bearer, bad: bytes
) -> None:
    headers: dict[str, Any] = {**bearer(), "Idempotency-Key": b"key-" + bad}

    single = await http.post("/v1/channels/orders/events", json={"type": "a"}, headers=headers)
    batch = await http.post(
        "/v1/channels/orders/events/batch", json={"events": [{"type": "a"}]}, headers=headers
    )

    for r in (single, batch):
        assert r.status_code == 422, r.text
        assert r.json()["error_description"].startswith("Idempotency-Key:")
    await assert_nothing_written(http, bearer)


async def test_an_idempotency_key_with_latin1_text_is_fine(
    http: httpx.AsyncClient, bearer: Bearer
) -> None:
    headers: dict[str, Any] = {**bearer(), "Idempotency-Key": "clé-1".encode("latin-1")}
    first = await http.post("/v1/channels/orders/events", json={"type": "a"}, headers=headers)
    again = await http.post("/v1/channels/orders/events", json={"type": "a"}, headers=headers)
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.headers["Idempotent-Replayed"] == "true"


@pytest.mark.parametrize("part", ["aggregate_type", "aggregate_id"])
@pytest.mark.parametrize("bad", ["%00", "%1B"], ids=["nul", "esc"])
async def test_control_characters_in_an_aggregate_lookup_are_a_422(
    http: httpx.AsyncClient, bearer: Bearer, part: str, bad: str
) -> None:
    path = {"aggregate_type": "order", "aggregate_id": "o-1"}
    path[part] = f"x{bad}"
    r = await http.get(
        f"/v1/aggregates/{path['aggregate_type']}/{path['aggregate_id']}/events",
        headers=bearer(),
    )
    assert r.status_code == 422, r.text
    assert part in r.json()["error_description"]


# ------------------------------------------------------------------ integers out of range


@pytest.mark.parametrize("value", [TOO_BIG, JUST_TOO_BIG])
async def test_a_read_position_beyond_any_column_is_a_422(
    http: httpx.AsyncClient, bearer: Bearer, value: int
) -> None:
    channel = await http.get(f"/v1/channels/orders/events?after={value}", headers=bearer())
    trail = await http.get(
        f"/v1/aggregates/order/o-1/events?after_version={value}", headers=bearer()
    )
    for r in (channel, trail):
        assert r.status_code == 422, r.text
        assert "after" in r.json()["error_description"]


async def test_the_largest_read_position_is_answered(
    http: httpx.AsyncClient, bearer: Bearer
) -> None:
    last = 2**63 - 1
    channel = await http.get(f"/v1/channels/orders/events?after={last}", headers=bearer())
    trail = await http.get(
        f"/v1/aggregates/order/o-1/events?after_version={last}", headers=bearer()
    )
    assert channel.status_code == 200 and channel.json()["events"] == []
    assert trail.status_code == 200 and trail.json()["events"] == []


@pytest.mark.parametrize(
    "extra",
    [
        {"aggregate_version": TOO_BIG},
        {"aggregate_version": JUST_TOO_BIG},
        {"aggregate_version": 2**53},
        {"expected_version": TOO_BIG},
        {"expected_version": 2**53 - 1},  # its event would get version 2**53
        {"aggregate_version": True},
        {"expected_version": False},
        {"aggregate_version": "3"},
        {"aggregate_version": 2.0},
    ],
    ids=str,
)
async def test_a_version_out_of_range_or_not_an_integer_is_a_422(
    http: httpx.AsyncClient, bearer: Bearer, extra: dict[str, Any]
) -> None:
    body = {"type": "a", "aggregate_type": "order", "aggregate_id": "o-1", **extra}

    single = await http.post("/v1/channels/orders/events", json=body, headers=bearer())
    batch = await http.post(
        "/v1/channels/orders/events/batch", json={"events": [body]}, headers=bearer()
    )

    for r in (single, batch):
        assert r.status_code == 422, r.text
        assert next(iter(extra)) in r.json()["error_description"]
    await assert_nothing_written(http, bearer)


async def test_the_largest_version_is_stored_and_the_next_one_still_fits(
    http: httpx.AsyncClient, bearer: Bearer
) -> None:
    body = {"type": "a", "aggregate_type": "order", "aggregate_id": "o-1"}
    top = await http.post(
        "/v1/channels/orders/events",
        json={**body, "aggregate_version": 2**53 - 1},
        headers=bearer(),
    )
    assert top.status_code == 201, top.text
    assert top.json()["aggregate_version"] == 2**53 - 1
    # Without a version an aggregate event gets the next one: still far below the column's end.
    after = await http.post("/v1/channels/orders/events", json=body, headers=bearer())
    assert after.status_code == 201, after.text
    assert after.json()["aggregate_version"] == 2**53


@pytest.mark.parametrize(
    "start", [TOO_BIG, JUST_TOO_BIG, 2**63 - 1, -1, True, False, 1.0, "1", "later", None]
)
async def test_a_bad_subscribe_start_is_a_422_and_subscribes_nobody(
    http: httpx.AsyncClient, bearer: Bearer, redis_url: str, redis_prefix: str, start: Any
) -> None:
    await http.post("/v1/channels/orders/events", json={"type": "a"}, headers=bearer())

    r = await http.put(
        "/v1/channels/orders/subscribers/billing", json={"start": start}, headers=bearer()
    )

    assert r.status_code == 422, r.text
    assert r.json()["error_description"] == (
        f'start: must be "now", "beginning" or a log position (an integer from 0 to {2**63 - 2})'
    )
    keys = ChannelKeys(redis_prefix, "orders")
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    subscribed = await client.smembers(keys.subscribers)
    lagging = await client.hgetall(keys.lagging())
    await client.aclose()
    assert (subscribed, lagging) == (set(), {})


async def test_the_largest_subscribe_start_replays_nothing(
    http: httpx.AsyncClient, bearer: Bearer
) -> None:
    await http.post("/v1/channels/orders/events", json={"type": "a"}, headers=bearer())
    r = await http.put(
        "/v1/channels/orders/subscribers/billing", json={"start": 2**63 - 2}, headers=bearer()
    )
    assert r.status_code == 201, r.text
    assert (r.json()["replayed"], r.json()["lagging_since_position"]) == (0, None)


# ------------------------------------------------------------------ subscribing is idempotent


async def waiting(redis_url: str, redis_prefix: str, name: str) -> int:
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        return int(await client.llen(ChannelKeys(redis_prefix, "orders").published(name)))
    finally:
        await client.aclose()


async def test_subscribing_again_from_the_beginning_changes_nothing(
    http: httpx.AsyncClient, bearer: Bearer, redis_url: str, redis_prefix: str
) -> None:
    for i in range(6):
        await http.post("/v1/channels/orders/events", json={"type": f"t{i}"}, headers=bearer())
    url = "/v1/channels/orders/subscribers/audit"

    first = await http.put(url, json={"start": "beginning"}, headers=bearer())
    after_first = await waiting(redis_url, redis_prefix, "audit")
    again = await http.put(url, json={"start": "beginning"}, headers=bearer())
    from_position = await http.put(url, json={"start": 0}, headers=bearer())
    now = await http.put(url, headers=bearer())

    assert first.status_code == 201, first.text
    assert (first.json()["created"], first.json()["replayed"]) == (True, 6)
    for r in (again, from_position, now):
        assert r.status_code == 200, r.text
        assert (r.json()["created"], r.json()["replayed"]) == (False, 0)
    assert after_first == 6
    assert await waiting(redis_url, redis_prefix, "audit") == 6


async def test_subscribing_again_keeps_a_lagging_subscriber_lagging_from_its_mark(
    app: FastAPI, http: httpx.AsyncClient, bearer: Bearer, redis_url: str, redis_prefix: str
) -> None:
    app.state.dispatcher.stop()
    keys = ChannelKeys(redis_prefix, "orders")
    positions = [
        (
            await http.post("/v1/channels/orders/events", json={"type": f"t{i}"}, headers=bearer())
        ).json()["position"]
        for i in range(3)
    ]
    made = await http.put("/v1/channels/orders/subscribers/audit", headers=bearer())
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    await client.hset(keys.lagging(), "audit", positions[1])

    again = await http.put(
        "/v1/channels/orders/subscribers/audit", json={"start": "beginning"}, headers=bearer()
    )
    mark = await client.hget(keys.lagging(), "audit")
    await client.aclose()

    assert made.status_code == 201
    assert again.status_code == 200
    assert again.json()["lagging_since_position"] == positions[1]
    assert mark == str(positions[1])
    assert await waiting(redis_url, redis_prefix, "audit") == 0


async def test_a_new_subscriber_now_is_201_and_again_200(
    http: httpx.AsyncClient, bearer: Bearer
) -> None:
    first = await http.put("/v1/channels/orders/subscribers/billing", headers=bearer())
    again = await http.put("/v1/channels/orders/subscribers/billing", headers=bearer())
    assert (first.status_code, again.status_code) == (201, 200)
    assert (first.json()["created"], again.json()["created"]) == (True, False)


# ------------------------------------------------------------------ dead letters of nobody

DEAD_LETTER_CALLS = pytest.mark.parametrize(
    ("method", "suffix"),
    [("GET", ""), ("POST", "/requeue"), ("DELETE", "")],
    ids=["list", "requeue", "purge"],
)


@DEAD_LETTER_CALLS
@pytest.mark.parametrize(("channel", "name"), [("orders", "nobody"), ("nochannel", "billing")])
async def test_dead_letters_of_an_unknown_subscriber_are_a_404(
    http: httpx.AsyncClient, bearer: Bearer, method: str, suffix: str, channel: str, name: str
) -> None:
    await http.put("/v1/channels/orders/subscribers/billing", headers=bearer())

    r = await http.request(
        method, f"/v1/channels/{channel}/subscribers/{name}/dead-letters{suffix}", headers=bearer()
    )

    assert r.status_code == 404, r.text
    assert r.json()["error"] == "subscriber_not_found"
    assert r.json()["error_description"] == f"{name} does not subscribe to {channel}"


@DEAD_LETTER_CALLS
async def test_dead_letters_of_a_subscriber_without_any_are_empty(
    http: httpx.AsyncClient, bearer: Bearer, method: str, suffix: str
) -> None:
    await http.put("/v1/channels/orders/subscribers/billing", headers=bearer())
    r = await http.request(
        method, f"/v1/channels/orders/subscribers/billing/dead-letters{suffix}", headers=bearer()
    )
    assert r.status_code == 200, r.text


async def test_dead_letters_left_by_a_removed_subscriber_can_be_listed_and_purged(
    http: httpx.AsyncClient, bearer: Bearer, redis_url: str, redis_prefix: str
) -> None:
    keys = ChannelKeys(redis_prefix, "orders")
    await http.put("/v1/channels/orders/subscribers/billing", headers=bearer())
    await http.post("/v1/channels/orders/events", json={"type": "a"}, headers=bearer())
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    item = str(await client.rpop(keys.published("billing")))
    await client.delete(keys.published("billing"))
    # Unsubscribed while an instance still ran: its reaper dead-lettered one more delivery.
    await client.srem(keys.subscribers, "billing")
    await client.lpush(keys.dead("billing"), item.replace("1:", "5:", 1))
    base = "/v1/channels/orders/subscribers/billing/dead-letters"

    listed = await http.get(base, headers=bearer())
    requeued = await http.post(f"{base}/requeue", headers=bearer())
    purged = await http.delete(base, headers=bearer())
    gone = await http.get(base, headers=bearer())
    waiting_after = await client.llen(keys.published("billing"))
    await client.aclose()

    assert listed.status_code == 200 and len(listed.json()["dead_letters"]) == 1
    assert requeued.status_code == 404, requeued.text
    assert "can be listed and purged" in requeued.json()["error_description"]
    assert waiting_after == 0
    assert purged.status_code == 200 and purged.json() == {"purged": 1}
    assert gone.status_code == 404


# ------------------------------------------------------------------ bad names, one message


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("POST", "/v1/channels/a:b/events"),
        ("POST", "/v1/channels/a:b/events/batch"),
        ("GET", "/v1/channels/a:b/events"),
        ("GET", "/v1/channels/a:b"),
        ("PUT", "/v1/channels/a:b/subscribers/billing"),
        ("DELETE", "/v1/channels/a:b/subscribers/billing"),
        ("GET", "/v1/channels/a:b/subscribers/billing/dead-letters"),
        ("POST", "/v1/channels/a:b/subscribers/billing/dead-letters/requeue"),
        ("DELETE", "/v1/channels/a:b/subscribers/billing/dead-letters"),
    ],
)
async def test_a_bad_channel_name_is_one_clear_message(
    http: httpx.AsyncClient, bearer: Bearer, method: str, url: str
) -> None:
    body = {"events": [{"type": "a"}]} if url.endswith("batch") else {"type": "a"}
    publish = url.endswith(("/events", "/batch")) and method == "POST"

    r = await http.request(method, url, json=body if publish else None, headers=bearer())

    assert r.status_code == 422, r.text
    assert r.json()["error_description"] == (
        "path.channel: must be 1 to 128 letters, digits, '.', '_' or '-', "
        "starting with a letter or digit"
    )


async def test_a_bad_channel_name_is_a_422_before_the_scope_names_it(
    http: httpx.AsyncClient, bearer: Bearer
) -> None:
    r = await http.post("/v1/channels/a:b/events", json={"type": "a"}, headers=bearer("x:y"))
    assert r.status_code == 422, r.text
    assert r.json()["error_description"].startswith("path.channel: must be")


async def test_a_bad_subscriber_name_is_one_clear_message(
    http: httpx.AsyncClient, bearer: Bearer
) -> None:
    r = await http.put("/v1/channels/orders/subscribers/a%20b", headers=bearer())
    assert r.status_code == 422, r.text
    assert r.json()["error_description"] == (
        "path.name: must be 1 to 128 letters, digits, '.', '_' or '-', "
        "starting with a letter or digit"
    )


async def test_names_keep_their_pattern_in_the_openapi_schema(http: httpx.AsyncClient) -> None:
    spec = (await http.get("/openapi.json")).json()
    for path, method in (
        ("/v1/channels/{channel}/events", "post"),
        ("/v1/channels/{channel}/subscribers/{name}", "put"),
    ):
        params = spec["paths"][path][method]["parameters"]
        named = [p for p in params if p["in"] == "path"]
        assert len({p["name"] for p in named}) == len(named)  # each declared once
        assert all(p["schema"]["pattern"] for p in named)
