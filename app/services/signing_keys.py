"""RS256 signing keys: creation, rotation and a per-process cache (RFC 7517 JWKS).

Importing a PEM into a key object costs tens of milliseconds, so each process keeps the
current key object and re-reads the database only every ``REFRESH_SECONDS`` to notice a
rotation done by ``sensei rotate-signing-key`` on any host.
"""

from __future__ import annotations

import json
import os
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc.jwk import KeySet, RSAKey
from sqlalchemy import select

from app.extensions import db
from app.models import SigningKey
from app.models.base import random_base62, utcnow

REFRESH_SECONDS = 30
UNKNOWN_KID_RETRY_SECONDS = 5


class SigningKeyMissing(RuntimeError):
    """No usable signing key: run ``sensei init`` (or restore ``SENSEI_KEYS_DIR``)."""


def _pem_path(keys_dir: str, kid: str) -> Path:
    return Path(keys_dir) / f"{kid}.pem"


def create_signing_key(*, keys_dir: str) -> SigningKey:
    """Generate an RSA-2048 key, write its PEM (mode 0600) and publish it as the current key."""
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    kid = f"{utcnow():%Y%m%d}-{random_base62(8)}"
    pem = private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    Path(keys_dir).mkdir(parents=True, exist_ok=True)
    path = _pem_path(keys_dir, kid)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    public = RSAKey.import_key(pem).as_dict(private=False)
    public.update({"kid": kid, "use": "sig", "alg": "RS256"})
    record = SigningKey(kid=kid, public_jwk=json.dumps(public, sort_keys=True))
    db.session.add(record)
    db.session.commit()
    return record


def current_key_record() -> SigningKey | None:
    return db.session.scalar(
        select(SigningKey)
        .where(SigningKey.retired_at.is_(None))
        .order_by(SigningKey.created_at.desc(), SigningKey.kid.desc())
        .limit(1)
    )


def ensure_signing_key(*, keys_dir: str) -> tuple[SigningKey, bool]:
    """The current key, creating one if there is none. Raises if its PEM is missing."""
    record = current_key_record()
    if record is None:
        return create_signing_key(keys_dir=keys_dir), True
    if not _pem_path(keys_dir, record.kid).exists():
        raise SigningKeyMissing(f"signing key {record.kid} has no PEM in {keys_dir}")
    return record, False


def rotate_signing_key(*, keys_dir: str) -> tuple[SigningKey, list[str]]:
    """New key signs from now on; old keys stay published until their tokens expire."""
    old = list(db.session.scalars(select(SigningKey).where(SigningKey.retired_at.is_(None))))
    new = create_signing_key(keys_dir=keys_dir)
    now = utcnow()
    for record in old:
        record.retired_at = now
    db.session.commit()
    return new, [record.kid for record in old]


def published_records(*, access_token_ttl: int, now: datetime | None = None) -> list[SigningKey]:
    """Keys a verifier may still meet: the current ones and those retired less than a token ago."""
    now = now or utcnow()
    horizon = now - timedelta(seconds=access_token_ttl + 60)
    rows = db.session.scalars(select(SigningKey).order_by(SigningKey.created_at.desc()))
    return [r for r in rows if r.retired_at is None or r.retired_at > horizon]


def prune_signing_keys(*, keys_dir: str, access_token_ttl: int) -> list[str]:
    """Forget retired keys no token can still carry, and delete their PEMs."""
    keep = {r.kid for r in published_records(access_token_ttl=access_token_ttl)}
    removed = []
    for record in db.session.scalars(select(SigningKey)).all():
        if record.kid not in keep:
            removed.append(record.kid)
            db.session.delete(record)
            _pem_path(keys_dir, record.kid).unlink(missing_ok=True)
    db.session.commit()
    return removed


class KeyRing:
    """Per-process cache of the signing key object and the published key set."""

    def __init__(self, *, keys_dir: str, access_token_ttl: int) -> None:
        self.keys_dir = keys_dir
        self.access_token_ttl = access_token_ttl
        self._lock = threading.Lock()
        self._checked_at = 0.0
        self._kid: str | None = None
        self._signing_key: RSAKey | None = None
        self._jwks: dict = {"keys": []}
        self._verify_set: KeySet = KeySet([])
        self._unknown_kid_checked_at = 0.0

    def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._checked_at < REFRESH_SECONDS and self._signing_key is not None:
            return
        with self._lock:
            if now - self._checked_at < REFRESH_SECONDS and self._signing_key is not None:
                return
            records = published_records(access_token_ttl=self.access_token_ttl)
            current = next((r for r in records if r.retired_at is None), None)
            if current is None:
                raise SigningKeyMissing("no signing key: run `sensei init`")
            if current.kid != self._kid:
                path = _pem_path(self.keys_dir, current.kid)
                try:
                    pem = path.read_bytes()
                except FileNotFoundError:
                    raise SigningKeyMissing(f"signing key {current.kid} has no PEM in {self.keys_dir}") from None
                self._signing_key = RSAKey.import_key(pem, {"kid": current.kid, "alg": "RS256", "use": "sig"})
                self._kid = current.kid
            public = [json.loads(r.public_jwk) for r in records]
            self._jwks = {"keys": public}
            self._verify_set = KeySet([RSAKey.import_key(jwk) for jwk in public])
            self._checked_at = now

    def signing_key(self) -> tuple[str, RSAKey]:
        self._refresh()
        assert self._kid is not None and self._signing_key is not None
        return self._kid, self._signing_key

    def jwks(self) -> dict:
        self._refresh()
        return self._jwks

    def verify_set(self) -> KeySet:
        self._refresh()
        return self._verify_set

    def invalidate(self) -> None:
        self._checked_at = 0.0

    def knows(self, kid: object) -> bool:
        self._refresh()
        return isinstance(kid, str) and any(jwk.get("kid") == kid for jwk in self._jwks["keys"])

    def refresh_for_unknown_kid(self, kid: object) -> bool:
        """A token names a key we do not know: perhaps another host just rotated. Look again,
        at most once per ``UNKNOWN_KID_RETRY_SECONDS`` so garbage tokens cost no database work."""
        if self.knows(kid):
            return False
        now = time.monotonic()
        if now - self._unknown_kid_checked_at < UNKNOWN_KID_RETRY_SECONDS:
            return False
        self._unknown_kid_checked_at = now
        self.invalidate()
        return self.knows(kid)
