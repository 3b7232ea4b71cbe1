"""The log over HTTP: which type and channel names it takes, paging through an aggregate's
trail, and that nothing in it can be changed or removed (append-only).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute

Bearer = Callable[..., dict[str, str]]

VALID_TYPES = [
    "a",
    "Z",
    "9",
    "order.placed",
    "OrderPlaced",
    "order_placed",
    "order-placed",
    "orders/v2",
    "urn:order:placed",
    "2fa.enabled",
    "a" + "._:/-" * 39 + "b" * 4,  # every allowed punctuation, 200 characters
    "t" * 200,
]
INVALID_TYPES = [
    "",
    ".order",
    "_order",
    "-order",
    ":order",
    "/order",
    "order placed",
    " order",
    "order\n",
    "order\tplaced",
    "order;drop",
    "order,placed",
    "order*",
    "{order}",
    "order#1",
    "order@v1",
    "ordér",
    "注文",
    "t" * 201,
]
VALID_CHANNELS = [
    "o",
    "0",
    "orders",
    "Orders",
    "orders.eu",
    "orders_eu",
    "orders-eu-1",
    "9lives",
    "a" + "._-" * 42 + "z",  # every allowed punctuation, 128 characters
    "c" * 128,
]
INVALID_CHANNELS = [
    "-orders",
    ".orders",
    "_orders",
    "orders eu",
    "orders:eu",
    "{orders}",
    "orders*",
    "orders@eu",
    "ordérs",
    "c" * 129,
]


def shown(value: str) -> str:
    return value if len(value) <= 20 else f"{value[:12]}...({len(value)})"


@pytest.mark.parametrize("type_", VALID_TYPES, ids=shown)
async def test_a_valid_type_name_is_stored_as_given(
    http: httpx.AsyncClient, bearer: Bearer, type_: str
) -> None:
    r = await http.post("/v1/channels/orders/events", json={"type": type_}, headers=bearer())

    assert r.status_code == 201, r.text
    assert r.json()["type"] == type_
    log = (await http.get("/v1/channels/orders/events", headers=bearer())).json()
    assert [e["type"] for e in log["events"]] == [type_]


@pytest.mark.parametrize("type_", INVALID_TYPES, ids=shown)
async def test_an_invalid_type_name_is_422_naming_the_field(
    http: httpx.AsyncClient, bearer: Bearer, type_: str
) -> None:
    r = await http.post("/v1/channels/orders/events", json={"type": type_}, headers=bearer())

    assert r.status_code == 422, r.text
    assert r.json()["error"] == "validation_error"
    assert r.json()["error_description"].startswith("type:")
    log = (await http.get("/v1/channels/orders/events", headers=bearer())).json()
    assert log["events"] == []


@pytest.mark.parametrize("type_", ["", "order placed", "t" * 201], ids=shown)
async def test_an_invalid_type_name_in_a_batch_is_422_naming_the_event_and_field(
    http: httpx.AsyncClient, bearer: Bearer, type_: str
) -> None:
    r = await http.post(
        "/v1/channels/orders/events/batch",
        json={"events": [{"type": "fine"}, {"type": type_}]},
        headers=bearer(),
    )

    assert r.status_code == 422, r.text
    assert r.json()["error_description"].startswith("events.1.type:")
    log = (await http.get("/v1/channels/orders/events", headers=bearer())).json()
    assert log["events"] == []  # the valid first event was not stored either


@pytest.mark.parametrize("channel", VALID_CHANNELS, ids=shown)
async def test_a_valid_channel_name_takes_events(
    http: httpx.AsyncClient, bearer: Bearer, channel: str
) -> None:
    r = await http.post(f"/v1/channels/{channel}/events", json={"type": "t"}, headers=bearer())

    assert r.status_code == 201, r.text
    assert r.json()["channel"] == channel
    log = (await http.get(f"/v1/channels/{channel}/events", headers=bearer())).json()
    assert [e["id"] for e in log["events"]] == [r.json()["id"]]


@pytest.mark.parametrize("channel", INVALID_CHANNELS, ids=shown)
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/channels/{c}/events"),
        ("POST", "/v1/channels/{c}/events/batch"),
        ("GET", "/v1/channels/{c}/events"),
        ("GET", "/v1/channels/{c}"),
    ],
    ids=["publish", "batch", "read", "stats"],
)
async def test_an_invalid_channel_name_is_422_naming_the_field(
    http: httpx.AsyncClient, bearer: Bearer, channel: str, method: str, path: str
) -> None:
    body: dict[str, Any] = {"events": [{"type": "t"}]} if path.endswith("batch") else {"type": "t"}
    url = path.format(c=quote(channel, safe=""))

    r = await http.request(method, url, json=body if method == "POST" else None, headers=bearer())

    assert r.status_code == 422, r.text
    assert r.json()["error"] == "validation_error"
    assert "channel" in r.json()["error_description"].split(":", 1)[0]
    listing = (await http.get("/v1/channels", headers=bearer())).json()
    assert listing["channels"] == []


# ------------------------------------------------------------------ aggregate trail


async def test_paging_the_aggregate_trail_gives_every_version_once_in_order(
    http: httpx.AsyncClient, bearer: Bearer
) -> None:
    # o-1 gets 11 events over two channels, interleaved with events of look-alike aggregates.
    published = []
    for version in range(1, 12):
        channel = "orders" if version % 3 else "billing"
        r = await http.post(
            f"/v1/channels/{channel}/events",
            json={
                "type": f"step.{version}",
                "aggregate_type": "order",
                "aggregate_id": "o-1",
                "expected_version": version - 1,
            },
            headers=bearer(),
        )
        assert r.status_code == 201, r.text
        published.append(r.json())
        for other in (("order", "o-10"), ("invoice", "o-1")):
            noise = {"type": "noise", "aggregate_type": other[0], "aggregate_id": other[1]}
            r = await http.post("/v1/channels/orders/events", json=noise, headers=bearer())
            assert r.status_code == 201, r.text

    pages = []
    after = 0
    while True:
        r = await http.get(
            "/v1/aggregates/order/o-1/events",
            params={"after_version": after, "limit": 4},
            headers=bearer("events:read"),
        )
        assert r.status_code == 200, r.text
        page = r.json()
        assert page["version"] == 11  # the current version, on every page
        assert len(page["events"]) <= 4
        if not page["events"]:
            break
        pages.append(page["events"])
        after = page["events"][-1]["aggregate_version"]
        assert len(pages) <= 11, "paging does not end"

    assert [len(p) for p in pages] == [4, 4, 3]
    trail = [e for p in pages for e in p]
    assert [e["aggregate_version"] for e in trail] == list(range(1, 12))
    assert trail == published  # every event exactly as stored, each once
    assert {e["channel"] for e in trail} == {"orders", "billing"}


async def test_paging_from_the_middle_and_past_the_end(
    http: httpx.AsyncClient, bearer: Bearer
) -> None:
    agg = {"aggregate_type": "order", "aggregate_id": "o-2"}
    for i in range(5):
        r = await http.post(
            "/v1/channels/orders/events", json={"type": f"s{i}", **agg}, headers=bearer()
        )
        assert r.status_code == 201, r.text
    base = "/v1/aggregates/order/o-2/events"

    middle = (await http.get(f"{base}?after_version=2&limit=2", headers=bearer())).json()
    past = (await http.get(f"{base}?after_version=5", headers=bearer())).json()
    unknown = (await http.get("/v1/aggregates/order/nobody/events", headers=bearer())).json()

    assert [e["aggregate_version"] for e in middle["events"]] == [3, 4]
    assert past["events"] == [] and past["version"] == 5
    assert unknown["events"] == [] and unknown["version"] == 0


@pytest.mark.parametrize("query", ["after_version=-1", "limit=0", "limit=1001", "limit=x"])
async def test_bad_paging_parameters_are_422(
    http: httpx.AsyncClient, bearer: Bearer, query: str
) -> None:
    r = await http.get(f"/v1/aggregates/order/o-1/events?{query}", headers=bearer())

    assert r.status_code == 422, r.text
    assert r.json()["error_description"].startswith("query." + query.split("=")[0])


# ------------------------------------------------------------------ append-only


LOG_PATHS = ("/v1/channels/{channel}/events", "/v1/aggregates/")
APPENDS = {"/v1/channels/{channel}/events", "/v1/channels/{channel}/events/batch"}
CHANGES = {"PUT", "PATCH", "DELETE"}


def api_routes(routes: Iterable[BaseRoute]) -> Iterator[APIRoute]:
    """Every APIRoute of `routes`, also inside included routers (FastAPI >= 0.165 keeps an
    included router as one route holding the original router)."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        included = getattr(route, "original_router", None)
        if included is not None:
            yield from api_routes(included.routes)


