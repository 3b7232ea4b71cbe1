"""The user service's rules: accounts, permissions, roles and credential checks.

No HTTP here: `api` turns these calls and their `authbus.user.errors` into responses.

    service = UserService(InMemoryUserRepository(), hasher, throttle=throttle)
    alice = await service.create_user(username="alice", password="...", actor="admin")
    user = await service.verify_credentials("Alice", "...", scopes=["orders:read"])
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from authbus.core.errors import AuthbusError, DependencyUnavailable, ValidationFailed
from authbus.core.request_context import client_address_var
from authbus.user.domain import (
    AuditEntry,
    Role,
    User,
    UserChanges,
    UserFilter,
    normalize_username,
    utcnow,
)
from authbus.user.errors import (
    IncorrectPassword,
    InsufficientRights,
    InvalidCredentials,
    InvalidCursor,
    InvalidField,
    InvalidPasswordHash,
    RoleNotFound,
    TooManyAttempts,
    UserDisabled,
    UsernameTaken,
    UserNotFound,
    WeakPassword,
)
from authbus.user.importing import ImportRecord, ImportReport, check_password_hash
from authbus.user.passwords import PasswordHasher
from authbus.user.policy import (
    CLIENT_ADDRESS_MAX,
    DESCRIPTION_MAX,
    MAX_SQL_INT,
    USERNAME_MAX,
    check_email,
    check_password,
    check_permissions,
    check_role_count,
    check_role_name,
    check_role_permission_count,
    check_text,
    check_user_permission_count,
    check_username,
    check_username_prefix,
    is_possible_username,
    loggable,
)
from authbus.user.repository import UserRepository
from authbus.user.throttle import LoginThrottle

MAX_PAGE = 200


@dataclass(frozen=True, slots=True)
class UserProfile:
    """A user with its effective permissions (direct plus those of its roles)."""

    user: User
    effective_permissions: frozenset[str]


@dataclass(frozen=True, slots=True)
class UserPage:
    """One page of users; `next_cursor` fetches the next one (None: this was the last)."""

    items: list[UserProfile]
    next_cursor: str | None


_CURSOR_PREFIX = "u1:"


def encode_cursor(position: str) -> str:
    """An opaque cursor for the page after `position` (a normalized username)."""
    raw = (_CURSOR_PREFIX + position).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    """The position in `cursor`, or `InvalidCursor`."""
    try:
        raw = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True)
        text = raw.decode()
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise InvalidCursor() from exc
    if not text.startswith(_CURSOR_PREFIX):
        raise InvalidCursor()
    return text[len(_CURSOR_PREFIX) :]


class UserService:
    """Accounts and credential checks on top of a `UserRepository`."""

    def __init__(
        self,
        repository: UserRepository,
        hasher: PasswordHasher,
        *,
        throttle: LoginThrottle,
        clock: Callable[[], datetime] = utcnow,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.repository = repository
        self.hasher = hasher
        self.throttle = throttle
        self._clock = clock
        # Called after each committed change (wakes the outbox relay).
        self._on_change = on_change

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change()

    def _audit(
        self, actor: str, action: str, target: str, target_type: str = "user", **details: Any
    ) -> AuditEntry:
        # From where: the address of the request being served (None from the CLI).
        if "client_address" not in details and (address := client_address_var.get()):
            details["client_address"] = address
        return AuditEntry(
            at=self._clock(),
            actor=actor,
            action=action,
            target_type=target_type,
            target_id=target,
            details=details,
        )

    # -- reading -------------------------------------------------------------------------

    async def effective_permissions(self, user: User) -> frozenset[str]:
        """Direct permissions plus those of the user's roles."""
        roles = await self.repository.get_roles(user.roles)
        return user.permissions.union(*(r.permissions for r in roles))

    async def _profiles(self, users: Iterable[User]) -> list[UserProfile]:
        users = list(users)
        # One role lookup for the whole page rather than one per user.
        roles = {
            r.name: r.permissions
            for r in await self.repository.get_roles({n for u in users for n in u.roles})
        }
        return [
            UserProfile(u, u.permissions.union(*(roles.get(n, frozenset()) for n in u.roles)))
            for u in users
        ]

    async def profile(self, user: User) -> UserProfile:
        """The user with its effective permissions."""
        return (await self._profiles([user]))[0]

    async def _require_user(self, user_id: uuid.UUID) -> User:
        user = await self.repository.get_user(user_id)
        if user is None:
            raise UserNotFound()
        return user

    async def get_user(self, user_id: uuid.UUID) -> UserProfile:
        """The user with this id, or `UserNotFound`."""
        return await self.profile(await self._require_user(user_id))

    async def find_user(self, username: str) -> UserProfile:
        """The user with this username (any letter case), or `UserNotFound`."""
        # A name the policy refuses names nobody (and may be text no database can hold).
        user = await self.repository.find_user(username) if is_possible_username(username) else None
        if user is None:
            raise UserNotFound(f"no user named {loggable(username, USERNAME_MAX + 8)!r}")
        return await self.profile(user)

    async def list_users(
        self, *, where: UserFilter | None = None, cursor: str | None = None, limit: int = 50
    ) -> UserPage:
        """Users ordered by username, `limit` per page, filtered by `where`."""
        limit = max(1, min(limit, MAX_PAGE))
        after = decode_cursor(cursor) if cursor else None
        where = where or UserFilter()
        if where.username_prefix is not None:
            check_username_prefix(where.username_prefix)
        if where.permission is not None:
            check_permissions([where.permission], field="permission filter")
        if where.username is not None and not is_possible_username(where.username):
            return UserPage([], None)
        # One extra row tells whether another page follows, without a count query.
        users = await self.repository.list_users(where=where, after=after, limit=limit + 1)
        more = len(users) > limit
        users = users[:limit]
        next_cursor = encode_cursor(users[-1].username_normalized) if more else None
        return UserPage(await self._profiles(users), next_cursor)

    # -- writing -------------------------------------------------------------------------

    async def create_user(
        self,
        *,
        username: str,
        password: str,
        actor: str,
        email: str | None = None,
        permissions: Iterable[str] = (),
        roles: Iterable[str] = (),
    ) -> UserProfile:
        """Create an account; `UsernameTaken` if the name exists in any letter case."""
        check_username(username)
        check_password(password, username=username)
        if email is not None:
            check_email(email)
        perms = check_user_permission_count(check_permissions(frozenset(permissions)))
        role_names = check_role_count(frozenset(roles))
        user = User.new(
            username,
            await self.hasher.hash(password),
            now=self._clock(),
            email=email,
            permissions=perms,
            roles=role_names,
        )
        await self.repository.add_user(
            user,
            audit=self._audit(
                actor,
                "user.created",
                str(user.id),
                username=username,
                permissions=sorted(perms),
                roles=sorted(role_names),
            ),
        )
        self._changed()
        return await self.profile(user)

    async def _update(
        self, user_id: uuid.UUID, changes: UserChanges, audit: AuditEntry | None
    ) -> UserProfile:
        user = await self.repository.update_user(user_id, changes, audit=audit)
        if user is None:
            raise UserNotFound()
        if audit is not None:
            self._changed()
        return await self.profile(user)

    async def set_permissions(
        self, user_id: uuid.UUID, permissions: Iterable[str], *, actor: str
    ) -> UserProfile:
        """Replace the user's direct permissions (at most `MAX_USER_PERMISSIONS`)."""
        perms = check_user_permission_count(check_permissions(frozenset(permissions)))
        return await self._update(
            user_id,
            UserChanges(updated_at=self._clock(), permissions=perms),
            self._audit(actor, "user.permissions_set", str(user_id), permissions=sorted(perms)),
        )

    async def grant_permissions(
        self, user_id: uuid.UUID, permissions: Iterable[str], *, actor: str
    ) -> UserProfile:
        """Add direct permissions to those the user holds."""
        perms = check_permissions(frozenset(permissions))
        user = await self._require_user(user_id)
        if perms <= user.permissions:
            return await self.profile(user)
        return await self.set_permissions(user_id, user.permissions | perms, actor=actor)

    async def revoke_permissions(
        self, user_id: uuid.UUID, permissions: Iterable[str], *, actor: str
    ) -> UserProfile:
        """Remove direct permissions (those held through a role stay with the role)."""
        perms = frozenset(permissions)
        user = await self._require_user(user_id)
        if not perms & user.permissions:
            return await self.profile(user)
        return await self.set_permissions(user_id, user.permissions - perms, actor=actor)

    async def set_roles(
        self, user_id: uuid.UUID, roles: Iterable[str], *, actor: str
    ) -> UserProfile:
        """Replace the user's roles (at most `MAX_USER_ROLES`); `RoleNotFound` names any that
        do not exist."""
        names = check_role_count(frozenset(roles))
        return await self._update(
            user_id,
            UserChanges(updated_at=self._clock(), roles=names),
            self._audit(actor, "user.roles_set", str(user_id), roles=sorted(names)),
        )

    async def update_user(
        self,
        user_id: uuid.UUID,
        *,
        actor: str,
        email: str | None = None,
        clear_email: bool = False,
        disabled: bool | None = None,
    ) -> UserProfile:
        """Change the email and/or the disabled flag."""
        if email is not None:
            check_email(email)
        if email is None and not clear_email and disabled is None:
            # Nothing to change: no write, no audit line, no event.
            return await self.get_user(user_id)
        changed: dict[str, Any] = {}
        if email is not None or clear_email:
            changed["email"] = None if clear_email else email
        if disabled is not None:
            changed["disabled"] = disabled
        return await self._update(
            user_id,
            UserChanges(
                updated_at=self._clock(), email=email, clear_email=clear_email, disabled=disabled
            ),
            self._audit(actor, "user.updated", str(user_id), **changed),
        )

    async def delete_user(self, user_id: uuid.UUID, *, actor: str) -> None:
        """Delete the account; `UserNotFound` if there is none."""
        if not await self.repository.delete_user(
            user_id, audit=self._audit(actor, "user.deleted", str(user_id))
        ):
            raise UserNotFound()
        self._changed()

    async def reset_password(self, user_id: uuid.UUID, new_password: str, *, actor: str) -> None:
        """An administrator sets a new password (no current password needed)."""
        user = await self._require_user(user_id)
        check_password(new_password, username=user.username)
        await self._update(
            user_id,
            UserChanges(
                updated_at=self._clock(), password_hash=await self.hasher.hash(new_password)
            ),
            self._audit(actor, "user.password_reset", str(user_id)),
        )

    async def change_password(
        self,
        user_id: uuid.UUID,
        current_password: str,
        new_password: str,
        *,
        client_address: str | None = None,
    ) -> None:
        """The user changes their own password, proving they know the current one.

        Failures count against the same throttle as logins, so this is no side door for
        guessing.
        """
        user = await self._require_user(user_id)
        if user.disabled:
            raise UserDisabled()
        if wait := self.throttle.begin(user.username, client_address):
            raise TooManyAttempts(wait)
        try:
            ok, upgraded = await self.hasher.verify(current_password, user.password_hash)
        except BaseException:
            self.throttle.abandon(user.username, client_address)
            raise
        if not ok:
            self.throttle.record_failure(user.username, client_address)
            raise IncorrectPassword()
        self.throttle.record_success(user.username, client_address)
        try:
            check_password(new_password, username=user.username, field="new_password")
        except WeakPassword:
            if upgraded is not None:
                # The new password was refused, but the current one was right: upgrade its
                # old hash (bcrypt, older argon2 parameters) as a login would.
                await self.repository.update_user(
                    user_id, UserChanges(updated_at=user.updated_at, password_hash=upgraded)
                )
            raise
        await self._update(
            user_id,
            UserChanges(
                updated_at=self._clock(), password_hash=await self.hasher.hash(new_password)
            ),
            self._audit(str(user_id), "user.password_changed", str(user_id)),
        )

    async def import_users(
        self, records: Sequence[ImportRecord], *, actor: str, strict: bool = False
    ) -> ImportReport:
        """Create users with the password hashes they had elsewhere (bcrypt or argon2id).

        Users whose name exists already are skipped (so an import can be re-run). A row that
        fails its checks is reported and the others are imported; with `strict`, any failed
        row means nothing is written, and the rest is written in one transaction.
        """
        report = ImportReport()
        ready: list[tuple[ImportRecord, User]] = []
        seen: dict[str, int] = {}
        known_roles = {
            r.name for r in await self.repository.get_roles({n for r in records for n in r.roles})
        }
        now = self._clock()
        for record in records:
            # An account that exists already is skipped before its row is checked, so an
            # import can be re-run, whatever became of the rows it created the first time.
            if (
                record.error is None
                and record.username
                and await self.repository.find_user(record.username) is not None
            ):
                report.skipped.append((record.row, record.username, "exists already"))
                continue
            try:
                user = self._imported_user(record, known_roles, now)
            except AuthbusError as exc:
                report.failed.append((record.row, record.username, exc.message))
                continue
            if (first := seen.get(user.username_normalized)) is not None:
                report.failed.append((record.row, record.username, f"username repeats row {first}"))
                continue
            seen[user.username_normalized] = record.row
            ready.append((record, user))
        if strict:
            if report.failed:
                report.aborted = True
                return report
            await self.repository.add_users([(u, self._import_audit(actor, u)) for _, u in ready])
            report.created.extend((r.row, r.username) for r, _ in ready)
        else:
            for record, user in ready:
                try:
                    await self.repository.add_user(user, audit=self._import_audit(actor, user))
                except UsernameTaken:
                    # Created by someone else since the check above.
                    report.skipped.append((record.row, record.username, "exists already"))
                    continue
                except DependencyUnavailable:
                    raise
                except AuthbusError as exc:
                    report.failed.append((record.row, record.username, exc.message))
                    continue
                report.created.append((record.row, record.username))
        if report.created:
            self._changed()
        return report

    @staticmethod
    def _imported_user(record: ImportRecord, known_roles: set[str], now: datetime) -> User:
        if record.error is not None:
            raise ValidationFailed(record.error)
        if not record.password_hash:
            raise InvalidPasswordHash("password_hash: missing")
        check_username(record.username)
        if record.email is not None:
            check_email(record.email)
        perms = check_user_permission_count(check_permissions(record.permissions))
        check_role_count(record.roles)
        if missing := record.roles - known_roles:
            raise RoleNotFound(missing)
        user = User.new(
            record.username,
            check_password_hash(record.password_hash),
            now=now,
            email=record.email,
            permissions=perms,
            roles=record.roles,
        )
        return replace(user, disabled=record.disabled)

    def _import_audit(self, actor: str, user: User) -> AuditEntry:
        return self._audit(
            actor,
            "user.created",
            str(user.id),
            username=user.username,
            permissions=sorted(user.permissions),
            roles=sorted(user.roles),
            disabled=user.disabled,
            imported=True,
        )

    # -- credentials ---------------------------------------------------------------------

    async def verify_credentials(
        self,
        username: str,
        password: str,
        scopes: Iterable[str] = (),
        client_address: str | None = None,
    ) -> UserProfile:
        """The user if the password is right, the account enabled and every scope held.

        Raises `TooManyAttempts`, `InvalidCredentials` (unknown user and wrong password
        alike, in the same time), `UserDisabled` or `InsufficientRights`. The disabled flag
        and the rights are only revealed to a caller who gave the right password. Every
        verdict is audited (`login.succeeded` / `login.failed`, with the client address);
        a throttled attempt is not, as it costs the caller nothing to repeat.
        """
        if client_address is not None:
            check_text("client_address", client_address, max_length=CLIENT_ADDRESS_MAX)
        if wait := self.throttle.begin(username, client_address):
            raise TooManyAttempts(wait)
        try:
            user, ok, new_hash = await self._check_password(username, password)
        except BaseException:
            # Not a verdict on the password (database down, cancelled): not a failure.
            self.throttle.abandon(username, client_address)
            raise
        if user is None or not ok:
            self.throttle.record_failure(username, client_address)
            # The same write for unknown users and wrong passwords: the time tells nothing.
            await self.repository.add_audit(
                self._login_audit(username, None, InvalidCredentials.code, client_address)
            )
            raise InvalidCredentials()
        self.throttle.record_success(username, client_address)
        if new_hash is not None:
            # Older argon2 parameters or bcrypt: upgrade now that we hold the plain password.
            user = (
                await self.repository.update_user(
                    user.id, UserChanges(updated_at=self._clock(), password_hash=new_hash)
                )
                or user
            )
        if user.disabled:
            await self.repository.add_audit(
                self._login_audit(username, user, UserDisabled.code, client_address)
            )
            raise UserDisabled()
        profile = await self.profile(user)
        if missing := set(scopes) - profile.effective_permissions:
            await self.repository.add_audit(
                self._login_audit(
                    username,
                    user,
                    InsufficientRights.code,
                    client_address,
                    missing_scopes=sorted(missing),
                )
            )
            raise InsufficientRights(missing)
        now = self._clock()
        user = (
            await self.repository.update_user(
                user.id,
                UserChanges(updated_at=user.updated_at, last_login_at=now),
                audit=self._login_audit(username, user, "ok", client_address),
            )
            or user
        )
        return UserProfile(user, profile.effective_permissions)

    def _login_audit(
        self,
        username: str,
        user: User | None,
        outcome: str,
        client_address: str | None,
        **details: Any,
    ) -> AuditEntry:
        """A login verdict: the user's id when the password was right, else the name tried."""
        # The name tried may be anything a caller sent: escaped, so every backend holds it.
        tried = loggable(username, USERNAME_MAX + 8)
        return self._audit(
            tried if user is None else str(user.id),
            "login.succeeded" if outcome == "ok" else "login.failed",
            str(user.id) if user is not None else normalize_username(tried),
            username=tried if user is None else user.username,
            outcome=outcome,
            client_address=client_address,
            **details,
        )

    async def _check_password(
        self, username: str, password: str
    ) -> tuple[User | None, bool, str | None]:
        # Only the hash is read before the verdict: loading the whole user (its permissions
        # and roles) for known names only would make unknown names measurably faster.
        # A name the policy refuses (it may hold text no database can store) is looked up as
        # "", which names nobody: the same query, so such names take the same time too.
        lookup = username if is_possible_username(username) else ""
        found = await self.repository.find_password_hash(lookup)
        if found is None:
            # Same work as a real check, so the time does not reveal unknown usernames.
            await self.hasher.verify_dummy(password)
            return None, False, None
        user_id, stored = found
        ok, new_hash = await self.hasher.verify(password, stored)
        if not ok:
            return None, False, None
        # Deleted in the meantime: as good as unknown.
        return await self.repository.get_user(user_id), True, new_hash

    # -- roles ---------------------------------------------------------------------------

    async def create_role(
        self, name: str, *, actor: str, permissions: Iterable[str] = (), description: str = ""
    ) -> Role:
        """Create a role (at most `MAX_ROLE_PERMISSIONS` permissions); `RoleExists` if the
        name is taken."""
        check_role_name(name)
        check_text("description", description, max_length=DESCRIPTION_MAX, multiline=True)
        now = self._clock()
        role = Role(
            name=name,
            description=description,
            permissions=check_role_permission_count(check_permissions(frozenset(permissions))),
            created_at=now,
            updated_at=now,
        )
        await self.repository.add_role(
            role,
            audit=self._audit(
                actor, "role.created", name, "role", permissions=sorted(role.permissions)
            ),
        )
        self._changed()
        return role

    async def get_role(self, name: str) -> Role:
        """The role of this name, or `RoleNotFound`."""
        roles = await self.repository.get_roles([name])
        if not roles:
            raise RoleNotFound([name])
        return roles[0]

    async def list_roles(self) -> list[Role]:
        """Every role, by name."""
        return await self.repository.list_roles()

    async def update_role(
        self,
        name: str,
        *,
        actor: str,
        permissions: Iterable[str] | None = None,
        description: str | None = None,
    ) -> Role:
        """Change a role; its members' effective permissions change with it at once."""
        if description is not None:
            check_text("description", description, max_length=DESCRIPTION_MAX, multiline=True)
        old = await self.get_role(name)
        role = Role(
            name=name,
            created_at=old.created_at,
            updated_at=self._clock(),
            description=old.description if description is None else description,
            permissions=(
                old.permissions
                if permissions is None
                else check_role_permission_count(check_permissions(frozenset(permissions)))
            ),
        )
        if not await self.repository.update_role(
            role,
            audit=self._audit(
                actor, "role.updated", name, "role", permissions=sorted(role.permissions)
            ),
        ):
            raise RoleNotFound([name])
        self._changed()
        return role

    async def delete_role(self, name: str, *, actor: str) -> None:
        """Delete a role; its members lose its permissions."""
        if not await self.repository.delete_role(
            name, audit=self._audit(actor, "role.deleted", name, "role")
        ):
            raise RoleNotFound([name])
        self._changed()

    async def list_audit(
        self, *, before: int | None = None, limit: int = 50, target_id: str | None = None
    ) -> list[AuditEntry]:
        """Audit entries, newest first (with ids below `before`, when given)."""
        if before is not None and not 1 <= before <= MAX_SQL_INT:
            raise InvalidField(f"before: must be 1 to {MAX_SQL_INT}")
        return await self.repository.list_audit(
            before=before, limit=max(1, min(limit, MAX_PAGE + 1)), target_id=target_id
        )
