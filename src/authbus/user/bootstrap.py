"""First-start setup of the user service: the administrator account.

    created = await ensure_admin(settings, "admin", password)

Called by `authbus up` / `authbus bootstrap` after migrations.
"""

from __future__ import annotations

from authbus.core.db import create_engine, create_sessionmaker
from authbus.core.settings import Settings
from authbus.user.errors import UsernameTaken
from authbus.user.passwords import PasswordHasher
from authbus.user.service import UserService
from authbus.user.sql_repository import SqlUserRepository
from authbus.user.throttle import LoginThrottle

ADMIN_PERMISSIONS = (
    "users:admin",
    "clients:admin",
    "events:admin",
    "events:publish",
    "events:read",
)


async def ensure_admin(settings: Settings, username: str, password: str) -> bool:
    """Create the administrator (admin permissions) unless a user of that name exists.

    True when the user was created now. The password must satisfy the password policy
    (`WeakPassword` otherwise); an existing user is left exactly as it is.
    """
    engine = create_engine(settings.database_url("user"))
    try:
        repo = SqlUserRepository(create_sessionmaker(engine))
        if await repo.find_user(username) is not None:
            return False
        service = UserService(
            repo,
            PasswordHasher.from_settings(settings.user),
            throttle=LoginThrottle(free_attempts=0, base_delay_s=0, max_delay_s=0),
        )
        try:
            await service.create_user(
                username=username,
                password=password,
                permissions=ADMIN_PERMISSIONS,
                actor="bootstrap",
            )
        except UsernameTaken:
            # Another process bootstrapping at the same moment won the race.
            return False
        return True
    finally:
        await engine.dispose()
