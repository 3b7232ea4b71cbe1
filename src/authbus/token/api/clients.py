"""Client administration: /v1/clients (scope clients:admin)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from authbus.common.security import Caller, requires
from authbus.core.errors import NotFound, ValidationFailed
from authbus.token.api._http import NO_STORE, service_of
from authbus.token.clients import ClientSpec

router = APIRouter(prefix="/v1/clients", tags=["clients"])


class ClientIn(BaseModel):
    """A client as an administrator registers it."""

    model_config = ConfigDict(extra="forbid")

    client_id: str = Field(min_length=1, max_length=128)
    name: str = Field(min_length=1, max_length=200)
    type: Literal["confidential", "public"] = "confidential"
    redirect_uris: list[str] = Field(default_factory=list, max_length=50)
    grant_types: list[str] = Field(
        default_factory=lambda: ["authorization_code", "refresh_token"], max_length=5
    )
    scopes: list[str] = Field(default_factory=list, max_length=200)
    allow_implicit: bool = False
    first_party: bool = False
    audience: str | None = Field(default=None, max_length=200)
    access_token_ttl_s: int | None = None
    refresh_token_ttl_s: int | None = None

    def spec(self) -> ClientSpec:
        return ClientSpec(**self.model_dump())


class ClientUpdate(ClientIn):
    """A full replacement of a client's settings (the client_id comes from the path)."""

    client_id: str = Field(default="", max_length=128)


@router.get("", summary="List clients")
async def list_clients(
    request: Request, _caller: Caller = Depends(requires("clients:admin"))
) -> dict[str, Any]:
    clients = await service_of(request).clients.list()
    return {"clients": [c.public_view() for c in clients]}


@router.post("", status_code=201, summary="Register a client (the secret is shown once)")
async def create_client(
    body: ClientIn, request: Request, _caller: Caller = Depends(requires("clients:admin"))
) -> JSONResponse:
    client, secret = await service_of(request).clients.create(body.spec())
    out: dict[str, Any] = client.public_view()
    if secret is not None:
        out["client_secret"] = secret
    return JSONResponse(out, status_code=201, headers=NO_STORE)


@router.get("/{client_id}", summary="One client")
async def get_client(
    client_id: str, request: Request, _caller: Caller = Depends(requires("clients:admin"))
) -> dict[str, Any]:
    client = await service_of(request).clients.get(client_id)
    if client is None:
        raise NotFound(f"no client {client_id!r}")
    return client.public_view()


@router.put("/{client_id}", summary="Replace a client's settings")
async def update_client(
    client_id: str,
    body: ClientUpdate,
    request: Request,
    _caller: Caller = Depends(requires("clients:admin")),
) -> dict[str, Any]:
    if body.client_id and body.client_id != client_id:
        # The client_id is the path's; a body naming another one is a mistake, not a rename.
        raise ValidationFailed(
            f"client_id: the body names {body.client_id!r} but the path names {client_id!r} "
            "(a client cannot be renamed; leave client_id out of the body)"
        )
    spec = body.model_copy(update={"client_id": client_id}).spec()
    return (await service_of(request).clients.update(spec)).public_view()


@router.post("/{client_id}/secret", summary="Issue a new secret (shown once)")
async def reset_secret(
    client_id: str, request: Request, _caller: Caller = Depends(requires("clients:admin"))
) -> JSONResponse:
    secret = await service_of(request).clients.reset_secret(client_id)
    return JSONResponse({"client_id": client_id, "client_secret": secret}, headers=NO_STORE)


@router.delete("/{client_id}", status_code=204, summary="Delete a client")
async def delete_client(
    client_id: str, request: Request, _caller: Caller = Depends(requires("clients:admin"))
) -> Response:
    await service_of(request).clients.delete(client_id)
    return Response(status_code=204)
