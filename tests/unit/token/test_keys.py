"""Signing keys: RFC 9068 tokens, JWKS contents, rotation, encryption at rest."""

from __future__ import annotations

from datetime import timedelta

import jwt as pyjwt
import pytest

from authbus.token.keys import (
    KeyRing,
    NoSigningKey,
    SigningKey,
    generate_key,
    open_private_jwk,
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


def test_private_key_sealed_with_master_key() -> None:
    jwk = generate_key().as_dict(private=True)
    sealed = seal_private_jwk(jwk, "correct horse")
    assert str(jwk["d"]) not in sealed
    assert open_private_jwk(sealed, "correct horse") == jwk
    with pytest.raises(ValueError):
        open_private_jwk(sealed, "wrong")
    with pytest.raises(ValueError):
        open_private_jwk(sealed, None)
    assert open_private_jwk(seal_private_jwk(jwk, None), None) == jwk
