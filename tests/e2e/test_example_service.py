"""The example orders service (examples/orders_service) against the real stack.

`authbus up` runs the three services and Redis; the example runs as its own process,
configured only through ORDERS_* variables, as another team's service would be.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import pytest
import requests

from authbus.common import TokenAuth
from authbus.demo import FormParser, pkce_pair
from tests.conftest import free_port
from tests.e2e.test_stack import RunningStack, clean_env, start_stack, stop_stack

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[2]
CLIENT_ID = "orders-example"
TIMEOUT = 10


@dataclass
class Example:
    """The running example and what the test knows about the stack around it."""

    url: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    token_url: str
    user_url: str
    event_url: str
    client_secret: str
    admin: requests.Session
    user_id: str
    username: str
    password: str

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]


def _expect(response: requests.Response, status: int) -> Any:
    assert response.status_code == status, (
        f"{response.request.method} {response.url} -> {response.status_code}: {response.text}"
    )
    return response.json() if response.content else None


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the example exited with {proc.returncode}:\n{log_path.read_text()}")
        try:
            if requests.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    pytest.fail(f"the example did not become ready:\n{log_path.read_text()[-6000:]}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[RunningStack]:
    running = start_stack(tmp_path)
    yield running
    stop_stack(running)


@pytest.fixture
def example(stack: RunningStack, tmp_path: Path) -> Iterator[Example]:
    yield from run_example(stack, tmp_path)


def run_example(
    stack: RunningStack, tmp_path: Path, event_url: str | None = None
) -> Iterator[Example]:
    """Register the example's client and a user, run the example until the generator ends."""
    runtime = json.loads((stack.data_dir / "runtime.json").read_text())
    creds = json.loads((stack.data_dir / "credentials.json").read_text())
    token_url, user_url = runtime["token_url"], runtime["user_url"]
    admin = requests.Session()
    admin.auth = TokenAuth(
        "authbus-admin",
        creds["clients"]["authbus-admin"],
        issuer=token_url,
        scopes=["users:admin", "clients:admin", "events:read"],
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"

    registered = _expect(
        admin.post(
            f"{token_url}/v1/clients",
            json={
                "client_id": CLIENT_ID,
                "name": "orders example",
                "type": "confidential",
                "redirect_uris": [f"{url}/auth/callback"],
                "grant_types": ["authorization_code", "client_credentials"],
                "scopes": ["orders:read", "orders:write", "events:publish"],
                "first_party": True,
            },
            timeout=TIMEOUT,
        ),
        201,
    )
    username, password = "olivia", secrets.token_urlsafe(16)
    user = _expect(
        admin.post(
            f"{user_url}/v1/users",
            json={
                "username": username,
                "password": password,
                "permissions": ["orders:read", "orders:write"],
            },
            timeout=TIMEOUT,
        ),
        201,
    )

    env = {k: v for k, v in clean_env().items() if not k.startswith("ORDERS_")}
    env.update(
        ORDERS_TOKEN_URL=token_url,
        ORDERS_EVENT_URL=event_url or runtime["event_url"],
        ORDERS_REDIS_URL=runtime["redis_url"],
        ORDERS_REDIS_PREFIX=runtime["redis_prefix"],
        ORDERS_CLIENT_ID=CLIENT_ID,
        ORDERS_CLIENT_SECRET=registered["client_secret"],
        ORDERS_PORT=str(port),
        ORDERS_PUBLIC_URL=url,
    )
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    log_path = tmp_path / "orders.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "examples.orders_service"],
            cwd=REPO_ROOT,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_ready(url, proc, log_path)
        yield Example(
            url=url,
            proc=proc,
            log_path=log_path,
            token_url=token_url,
            user_url=user_url,
            event_url=runtime["event_url"],
            client_secret=registered["client_secret"],
            admin=admin,
            user_id=user["id"],
            username=username,
            password=password,
        )
    finally:
        _stop(proc)
        admin.close()


def _sign_in(
    browser: requests.Session, authorize_url: str, ex: Example, request_id: str | None = None
) -> str:
    """Fill in the token service's login form; the Location it redirects to."""
    page = browser.get(authorize_url, timeout=TIMEOUT)
    assert page.status_code == 200, page.text
    form = FormParser()
    form.feed(page.text)
    assert form.action is not None and "password" in form.fields, page.text[:500]
    fields = dict(form.fields, username=ex.username, password=ex.password)
    answer = browser.post(
        urljoin(page.url, form.action),
        data=fields,
        headers={"X-Request-ID": request_id} if request_id else None,
        allow_redirects=False,
        timeout=TIMEOUT,
    )
    assert answer.status_code in (302, 303), answer.text[:500]
    return str(answer.headers["location"])


def _user_token(ex: Example, scope: str) -> str:
    """A user access token for the example's client (code + PKCE, as a web app would)."""
    verifier, challenge = pkce_pair()
    state = secrets.token_urlsafe(16)
    query = {
        "response_type": "code",
        "client_id": CLIENT_ID,
        "redirect_uri": f"{ex.url}/auth/callback",
        "scope": scope,
        "state": state,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    authorize = requests.Request("GET", f"{ex.token_url}/authorize", params=query).prepare()
    with requests.Session() as browser:
        location = _sign_in(browser, str(authorize.url), ex)
    params = parse_qs(urlsplit(location).query)
    assert params.get("state") == [state] and "code" in params, location
    tokens = _expect(
        requests.post(
            f"{ex.token_url}/token",
            data={
                "grant_type": "authorization_code",
                "code": params["code"][0],
                "redirect_uri": f"{ex.url}/auth/callback",
                "code_verifier": verifier,
            },
            auth=(CLIENT_ID, ex.client_secret),
            timeout=TIMEOUT,
        ),
        200,
    )
    return str(tokens["access_token"])


def _events(ex: Example, channel: str) -> list[dict[str, Any]]:
    page = _expect(ex.admin.get(f"{ex.event_url}/v1/channels/{channel}/events", timeout=10), 200)
    return list(page["events"])


def _wait_for_log(stack: RunningStack, service: str, text: str) -> bool:
    """Whether `service`'s output (relayed by `authbus up`) shows `text` within 5 s."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if any(line.startswith(service) and text in line for line in list(stack.lines)):
            return True
        time.sleep(0.1)
    return False


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_example_checks_tokens_publishes_and_reacts_to_user_events(
    stack: RunningStack, example: Example
) -> None:
    ex = example
    orders = f"{ex.url}/orders"

    # No token: 401 with a Bearer challenge (an API client, not a browser).
    refused = requests.get(orders, timeout=TIMEOUT)
    assert refused.status_code == 401, refused.text
    assert refused.headers["www-authenticate"].startswith("Bearer")

    # A token without orders:write may read but not place orders.
    reader = _user_token(ex, "orders:read")
    assert requests.get(orders, headers=_bearer(reader), timeout=TIMEOUT).status_code == 200
    forbidden = requests.post(orders, json={"item": "pen"}, headers=_bearer(reader), timeout=10)
    assert forbidden.status_code == 403, forbidden.text
    assert forbidden.json()["missing_scopes"] == ["orders:write"]

    # A good token: 201, and order.created is in the log (published with the example's
    # own client credentials), carrying the request id as correlation id.
    writer = _user_token(ex, "orders:read orders:write")
    placed = requests.post(
        orders,
        json={"item": "notebook", "quantity": 2},
        headers={**_bearer(writer), "X-Request-ID": "e2e-order-1"},
        timeout=TIMEOUT,
    )
    assert placed.status_code == 201, placed.text + ex.log()
    order = placed.json()
    assert order["user_id"] == ex.user_id and order["status"] == "open"
    assert placed.headers["x-request-id"] == "e2e-order-1"
    created = [e for e in _events(ex, "orders") if e["aggregate_id"] == order["id"]]
    assert [e["type"] for e in created] == ["order.created"]
    assert created[0]["data"]["user_id"] == ex.user_id
    assert created[0]["producer"] == CLIENT_ID
    assert created[0]["correlation_id"] == "e2e-order-1"
    # ... and the publish carried it as X-Request-ID: the event service logged it.
    assert _wait_for_log(stack, "event", '"request_id": "e2e-order-1"'), stack.output()[-3000:]

    # Disabling the user cancels that user's open orders (user -> event -> example).
    _expect(
        ex.admin.patch(
            f"{ex.user_url}/v1/users/{ex.user_id}", json={"disabled": True}, timeout=TIMEOUT
        ),
        200,
    )
    deadline = time.monotonic() + 15
    cancelled: list[dict[str, Any]] = []
    while time.monotonic() < deadline and not cancelled:
        cancelled = [
            e
            for e in _events(ex, "orders")
            if e["type"] == "order.cancelled" and e["aggregate_id"] == order["id"]
        ]
        if not cancelled:
            time.sleep(0.25)
    assert cancelled, f"no order.cancelled within 15 s; example log:\n{ex.log()}"
    assert cancelled[0]["data"]["reason"] == "user.disabled"
    assert len(cancelled) == 1


def test_browser_is_sent_to_sign_in_and_comes_back_signed_in(
    stack: RunningStack, example: Example
) -> None:
    ex = example
    with requests.Session() as browser:
        browser.headers["Accept"] = "text/html,application/xhtml+xml"
        first = browser.get(f"{ex.url}/orders", allow_redirects=False, timeout=TIMEOUT)
        assert first.status_code == 303, first.text
        location = first.headers["location"]
        assert location.startswith(f"{ex.token_url}/authorize?")
        query = parse_qs(urlsplit(location).query)
        assert query["client_id"] == [CLIENT_ID]
        assert query["code_challenge_method"] == ["S256"]
        assert len(query["code_challenge"][0]) >= 43
        assert query["redirect_uri"] == [f"{ex.url}/auth/callback"]

        # The whole round trip: login form -> callback (sets the session cookie) -> /orders.
        callback = _sign_in(browser, location, ex, request_id="e2e-login-1")
        assert callback.startswith(f"{ex.url}/auth/callback?")
        # The token service forwarded the login's request id to the user service.
        assert _wait_for_log(stack, "user", '"request_id": "e2e-login-1"'), stack.output()[-3000:]
        back = browser.get(callback, allow_redirects=False, timeout=TIMEOUT)
        assert back.status_code == 303, back.text
        assert back.headers["location"] == "/orders"
        assert "authbus_session" in browser.cookies.get_dict()
        signed_in = browser.get(f"{ex.url}/orders", allow_redirects=False, timeout=TIMEOUT)
        assert signed_in.status_code == 200, signed_in.text
        assert signed_in.json() == {"items": []}


class SlowProxy:
    """Forwards HTTP requests to `target` after `delay` seconds (a slow event service)."""

    def __init__(self, target: str, delay: float) -> None:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                proxy.received.set()
                time.sleep(delay)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                answer = requests.post(target + self.path, data=body, headers=headers, timeout=10)
                self.send_response(answer.status_code)
                for name in ("content-type", "content-length"):
                    if name in answer.headers:
                        self.send_header(name, answer.headers[name])
                self.end_headers()
                self.wfile.write(answer.content)

            def log_message(self, *args: Any) -> None:
                pass

        self.received = threading.Event()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_sigterm_lets_the_request_in_flight_finish(stack: RunningStack, tmp_path: Path) -> None:
    runtime = json.loads((stack.data_dir / "runtime.json").read_text())
    proxy = SlowProxy(runtime["event_url"], delay=2.0)
    examples = run_example(stack, tmp_path, event_url=proxy.url)
    try:
        ex = next(examples)
        writer = _user_token(ex, "orders:read orders:write")
        answers: list[requests.Response] = []
        placing = threading.Thread(
            target=lambda: answers.append(
                requests.post(
                    f"{ex.url}/orders", json={"item": "lamp"}, headers=_bearer(writer), timeout=30
                )
            )
        )
        placing.start()
        assert proxy.received.wait(10), ex.log()  # the order is being announced ...
        ex.proc.send_signal(signal.SIGTERM)  # ... when the service is told to stop
        placing.join(30)
        assert answers and answers[0].status_code == 201, answers and answers[0].text
        assert ex.proc.wait(30) in (0, -signal.SIGTERM)
        assert "Application shutdown complete" in ex.log(), ex.log()
        created = [e for e in _events(ex, "orders") if e["aggregate_id"] == answers[0].json()["id"]]
        assert [e["type"] for e in created] == ["order.created"]
        # Stopped: new connections are refused.
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{ex.url}/healthz", timeout=2)
    finally:
        examples.close()
        proxy.close()