def log_methods(app: FastAPI) -> dict[str, set[str]]:
    """Path -> methods of every route under the log's paths, from app.routes."""
    found: dict[str, set[str]] = {}
    for route in api_routes(app.routes):
        if route.path.startswith(LOG_PATHS):
            found.setdefault(route.path, set()).update(route.methods or ())
    return found


def test_no_route_of_the_log_changes_or_removes_events(app: FastAPI) -> None:
    routes = log_methods(app)
    documented = {
        path: {m.upper() for m in operations}
        for path, operations in app.openapi()["paths"].items()
        if path.startswith(LOG_PATHS)
    }

    assert set(routes) >= {*APPENDS, "/v1/aggregates/{aggregate_type}/{aggregate_id}/events"}
    assert documented == routes  # no hidden route either
    for path, methods in routes.items():
        assert not methods & CHANGES, (path, methods)
    # The only writes are appends.
    assert {path for path, methods in routes.items() if "POST" in methods} == APPENDS


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
@pytest.mark.parametrize(
    "path",
    [
        "/v1/channels/orders/events",
        "/v1/channels/orders/events/batch",
        "/v1/aggregates/order/o-1/events",
    ],
)
async def test_changing_or_removing_logged_events_is_405(
    http: httpx.AsyncClient, bearer: Bearer, method: str, path: str
) -> None:
    r = await http.post(
        "/v1/channels/orders/events",
        json={"type": "kept", "aggregate_type": "order", "aggregate_id": "o-1"},
        headers=bearer(),
    )
    assert r.status_code == 201, r.text
    kept = r.json()

    answer = await http.request(method, path, json={"type": "changed"}, headers=bearer())

    assert answer.status_code == 405, answer.text
    assert answer.json()["error"] == "method_not_allowed"
    assert not CHANGES & set(answer.headers["Allow"].split(", "))
    log = (await http.get("/v1/channels/orders/events", headers=bearer())).json()
    assert log["events"] == [kept]
