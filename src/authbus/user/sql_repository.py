"""`UserRepository` on SQLite and Postgres (SQLAlchemy async).

repository = SqlUserRepository(create_sessionmaker(create_engine(url)))
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime

from sqlalchemy import delete, exists, or_, select, text, update
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from authbus.core.errors import DependencyUnavailable
from authbus.user.domain import (
    ROLE_CREATED,
    ROLE_DELETED,
    ROLE_UPDATED,
    AuditEntry,
    DomainEvent,
    OutboxEvent,
    Role,
    User,
    UserChanges,
    UserFilter,
    UserState,
    members_events,
    normalize_username,
    role_event,
    user_events,
)
from authbus.user.errors import RoleExists, RoleNotFound, UsernameTaken
from authbus.user.models import (
    AuditRow,
    OutboxRow,
    RolePermissionRow,
    RoleRow,
    UserPermissionRow,
    UserRoleRow,
    UserRow,
)


@asynccontextmanager
async def _translate_outages() -> AsyncIterator[None]:
    """A database that cannot be reached is a 503 with Retry-After, never a 500."""
    try:
        yield
    except (OperationalError, InterfaceError) as exc:
        raise DependencyUnavailable("the user database is unavailable") from exc
    except DBAPIError as exc:
        if exc.connection_invalidated:
            raise DependencyUnavailable("the user database is unavailable") from exc
        raise
    except (OSError, TimeoutError) as exc:
        # asyncpg raises plain OSError (connection refused) before SQLAlchemy wraps anything.
        raise DependencyUnavailable("the user database is unavailable") from exc


def _like_prefix(prefix: str) -> str:
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"


class SqlUserRepository:
    """`UserRepository` on SQLite or Postgres."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessionmaker

    @asynccontextmanager
    async def _tx(self) -> AsyncIterator[AsyncSession]:
        async with _translate_outages(), self._sessions() as session, session.begin():
            yield session

    # -- users ---------------------------------------------------------------------------

    async def add_user(self, user: User, *, audit: AuditEntry | None = None) -> None:
        await self.add_users([(user, audit)])

    async def add_users(self, users: Sequence[tuple[User, AuditEntry | None]]) -> None:
        try:
            async with self._tx() as s:
                await self._require_roles(s, {r for u, _ in users for r in u.roles})
                for user, _ in users:
                    s.add(
                        UserRow(
                            id=user.id,
                            username=user.username,
                            username_normalized=user.username_normalized,
                            email=user.email,
                            password_hash=user.password_hash,
                            disabled=user.disabled,
                            created_at=user.created_at,
                            updated_at=user.updated_at,
                            last_login_at=user.last_login_at,
                        )
                    )
                # Flush the users first: the link rows reference them by foreign key.
                await s.flush()
                for user, _ in users:
                    s.add_all(
                        UserPermissionRow(user_id=user.id, permission=p) for p in user.permissions
                    )
                    s.add_all(UserRoleRow(user_id=user.id, role_name=r) for r in user.roles)
                audited = [(u, a) for u, a in users if a is not None]
                if audited:
                    after = await self._states(s, [u.id for u, _ in audited])
                    for user, audit in audited:
                        assert audit is not None
                        self._record(s, audit, user_events(None, after[user.id], actor=audit.actor))
        except IntegrityError as exc:
            seen: set[str] = set()
            for user, _ in users:
                if user.username_normalized in seen or await self.find_user(user.username):
                    raise UsernameTaken(user.username) from exc
                seen.add(user.username_normalized)
            # The only other constraint: a role deleted between our check and the insert.
            raise RoleNotFound({r for u, _ in users for r in u.roles}) from exc

    async def get_user(self, user_id: uuid.UUID) -> User | None:
        async with self._tx() as s:
            row = await s.get(UserRow, user_id)
            if row is None:
                return None
            return (await self._load(s, [row]))[0]

    async def find_user(self, username: str) -> User | None:
        async with self._tx() as s:
            row = await s.scalar(
                select(UserRow).where(UserRow.username_normalized == normalize_username(username))
            )
            if row is None:
                return None
            return (await self._load(s, [row]))[0]

    async def find_password_hash(self, username: str) -> tuple[uuid.UUID, str] | None:
        async with self._tx() as s:
            row = (
                await s.execute(
                    select(UserRow.id, UserRow.password_hash).where(
                        UserRow.username_normalized == normalize_username(username)
                    )
                )
            ).first()
            return None if row is None else (row[0], row[1])

    async def list_users(self, *, where: UserFilter, after: str | None, limit: int) -> list[User]:
        query = select(UserRow).order_by(UserRow.username_normalized).limit(limit)
        if after is not None:
            query = query.where(UserRow.username_normalized > after)
        if where.username is not None:
            query = query.where(UserRow.username_normalized == normalize_username(where.username))
        if where.username_prefix:
            query = query.where(
                UserRow.username_normalized.like(
                    _like_prefix(normalize_username(where.username_prefix)), escape="\\"
                )
            )
        if where.disabled is not None:
            query = query.where(UserRow.disabled == where.disabled)
        if where.permission is not None:
            direct = exists().where(
                UserPermissionRow.user_id == UserRow.id,
                UserPermissionRow.permission == where.permission,
            )
            via_role = exists().where(
                UserRoleRow.user_id == UserRow.id,
                RolePermissionRow.role_name == UserRoleRow.role_name,
                RolePermissionRow.permission == where.permission,
            )
            query = query.where(or_(direct, via_role))
        async with self._tx() as s:
            rows = list((await s.scalars(query)).all())
            return await self._load(s, rows)

    async def update_user(
        self, user_id: uuid.UUID, changes: UserChanges, *, audit: AuditEntry | None = None
    ) -> User | None:
        values: dict[str, object] = {"updated_at": changes.updated_at}
        if changes.clear_email:
            values["email"] = None
        elif changes.email is not None:
            values["email"] = changes.email
        if changes.disabled is not None:
            values["disabled"] = changes.disabled
        if changes.password_hash is not None:
            values["password_hash"] = changes.password_hash
        if changes.last_login_at is not None:
            values["last_login_at"] = changes.last_login_at
        try:
            async with self._tx() as s:
                # Only audited changes others can see are announced (not a login's stamp).
                announce = audit is not None and changes.announced
                before = await self._states(s, [user_id]) if announce else {}
                result = await s.execute(
                    update(UserRow).where(UserRow.id == user_id).values(**values)
                )
                if getattr(result, "rowcount", 0) == 0:
                    return None
                if changes.permissions is not None:
                    await s.execute(
                        delete(UserPermissionRow).where(UserPermissionRow.user_id == user_id)
                    )
                    s.add_all(
                        UserPermissionRow(user_id=user_id, permission=p)
                        for p in changes.permissions
                    )
                if changes.roles is not None:
                    await self._require_roles(s, changes.roles)
                    await s.execute(delete(UserRoleRow).where(UserRoleRow.user_id == user_id))
                    s.add_all(UserRoleRow(user_id=user_id, role_name=r) for r in changes.roles)
                await s.flush()
                row = await s.get(UserRow, user_id, populate_existing=True)
                assert row is not None
                if audit is not None:
                    events = []
                    if announce:
                        after = await self._states(s, [user_id])
                        events = user_events(before[user_id], after[user_id], actor=audit.actor)
                    self._record(s, audit, events)
                return (await self._load(s, [row]))[0]
        except IntegrityError as exc:
            raise RoleNotFound(changes.roles or ()) from exc

    async def delete_user(self, user_id: uuid.UUID, *, audit: AuditEntry | None = None) -> bool:
        async with self._tx() as s:
            before = await self._states(s, [user_id]) if audit is not None else {}
            # Link rows go explicitly: SQLite connections made elsewhere may lack FK cascades.
            await s.execute(delete(UserPermissionRow).where(UserPermissionRow.user_id == user_id))
            await s.execute(delete(UserRoleRow).where(UserRoleRow.user_id == user_id))
            result = await s.execute(delete(UserRow).where(UserRow.id == user_id))
            if getattr(result, "rowcount", 0) == 0:
                return False
            if audit is not None:
                self._record(s, audit, user_events(before[user_id], None, actor=audit.actor))
            return True

    # -- roles ---------------------------------------------------------------------------

    async def add_role(self, role: Role, *, audit: AuditEntry | None = None) -> None:
        try:
            async with self._tx() as s:
                s.add(
                    RoleRow(
                        name=role.name,
                        description=role.description,
                        created_at=role.created_at,
                        updated_at=role.updated_at,
                    )
                )
                await s.flush()
                s.add_all(
                    RolePermissionRow(role_name=role.name, permission=p) for p in role.permissions
                )
                if audit is not None:
                    self._record(s, audit, [role_event(ROLE_CREATED, role, actor=audit.actor)])
        except IntegrityError as exc:
            raise RoleExists(role.name) from exc

    async def get_roles(self, names: Iterable[str]) -> list[Role]:
        wanted = sorted(set(names))
        if not wanted:
            return []
        async with self._tx() as s:
            rows = (await s.scalars(select(RoleRow).where(RoleRow.name.in_(wanted)))).all()
            return await self._load_roles(s, list(rows))

    async def list_roles(self) -> list[Role]:
        async with self._tx() as s:
            rows = (await s.scalars(select(RoleRow).order_by(RoleRow.name))).all()
            return await self._load_roles(s, list(rows))

    async def update_role(self, role: Role, *, audit: AuditEntry | None = None) -> bool:
        async with self._tx() as s:
            result = await s.execute(
                update(RoleRow)
                .where(RoleRow.name == role.name)
                .values(description=role.description, updated_at=role.updated_at)
            )
            if getattr(result, "rowcount", 0) == 0:
                return False
            # The role row is locked now: members read after this are all the members.
            members = await self._members(s, role.name) if audit is not None else []
            before = await self._states(s, members)
            await s.execute(
                delete(RolePermissionRow).where(RolePermissionRow.role_name == role.name)
            )
            s.add_all(
                RolePermissionRow(role_name=role.name, permission=p) for p in role.permissions
            )
            if audit is not None:
                await s.flush()
                after = await self._states(s, members)
                self._record(
                    s,
                    audit,
                    [
                        role_event(ROLE_UPDATED, role, actor=audit.actor),
                        *members_events(before, after, actor=audit.actor),
                    ],
                )
            return True

    async def delete_role(self, name: str, *, audit: AuditEntry | None = None) -> bool:
        async with self._tx() as s:
            found = await s.scalar(select(RoleRow).where(RoleRow.name == name).with_for_update())
            if found is None:
                return False
            role = (await self._load_roles(s, [found]))[0]
            members = await self._members(s, name) if audit is not None else []
            before = await self._states(s, members)
            await s.execute(delete(UserRoleRow).where(UserRoleRow.role_name == name))
            await s.execute(delete(RolePermissionRow).where(RolePermissionRow.role_name == name))
            await s.execute(delete(RoleRow).where(RoleRow.name == name))
            if audit is not None:
                after = await self._states(s, members)
                self._record(
                    s,
                    audit,
                    [
                        role_event(ROLE_DELETED, role, actor=audit.actor),
                        *members_events(before, after, actor=audit.actor),
                    ],
                )
            return True

    # -- audit and health ----------------------------------------------------------------

    async def list_audit(
        self, *, before: int | None, limit: int, target_id: str | None = None
    ) -> list[AuditEntry]:
        query = select(AuditRow).order_by(AuditRow.id.desc()).limit(limit)
        if before is not None:
            query = query.where(AuditRow.id < before)
        if target_id is not None:
            query = query.where(AuditRow.target_id == target_id)
        async with self._tx() as s:
            rows = (await s.scalars(query)).all()
            return [
                AuditEntry(
                    id=r.id,
                    at=r.at,
                    actor=r.actor,
                    action=r.action,
                    target_type=r.target_type,
                    target_id=r.target_id,
                    details=dict(r.details or {}),
                )
                for r in rows
            ]

    async def pending_events(self, limit: int) -> list[OutboxEvent]:
        query = (
            select(OutboxRow)
            .where(OutboxRow.published_at.is_(None), OutboxRow.failed_at.is_(None))
            .order_by(OutboxRow.id)
            .limit(limit)
        )
        async with self._tx() as s:
            return [
                OutboxEvent(
                    id=r.id,
                    event_id=r.event_id,
                    channel=r.channel,
                    type=r.type,
                    aggregate_type=r.aggregate_type,
                    aggregate_id=r.aggregate_id,
                    data=dict(r.data or {}),
                    created_at=r.created_at,
                    attempts=r.attempts,
                )
                for r in (await s.scalars(query)).all()
            ]

    async def mark_published(self, ids: Sequence[int], at: datetime) -> None:
        if not ids:
            return
        async with self._tx() as s:
            await s.execute(
                update(OutboxRow).where(OutboxRow.id.in_(list(ids))).values(published_at=at)
            )

    async def mark_failed(self, id: int, error: str, at: datetime, *, final: bool) -> None:
        values: dict[str, object] = {
            "attempts": OutboxRow.attempts + 1,
            "last_error": error[:2000],
        }
        if final:
            values["failed_at"] = at
        async with self._tx() as s:
            await s.execute(update(OutboxRow).where(OutboxRow.id == id).values(**values))

    async def prune_outbox(self, published_before: datetime) -> int:
        async with self._tx() as s:
            result = await s.execute(
                delete(OutboxRow).where(OutboxRow.published_at < published_before)
            )
            return int(getattr(result, "rowcount", 0) or 0)

    async def add_audit(self, audit: AuditEntry) -> None:
        async with self._tx() as s:
            self._record(s, audit, [])

    async def ping(self) -> None:
        async with self._tx() as s:
            await s.execute(text("SELECT 1"))

    # -- helpers -------------------------------------------------------------------------

    @staticmethod
    def _record(s: AsyncSession, audit: AuditEntry, events: list[DomainEvent]) -> None:
        """The audit line and the events of a change, in the change's transaction."""
        s.add(
            AuditRow(
                at=audit.at,
                actor=audit.actor,
                action=audit.action,
                target_type=audit.target_type,
                target_id=audit.target_id,
                details=audit.details,
            )
        )
        s.add_all(
            OutboxRow(
                event_id=uuid.uuid4(),
                created_at=audit.at,
                attempts=0,
                channel=e.channel,
                type=e.type,
                aggregate_type=e.aggregate_type,
                aggregate_id=e.aggregate_id,
                data=e.data,
            )
            for e in events
        )

    @staticmethod
    async def _members(s: AsyncSession, role_name: str) -> list[uuid.UUID]:
        return list(
            (
                await s.scalars(
                    select(UserRoleRow.user_id).where(UserRoleRow.role_name == role_name)
                )
            ).all()
        )

    async def _states(
        self, s: AsyncSession, user_ids: Sequence[uuid.UUID]
    ) -> dict[uuid.UUID, UserState]:
        """The users with their effective permissions, as this transaction sees them.

        Their roles are locked (Postgres), so a concurrent change of one of those roles
        waits for this transaction or is waited for: the events both write carry the
        permissions as they are after both.
        """
        if not user_ids:
            return {}
        rows = list((await s.scalars(select(UserRow).where(UserRow.id.in_(list(user_ids))))).all())
        users = await self._load(s, rows)
        names = sorted({r for u in users for r in u.roles})
        role_perms: dict[str, set[str]] = {n: set() for n in names}
        if names:
            await s.execute(
                select(RoleRow.name)
                .where(RoleRow.name.in_(names))
                .order_by(RoleRow.name)
                .with_for_update(read=True)
            )
            for name, perm in (
                await s.execute(
                    select(RolePermissionRow.role_name, RolePermissionRow.permission).where(
                        RolePermissionRow.role_name.in_(names)
                    )
                )
            ).all():
                role_perms[name].add(perm)
        return {
            u.id: UserState(u, u.permissions.union(*(role_perms.get(r, set()) for r in u.roles)))
            for u in users
        }

    @staticmethod
    async def _require_roles(s: AsyncSession, names: Iterable[str]) -> None:
        wanted = set(names)
        if not wanted:
            return
        # Locked, as in `_states`: a role change and a membership change do not interleave.
        found = set(
            (
                await s.scalars(
                    select(RoleRow.name)
                    .where(RoleRow.name.in_(sorted(wanted)))
                    .order_by(RoleRow.name)
                    .with_for_update(read=True)
                )
            ).all()
        )
        if missing := wanted - found:
            raise RoleNotFound(missing)

    @staticmethod
    async def _load(s: AsyncSession, rows: list[UserRow]) -> list[User]:
        ids = [r.id for r in rows]
        perms: dict[uuid.UUID, set[str]] = {i: set() for i in ids}
        roles: dict[uuid.UUID, set[str]] = {i: set() for i in ids}
        if ids:
            for uid, perm in (
                await s.execute(
                    select(UserPermissionRow.user_id, UserPermissionRow.permission).where(
                        UserPermissionRow.user_id.in_(ids)
                    )
                )
            ).all():
                perms[uid].add(perm)
            for uid, role in (
                await s.execute(
                    select(UserRoleRow.user_id, UserRoleRow.role_name).where(
                        UserRoleRow.user_id.in_(ids)
                    )
                )
            ).all():
                roles[uid].add(role)
        return [
            User(
                id=r.id,
                username=r.username,
                email=r.email,
                password_hash=r.password_hash,
                disabled=r.disabled,
                created_at=r.created_at,
                updated_at=r.updated_at,
                last_login_at=r.last_login_at,
                permissions=frozenset(perms[r.id]),
                roles=frozenset(roles[r.id]),
            )
            for r in rows
        ]

    @staticmethod
    async def _load_roles(s: AsyncSession, rows: list[RoleRow]) -> list[Role]:
        names = [r.name for r in rows]
        perms: dict[str, set[str]] = {n: set() for n in names}
        if names:
            for name, perm in (
                await s.execute(
                    select(RolePermissionRow.role_name, RolePermissionRow.permission).where(
                        RolePermissionRow.role_name.in_(names)
                    )
                )
            ).all():
                perms[name].add(perm)
        return [
            Role(
                name=r.name,
                description=r.description,
                created_at=r.created_at,
                updated_at=r.updated_at,
                permissions=frozenset(perms[r.name]),
            )
            for r in rows
        ]
