"""PKCE (RFC 7636): S256 only."""

from __future__ import annotations

from authbus.token.pkce import is_valid_verifier_syntax, s256_challenge, verify_s256

# RFC 7636 Appendix B
RFC_VERIFIER = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
RFC_CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def test_s256_matches_rfc7636_appendix_b() -> None:
    assert s256_challenge(RFC_VERIFIER) == RFC_CHALLENGE
    assert verify_s256(RFC_VERIFIER, RFC_CHALLENGE)


def test_wrong_verifier_fails() -> None:
    assert not verify_s256(RFC_VERIFIER[:-1] + "Y", RFC_CHALLENGE)


def test_plain_verifier_equal_to_challenge_fails() -> None:
    # Presenting the challenge itself (what `plain` would accept) must not pass.
    assert not verify_s256(RFC_CHALLENGE, RFC_CHALLENGE)


def test_verifier_syntax() -> None:
    assert is_valid_verifier_syntax("a" * 43)
    assert is_valid_verifier_syntax("a" * 128)
    assert not is_valid_verifier_syntax("a" * 42)
    assert not is_valid_verifier_syntax("a" * 129)
    assert not is_valid_verifier_syntax("a" * 42 + "+")
    assert not verify_s256("short", s256_challenge("short"))
