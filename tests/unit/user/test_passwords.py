"""Password hashing: argon2id for new hashes, bcrypt accepted, rehash on old parameters."""

from __future__ import annotations

import threading

import bcrypt

from authbus.core.settings import UserSettings
from authbus.user.passwords import PasswordHasher


async def test_new_hashes_are_argon2id_with_configured_parameters(hasher: PasswordHasher) -> None:
    stored = await hasher.hash("correct horse battery staple")
    assert stored.startswith("$argon2id$v=19$m=1024,t=1,p=1$")


async def test_right_password_verifies_and_needs_no_rehash(hasher: PasswordHasher) -> None:
    stored = await hasher.hash("correct horse battery staple")
    assert await hasher.verify("correct horse battery staple", stored) == (True, None)


async def test_wrong_password_does_not_verify(hasher: PasswordHasher) -> None:
    stored = await hasher.hash("correct horse battery staple")
    assert await hasher.verify("correct horse battery stapler", stored) == (False, None)


async def test_bcrypt_hash_is_accepted_and_upgraded_to_argon2id(hasher: PasswordHasher) -> None:
    legacy = bcrypt.hashpw(b"legacy password", bcrypt.gensalt(4)).decode()
    ok, new_hash = await hasher.verify("legacy password", legacy)
    assert ok
    assert new_hash is not None and new_hash.startswith("$argon2id$")
    assert await hasher.verify("legacy password", new_hash) == (True, None)


async def test_bcrypt_hash_of_long_password_verifies_like_bcrypt_always_did(
    hasher: PasswordHasher,
) -> None:
    # Old bcrypt libraries silently used the first 72 bytes.
    long_password = "x" * 100
    legacy = bcrypt.hashpw(long_password.encode()[:72], bcrypt.gensalt(4)).decode()
    ok, _ = await hasher.verify(long_password, legacy)
    assert ok


async def test_argon2_hash_with_older_parameters_is_rehashed() -> None:
    old = PasswordHasher(memory_kib=1024, time_cost=1, parallelism=1)
    new = PasswordHasher(memory_kib=2048, time_cost=2, parallelism=1)
    stored = await old.hash("correct horse battery staple")
    ok, new_hash = await new.verify("correct horse battery staple", stored)
    assert ok
    assert new_hash is not None and "m=2048,t=2,p=1" in new_hash


async def test_unrecognised_hash_never_verifies(hasher: PasswordHasher) -> None:
    assert await hasher.verify("anything", "plaintext-in-the-db") == (False, None)


async def test_hashing_and_verifying_run_off_the_event_loop(hasher: PasswordHasher) -> None:
    threads: list[int] = []
    inner = hasher._hash.hash

    def recording_hash(password: str | bytes, *, salt: bytes | None = None) -> str:
        threads.append(threading.get_ident())
        return inner(password, salt=salt)

    hasher._hash.hash = recording_hash  # type: ignore[method-assign]
    await hasher.hash("correct horse battery staple")
    assert threads and threading.get_ident() not in threads


async def test_dummy_verification_never_succeeds(hasher: PasswordHasher) -> None:
    await hasher.warm_up()
    await hasher.verify_dummy("whatever")  # returns nothing, raises nothing


def test_settings_defaults_are_owasp_grade() -> None:
    s = UserSettings()
    assert s.argon2_memory_kib >= 19 * 1024 and s.argon2_time_cost >= 2
    assert (
        PasswordHasher.from_settings(s)
        .hash_sync("correct horse battery staple")
        .startswith(f"$argon2id$v=19$m={s.argon2_memory_kib},t={s.argon2_time_cost},p=")
    )
