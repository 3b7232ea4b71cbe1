"""The HTTP figures every service shows on /metrics: `authbus_http_requests_total` and
`authbus_http_request_duration_seconds`, labelled by service, method, status and the route
TEMPLATE (`/v1/users/{user_id}`), never the raw path, so ids and unknown paths cannot
create a time series each."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from authbus.core.migrate import upgrade_async
from authbus.core.settings import Settings, UserSettings
from authbus.event.app import create_app as create_event_app
from authbus.token.app import create_app as create_token_app
from authbus.user.app import create_app as create_user_app
from tests.support.tokens import TokenMinter

REQUESTS = "authbus_http_requests"  # exposed as authbus_http_requests_total
DURATION = "authbus_http_request_duration_seconds"

Labels = tuple[tuple[str, str], ...]


def series(text: str, family: str, suffix: str) -> dict[Labels, float]:
    """The samples named `family + suffix` on a /metrics page, by their label set."""
    out: dict[Labels, float] = {}
    for metric in text_string_to_metric_families(text):
        if metric.name != family:
            continue
        for sample in metric.samples:
            if sample.name == family + suffix:
                out[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def labels(service: str, method: str, route: str, status: int | None = None) -> Labels:
    found = {"service": service, "method": method, "route": route}
    if status is not None:
        found["status"] = str(status)
    return tuple(sorted(found.items()))


async def metrics_page(http: httpx.AsyncClient) -> str:
    resp = await http.get("/metrics")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    return resp.text


def settings_for(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path,
        redis_url=None,
        user=UserSettings(argon2_memory_kib=1024, argon2_time_cost=1),
    )


@pytest.fixture
def minter() -> TokenMinter:
    return TokenMinter()


@pytest.fixture
async def user_http(tmp_path: Path, minter: TokenMinter) -> AsyncIterator[httpx.AsyncClient]:
    """The user service (SQLite) with tokens from `minter`."""
    settings = settings_for(tmp_path)
    await upgrade_async(settings.database_url("user"), "user")
    app = create_user_app(settings, token_validator=minter.validator())
    async for http in _serve(app):
        yield http


async def _serve(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://svc.test") as http:
            # Ready first: what a client of a real deployment waits for.
            ready = await http.get("/readyz")
            assert ready.status_code == 200, ready.text
            yield http


@pytest.fixture
def admin(minter: TokenMinter) -> dict[str, str]:
    token = minter.mint("authbus-admin", ["users:admin"], client_id="authbus-admin")
    return {"Authorization": f"Bearer {token}"}


async def test_requests_are_counted_by_route_template_method_and_status(
    user_http: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    made = await user_http.post(
        "/v1/users",
        json={"username": "alice", "password": "correct horse battery staple"},
        headers=admin,
    )
    assert made.status_code == 201, made.text
    alice = made.json()["id"]
    ghosts = [str(uuid.uuid4()) for _ in range(3)]
    assert (await user_http.get(f"/v1/users/{alice}", headers=admin)).status_code == 200
    for ghost in ghosts:
        assert (await user_http.get(f"/v1/users/{ghost}", headers=admin)).status_code == 404
    patched = await user_http.patch(f"/v1/users/{alice}", json={"disabled": 1.5}, headers=admin)
    assert patched.status_code == 422

    text = await metrics_page(user_http)
    counts = series(text, REQUESTS, "_total")
    template = "/v1/users/{user_id}"
    assert counts[labels("user", "GET", template, 200)] == 1
    assert counts[labels("user", "GET", template, 404)] == 3
    assert counts[labels("user", "PATCH", template, 422)] == 1
    assert counts[labels("user", "POST", "/v1/users", 201)] == 1
    durations = series(text, DURATION, "_count")
    assert durations[labels("user", "GET", template)] == 4
    assert durations[labels("user", "PATCH", template)] == 1
    # The ids never become label values.
    for raw in (alice, *ghosts):
        assert raw not in text


async def test_unknown_paths_share_one_label(
    user_http: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    async def unknown(n: int, start: int) -> None:
        for i in range(start, start + n):
            resp = await user_http.get(f"/no/such/path/{i}-{uuid.uuid4().hex}", headers=admin)
            assert resp.status_code == 404

    await unknown(3, 0)
    first = series(await metrics_page(user_http), REQUESTS, "_total")
    await unknown(40, 3)
    text = await metrics_page(user_http)
    second = series(text, REQUESTS, "_total")

    # Forty more unknown paths: more counted, not more series.
    new_series = set(second) - set(first) - {labels("user", "GET", "/metrics", 200)}
    assert new_series == set(), new_series
    unknown_series = [k for k, v in second.items() if second[k] != first.get(k)]
    assert len(unknown_series) == 2, unknown_series  # the 404s and GET /metrics itself
    (not_found,) = [k for k in unknown_series if dict(k)["status"] == "404"]
    assert second[not_found] == 43
    assert "/no/such/path" not in text
    assert not any("/no/such" in dict(k)["route"] for k in series(text, DURATION, "_count"))


async def test_a_method_the_route_does_not_take_is_not_labelled_by_its_raw_path(
    user_http: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    ids = [str(uuid.uuid4()) for _ in range(3)]
    for user_id in ids:
        resp = await user_http.post(f"/v1/users/{user_id}", json={}, headers=admin)
        assert resp.status_code == 405
    text = await metrics_page(user_http)
    routes = {dict(k)["route"] for k in series(text, REQUESTS, "_total")}
    for user_id in ids:
        assert user_id not in text
    assert not any(r.startswith("/v1/users/") and "{" not in r for r in routes), routes


async def test_the_token_and_event_services_label_by_template_too(
    tmp_path: Path, minter: TokenMinter
) -> None:
    settings = settings_for(tmp_path)
    for service in ("token", "event"):
        await upgrade_async(settings.database_url(service), service)
    no_user_service = httpx.MockTransport(lambda request: httpx.Response(503))
    cases = [
        (
            "token",
            create_token_app(settings, user_transport=no_user_service),
            "/v1/clients/{client_id}",
            [f"/v1/clients/app-{uuid.uuid4().hex[:8]}" for _ in range(3)],
        ),
        (
            "event",
            create_event_app(settings, token_validator=minter.validator()),
            "/v1/channels/{channel}",
            [f"/v1/channels/ch-{uuid.uuid4().hex[:8]}" for _ in range(3)],
        ),
    ]
    for service, app, template, paths in cases:
        async for http in _serve(app):
            statuses = {(await http.get(path)).status_code for path in paths}
            assert statuses == {401}, (service, statuses)  # no token: refused, still counted
            text = await metrics_page(http)
            counts = series(text, REQUESTS, "_total")
            assert counts[labels(service, "GET", template, 401)] == 3, (service, counts)
            for path in paths:
                assert path not in text, (service, path)
