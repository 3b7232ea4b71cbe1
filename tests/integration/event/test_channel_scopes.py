"""Per-channel scopes: `events:publish:<channel>` and `events:read:<channel>` grant that
channel only; `events:publish` and `events:read` grant every channel; what spans channels
(the channel list, aggregate trails) needs the broad scope.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import httpx
import pytest

Bearer = Callable[..., dict[str, str]]
DEAD_LETTERS = "/v1/channels/{c}/subscribers/billing/dead-letters"


async def seed(http: httpx.AsyncClient, bearer: Bearer) -> None:
    """An event on orders and one on payments, each with a subscriber `billing`."""
    for channel in ("orders", "payments"):
        r = await http.put(f"/v1/channels/{channel}/subscribers/billing", headers=bearer())
        assert r.is_success, r.text
        r = await http.post(
            f"/v1/channels/{channel}/events",
            json={"type": "t", "aggregate_type": "order", "aggregate_id": f"{channel}-1"},
            headers=bearer(),
        )
        assert r.status_code == 201, r.text


def assert_refused(r: httpx.Response, action: str, channel: str) -> None:
    """403 insufficient_scope naming the channel and both scopes that would do."""
    assert r.status_code == 403, r.text
    body = r.json()
    assert body["error"] == "insufficient_scope"
    description = body["error_description"]
    assert repr(channel) in description
    assert re.search(rf"events:{action}(?![:\w])", description)  # the broad scope
    assert f"events:{action}:{channel}" in description
    challenge = r.headers["WWW-Authenticate"]
    assert 'error="insufficient_scope"' in challenge
    assert f'scope="events:{action}:{channel}"' in challenge  # the narrowest that suffices


# ------------------------------------------------------------------ publish


@pytest.mark.parametrize("path", ["/v1/channels/{c}/events", "/v1/channels/{c}/events/batch"])
async def test_a_channel_publish_scope_publishes_to_that_channel_only(
    http: httpx.AsyncClient, bearer: Bearer, path: str
) -> None:
    headers = bearer("events:publish:orders")
    body = {"type": "t"} if path.endswith("events") else {"events": [{"type": "t"}]}

    ok = await http.post(path.format(c="orders"), json=body, headers=headers)
    refused = await http.post(path.format(c="payments"), json=body, headers=headers)

    assert ok.status_code == 201, ok.text
    assert_refused(refused, "publish", "payments")
    log = (await http.get("/v1/channels/payments/events", headers=bearer())).json()
    assert log["events"] == []  # nothing stored on the refused channel


@pytest.mark.parametrize("channel", ["orders2", "orders.eu", "orders-x", "Orders", "order"])
async def test_a_channel_scope_does_not_cover_channels_whose_names_resemble_it(
    http: httpx.AsyncClient, bearer: Bearer, channel: str
) -> None:
    r = await http.post(
        f"/v1/channels/{channel}/events",
        json={"type": "t"},
        headers=bearer("events:publish:orders"),
    )
    assert_refused(r, "publish", channel)


async def test_a_channel_publish_scope_does_not_read(
    http: httpx.AsyncClient, bearer: Bearer
) -> None:
    headers = bearer("events:publish:orders")

    r = await http.get("/v1/channels/orders/events", headers=headers)

    assert_refused(r, "read", "orders")


async def test_the_broad_publish_scope_publishes_anywhere(
    http: httpx.AsyncClient, bearer: Bearer
) -> None:
    headers = bearer("events:publish")
    for channel in ("orders", "payments", "anything.else"):
        r = await http.post(f"/v1/channels/{channel}/events", json={"type": "t"}, headers=headers)
        assert r.status_code == 201, r.text


# ------------------------------------------------------------------ read


@pytest.mark.parametrize(
    "path",
    ["/v1/channels/{c}/events", "/v1/channels/{c}", DEAD_LETTERS],
    ids=["log", "stats", "dead-letters"],
)
async def test_a_channel_read_scope_reads_that_channel_only(
    http: httpx.AsyncClient, bearer: Bearer, path: str
) -> None:
    await seed(http, bearer)
    headers = bearer("events:read:orders")

    ok = await http.get(path.format(c="orders"), headers=headers)
    refused = await http.get(path.format(c="payments"), headers=headers)

    assert ok.status_code == 200, ok.text
    assert_refused(refused, "read", "payments")


async def test_a_channel_read_scope_sees_its_channel_log_and_stats(
    http: httpx.AsyncClient, bearer: Bearer
) -> None:
    await seed(http, bearer)
    headers = bearer("events:read:orders")

    log = (await http.get("/v1/channels/orders/events", headers=headers)).json()
    stats = (await http.get("/v1/channels/orders", headers=headers)).json()

    assert [e["channel"] for e in log["events"]] == ["orders"]
    assert stats["channel"] == "orders" and stats["events"] == 1
    assert [s["name"] for s in stats["subscribers"]] == ["billing"]


async def test_a_channel_read_scope_cannot_list_the_channels(
    http: httpx.AsyncClient, bearer: Bearer
) -> None:
    await seed(http, bearer)

    r = await http.get("/v1/channels", headers=bearer("events:read:orders"))

    assert r.status_code == 403 and r.json()["error"] == "insufficient_scope"
    assert "payments" not in r.text  # no channel names leak through the refusal
    assert 'scope="events:read"' in r.headers["WWW-Authenticate"]


async def test_a_channel_read_scope_cannot_read_an_aggregate_trail(
    http: httpx.AsyncClient, bearer: Bearer
) -> None:
    await seed(http, bearer)

    r = await http.get("/v1/aggregates/order/orders-1/events", headers=bearer("events:read:orders"))

    assert r.status_code == 403 and r.json()["error"] == "insufficient_scope"


async def test_a_channel_read_scope_does_not_publish_nor_administer(
    http: httpx.AsyncClient, bearer: Bearer
) -> None:
    headers = bearer("events:read:orders")
    base = "/v1/channels/orders/subscribers/billing"

    published = await http.post("/v1/channels/orders/events", json={"type": "t"}, headers=headers)
    subscribed = await http.put(base, headers=headers)
    requeued = await http.post(f"{base}/dead-letters/requeue", headers=headers)
    purged = await http.delete(f"{base}/dead-letters", headers=headers)

    assert_refused(published, "publish", "orders")
    assert [r.status_code for r in (subscribed, requeued, purged)] == [403, 403, 403]


async def test_the_broad_read_scope_reads_everywhere(
    http: httpx.AsyncClient, bearer: Bearer
) -> None:
    await seed(http, bearer)
    headers = bearer("events:read")

    paths = [
        "/v1/channels",
        "/v1/aggregates/order/payments-1/events",
        *(p.format(c=c) for c in ("orders", "payments") for p in ("/v1/channels/{c}/events",)),
        *(p.format(c=c) for c in ("orders", "payments") for p in ("/v1/channels/{c}",)),
        *(DEAD_LETTERS.format(c=c) for c in ("orders", "payments")),
    ]
    answers = {p: (await http.get(p, headers=headers)).status_code for p in paths}

    assert answers == dict.fromkeys(paths, 200)


async def test_several_channel_scopes_grant_each_of_their_channels(
    http: httpx.AsyncClient, bearer: Bearer
) -> None:
    headers = bearer("events:publish:orders", "events:publish:payments")

    answers = [
        (await http.post(f"/v1/channels/{c}/events", json={"type": "t"}, headers=headers))
        for c in ("orders", "payments", "shipping")
    ]

    assert [r.status_code for r in answers] == [201, 201, 403]
    assert_refused(answers[2], "publish", "shipping")
