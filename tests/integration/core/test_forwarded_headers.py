"""Which peers' X-Forwarded-For the services believe, with uvicorn configured as
`authbus serve` configures it (authbus.cli.server_options)."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request

from authbus.core.app import build_app
from authbus.core.settings import Settings
from tests.integration.core.conftest import Served

CLIENT = "203.0.113.7"


def client_echo(settings: Settings) -> FastAPI:
    app = build_app("user", settings)

    @app.get("/whoami")
    async def whoami(request: Request) -> dict[str, str | None]:
        # What the login throttle and the audit record (authbus.user.api, token login).
        return {
            "address": request.client.host if request.client else None,
            "scheme": request.url.scheme,
        }

    return app


def seen_by_service(settings: Settings, *headers: tuple[str, str]) -> dict[str, str]:
    with Served(client_echo(settings), settings) as served, served.connect() as conn:
        answer = conn.request("GET", "/whoami", headers=headers)
        assert answer.status == 200
        seen: dict[str, str] = answer.json()
        return seen


FORWARDED = (("X-Forwarded-For", CLIENT), ("X-Forwarded-Proto", "https"))


def test_by_default_forwarded_headers_are_ignored_even_from_loopback(tmp_path: Path) -> None:
    # uvicorn alone believes 127.0.0.1: any local process could choose its address.
    seen = seen_by_service(Settings(data_dir=tmp_path), *FORWARDED)
    assert seen == {"address": "127.0.0.1", "scheme": "http"}


def test_the_gateways_forwarded_headers_are_believed(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, forwarded_allow_ips="127.0.0.1")
    assert seen_by_service(settings, *FORWARDED) == {"address": CLIENT, "scheme": "https"}


def test_a_network_can_be_trusted(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, forwarded_allow_ips="10.0.0.0/8, 127.0.0.0/8")
    assert seen_by_service(settings, *FORWARDED)["address"] == CLIENT


def test_a_client_cannot_choose_its_address_through_the_gateway(tmp_path: Path) -> None:
    # The gateway appends the address it saw (nginx $proxy_add_x_forwarded_for): the
    # rightmost untrusted entry is the client, whatever the client put before it.
    settings = Settings(data_dir=tmp_path, forwarded_allow_ips="127.0.0.1")
    seen = seen_by_service(settings, ("X-Forwarded-For", f"198.51.100.1, {CLIENT}"))
    assert seen["address"] == CLIENT


def test_other_peers_forwarded_headers_are_ignored(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, forwarded_allow_ips="172.30.81.10")
    assert seen_by_service(settings, *FORWARDED) == {"address": "127.0.0.1", "scheme": "http"}
