"""Digests of high-entropy secrets (API keys, client secrets, refresh tokens, codes).

These secrets carry 190+ bits of randomness, so an unkeyed SHA-256 is as strong as a
password hash against guessing and costs microseconds instead of tens of milliseconds.
"""

from __future__ import annotations

import hashlib
import hmac


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def matches(secret: str, expected_digest: str | None) -> bool:
    """Constant-time comparison of ``secret``'s digest with a stored one."""
    if not expected_digest:
        return False
    return hmac.compare_digest(digest(secret), expected_digest)
