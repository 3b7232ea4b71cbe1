"""HTTP routes of the user service: translate requests to `UserService` calls.

Errors raised by the service (`authbus.user.errors`) are rendered by the shared handler in
`authbus.core.app` as `{"error": code, "error_description": ...}` with their status.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response, status

from authbus.common.security import Caller, requires
from authbus.core.errors import AuthbusError, Forbidden
from authbus.user.domain import UserFilter
from authbus.user.errors import (
    InsufficientRights,
    InvalidCredentials,
    TooManyAttempts,
    UserDisabled,
    UserNotFound,
)
from authbus.user.policy import MAX_SQL_INT
from authbus.user.schemas import (
    AuditOut,
    AuditPage,
    PasswordChange,
    PasswordReset,
    PermissionsIn,
    RoleCreate,
    RoleList,
    RoleOut,
    RolePatch,
    RolesIn,
    UserCreate,
    UserList,
    UserOut,
    UserPatch,
    VerifyRequest,
    VerifyResponse,
)
from authbus.user.service import UserService

ADMIN = "users:admin"
VERIFY = "users:verify"

# The `outcome` label of `authbus_user_logins_total`, by the error that ended the login.
LOGIN_OUTCOMES = ("ok", "invalid_credentials", "insufficient_rights", "disabled", "throttled")
_OUTCOME_OF: dict[type[AuthbusError], str] = {
    InvalidCredentials: "invalid_credentials",
    InsufficientRights: "insufficient_rights",
    UserDisabled: "disabled",
    TooManyAttempts: "throttled",
}

router = APIRouter()


async def get_service(request: Request) -> UserService:
    """The `UserService` the lifespan built."""
    service: UserService = request.app.state.user_service
    return service


Service = Annotated[UserService, Depends(get_service)]
Admin = Annotated[Caller, Depends(requires(ADMIN))]
AnyCaller = Annotated[Caller, Depends(requires())]


def _own_user_id(caller: Caller) -> uuid.UUID:
    """The user id of a token's subject; a client's token (no user behind it) is a 404."""
    try:
        return uuid.UUID(caller.subject)
    except (ValueError, TypeError) as exc:
        raise UserNotFound("the token does not belong to a user") from exc


# -- the caller's own account (before /v1/users/{user_id} so "me" is not taken for an id) --


@router.get("/v1/users/me", response_model=UserOut, tags=["users"])
async def get_me(caller: AnyCaller, service: Service) -> UserOut:
    """The account of the token's subject."""
    profile = await service.get_user(_own_user_id(caller))
    if profile.user.disabled:
        raise UserDisabled()
    return UserOut.of(profile)


