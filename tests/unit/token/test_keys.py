"""Signing keys: RFC 9068 tokens, JWKS contents, rotation, encryption at rest."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from datetime import timedelta

import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from authbus.token.keys import (
    KeyRing,
    MasterKeyError,
    NoSigningKey,
    SigningKey,
    generate_key,
    open_private_jwk,
    parse_master_key,
    seal_private_jwk,
)
from authbus.token.models import utcnow

from .conftest import make_ring

CLAIMS = {"iss": "http://token.test", "sub": "u1", "aud": "authbus", "exp": 2_000_000_000}


@pytest.mark.parametrize("alg", ["ES256", "EdDSA"])
def test_signed_token_verifies_with_pyjwt(alg: str) -> None:
    ring = make_ring(alg)
    token = ring.sign_access_token(CLAIMS)
    header = pyjwt.get_unverified_header(token)
    assert header == {"alg": alg, "typ": "at+jwt", "kid": ring.active.kid}
    jwk = pyjwt.PyJWKSet.from_dict(ring.jwks())[ring.active.kid]
    claims = pyjwt.decode(token, jwk.key, algorithms=[alg], audience="authbus")
    assert claims["sub"] == "u1"


def test_jwks_has_only_public_parts() -> None:
    ring = make_ring()
    (jwk,) = ring.jwks()["keys"]
    assert "d" not in jwk
    assert jwk["use"] == "sig"
    assert jwk["alg"] == "ES256"


def test_retired_key_published_until_not_after() -> None:
    now = utcnow()
    old, live, gone = generate_key(), generate_key(), generate_key()
    ring = KeyRing(
        [
            SigningKey(
                str(old.kid), "ES256", old, now - timedelta(days=2), now, now + timedelta(minutes=5)
            ),
            SigningKey(str(live.kid), "ES256", live, now),
            SigningKey(
                str(gone.kid),
                "ES256",
                gone,
                now - timedelta(days=9),
                now - timedelta(days=8),
                now - timedelta(days=1),
            ),
        ]
    )
    kids = {k["kid"] for k in ring.jwks()["keys"]}
    assert kids == {old.kid, live.kid}
    assert ring.active.kid == live.kid


def test_no_active_key() -> None:
    with pytest.raises(NoSigningKey):
        KeyRing([]).active  # noqa: B018


MASTER_KEY = "ADTIHqNQ0HM7mKcxKrfAKV7oMkbVofMlwYGSlj7Gicw"
OTHER_MASTER_KEY = "YzaWWOWb0zLPr_yv-S0APFUI4MsnvpaZZ6Uu7i4mKxk"


def test_private_key_sealed_with_master_key() -> None:
    jwk = generate_key().as_dict(private=True)
    sealed = seal_private_jwk(jwk, MASTER_KEY)
    assert sealed.startswith("enc:v2:")
    assert str(jwk["d"]) not in sealed
    assert open_private_jwk(sealed, MASTER_KEY) == jwk
    with pytest.raises(MasterKeyError, match="does not decrypt"):
        open_private_jwk(sealed, OTHER_MASTER_KEY)
    with pytest.raises(MasterKeyError, match="no master key"):
        open_private_jwk(sealed, None)
    assert open_private_jwk(seal_private_jwk(jwk, None), None) == jwk


def test_every_sealing_uses_its_own_salt() -> None:
    jwk = generate_key().as_dict(private=True)
    assert seal_private_jwk(jwk, MASTER_KEY) != seal_private_jwk(jwk, MASTER_KEY)


@pytest.mark.parametrize(
    ("master_key", "says"),
    [("correct horse", "not base64"), ("c2hvcnQ=", "holds 5 bytes"), ("", "holds 0 bytes")],
)
def test_a_master_key_that_is_not_32_random_bytes_is_refused(master_key: str, says: str) -> None:
    with pytest.raises(MasterKeyError, match=says):
        parse_master_key(master_key)
    with pytest.raises(MasterKeyError, match="AUTHBUS_TOKEN__MASTER_KEY"):
        seal_private_jwk(generate_key().as_dict(private=True), master_key or "=")


def test_keys_sealed_in_the_legacy_format_still_open() -> None:
    # enc:v1: was AES-256-GCM under SHA-256 of the master key string, with no salt.
    jwk = generate_key().as_dict(private=True)
    nonce = os.urandom(12)
    aead = AESGCM(hashlib.sha256(b"an old passphrase").digest())
    sealed = aead.encrypt(nonce, json.dumps(jwk).encode(), b"authbus-signing-key")
    stored = "enc:v1:" + base64.urlsafe_b64encode(nonce + sealed).decode()

    assert open_private_jwk(stored, "an old passphrase") == jwk
    with pytest.raises(MasterKeyError):
        open_private_jwk(stored, "another passphrase")


def test_a_corrupt_sealed_key_is_a_clear_error() -> None:
    with pytest.raises(MasterKeyError, match="corrupt"):
        open_private_jwk("enc:v2:!!!", MASTER_KEY)
