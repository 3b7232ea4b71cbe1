"""The OAuth endpoints: /token, /introspect, /revoke, RFC 8414 metadata and the JWKS."""

from __future__ import annotations

from collections.abc import Mapping

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from authbus.token.api._http import (
    BUILTIN_SCOPES,
    NO_STORE,
    metrics_of,
    oauth_json,
    read_form,
    service_of,
    settings_of,
)
from authbus.token.clients import Client
from authbus.token.errors import (
    InvalidRequest,
    OAuthError,
)
from authbus.token.grants import (
    SUPPORTED_GRANT_TYPES,
)

router = APIRouter()


async def _authenticated_client(request: Request, form: Mapping[str, str]) -> Client:
    return await service_of(request).server.authenticate_client(
        request.headers.get("authorization"), form
    )


@router.post("/token", tags=["oauth"], summary="Token endpoint (RFC 6749 §3.2)")
async def token(request: Request) -> Response:
    metrics = metrics_of(request)
    try:
        form = await read_form(request)
        client = await _authenticated_client(request, form)
        grant = await service_of(request).server.token_request(client, form)
    except OAuthError as exc:
        metrics.errors.labels(exc.code).inc()
        return oauth_json(exc)
    metrics.issued.labels(form["grant_type"]).inc()
    return JSONResponse(grant.response(), headers=NO_STORE)


@router.post("/introspect", tags=["oauth"], summary="Token introspection (RFC 7662)")
async def introspect(request: Request) -> Response:
    try:
        form = await read_form(request)
        client = await _authenticated_client(request, form)
        if not client.is_confidential:
            # RFC 7662 §2.1: the caller must be authorized; public clients cannot be.
            raise InvalidRequest("introspection needs a confidential client")
        token_value = form.get("token")
        if not token_value:
            raise InvalidRequest("token is required")
    except OAuthError as exc:
        return oauth_json(exc)
    body = await service_of(request).issuer.introspect(token_value, client)
    return JSONResponse(body, headers=NO_STORE)


@router.post("/revoke", tags=["oauth"], summary="Token revocation (RFC 7009)")
async def revoke(request: Request) -> Response:
    try:
        form = await read_form(request)
        client = await _authenticated_client(request, form)
        token_value = form.get("token")
        if not token_value:
            raise InvalidRequest("token is required")
    except OAuthError as exc:
        return oauth_json(exc)
    # RFC 7009 §2.2: 200 whether or not the token was known (hints are only hints).
    await service_of(request).issuer.revoke(token_value, client)
    return Response(status_code=200, headers=NO_STORE)


@router.get(
    "/.well-known/oauth-authorization-server",
    tags=["oauth"],
    summary="Authorization server metadata (RFC 8414)",
)
async def metadata(request: Request) -> JSONResponse:
    issuer = settings_of(request).issuer
    return JSONResponse(
        {
            "issuer": issuer,
            "authorization_endpoint": f"{issuer}/authorize",
            "token_endpoint": f"{issuer}/token",
            "jwks_uri": f"{issuer}/.well-known/jwks.json",
            "introspection_endpoint": f"{issuer}/introspect",
            "revocation_endpoint": f"{issuer}/revoke",
            "scopes_supported": list(BUILTIN_SCOPES),
            "response_types_supported": ["code", "token"],
            "response_modes_supported": ["query", "fragment"],
            "grant_types_supported": [*SUPPORTED_GRANT_TYPES, "implicit"],
            "token_endpoint_auth_methods_supported": [
                "client_secret_basic",
                "client_secret_post",
                "none",
            ],
            "introspection_endpoint_auth_methods_supported": [
                "client_secret_basic",
                "client_secret_post",
            ],
            "revocation_endpoint_auth_methods_supported": [
                "client_secret_basic",
                "client_secret_post",
                "none",
            ],
            "code_challenge_methods_supported": ["S256"],
            "authorization_response_iss_parameter_supported": True,
        },
        headers={"Cache-Control": "public, max-age=3600"},
    )


@router.get("/.well-known/jwks.json", tags=["oauth"], summary="Public signing keys (RFC 7517)")
async def jwks(request: Request) -> JSONResponse:
    return JSONResponse(
        service_of(request).keys.jwks(), headers={"Cache-Control": "public, max-age=300"}
    )
