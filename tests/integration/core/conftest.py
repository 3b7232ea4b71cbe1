"""Apps served by a real uvicorn, configured as `authbus serve` configures it, in a thread on
a free loopback port, and a raw HTTP/1.1 client for what httpx hides (one keep-alive
connection, a Content-Length that is never followed by its body, chunked bodies)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import uvicorn
from starlette.types import ASGIApp

from authbus.cli import server_options
from authbus.core.settings import Settings
from tests.conftest import free_port


class Served:
    """`app` under uvicorn with the options of `authbus serve` for `settings`."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app, lifespan="on", **server_options(settings, "127.0.0.1", self.port)
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Served:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(15)

    def connect(self) -> RawConnection:
        return RawConnection(socket.create_connection(("127.0.0.1", self.port), timeout=10))


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class RawConnection:
    """One HTTP/1.1 connection, written and read by hand."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def __enter__(self) -> RawConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def send_head(self, method: str, path: str, headers: Iterable[tuple[str, str]] = ()) -> None:
        lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
        lines += [f"{name}: {value}" for name, value in headers]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))

    def request(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        headers: Iterable[tuple[str, str]] = (),
    ) -> RawResponse:
        all_headers = [*headers]
        if body or method in ("POST", "PUT", "PATCH"):
            all_headers.append(("Content-Length", str(len(body))))
        self.send_head(method, path, all_headers)
        self.sock.sendall(body)
        return self.read_response()

    def send_chunk(self, data: bytes) -> None:
        """One chunk of a `Transfer-Encoding: chunked` body (b"": the last one)."""
        self.sock.sendall(f"{len(data):x}\r\n".encode() + data + b"\r\n")

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("the server closed the connection")
        self.buffer += data

    def read_response(self) -> RawResponse:
        while b"\r\n\r\n" not in self.buffer:
            self._fill()
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        while len(self.buffer) < length:
            self._fill()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return RawResponse(int(status_line.split()[1]), headers, body)

    def is_open(self) -> bool:
        """Whether the server kept the connection (no EOF or reset waiting to be read)."""
        self.sock.settimeout(0.2)
        try:
            return self.sock.recv(1, socket.MSG_PEEK) != b""
        except TimeoutError:
            return True
        except OSError:
            return False
        finally:
            self.sock.settimeout(10)
