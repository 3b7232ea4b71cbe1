"""The OAuth2 grants: client authentication, the authorization request, the token request.

No HTTP framework here: the api layer hands in form fields and headers and renders what
comes back or what is raised (`OAuthError`, `InvalidAuthorizationTarget`, `RedirectError`).

    server = AuthorizationServer(clients, issuer)
    request = await server.validate_authorization_request(query_params)
    url = await server.approve(request, subject=user.id)        # 302 target
    client = await server.authenticate_client(authorization_header, form)
    body = await server.token_request(client, form)             # RFC 6749 §5.1
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, Protocol
from urllib.parse import unquote_plus, urlencode, urlsplit, urlunsplit

from authbus.core.errors import AuthbusError
from authbus.token.clients import Client, hash_secret, redirect_uri_matches
from authbus.token.errors import (
    AccessDenied,
    InvalidAuthorizationTarget,
    InvalidClient,
    InvalidGrant,
    InvalidRequest,
    InvalidScope,
    InvalidTarget,
    OAuthError,
    UnauthorizedClient,
    UnsupportedGrantType,
    UnsupportedResponseType,
)
from authbus.token.issuer import IssuedGrant, TokenIssuer, parse_refresh_token
from authbus.token.pkce import is_valid_verifier_syntax, verify_s256

ResponseType = Literal["code", "token"]
SUPPORTED_RESPONSE_TYPES: tuple[ResponseType, ...] = ("code", "token")
SUPPORTED_GRANT_TYPES = ("authorization_code", "client_credentials", "refresh_token")
# Authorization request parameters carried through the login form as hidden fields.
AUTHORIZATION_PARAMS = (
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "code_challenge",
    "code_challenge_method",
    "resource",
)


class ClientLookup(Protocol):
    """Where grants find clients (the SQL repository, or a dict in unit tests)."""

    async def get(self, client_id: str) -> Client | None:
        """The client, or None."""


def parse_scope(value: str | None) -> tuple[str, ...]:
    """RFC 6749 §3.3: space-delimited, order irrelevant, duplicates dropped."""
    return tuple(dict.fromkeys((value or "").split()))


def add_params(uri: str, params: Mapping[str, str | None], *, fragment: bool = False) -> str:
    """`uri` with `params` added to its query (or, for implicit, put in its fragment)."""
    clean = {k: v for k, v in params.items() if v is not None}
    parts = urlsplit(uri)
    if fragment:
        # RFC 6749 §4.2.2: implicit responses travel in the fragment, never to a server.
        return urlunsplit((*parts[:4], urlencode(clean)))
    query = f"{parts.query}&{urlencode(clean)}" if parts.query else urlencode(clean)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


class RedirectError(OAuthError):
    """An authorization error that goes back to the (verified) client redirect URI."""

    def __init__(self, error: OAuthError, redirect_to: str) -> None:
        super().__init__(error.message)
        self.error = error
        self.redirect_to = redirect_to


@dataclass(frozen=True)
class AuthorizationRequest:
    """A validated authorization request (RFC 6749 §4.1.1 / §4.2.1, RFC 7636 §4.3)."""

    client: Client
    response_type: ResponseType
    redirect_uri: str
    redirect_uri_given: bool
    scopes: tuple[str, ...]
    state: str | None = None
    code_challenge: str | None = None
    code_challenge_method: str | None = None
    resource: str | None = None
    # RFC 9207: the issuer identifier, sent back with every authorization response.
    issuer: str | None = None

    @property
    def uses_fragment(self) -> bool:
        return self.response_type == "token"

    def form_fields(self) -> dict[str, str]:
        """The request as hidden form fields (re-validated when the form comes back)."""
        fields = {
            "response_type": self.response_type,
            "client_id": self.client.client_id,
            "redirect_uri": self.redirect_uri if self.redirect_uri_given else None,
            "scope": " ".join(self.scopes) or None,
            "state": self.state,
            "code_challenge": self.code_challenge,
            "code_challenge_method": self.code_challenge_method,
            "resource": self.resource,
        }
        return {k: v for k, v in fields.items() if v is not None}

    def error_redirect(self, error: AuthbusError) -> str:
        """RFC 6749 §4.1.2.1 / §4.2.2.1 error response URL (state echoed)."""
        return _error_redirect(
            self.redirect_uri, error, self.state, self.uses_fragment, self.issuer
        )


def _error_redirect(
    uri: str, error: AuthbusError, state: str | None, fragment: bool, issuer: str | None
) -> str:
    params = {
        "error": error.code,
        "error_description": error.message,
        "state": state,
        "iss": issuer,  # RFC 9207 §2: error responses carry `iss` too
    }
    return add_params(uri, params, fragment=fragment)


@dataclass
class AuthorizationServer:
    """The grant logic of the token service (authorization + token endpoints)."""

    clients: ClientLookup
    issuer: TokenIssuer

    # -- authorization endpoint ---------------------------------------------------------------
    async def validate_authorization_request(
        self, params: Mapping[str, str]
    ) -> AuthorizationRequest:
        """Check an authorization request.

        Raises `InvalidAuthorizationTarget` (show a page) while the client or redirect URI is
        not established, then `RedirectError` (send the error to the client).
        """
        client_id = params.get("client_id") or ""
        client = await self.clients.get(client_id) if client_id else None
        if client is None:
            # RFC 6749 §4.1.2.1: never redirect to an unverified URI.
            raise InvalidAuthorizationTarget("unknown or missing client_id")
        requested_uri = params.get("redirect_uri")
        if requested_uri:
            if not any(redirect_uri_matches(requested_uri, r) for r in client.redirect_uris):
                raise InvalidAuthorizationTarget(
                    "the redirect_uri is not registered for this client"
                )
            redirect_uri = requested_uri
        elif len(client.redirect_uris) == 1:
            # RFC 6749 §3.1.2.3: with one registered URI the parameter may be omitted.
            redirect_uri = client.redirect_uris[0]
        else:
            raise InvalidAuthorizationTarget("redirect_uri is required for this client")

        state = params.get("state") or None
        issuer = self.issuer.config.issuer
        response_type = params.get("response_type") or ""
        uses_fragment = response_type == "token"

        def fail(error: OAuthError) -> RedirectError:
            url = _error_redirect(redirect_uri, error, state, uses_fragment, issuer)
            return RedirectError(error, url)

        if response_type not in SUPPORTED_RESPONSE_TYPES:
            raise fail(UnsupportedResponseType(f"response_type {response_type!r} is not supported"))
        if response_type == "code" and not client.allows_grant("authorization_code"):
            raise fail(UnauthorizedClient("the client may not use the authorization code grant"))
        if response_type == "token" and not client.allow_implicit:
            # RFC 9700 §2.1.2: the implicit grant is legacy; only clients opted in may use it.
            raise fail(UnauthorizedClient("the implicit grant is not enabled for this client"))

        scopes = parse_scope(params.get("scope"))
        if not set(scopes) <= set(client.scopes):
            raise fail(InvalidScope("a requested scope is not allowed for this client"))

        challenge = params.get("code_challenge") or None
        method = params.get("code_challenge_method") or None
        if response_type == "code":
            if challenge is None:
                if method is not None:
                    raise fail(InvalidRequest("code_challenge_method without code_challenge"))
                if not client.is_confidential:
                    # RFC 9700 §2.1.1 / RFC 7636: public clients must use PKCE.
                    raise fail(InvalidRequest("PKCE (code_challenge, S256) is required"))
            else:
                if method != "S256":
                    # RFC 7636 §4.3 defaults to "plain", which we refuse (RFC 9700 §2.1.1).
                    raise fail(InvalidRequest("code_challenge_method must be S256"))
                if not is_valid_verifier_syntax(challenge):
                    raise fail(InvalidRequest("malformed code_challenge"))

        resource = params.get("resource") or None
        if resource is not None and resource not in self.issuer.allowed_resources(client):
            raise fail(InvalidTarget("the requested resource is not known"))

        return AuthorizationRequest(
            client=client,
            response_type="token" if uses_fragment else "code",
            redirect_uri=redirect_uri,
            redirect_uri_given=bool(requested_uri),
            scopes=scopes,
            state=state,
            code_challenge=challenge if response_type == "code" else None,
            code_challenge_method=method if response_type == "code" else None,
            resource=resource,
            issuer=issuer,
        )

    async def approve(
        self,
        request: AuthorizationRequest,
        *,
        subject: str,
        auth_time: int | None = None,
        checked_at: float | None = None,
    ) -> str:
        """The redirect URL that answers an approved request (code, or implicit token).

        `checked_at`: when the user service confirmed the user's rights (see
        `TokenIssuer.rights_outdated`); kept with the code and the refresh family.
        """
        if request.response_type == "token":
            return await self._implicit_response(request, subject, checked_at)
        code = secrets.token_urlsafe(32)
        data = {
            "client_id": request.client.client_id,
            "sub": subject,
            "redirect_uri": request.redirect_uri,
            "redirect_uri_given": request.redirect_uri_given,
            "scope": " ".join(request.scopes),
            "code_challenge": request.code_challenge,
            "resource": request.resource,
            "auth_time": auth_time,
            "checked_at": checked_at,
        }
        await self.issuer.store.add_code(
            hash_secret(code), data, self.issuer.config.code_ttl_s, subject=subject
        )
        # RFC 6749 §4.1.2 (+ RFC 9207 `iss`, so clients can tell servers apart).
        params = {"code": code, "state": request.state, "iss": self.issuer.config.issuer}
        return add_params(request.redirect_uri, params)

    async def _implicit_response(
        self, request: AuthorizationRequest, subject: str, checked_at: float | None
    ) -> str:
        # RFC 6749 §4.2.2: access token in the fragment, no refresh token.
        # RFC 9700 §2.1.2: legacy; kept for the clients that opt in (allow_implicit).
        audience = self.issuer.audience_for(request.client, request.resource)
        grant = await self.issuer.issue(
            request.client,
            subject=subject,
            scopes=request.scopes,
            audience=audience,
            refresh=False,
        )
        if await self.issuer.rights_outdated(subject, checked_at):
            # A revoking user event was applied while this token was issued.
            await self.issuer.store.revoke_access_token(grant.jti)
            return request.error_redirect(AccessDenied("the user's rights changed; sign in again"))
        params = {
            "access_token": grant.access_token,
            "token_type": "Bearer",
            "expires_in": str(grant.expires_in),
            "scope": " ".join(grant.scopes),
            "state": request.state,
            "iss": self.issuer.config.issuer,  # RFC 9207
        }
        return add_params(request.redirect_uri, params, fragment=True)

    def deny(self, request: AuthorizationRequest, error: AuthbusError) -> str:
        """The redirect URL carrying `error` (access_denied, temporarily_unavailable, ...)."""
        return request.error_redirect(error)

    # -- client authentication ----------------------------------------------------------------
    async def authenticate_client(
        self, authorization: str | None, form: Mapping[str, str]
    ) -> Client:
        """RFC 6749 §2.3.1: client_secret_basic or client_secret_post; public clients by id.

        Raises `InvalidClient` (401) on failure, `InvalidRequest` if two methods are used.
        """
        basic = _parse_basic(authorization) if authorization else None
        if authorization and basic is None and authorization.lower().startswith("basic"):
            raise InvalidClient("malformed Basic credentials")
        form_id = form.get("client_id")
        form_secret = form.get("client_secret")
        if basic is not None:
            if form_secret is not None:
                # RFC 6749 §2.3: a client MUST NOT use more than one authentication method.
                raise InvalidRequest("use one client authentication method, not two")
            client_id, secret_or_none = basic
            secret: str | None = secret_or_none
            if form_id is not None and form_id != client_id:
                raise InvalidRequest("client_id differs from the authenticated client")
        elif form_id:
            client_id, secret = form_id, form_secret
        else:
            raise InvalidClient("client authentication is required")
        client = await self.clients.get(client_id)
        if client is None:
            # Spend the same digest-and-compare work as for a known client.
            Client("-", "-", "confidential", "0" * 64).verify_secret(secret or "")
            raise InvalidClient()
        if client.is_confidential:
            if secret is None or not client.verify_secret(secret):
                raise InvalidClient()
        elif secret:
            raise InvalidClient("public clients have no secret")
        return client

    # -- token endpoint -----------------------------------------------------------------------
    async def token_request(self, client: Client, form: Mapping[str, str]) -> IssuedGrant:
        """RFC 6749 §4.1.3 / §4.4.2 / §6 for an authenticated client."""
        grant_type = form.get("grant_type")
        if not grant_type:
            raise InvalidRequest("grant_type is required")
        if grant_type not in SUPPORTED_GRANT_TYPES:
            raise UnsupportedGrantType(f"grant_type {grant_type!r} is not supported")
        if not client.allows_grant(grant_type):
            raise UnauthorizedClient(f"the client may not use the {grant_type} grant")
        if grant_type == "authorization_code":
            return await self._authorization_code(client, form)
        if grant_type == "client_credentials":
            return await self._client_credentials(client, form)
        return await self._refresh_token(client, form)

    async def _authorization_code(self, client: Client, form: Mapping[str, str]) -> IssuedGrant:
        code = form.get("code")
        if not code:
            raise InvalidRequest("code is required")
        store = self.issuer.store
        code_hash = hash_secret(code)
        # The used marker outlives everything the code can yield (the refresh family too), so
        # a replay at any time while those tokens live still revokes them (RFC 6749 §4.1.2).
        data = await store.redeem_code(code_hash, used_ttl_s=self.issuer.grant_ttl(client))
        if data is None:
            replay = await store.code_replay(code_hash)
            if replay.status == "replayed" and replay.issued is not None:
                # RFC 6749 §4.1.2: a code used twice revokes what its first use issued.
                if replay.issued.get("family"):
                    await store.revoke_family(str(replay.issued["family"]))
                if replay.issued.get("jti"):
                    await store.revoke_access_token(str(replay.issued["jti"]))
            if replay.status != "unknown":
                # "in_flight": a duplicate racing the one redemption that won; it is refused,
                # and the winner's tokens stand (nothing had been issued before it).
                raise InvalidGrant("the authorization code was already used")
            raise InvalidGrant("the authorization code is invalid or expired")
        if data.get("client_id") != client.client_id:
            # RFC 6749 §4.1.3: the code must have been issued to the authenticated client.
            raise InvalidGrant("the authorization code was issued to another client")
        if data.get("redirect_uri_given") and form.get("redirect_uri") != data.get("redirect_uri"):
            # RFC 6749 §4.1.3: identical redirect_uri when the request included one.
            raise InvalidGrant("redirect_uri does not match the authorization request")
        verifier = form.get("code_verifier")
        challenge = data.get("code_challenge")
        if challenge:
            if not verifier or not verify_s256(verifier, str(challenge)):
                raise InvalidGrant("PKCE verification failed")
        elif verifier:
            # RFC 9700 §2.1.1: a verifier without a challenge is a PKCE downgrade attempt.
            raise InvalidGrant("code_verifier given but the request had no code_challenge")
        scopes = parse_scope(str(data.get("scope", "")))
        resource = self._token_request_resource(client, form, data.get("resource"))
        subject, checked_at = str(data["sub"]), data.get("checked_at")
        if await self.issuer.rights_outdated(subject, checked_at):
            # A revoking user event came after the user's rights were checked for this code.
            raise InvalidGrant("the user's rights changed since the authorization; sign in again")
        grant = await self.issuer.issue(
            client,
            subject=subject,
            scopes=scopes,
            audience=self.issuer.audience_for(client, resource),
            refresh=client.allows_grant("refresh_token"),
            auth_time=data.get("auth_time"),
            resource=resource,
            checked_at=checked_at,
        )
        # From now on a presentation of the code is a replay that revokes these tokens.
        await store.record_code_tokens(code_hash, {"jti": grant.jti, "family": grant.family})
        if await self.issuer.rights_outdated(subject, checked_at):
            # The event was applied while these tokens were issued, maybe after its
            # revocation read the user's grants: revoke them here (the event's time was set
            # before that read, so one of the two sees the other).
            if grant.family:
                await store.revoke_family(grant.family)
            await store.revoke_access_token(grant.jti)
            raise InvalidGrant("the user's rights changed since the authorization; sign in again")
        return grant

    def _token_request_resource(
        self, client: Client, form: Mapping[str, str], authorized: str | None
    ) -> str | None:
        """RFC 8707 §2.2: a token request may name the resource; it must be one the grant
        covers (the one authorized, or any known one when none was named then)."""
        requested = form.get("resource") or None
        if requested is None:
            return authorized
        if authorized is not None and requested != authorized:
            raise InvalidTarget("the resource differs from the one authorized")
        if requested not in self.issuer.allowed_resources(client):
            raise InvalidTarget("the requested resource is not known")
        return requested

    async def _client_credentials(self, client: Client, form: Mapping[str, str]) -> IssuedGrant:
        if not client.is_confidential:
            raise UnauthorizedClient("client_credentials needs a confidential client")
        requested = parse_scope(form.get("scope"))
        # RFC 6749 §3.3: no scope requested -> the client's registered scopes.
        scopes = requested or client.scopes
        if not set(scopes) <= set(client.scopes):
            raise InvalidScope("a requested scope is not allowed for this client")
        resource = form.get("resource") or None
        if resource is not None and resource not in self.issuer.allowed_resources(client):
            raise InvalidTarget("the requested resource is not known")
        # RFC 6749 §4.4.3: no refresh token for client credentials.
        return await self.issuer.issue(
            client,
            subject=client.client_id,
            scopes=scopes,
            audience=self.issuer.audience_for(client, resource),
            refresh=False,
            for_user=False,
        )

    async def _refresh_token(self, client: Client, form: Mapping[str, str]) -> IssuedGrant:
        token = form.get("refresh_token")
        if not token:
            raise InvalidRequest("refresh_token is required")
        ref = parse_refresh_token(token)
        if ref is None:
            raise InvalidGrant("the refresh token is invalid")
        scope = form.get("scope")
        resource = form.get("resource") or None
        if resource is not None and resource not in self.issuer.allowed_resources(client):
            raise InvalidTarget("the requested resource is not known")
        return await self.issuer.rotate_refresh(
            client, ref, parse_scope(scope) if scope is not None else None, resource=resource
        )


def _parse_basic(header: str) -> tuple[str, str] | None:
    """RFC 6749 §2.3.1 / RFC 7617: Basic base64(urlencode(id) ":" urlencode(secret))."""
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value.strip():
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except ValueError:  # binascii.Error, non-ASCII input, UnicodeDecodeError
        return None
    client_id, sep, secret = decoded.partition(":")
    if not sep or not client_id:
        return None
    return unquote_plus(client_id), unquote_plus(secret)