@router.put("/v1/users/me/password", status_code=status.HTTP_204_NO_CONTENT, tags=["users"])
async def change_my_password(
    body: PasswordChange, caller: AnyCaller, service: Service, request: Request
) -> Response:
    """Change one's own password; the current one is required."""
    await service.change_password(
        _own_user_id(caller),
        body.current_password,
        body.new_password,
        client_address=request.client.host if request.client else None,
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# -- administration ---------------------------------------------------------------------------


@router.post(
    "/v1/users", response_model=UserOut, status_code=status.HTTP_201_CREATED, tags=["users"]
)
async def create_user(body: UserCreate, caller: Admin, service: Service) -> UserOut:
    """Create an account (scope users:admin)."""
    profile = await service.create_user(
        username=body.username,
        password=body.password,
        email=body.email,
        permissions=body.permissions,
        roles=body.roles,
        actor=caller.subject,
    )
    return UserOut.of(profile)


@router.get("/v1/users", response_model=UserList, tags=["users"])
async def list_users(
    caller: Admin,
    service: Service,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    username: Annotated[str | None, Query(max_length=64)] = None,
    username_prefix: Annotated[str | None, Query(max_length=64)] = None,
    permission: Annotated[str | None, Query(max_length=200)] = None,
    disabled: bool | None = None,
) -> UserList:
    """Users ordered by username; pass `next_cursor` back as `cursor` for the next page.

    Filters: `username` (exact, any letter case), `username_prefix`, `permission` (held
    directly or through a role), `disabled`.
    """
    page = await service.list_users(
        where=UserFilter(
            username=username,
            username_prefix=username_prefix,
            permission=permission,
            disabled=disabled,
        ),
        cursor=cursor,
        limit=limit,
    )
    return UserList(items=[UserOut.of(p) for p in page.items], next_cursor=page.next_cursor)


@router.get("/v1/users/{user_id}", response_model=UserOut, tags=["users"])
async def get_user(user_id: uuid.UUID, caller: AnyCaller, service: Service) -> UserOut:
    """One account: users:admin, or the account's own token."""
    if caller.subject != str(user_id) and ADMIN not in caller.scopes:
        raise Forbidden(
            "users:admin is needed to read another account", extra={"missing_scopes": [ADMIN]}
        )
    return UserOut.of(await service.get_user(user_id))


@router.patch("/v1/users/{user_id}", response_model=UserOut, tags=["users"])
async def update_user(
    user_id: uuid.UUID, body: UserPatch, caller: Admin, service: Service
) -> UserOut:
    """Change email and/or disabled; `"email": null` removes the email."""
    clear_email = "email" in body.model_fields_set and body.email is None
    profile = await service.update_user(
        user_id,
        actor=caller.subject,
        email=body.email,
        clear_email=clear_email,
        disabled=body.disabled,
    )
    return UserOut.of(profile)


@router.delete("/v1/users/{user_id}", status_code=status.HTTP_204_NO_CONTENT, tags=["users"])
async def delete_user(user_id: uuid.UUID, caller: Admin, service: Service) -> Response:
    """Delete an account (scope users:admin)."""
    await service.delete_user(user_id, actor=caller.subject)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.put("/v1/users/{user_id}/permissions", response_model=UserOut, tags=["users"])
async def set_permissions(
    user_id: uuid.UUID, body: PermissionsIn, caller: Admin, service: Service
) -> UserOut:
    """Replace the account's direct permissions."""
    return UserOut.of(
        await service.set_permissions(user_id, body.permissions, actor=caller.subject)
    )


@router.put("/v1/users/{user_id}/roles", response_model=UserOut, tags=["users"])
async def set_roles(user_id: uuid.UUID, body: RolesIn, caller: Admin, service: Service) -> UserOut:
    """Replace the account's roles."""
    return UserOut.of(await service.set_roles(user_id, body.roles, actor=caller.subject))


@router.put("/v1/users/{user_id}/password", status_code=status.HTTP_204_NO_CONTENT, tags=["users"])
async def reset_password(
    user_id: uuid.UUID, body: PasswordReset, caller: Admin, service: Service
) -> Response:
    """An administrator sets a new password."""
    await service.reset_password(user_id, body.password, actor=caller.subject)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# -- credentials ------------------------------------------------------------------------------


@router.post("/v1/credentials/verify", response_model=VerifyResponse, tags=["credentials"])
async def verify_credentials(
    body: VerifyRequest,
    request: Request,
    caller: Annotated[Caller, Depends(requires(VERIFY))],
    service: Service,
) -> VerifyResponse:
    """Check a username, password and requested scopes (the token service, at login)."""
    logins = request.app.state.login_outcomes
    try:
        profile = await service.verify_credentials(
            body.username, body.password, body.scopes, body.client_address
        )
    except AuthbusError as exc:
        # Not a verdict (database down: 503) is no login outcome; it shows in the HTTP figures.
        if (outcome := _OUTCOME_OF.get(type(exc))) is not None:
            logins.labels(outcome).inc()
        raise
    logins.labels("ok").inc()
    return VerifyResponse(user=UserOut.of(profile))


# -- roles ------------------------------------------------------------------------------------


@router.post(
    "/v1/roles", response_model=RoleOut, status_code=status.HTTP_201_CREATED, tags=["roles"]
)
async def create_role(body: RoleCreate, caller: Admin, service: Service) -> RoleOut:
    """Create a role (scope users:admin)."""
    role = await service.create_role(
        body.name,
        actor=caller.subject,
        permissions=body.permissions,
        description=body.description,
    )
    return RoleOut.of(role)


@router.get("/v1/roles", response_model=RoleList, tags=["roles"])
async def list_roles(caller: Admin, service: Service) -> RoleList:
    """Every role, by name."""
    return RoleList(items=[RoleOut.of(r) for r in await service.list_roles()])


@router.get("/v1/roles/{name}", response_model=RoleOut, tags=["roles"])
async def get_role(name: str, caller: Admin, service: Service) -> RoleOut:
    """One role."""
    return RoleOut.of(await service.get_role(name))


@router.patch("/v1/roles/{name}", response_model=RoleOut, tags=["roles"])
async def update_role(name: str, body: RolePatch, caller: Admin, service: Service) -> RoleOut:
    """Change a role; every member's effective permissions follow at once."""
    role = await service.update_role(
        name, actor=caller.subject, permissions=body.permissions, description=body.description
    )
    return RoleOut.of(role)


@router.delete("/v1/roles/{name}", status_code=status.HTTP_204_NO_CONTENT, tags=["roles"])
async def delete_role(name: str, caller: Admin, service: Service) -> Response:
    """Delete a role; its members lose its permissions."""
    await service.delete_role(name, actor=caller.subject)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# -- audit ------------------------------------------------------------------------------------


@router.get("/v1/audit", response_model=AuditPage, tags=["audit"])
async def list_audit(
    caller: Admin,
    service: Service,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    before: Annotated[int | None, Query(ge=1, le=MAX_SQL_INT)] = None,
    target_id: Annotated[str | None, Query(max_length=200)] = None,
) -> AuditPage:
    """Administrative changes, newest first; pass `next_before` as `before` to page."""
    entries = await service.list_audit(before=before, limit=limit + 1, target_id=target_id)
    more = len(entries) > limit
    entries = entries[:limit]
    return AuditPage(
        items=[AuditOut.of(e) for e in entries],
        next_before=entries[-1].id if more and entries else None,
    )
