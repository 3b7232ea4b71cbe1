"""The token database going away while the service runs: 503 + Retry-After, then recovery.

The service reaches Postgres through a TCP proxy the test can cut, which is what a network
partition or a database restart looks like from the service.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from .conftest import FakeUserService, make_settings, start_env


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a target; `cut()` drops every connection and refuses new
    ones until `restore()`."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers -= {writer, up_writer}

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        for w in list(self._writers):
            w.transport.abort()
        await self._server.wait_closed()

    async def restore(self) -> None:
        await self.start()  # same port


@pytest.fixture
def postgres_url(database_url: str) -> str:
    if not database_url.startswith("postgresql"):
        pytest.skip("needs Postgres (a TCP connection to cut)")
    return database_url


async def test_database_down_gives_503_and_readiness_503_then_recovers(
    tmp_path: Path, postgres_url: str, users: FakeUserService
) -> None:
    url = make_url(postgres_url)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    await proxy.start()
    via_proxy = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    settings = make_settings(tmp_path, via_proxy)
    async for env in start_env(settings, users):
        await env.client_token("svc")
        env.service.clients.cache_ttl_s = 0  # every request reads the client from the DB
        env.service.clients._cache.clear()
        await proxy.cut()
        try:
            resp = await env.http.post(
                "/token", data={"grant_type": "client_credentials"}, headers=env.basic("svc")
            )
            assert resp.status_code == 503, resp.text
            assert resp.json()["error"] == "temporarily_unavailable"
            assert "retry-after" in resp.headers
            ready = await env.http.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["checks"]["database"].startswith("unavailable")
        finally:
            await proxy.restore()
        # Back by itself: no restart, the pool reconnects.
        for _ in range(50):
            resp = await env.http.post(
                "/token", data={"grant_type": "client_credentials"}, headers=env.basic("svc")
            )
            if resp.status_code == 200:
                break
            await asyncio.sleep(0.1)
        assert resp.status_code == 200, resp.text
        assert (await env.http.get("/readyz")).status_code == 200
    await proxy.cut()
