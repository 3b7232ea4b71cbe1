"""`authbus demo`: the whole system end to end, against a running stack, one step at a time.

Each step prints `[n/7] what … ok`; the first failure prints why and the demo exits 1.
It uses only the public HTTP APIs and `authbus.common`, as another team's service would.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import redis
import requests

from authbus.common import Event, EventSubscriber, TokenAuth
from authbus.common._keys import ChannelKeys
from authbus.core import credentials
from authbus.core.settings import Settings
from authbus.core.supervisor import RUNTIME_FILE

REDIRECT_URI = "http://127.0.0.1:8765/callback"
DEMO_SUBSCRIBER = "demo"
TIMEOUT = 10


class DemoFailed(Exception):
    pass


def expect(response: requests.Response, *statuses: int) -> Any:
    if response.status_code not in statuses:
        raise DemoFailed(
            f"{response.request.method} {response.url} answered {response.status_code}: "
            f"{response.text[:300]}"
        )
    if response.headers.get("content-type", "").startswith("application/json"):
        return response.json()
    return response.text


class FormParser(HTMLParser):
    """The first <form> of a page: its action, method and fields (what a browser would send)."""

    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.method = "get"
        self.fields: dict[str, str] = {}
        self._in_form = False
        self._done = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form" and not self._done:
            self._in_form = True
            self.action = a.get("action", "")
            self.method = a.get("method", "get").lower()
        elif tag == "input" and self._in_form and a.get("name"):
            if a.get("type") in ("checkbox", "radio") and "checked" not in a:
                return
            self.fields[a["name"]] = a.get("value", "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "form" and self._in_form:
            self._in_form = False
            self._done = True


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


@dataclass
class Stack:
    user_url: str
    token_url: str
    event_url: str
    redis_url: str | None
    redis_prefix: str
    admin_client_secret: str
    # Where the running `authbus up` says where it is, and whether that file was there (if
    # not, the URLs come from the settings).
    runtime_file: Path = Path(RUNTIME_FILE)
    runtime_found: bool = False

    def delivery_redis(self) -> str:
        """The Redis the demo's subscriber uses; DemoFailed saying why there is none."""
        if self.redis_url:
            return self.redis_url
        if not self.runtime_found:
            raise DemoFailed(
                f"{self.runtime_file} is missing, so the demo does not know which Redis the "
                "stack uses: `make run` / `authbus up` writes it once the stack is ready; run "
                "the demo with that stack's data directory (--data-dir), or set "
                "AUTHBUS_REDIS_URL to the stack's Redis"
            )
        raise DemoFailed(
            f"the stack runs without Redis ({self.runtime_file} names none); event delivery "
            "needs it"
        )


@dataclass
class DemoState:
    alice_password: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    alice_id: str = ""
    web_client_id: str = ""
    orders_client_id: str = ""
    orders_client_secret: str = ""
    alice_token: str = ""
    order_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    order_event_id: str = ""


class DemoSubscriber(EventSubscriber):
    """Records the events of `orders`; what a billing service would subclass."""

    channel = "orders"
    name = DEMO_SUBSCRIBER

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seen: list[Event] = []
        self.lock = threading.Lock()

    def process_event(self, event: Event) -> None:
        with self.lock:
            self.seen.append(event)


