"""Fixtures: the user service over the in-memory repository, cheap argon2, a fake clock."""

from __future__ import annotations

import pytest

from authbus.user.memory_repository import InMemoryUserRepository
from authbus.user.passwords import PasswordHasher
from authbus.user.service import UserService
from authbus.user.throttle import LoginThrottle


class FakeClock:
    """Monotonic seconds that only move when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def hasher() -> PasswordHasher:
    # Cheap parameters keep the suite fast; production defaults stay in UserSettings.
    return PasswordHasher(memory_kib=1024, time_cost=1, parallelism=1)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def throttle(clock: FakeClock) -> LoginThrottle:
    return LoginThrottle(free_attempts=3, base_delay_s=1.0, max_delay_s=60.0, clock=clock)


@pytest.fixture
def repo() -> InMemoryUserRepository:
    return InMemoryUserRepository()


@pytest.fixture
def service(
    repo: InMemoryUserRepository, hasher: PasswordHasher, throttle: LoginThrottle
) -> UserService:
    return UserService(repo, hasher, throttle=throttle)
