"""Private signing keys at rest: AES-256-GCM under a key derived from ``SENSEI_SECRET_KEY``.

The encryption key is HKDF-SHA256 of the secret with its own purpose label, so it is never
the key that signs session cookies; each sealed key has a random 96-bit nonce and is bound
to its ``kid`` (the associated data), so a sealed key copied onto another row does not open.
Stored as ``v1.<nonce>.<ciphertext>`` (base64url).
"""

from __future__ import annotations

import base64
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

PURPOSE = b"sensei-auth signing-key encryption v1"
VERSION = "v1"


class UndecryptableKey(ValueError):
    """The sealed key does not open with this secret (another SENSEI_SECRET_KEY, or tampering)."""


def _aead(secret: str) -> AESGCM:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=PURPOSE).derive(secret.encode())
    return AESGCM(key)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def seal(secret: str, kid: str, plaintext: bytes) -> str:
    nonce = os.urandom(12)
    return ".".join((VERSION, _b64(nonce), _b64(_aead(secret).encrypt(nonce, plaintext, kid.encode()))))


def unseal(secret: str, kid: str, sealed: str) -> bytes:
    try:
        version, nonce, ciphertext = sealed.split(".")
        if version != VERSION:
            raise ValueError(version)
        return _aead(secret).decrypt(_unb64(nonce), _unb64(ciphertext), kid.encode())
    except (InvalidTag, ValueError) as error:
        raise UndecryptableKey(f"signing key {kid} does not decrypt with this SENSEI_SECRET_KEY") from error