class Demo:
    def __init__(self, stack: Stack, out: Callable[[str], None]) -> None:
        self.stack = stack
        self.out = out
        self.state = DemoState()
        self.admin = requests.Session()
        self.admin.auth = TokenAuth(
            credentials.ADMIN_CLIENT_ID,
            stack.admin_client_secret,
            issuer=stack.token_url,
            scopes=["users:admin", "clients:admin"],
        )

    # -- steps -----------------------------------------------------------------------------

    def create_alice(self) -> str:
        s = self.stack
        body = {
            "username": "alice",
            "password": self.state.alice_password,
            "permissions": ["orders:read"],
        }
        r = self.admin.post(f"{s.user_url}/v1/users", json=body, timeout=TIMEOUT)
        if r.status_code == 409:
            # A second demo run: alice exists; give her a fresh password and the permission.
            users = expect(
                self.admin.get(f"{s.user_url}/v1/users", params={"username": "alice"}), 200
            )
            alice = next(u for u in users["items"] if u["username"] == "alice")
            expect(
                self.admin.put(
                    f"{s.user_url}/v1/users/{alice['id']}/password",
                    json={"password": self.state.alice_password},
                    timeout=TIMEOUT,
                ),
                200,
                204,
            )
            expect(
                self.admin.put(
                    f"{s.user_url}/v1/users/{alice['id']}/permissions",
                    json={"permissions": ["orders:read"]},
                    timeout=TIMEOUT,
                ),
                200,
            )
            self.state.alice_id = alice["id"]
            return f"alice existed ({alice['id']}); password reset, holds orders:read"
        user = expect(r, 201)
        self.state.alice_id = user["id"]
        return f"created alice ({user['id']}) holding {', '.join(user['effective_permissions'])}"

    def register_clients(self) -> str:
        s = self.stack
        clients = f"{s.token_url}/v1/clients"
        web_spec = {
            "client_id": "demo-web",
            "name": "demo web app",
            "type": "public",
            "redirect_uris": [REDIRECT_URI],
            "grant_types": ["authorization_code", "refresh_token"],
            "scopes": ["orders:read", "orders:write"],
            "first_party": True,
        }
        r = self.admin.post(clients, json=web_spec, timeout=TIMEOUT)
        if r.status_code == 409:  # a second demo run: bring it back to this spec
            spec = {k: v for k, v in web_spec.items() if k != "client_id"}
            r = self.admin.put(f"{clients}/demo-web", json=spec, timeout=TIMEOUT)
            expect(r, 200)
        else:
            expect(r, 201)
        self.state.web_client_id = "demo-web"

        orders_spec = {
            "client_id": "demo-orders",
            "name": "demo orders service",
            "type": "confidential",
            "grant_types": ["client_credentials"],
            "scopes": ["events:publish"],
        }
        r = self.admin.post(clients, json=orders_spec, timeout=TIMEOUT)
        if r.status_code == 409:  # the secret was shown once, last run: issue a new one
            r = self.admin.post(f"{clients}/demo-orders/secret", timeout=TIMEOUT)
            orders = expect(r, 200, 201)
        else:
            orders = expect(r, 201)
        self.state.orders_client_id = "demo-orders"
        self.state.orders_client_secret = orders["client_secret"]
        return f"public client demo-web with redirect URI {REDIRECT_URI}"

    def browser_login(self, scope: str) -> dict[str, list[str]]:
        """GET /authorize -> login form -> POST it -> the redirect's query parameters."""
        browser = requests.Session()
        verifier, challenge = pkce_pair()
        state = secrets.token_urlsafe(16)
        params = {
            "response_type": "code",
            "client_id": self.state.web_client_id,
            "redirect_uri": REDIRECT_URI,
            "scope": scope,
            "state": state,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
        authorize = f"{self.stack.token_url}/authorize"
        page = browser.get(authorize, params=params, timeout=TIMEOUT)
        html = expect(page, 200)
        form = FormParser()
        form.feed(html)
        if form.action is None or "password" not in form.fields:
            raise DemoFailed("the authorization page has no login form")
        fields = dict(form.fields)
        fields.update(username="alice", password=self.state.alice_password)
        target = urljoin(page.url, form.action or authorize)
        answer = browser.post(target, data=fields, allow_redirects=False, timeout=TIMEOUT)
        if answer.status_code not in (302, 303):
            raise DemoFailed(f"login answered {answer.status_code}: {answer.text[:300]}")
        location = answer.headers["location"]
        if not location.startswith(REDIRECT_URI):
            raise DemoFailed(f"redirected to {location}, not to the client's redirect URI")
        query = parse_qs(urlsplit(location).query)
        if query.get("state") != [state]:
            raise DemoFailed("the redirect did not carry the same state")
        query["code_verifier"] = [verifier]
        return query

    def login(self) -> str:
        query = self.browser_login("orders:read")
        if "code" not in query:
            raise DemoFailed(f"no code in the redirect: {query}")
        token = expect(
            requests.post(
                f"{self.stack.token_url}/token",
                data={
                    "grant_type": "authorization_code",
                    "code": query["code"][0],
                    "redirect_uri": REDIRECT_URI,
                    "client_id": self.state.web_client_id,
                    "code_verifier": query["code_verifier"][0],
                },
                timeout=TIMEOUT,
            ),
            200,
        )
        self.state.alice_token = token["access_token"]
        return f"code + PKCE exchanged: {token['token_type']} token, scope {token.get('scope')}"

    def refused_scope(self) -> str:
        query = self.browser_login("orders:read orders:write")
        if query.get("error") != ["access_denied"]:
            raise DemoFailed(f"expected error=access_denied, got {query}")
        return "asking for orders:write (alice lacks it) ends with error=access_denied"

    def me(self) -> str:
        me = expect(
            requests.get(
                f"{self.stack.user_url}/v1/users/me",
                headers={"Authorization": f"Bearer {self.state.alice_token}"},
                timeout=TIMEOUT,
            ),
            200,
        )
        if me["username"] != "alice":
            raise DemoFailed(f"/v1/users/me answered {me['username']}")
        return f"/v1/users/me is alice, effective permissions {me['effective_permissions']}"

    def publish(self, subscriber: DemoSubscriber) -> str:
        session = requests.Session()
        session.auth = TokenAuth(
            self.state.orders_client_id,
            self.state.orders_client_secret,
            issuer=self.stack.token_url,
            scopes=["events:publish"],
        )
        event = expect(
            session.post(
                f"{self.stack.event_url}/v1/channels/orders/events",
                json={
                    "type": "order.created",
                    "data": {"order_id": self.state.order_id, "user_id": self.state.alice_id},
                    "aggregate_type": "order",
                    "aggregate_id": self.state.order_id,
                },
                timeout=TIMEOUT,
            ),
            201,
        )
        self.state.order_event_id = event["id"]
        return f"order.created {event['id']} at position {event['position']} (TokenAuth)"

    def delivered(self, subscriber: DemoSubscriber) -> str:
        event_id = self.state.order_event_id
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            with subscriber.lock:
                hits = [e for e in subscriber.seen if e.id == event_id]
            if hits:
                break
            time.sleep(0.05)
        else:
            raise DemoFailed(f"the subscriber did not receive {event_id} within {TIMEOUT} s")
        time.sleep(0.5)  # room for a duplicate to show up, if there were one
        with subscriber.lock:
            count = sum(1 for e in subscriber.seen if e.id == event_id)
        if count != 1:
            raise DemoFailed(f"process_event() saw the event {count} times")
        assert self.stack.redis_url is not None
        keys = ChannelKeys(self.stack.redis_prefix, "orders")
        client = redis.Redis.from_url(self.stack.redis_url)
        try:
            deadline = time.monotonic() + 2
            while True:
                processing = client.lrange(keys.processing(DEMO_SUBSCRIBER), 0, -1)
                left = [p for p in processing if event_id.encode() in p]
                if not left or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
        finally:
            client.close()
        if left:
            raise DemoFailed("the event is still in the processing list after success")
        return "process_event() ran exactly once; the processing list no longer holds it"

    def revoke(self) -> str:
        s = self.stack
        basic = (credentials.ADMIN_CLIENT_ID, s.admin_client_secret)
        token = self.state.alice_token

        def introspect() -> bool:
            body = expect(
                requests.post(
                    f"{s.token_url}/introspect", data={"token": token}, auth=basic, timeout=TIMEOUT
                ),
                200,
            )
            return bool(body["active"])

        if not introspect():
            raise DemoFailed("introspection says alice's fresh token is inactive")
        # RFC 7009 §2.1: a token is revoked by the client it was issued to (a public one
        # identifies itself by client_id).
        expect(
            requests.post(
                f"{s.token_url}/revoke",
                data={"token": token, "client_id": self.state.web_client_id},
                timeout=TIMEOUT,
            ),
            200,
        )
        if introspect():
            raise DemoFailed("introspection says the revoked token is still active")
        refused = requests.get(
            f"{s.user_url}/v1/users/me",
            headers={"Authorization": f"Bearer {token}"},
            timeout=TIMEOUT,
        )
        if refused.status_code != 401:
            raise DemoFailed(f"the revoked token was answered {refused.status_code}, not 401")
        return "active -> revoked -> inactive; the user service now answers 401"


def load_stack(settings: Settings) -> Stack:
    runtime_path = settings.data_dir / RUNTIME_FILE
    runtime: dict[str, Any] = {}
    runtime_found = runtime_path.exists()
    if runtime_found:
        runtime = json.loads(runtime_path.read_text())
    creds = credentials.load(settings.credentials_path())
    if creds is None:
        raise DemoFailed(
            f"no credentials at {settings.credentials_path()}: is the stack running "
            "(`make run` / `authbus up`) with this data directory?"
        )
    return Stack(
        user_url=runtime.get("user_url", settings.user_url),
        token_url=runtime.get("token_url", settings.token_url),
        event_url=runtime.get("event_url", settings.event_url),
        redis_url=runtime.get("redis_url", settings.redis_url),
        redis_prefix=runtime.get("redis_prefix", settings.redis_prefix),
        admin_client_secret=creds["clients"][credentials.ADMIN_CLIENT_ID],
        runtime_file=runtime_path,
        runtime_found=runtime_found,
    )


def run_demo(settings: Settings, out: Callable[[str], None] = print) -> int:
    """Run every step; 0 when all pass, 1 at the first failure."""
    try:
        stack = load_stack(settings)
        for name, url in (
            ("user", stack.user_url),
            ("token", stack.token_url),
            ("event", stack.event_url),
        ):
            try:
                requests.get(f"{url}/readyz", timeout=3).raise_for_status()
            except requests.RequestException as exc:
                raise DemoFailed(f"the {name} service at {url} is not ready: {exc}") from exc
        redis_url = stack.delivery_redis()
    except DemoFailed as exc:
        out(f"demo: {exc}")
        return 1

    demo = Demo(stack, out)
    subscriber = DemoSubscriber(redis_url=redis_url, prefix=stack.redis_prefix)
    steps: list[tuple[str, Callable[[], str]]] = [
        ("create user alice with orders:read (admin token)", demo.create_alice),
        ("register a public client", demo.register_clients),
        ("log alice in: authorization code + PKCE through the login form", demo.login),
        ("call the user service as alice", demo.me),
        ("publish order.created with TokenAuth", lambda: demo.publish(subscriber)),
        ("EventSubscriber receives it exactly once", lambda: demo.delivered(subscriber)),
        ("introspect, revoke, introspect, refused", demo.revoke),
    ]
    started = False
    try:
        for i, (title, step) in enumerate(steps, 1):
            if i == 5:
                subscriber.start()
                started = True
            try:
                detail = step()
            except DemoFailed as exc:
                out(f"[{i}/{len(steps)}] {title} ... FAILED: {exc}")
                return 1
            except (requests.RequestException, KeyError, StopIteration) as exc:
                out(f"[{i}/{len(steps)}] {title} ... FAILED: {type(exc).__name__}: {exc}")
                return 1
            out(f"[{i}/{len(steps)}] {title} ... ok: {detail}")
            if i == 3:
                try:
                    out(f"      also: {demo.refused_scope()}")
                except DemoFailed as exc:
                    out(f"      also: refused scope ... FAILED: {exc}")
                    return 1
    finally:
        if started:
            subscriber.stop()
    out("demo: all steps passed")
    return 0
