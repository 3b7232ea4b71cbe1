"""The whole chain as real processes (`authbus up`): a user signs in through the login form
(authorization code + PKCE) and holds an access and a refresh token; an administrator changes
the user in the user service; the user service's outbox publishes the change to the event
service, which delivers it to the token service's subscriber, which revokes the user's
grants. Within a bounded wait the access token introspects inactive and the refresh token
is refused with invalid_grant."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import pytest
import requests

from authbus.core import credentials
from authbus.demo import FormParser, pkce_pair
from tests.e2e.test_stack import RunningStack, start_stack, stop_stack

pytestmark = pytest.mark.e2e

CLIENT_ID = "chain-web"
REDIRECT_URI = "http://127.0.0.1:8765/callback"  # never called: the test reads the redirect
# How long the chain may take on a loaded machine (it normally takes well under a second).
REVOCATION_WAIT_S = 60
TIMEOUT = 30


@dataclass
class Chain:
    stack: RunningStack
    user_url: str
    token_url: str
    event_url: str
    admin_secret: str

    def admin_token(self) -> str:
        resp = requests.post(
            f"{self.token_url}/token",
            data={
                "grant_type": "client_credentials",
                "scope": "users:admin clients:admin events:read",
            },
            auth=(credentials.ADMIN_CLIENT_ID, self.admin_secret),
            timeout=TIMEOUT,
        )
        assert resp.status_code == 200, resp.text
        token: str = resp.json()["access_token"]
        return token

    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_token()}"}

    def introspect(self, token: str) -> dict[str, Any]:
        resp = requests.post(
            f"{self.token_url}/introspect",
            data={"token": token},
            auth=(credentials.ADMIN_CLIENT_ID, self.admin_secret),
            timeout=TIMEOUT,
        )
        assert resp.status_code == 200, resp.text
        body: dict[str, Any] = resp.json()
        return body

    def refresh(self, refresh_token: str) -> requests.Response:
        return requests.post(
            f"{self.token_url}/token",
            data={
                "grant_type": "refresh_token",
                "refresh_token": refresh_token,
                "client_id": CLIENT_ID,
            },
            timeout=TIMEOUT,
        )

    def create_user(self, username: str, password: str, permissions: list[str]) -> str:
        resp = requests.post(
            f"{self.user_url}/v1/users",
            json={"username": username, "password": password, "permissions": permissions},
            headers=self.admin(),
            timeout=TIMEOUT,
        )
        assert resp.status_code == 201, resp.text
        user_id: str = resp.json()["id"]
        return user_id

    def login(self, username: str, password: str, scope: str) -> dict[str, Any]:
        """What a browser and the client do: the login form, then code + PKCE at /token."""
        verifier, challenge = pkce_pair()
        state = secrets.token_urlsafe(16)
        with requests.Session() as browser:
            page = browser.get(
                f"{self.token_url}/authorize",
                params={
                    "response_type": "code",
                    "client_id": CLIENT_ID,
                    "redirect_uri": REDIRECT_URI,
                    "scope": scope,
                    "state": state,
                    "code_challenge": challenge,
                    "code_challenge_method": "S256",
                },
                timeout=TIMEOUT,
            )
            assert page.status_code == 200, page.text
            form = FormParser()
            form.feed(page.text)
            assert form.action is not None and "password" in form.fields, page.text
            fields = {**form.fields, "username": username, "password": password}
            answer = browser.post(
                urljoin(page.url, form.action),
                data=fields,
                allow_redirects=False,
                timeout=TIMEOUT,
            )
        assert answer.status_code in (302, 303), answer.text
        location = answer.headers["location"]
        assert location.startswith(REDIRECT_URI), location
        query = parse_qs(urlsplit(location).query)
        assert query.get("state") == [state], location
        assert "code" in query, location
        token = requests.post(
            f"{self.token_url}/token",
            data={
                "grant_type": "authorization_code",
                "code": query["code"][0],
                "redirect_uri": REDIRECT_URI,
                "client_id": CLIENT_ID,
                "code_verifier": verifier,
            },
            timeout=TIMEOUT,
        )
        assert token.status_code == 200, token.text
        body: dict[str, Any] = token.json()
        assert body["access_token"] and body["refresh_token"]
        return body

    def events_of(self, user_id: str) -> list[dict[str, Any]]:
        """The `users` channel's events about `user_id`, from the event service's log."""
        found: list[dict[str, Any]] = []
        after = 0
        headers = self.admin()
        while True:
            resp = requests.get(
                f"{self.event_url}/v1/channels/users/events",
                params={"after": after, "limit": 1000},
                headers=headers,
                timeout=TIMEOUT,
            )
            assert resp.status_code == 200, resp.text
            page = resp.json()
            found += [e for e in page["events"] if e.get("aggregate_id") == user_id]
            if not page["events"]:
                return found
            after = page["next_after"]

    def wait_until(self, condition: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + REVOCATION_WAIT_S
        while not condition():
            if time.monotonic() > deadline:
                pytest.fail(
                    f"{what}: not within {REVOCATION_WAIT_S} s\n{self.stack.output()[-6000:]}"
                )
            time.sleep(0.2)


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    """`authbus up` on embedded defaults (SQLite, embedded Redis) and a public web client."""
    stack = start_stack(tmp_path_factory.mktemp("chain"))
    try:
        creds = credentials.load(stack.data_dir / "credentials.json")
        assert creds is not None
        user_port, token_port, event_port = stack.ports
        chain = Chain(
            stack,
            f"http://127.0.0.1:{user_port}",
            f"http://127.0.0.1:{token_port}",
            f"http://127.0.0.1:{event_port}",
            creds["clients"][credentials.ADMIN_CLIENT_ID],
        )
        made = requests.post(
            f"{chain.token_url}/v1/clients",
            json={
                "client_id": CLIENT_ID,
                "name": "chain web app",
                "type": "public",
                "redirect_uris": [REDIRECT_URI],
                "grant_types": ["authorization_code", "refresh_token"],
                "scopes": ["orders:read", "orders:write"],
                "first_party": True,
            },
            headers=chain.admin(),
            timeout=TIMEOUT,
        )
        assert made.status_code == 201, made.text
        yield chain
    finally:
        assert stop_stack(stack) == 0, stack.output()[-4000:]


def assert_revoked(chain: Chain, tokens: dict[str, Any], what: str) -> None:
    chain.wait_until(
        lambda: chain.introspect(tokens["access_token"])["active"] is False,
        f"the access token stays active after {what}",
    )
    refused = chain.refresh(tokens["refresh_token"])
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"] == "invalid_grant"


def test_disabling_a_user_revokes_their_access_and_refresh_tokens(chain: Chain) -> None:
    password = secrets.token_urlsafe(16)
    user_id = chain.create_user("chain-dora", password, ["orders:read"])
    tokens = chain.login("chain-dora", password, "orders:read")
    assert chain.introspect(tokens["access_token"])["active"] is True

    resp = requests.patch(
        f"{chain.user_url}/v1/users/{user_id}",
        json={"disabled": True},
        headers=chain.admin(),
        timeout=TIMEOUT,
    )
    assert resp.status_code == 200 and resp.json()["disabled"] is True, resp.text

    assert_revoked(chain, tokens, "the user was disabled")
    # It went through the event service: the user service's event is in its log.
    types = [e["type"] for e in chain.events_of(user_id)]
    assert "user.disabled" in types, types


def test_removing_a_permission_the_token_carries_revokes_the_users_tokens(
    chain: Chain,
) -> None:
    password = secrets.token_urlsafe(16)
    user_id = chain.create_user("chain-ezra", password, ["orders:read", "orders:write"])
    tokens = chain.login("chain-ezra", password, "orders:read orders:write")
    assert chain.introspect(tokens["access_token"])["scope"] == "orders:read orders:write"

    resp = requests.put(
        f"{chain.user_url}/v1/users/{user_id}/permissions",
        json={"permissions": ["orders:read"]},
        headers=chain.admin(),
        timeout=TIMEOUT,
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["effective_permissions"] == ["orders:read"]

    assert_revoked(chain, tokens, "orders:write was removed")
    types = [e["type"] for e in chain.events_of(user_id)]
    assert "user.permissions_changed" in types, types

    # The user is not locked out: a new sign-in for what they still hold works.
    again = chain.login("chain-ezra", password, "orders:read")
    assert chain.introspect(again["access_token"])["active"] is True
