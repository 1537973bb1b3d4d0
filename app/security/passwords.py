"""Argon2id password hashing (RFC 9106) for people; never for high-entropy secrets."""

from __future__ import annotations

import threading

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

_hasher = PasswordHasher()  # argon2id, RFC 9106 "second recommended" parameters
# Verified against when the email is unknown, so both failures cost the same time.
_DUMMY_HASH = _hasher.hash("sensei-dummy-password-for-timing")

MIN_LENGTH = 12
MAX_LENGTH = 1024


def hash_password(password: str) -> str:
    return _hasher.hash(password)


class PasswordCheckBusy(RuntimeError):
    """Every password-check slot of this process is taken (a sign-in flood)."""


# One argon2 verification at a time per process: a flood of sign-ins then queues here and
# cannot take every worker thread away from the token endpoint.
_verification_slot = threading.BoundedSemaphore(1)


def verify_password(password_hash: str | None, password: str) -> bool:
    """Constant work whether or not the user exists. Raises PasswordCheckBusy after 5 s in line."""
    if not _verification_slot.acquire(timeout=5):
        raise PasswordCheckBusy()
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
    finally:
        _verification_slot.release()


def password_problem(password: str) -> str | None:
    if len(password) < MIN_LENGTH:
        return f"Password must be at least {MIN_LENGTH} characters"
    if len(password) > MAX_LENGTH:
        return f"Password must be at most {MAX_LENGTH} characters"
    return None
