"""PKCE (RFC 7636), S256 only: `plain` gives no protection against a leaked request."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

# RFC 7636 §4.1: code-verifier = 43*128unreserved
_VERIFIER = re.compile(r"^[A-Za-z0-9\-._~]{43,128}$")


def is_valid_verifier_syntax(value: str) -> bool:
    """RFC 7636 §4.1 (the same grammar is used for S256 challenges: 43 base64url chars)."""
    return bool(_VERIFIER.match(value))


def s256_challenge(verifier: str) -> str:
    """RFC 7636 §4.2: BASE64URL-ENCODE(SHA256(ASCII(code_verifier))), no padding."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def verify_s256(verifier: str, challenge: str) -> bool:
    """RFC 7636 §4.6: the server recomputes the challenge; constant-time comparison."""
    if not is_valid_verifier_syntax(verifier):
        return False
    return hmac.compare_digest(s256_challenge(verifier), challenge)
