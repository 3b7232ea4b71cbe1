"""TokenAuth / RefreshTokenAuth (requests) against a fake token endpoint and resource."""

from __future__ import annotations

import threading

import httpx
import pytest
import requests

from authbus.common import RefreshTokenAuth, TokenAuth, TokenError
from authbus.common._transport import HTTPXAdapter
from tests.support.tokens import FakeClock
from tests.unit.common.fakes import (
    ISSUER,
    RESOURCE_URL,
    TOKEN_URL,
    FakeResource,
    FakeTokenEndpoint,
    routing,
)


def _session(endpoint: FakeTokenEndpoint, resource: FakeResource) -> requests.Session:
    session = requests.Session()
    adapter = HTTPXAdapter(httpx.MockTransport(routing(endpoint.handler, resource.respond)))
    session.mount("http://", adapter)
    return session


def _auth(endpoint: FakeTokenEndpoint, **kw: object) -> TokenAuth:
    kw.setdefault("token_url", TOKEN_URL)
    return TokenAuth(
        endpoint.client_id,
        endpoint.client_secret,
        transport=endpoint.transport(),
        **kw,  # type: ignore[arg-type]
    )


def test_request_carries_client_credentials_token() -> None:
    endpoint, resource = FakeTokenEndpoint(), FakeResource()
    auth = _auth(endpoint, scopes=["events:publish", "events:read"], audience="authbus")
    response = _session(endpoint, resource).get(RESOURCE_URL, auth=auth)
    assert response.json()["token"] == "tok-1"
    assert endpoint.forms == [
        {
            "grant_type": "client_credentials",
            "scope": "events:publish events:read",
            "resource": "authbus",
        }
    ]


def test_audience_is_requested_as_rfc8707_resource() -> None:
    # The token service implements RFC 8707 `resource`; an `audience` field it would ignore.
    endpoint, resource = FakeTokenEndpoint(), FakeResource()
    for kw in (
        {"audience": "billing"},
        {"resource": "billing"},
        {"audience": "billing", "resource": "billing"},
    ):
        endpoint.forms.clear()
        auth = _auth(endpoint, **kw)
        _session(endpoint, resource).get(RESOURCE_URL, auth=auth)
        assert endpoint.forms == [{"grant_type": "client_credentials", "resource": "billing"}]


def test_audience_and_a_different_resource_are_refused() -> None:
    with pytest.raises(ValueError, match="audience and resource"):
        _auth(FakeTokenEndpoint(), audience="billing", resource="orders")


def test_token_is_cached_between_requests() -> None:
    endpoint, resource = FakeTokenEndpoint(), FakeResource()
    auth, session = _auth(endpoint), _session(endpoint, resource)
    for _ in range(5):
        session.get(RESOURCE_URL, auth=auth)
    assert endpoint.token_requests == 1


