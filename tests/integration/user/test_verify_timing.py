"""POST /v1/credentials/verify takes the same time for unknown users and wrong passwords.

A statistical test, not a threshold: requests of both kinds run in randomly ordered pairs
(so load that drifts on a busy CI machine hits both kinds alike), and a randomization test
on the pairs' time differences asks whether the two kinds could be told apart. Real argon2
runs, at a small cost so the test stays quick.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pwdlib.hashers.argon2 import Argon2Hasher

from authbus.core.settings import Settings, UserSettings
from authbus.user.app import create_app
from tests.integration.user.conftest import PASSWORD
from tests.support.tokens import TokenMinter

PAIRS = 80
WARM_UP = 6
# Below this the two kinds are told apart: a true leak shows p far smaller, while equal
# timing fails by chance once in a thousand runs.
ALPHA = 0.001
SEED = 20261203


def sign_flip_p_value(differences: list[float], *, rounds: int = 10_000, seed: int = SEED) -> float:
    """Two-sided p-value of "the median difference is 0" by random sign flips.

    Exact for the design used here: each pair's order was chosen by a coin, so under the
    null hypothesis each difference is as likely to carry either sign.
    """
    observed = abs(statistics.median(differences))
    rng = random.Random(seed)
    as_extreme = sum(
        abs(statistics.median(d if rng.random() < 0.5 else -d for d in differences)) >= observed
        for _ in range(rounds)
    )
    return (as_extreme + 1) / (rounds + 1)


def test_sign_flip_test_tells_a_shift_from_noise() -> None:
    rng = random.Random(1)
    noise = [rng.gauss(0, 1) for _ in range(PAIRS)]
    assert sign_flip_p_value(noise, rounds=2000) > ALPHA
    assert sign_flip_p_value([d + 1.0 for d in noise], rounds=2000) < ALPHA


@pytest.fixture
def timing_settings(migrated_url: str, tmp_path: Path) -> Settings:
    # Real argon2id, cheap enough for 2 x PAIRS verifications in a few seconds.
    return Settings(
        data_dir=tmp_path,
        redis_url=None,
        user=UserSettings(
            database_url=migrated_url,
            argon2_memory_kib=4096,
            argon2_time_cost=2,
            # Every attempt is a failure by design; none may be throttled.
            throttle_free_attempts=1_000_000,
        ),
    )


@pytest.fixture
def verify_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every argon2 verification, recorded (the dummy one for unknown users included)."""
    calls: list[str] = []
    real_verify = Argon2Hasher.verify

    def counting_verify(self: Argon2Hasher, password: str | bytes, hash: str | bytes) -> bool:
        calls.append(str(hash))
        return real_verify(self, password, hash)

    monkeypatch.setattr(Argon2Hasher, "verify", counting_verify)
    return calls


@pytest.fixture
async def timing_client(
    timing_settings: Settings, minter: TokenMinter
) -> AsyncIterator[httpx.AsyncClient]:
    app: FastAPI = create_app(timing_settings, token_validator=minter.validator())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("10.1.2.3", 4321))
        async with httpx.AsyncClient(transport=transport, base_url="http://user.test") as c:
            yield c


async def test_unknown_user_and_wrong_password_take_the_same_time(
    timing_client: httpx.AsyncClient,
    admin: dict[str, str],
    verifier: dict[str, str],
    verify_calls: list[str],
) -> None:
    r = await timing_client.post(
        "/v1/users",
        json={"username": "alice", "password": PASSWORD, "permissions": ["orders:read"]},
        headers=admin,
    )
    assert r.status_code == 201, r.text

    async def verify(username: str) -> tuple[float, httpx.Response]:
        body: dict[str, Any] = {"username": username, "password": "not the password at all"}
        start = time.perf_counter()
        response = await timing_client.post("/v1/credentials/verify", json=body, headers=verifier)
        return time.perf_counter() - start, response

    unknown: Callable[[], str] = lambda: "nobody"  # noqa: E731
    wrong: Callable[[], str] = lambda: "alice"  # noqa: E731

    # Both paths verify one hash each: the unknown user's is the dummy.
    for kind in (unknown, wrong):
        verify_calls.clear()
        _, response = await verify(kind())
        assert response.status_code == 401
        assert response.json()["error"] == "invalid_credentials"
        assert len(verify_calls) == 1

    rng = random.Random(SEED)
    for _ in range(WARM_UP):
        await verify(unknown())
        await verify(wrong())
    differences: list[float] = []
    bodies: set[str] = set()
    for _ in range(PAIRS):
        unknown_first = rng.random() < 0.5
        first, second = (unknown, wrong) if unknown_first else (wrong, unknown)
        t1, r1 = await verify(first())
        t2, r2 = await verify(second())
        bodies.update((r1.text, r2.text))
        differences.append(t1 - t2 if unknown_first else t2 - t1)

    # Answered alike, word for word.
    assert len(bodies) == 1
    p = sign_flip_p_value(differences)
    median_ms = statistics.median(differences) * 1000
    assert p > ALPHA, f"unknown - wrong: median {median_ms:.3f} ms, p = {p:.5f}"
