"""TokenValidator: RFC 9068 checks with a local key set (TokenMinter)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from joserfc.jwk import ECKey, OKPKey

from authbus.common import Caller, InvalidTokenError, TokenCheckUnavailable, TokenValidator
from tests.support.tokens import FakeClock, TokenMinter


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def minter(clock: FakeClock) -> TokenMinter:
    return TokenMinter(clock=clock)


async def test_accepts_a_good_token(minter: TokenMinter) -> None:
    token = minter.mint("user-7", ["orders:read", "orders:write"], client_id="web")
    caller = await minter.validator().validate(token)
    assert isinstance(caller, Caller)
    assert caller.subject == "user-7"
    assert caller.client_id == "web"
    assert caller.scopes == {"orders:read", "orders:write"}
    assert caller.token == token
    assert caller.claims["iss"] == minter.issuer


async def test_accepts_any_of_the_configured_audiences(minter: TokenMinter) -> None:
    token = minter.mint(aud=["other", "billing"])
    caller = await minter.validator(audiences=["authbus", "billing"]).validate(token)
    assert caller.subject == "user-1"


async def test_accepts_plain_jwt_type(minter: TokenMinter) -> None:
    await minter.validator().validate(minter.mint(headers={"typ": "JWT"}))


async def test_accepts_eddsa(minter: TokenMinter) -> None:
    key = OKPKey.generate_key("Ed25519", parameters={"kid": "ed"})
    minter.keys.append(key)
    token = minter.mint(headers={"alg": "EdDSA", "kid": "ed"}, key=key)
    await minter.validator().validate(token)


async def _rejected(validator: TokenValidator, token: str) -> str:
    with pytest.raises(InvalidTokenError) as caught:
        await validator.validate(token)
    return caught.value.description


async def test_rejects_alg_none(minter: TokenMinter) -> None:
    reason = await _rejected(minter.validator(), minter.forge_unsigned())
    assert "algorithm" in reason


async def test_rejects_hs256_signed_with_the_public_key(minter: TokenMinter) -> None:
    reason = await _rejected(minter.validator(), minter.forge_hs256_with_public_key())
    assert "algorithm" in reason


def test_refuses_to_be_configured_with_symmetric_or_none_algorithms(minter: TokenMinter) -> None:
    for algs in (["HS256"], ["none"], ["ES256", "HS512"]):
        with pytest.raises(ValueError, match="not allowed"):
            minter.validator(algorithms=algs)


async def test_rejects_an_algorithm_not_configured(minter: TokenMinter) -> None:
    key = OKPKey.generate_key("Ed25519", parameters={"kid": "ed"})
    minter.keys.append(key)
    token = minter.mint(headers={"alg": "EdDSA", "kid": "ed"}, key=key)
    await _rejected(minter.validator(algorithms=["ES256"]), token)


async def test_rejects_header_alg_that_does_not_match_the_key(minter: TokenMinter) -> None:
    # An ES256 key used with ES384 in the header: the key cannot verify that algorithm.
    key = ECKey.generate_key("P-384", parameters={"kid": "p384"})
    token = minter.mint(headers={"alg": "ES384", "kid": "p384"}, key=key)
    minter.keys.append(key)
    await _rejected(minter.validator(algorithms=["ES256"]), token)


async def test_rejects_expired(minter: TokenMinter, clock: FakeClock) -> None:
    token = minter.mint(ttl=60)
    clock.advance(60 + 29)
    await minter.validator().validate(token)  # within the 30 s leeway
    clock.advance(2)
    assert "expired" in await _rejected(minter.validator(), token)


async def test_rejects_not_yet_valid(minter: TokenMinter, clock: FakeClock) -> None:
    token = minter.mint(nbf=int(clock()) + 120)
    assert "not valid yet" in await _rejected(minter.validator(), token)


async def test_small_clock_skew_on_nbf_is_tolerated(minter: TokenMinter, clock: FakeClock) -> None:
    await minter.validator().validate(minter.mint(nbf=int(clock()) + 10))


async def test_rejects_wrong_issuer(minter: TokenMinter) -> None:
    token = minter.mint(iss="http://evil.test")
    assert "issuer" in await _rejected(minter.validator(), token)


async def test_rejects_wrong_audience(minter: TokenMinter) -> None:
    token = minter.mint(aud="billing")
    assert "audience" in await _rejected(minter.validator(), token)


@pytest.mark.parametrize("claim", ["jti", "exp", "sub", "iss"])
async def test_rejects_missing_required_claim(minter: TokenMinter, claim: str) -> None:
    removed: dict[str, Any] = {claim: None}
    token = minter.mint(**removed)
    await _rejected(minter.validator(), token)


async def test_rejects_empty_audience(minter: TokenMinter) -> None:
    await _rejected(minter.validator(), minter.mint(aud=[]))


async def test_rejects_wrong_type(minter: TokenMinter) -> None:
    token = minter.mint(headers={"typ": "id_token+jwt"})
    assert "access token" in await _rejected(minter.validator(), token)


async def test_rejects_unknown_kid(minter: TokenMinter) -> None:
    other = ECKey.generate_key("P-256", parameters={"kid": "stranger"})
    token = minter.mint(headers={"kid": "stranger"}, key=other)
    assert "unknown key" in await _rejected(minter.validator(), token)


async def test_rejects_bad_signature(minter: TokenMinter) -> None:
    other = ECKey.generate_key("P-256")
    token = minter.mint(key=other)  # header kid is the minter's, signature is not
    assert "signature" in await _rejected(minter.validator(), token)


@pytest.mark.parametrize(
    "garbage", ["", "abc", "a.b.c", "eyJhbGciOiJFUzI1NiJ9.e30", "x" * 20000, "...."]
)
async def test_rejects_garbage(minter: TokenMinter, garbage: str) -> None:
    await _rejected(minter.validator(), garbage)


async def test_rejects_malformed_scope(minter: TokenMinter) -> None:
    await _rejected(minter.validator(), minter.mint(scope={"a": 1}))


async def test_key_set_provider_may_be_async(minter: TokenMinter) -> None:
    async def keys() -> Any:
        return minter.key_set()

    validator = TokenValidator(issuer=minter.issuer, key_set=keys, clock=minter.clock)
    await validator.validate(minter.mint())


class _Revocation:
    def __init__(self, active: bool | None) -> None:
        self.active = active
        self.calls = 0

    async def is_active(self, token: str, claims: Mapping[str, Any]) -> bool:
        self.calls += 1
        if self.active is None:
            raise TokenCheckUnavailable("store down")
        return self.active


async def test_revocation_check_is_consulted(minter: TokenMinter) -> None:
    token = minter.mint()
    await minter.validator(revocation=_Revocation(True)).validate(token)
    assert "revoked" in await _rejected(minter.validator(revocation=_Revocation(False)), token)
    with pytest.raises(TokenCheckUnavailable):
        await minter.validator(revocation=_Revocation(None)).validate(token)


async def test_revocation_is_not_asked_about_forged_tokens(minter: TokenMinter) -> None:
    check = _Revocation(True)
    await _rejected(minter.validator(revocation=check), minter.forge_unsigned())
    assert check.calls == 0


def test_needs_exactly_one_key_source(minter: TokenMinter) -> None:
    with pytest.raises(ValueError, match="exactly one"):
        TokenValidator(issuer="x")
    with pytest.raises(ValueError, match="exactly one"):
        TokenValidator(issuer="x", jwks_url="http://x", key_set=minter.key_set)


async def test_rejects_a_key_published_for_another_algorithm_or_use(minter: TokenMinter) -> None:
    signer = ECKey.generate_key("P-256")
    public = signer.as_dict(private=False)
    minter.keys.extend(
        [
            ECKey.import_key({**public, "kid": "enc", "use": "enc"}),
            ECKey.import_key({**public, "kid": "alg", "alg": "ES384"}),
        ]
    )
    validator = minter.validator()
    await _rejected(validator, minter.mint(headers={"kid": "enc"}, key=signer))
    await _rejected(validator, minter.mint(headers={"kid": "alg"}, key=signer))