def test_fifty_threads_cause_one_token_request() -> None:
    endpoint, resource = FakeTokenEndpoint(delay=0.05), FakeResource()
    auth, session = _auth(endpoint), _session(endpoint, resource)
    start = threading.Barrier(50)
    tokens: list[str] = []

    def work() -> None:
        start.wait()
        tokens.append(session.get(RESOURCE_URL, auth=auth).json()["token"])

    threads = [threading.Thread(target=work) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert endpoint.token_requests == 1
    assert tokens == ["tok-1"] * 50


def test_short_token_is_renewed_at_half_life() -> None:
    clock = FakeClock()
    endpoint = FakeTokenEndpoint(expires_in=40)  # shorter than the 30 s leeway allows
    auth = _auth(endpoint, clock=clock, leeway=30)
    assert auth.get_token() == "tok-1"
    clock.advance(19)
    assert auth.get_token() == "tok-1"
    clock.advance(1)
    assert auth.get_token() == "tok-2"


def test_long_token_is_renewed_leeway_before_expiry() -> None:
    clock = FakeClock()
    endpoint = FakeTokenEndpoint(expires_in=3600)
    auth = _auth(endpoint, clock=clock, leeway=30)
    assert auth.get_token() == "tok-1"
    clock.advance(3569)
    assert auth.get_token() == "tok-1"
    clock.advance(1)
    assert auth.get_token() == "tok-2"


def test_401_from_resource_gets_a_new_token_and_retries_once() -> None:
    endpoint, resource = FakeTokenEndpoint(), FakeResource()
    auth, session = _auth(endpoint), _session(endpoint, resource)
    session.get(RESOURCE_URL, auth=auth)
    resource.rejected.add("tok-1")
    response = session.post(RESOURCE_URL, auth=auth, data=b"payload")
    assert response.status_code == 200
    assert response.json() == {"token": "tok-2", "body": "payload"}
    assert [r.status_code for r in response.history] == [401]
    assert endpoint.token_requests == 2


def test_401_is_retried_only_once() -> None:
    endpoint, resource = FakeTokenEndpoint(), FakeResource()
    auth, session = _auth(endpoint), _session(endpoint, resource)
    resource.rejected.update({"tok-1", "tok-2", "tok-3"})
    response = session.get(RESOURCE_URL, auth=auth)
    assert response.status_code == 401
    assert len(resource.seen) == 2
    assert endpoint.token_requests == 2


def test_streamed_body_is_not_replayed_on_401() -> None:
    endpoint, resource = FakeTokenEndpoint(), FakeResource()
    auth, session = _auth(endpoint), _session(endpoint, resource)
    resource.rejected.add("tok-1")
    response = session.post(RESOURCE_URL, auth=auth, data=iter([b"a", b"b"]))
    assert response.status_code == 401
    assert len(resource.seen) == 1


def test_invalid_client_raises_typed_error() -> None:
    endpoint = FakeTokenEndpoint()
    auth = TokenAuth("svc", "wrong", token_url=TOKEN_URL, transport=endpoint.transport())
    with pytest.raises(TokenError) as caught:
        auth.get_token()
    assert caught.value.error == "invalid_client"
    assert caught.value.description == "bad credentials"
    assert caught.value.status_code == 401


def test_400_error_code_is_carried() -> None:
    endpoint = FakeTokenEndpoint()
    endpoint.error = (400, {"error": "invalid_scope", "error_description": "no such scope"})
    with pytest.raises(TokenError) as caught:
        _auth(endpoint).get_token()
    assert (caught.value.error, caught.value.status_code) == ("invalid_scope", 400)


def test_non_json_error_is_still_a_token_error() -> None:
    transport = httpx.MockTransport(lambda r: httpx.Response(502, text="<html>bad gateway"))
    auth = TokenAuth("svc", "x", token_url=TOKEN_URL, transport=transport)
    with pytest.raises(TokenError) as caught:
        auth.get_token()
    assert caught.value.error == "temporarily_unavailable"


def test_success_without_access_token_is_a_token_error() -> None:
    transport = httpx.MockTransport(lambda r: httpx.Response(200, json={"token_type": "Bearer"}))
    auth = TokenAuth("svc", "x", token_url=TOKEN_URL, transport=transport)
    with pytest.raises(TokenError, match="no access_token"):
        auth.get_token()


def test_unreachable_endpoint_is_a_token_error() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    auth = TokenAuth("svc", "x", token_url=TOKEN_URL, transport=httpx.MockTransport(refuse))
    with pytest.raises(TokenError) as caught:
        auth.get_token()
    assert caught.value.error == "temporarily_unavailable"


def test_token_endpoint_is_discovered_from_metadata() -> None:
    endpoint = FakeTokenEndpoint()
    auth = TokenAuth(
        endpoint.client_id, endpoint.client_secret, issuer=ISSUER, transport=endpoint.transport()
    )
    assert auth.get_token() == "tok-1"
    assert auth.get_token() == "tok-1"
    assert (endpoint.metadata_requests, endpoint.token_requests) == (1, 1)


def test_metadata_for_another_issuer_is_refused() -> None:
    transport = httpx.MockTransport(
        lambda r: httpx.Response(
            200, json={"issuer": "http://evil.test", "token_endpoint": "http://evil.test/t"}
        )
    )
    auth = TokenAuth("svc", "x", issuer=ISSUER, transport=transport)
    with pytest.raises(TokenError) as caught:
        auth.get_token()
    assert caught.value.error == "invalid_metadata"


def test_requires_token_url_or_issuer() -> None:
    with pytest.raises(ValueError, match="issuer"):
        TokenAuth("svc", "x")


def test_refresh_token_auth_rotates_and_reports_tokens() -> None:
    endpoint = FakeTokenEndpoint()
    seen: list[str | None] = []
    auth = RefreshTokenAuth(
        "public-web",
        "rt-1",
        token_url=TOKEN_URL,
        transport=endpoint.transport(),
        on_tokens=lambda t: seen.append(t.refresh_token),
    )
    assert auth.get_token() == "tok-1"
    assert auth.refresh_token == "rt-2"
    assert seen == ["rt-2"]
    assert endpoint.forms[0] == {
        "grant_type": "refresh_token",
        "refresh_token": "rt-1",
        "client_id": "public-web",
    }


def test_refresh_token_auth_uses_the_given_access_token_first() -> None:
    clock = FakeClock()
    endpoint = FakeTokenEndpoint()
    auth = RefreshTokenAuth(
        "public-web",
        "rt-1",
        access_token="from-login",
        expires_at=clock() + 300,
        token_url=TOKEN_URL,
        transport=endpoint.transport(),
        clock=clock,
    )
    assert auth.get_token() == "from-login"
    clock.advance(271)
    assert auth.get_token() == "tok-1"


def test_revoked_refresh_token_raises_invalid_grant() -> None:
    endpoint = FakeTokenEndpoint()
    auth = RefreshTokenAuth(
        "public-web", "rt-old", token_url=TOKEN_URL, transport=endpoint.transport()
    )
    with pytest.raises(TokenError) as caught:
        auth.get_token()
    assert caught.value.error == "invalid_grant"


def test_confidential_refresh_uses_basic_auth() -> None:
    endpoint = FakeTokenEndpoint()
    auth = RefreshTokenAuth(
        endpoint.client_id,
        "rt-1",
        client_secret=endpoint.client_secret,
        token_url=TOKEN_URL,
        transport=endpoint.transport(),
    )
    assert auth.get_token() == "tok-1"
    assert "client_id" not in endpoint.forms[0]
