"""RS256 signing keys: creation, rotation with the next key published ahead, and a
per-process cache (RFC 7517 JWKS).

Three kinds of key are published at once: the *current* key, which signs; the *next* key,
which will sign after the next rotation (so a JWKS fetched before a rotation already holds
it); and *retired* keys, until every token they signed has expired. Private keys live in
the database, sealed with ``SENSEI_SECRET_KEY`` (``app/security/key_encryption.py``): a
host needs only the database URL and the secret. PEM files of earlier versions in
``SENSEI_KEYS_DIR`` are sealed into the database by ``sensei init``.

Importing a key costs tens of milliseconds, so each process keeps the key objects and
re-reads the database only every ``REFRESH_SECONDS`` to notice a rotation made on any host.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from flask import current_app
from joserfc.jwk import KeySet, RSAKey
from sqlalchemy import select

from app.extensions import db
from app.models import SigningKey
from app.models.base import random_base62, utcnow
from app.security.key_encryption import UndecryptableKey, seal, unseal

REFRESH_SECONDS = 30
UNKNOWN_KID_RETRY_SECONDS = 5


class SigningKeyMissing(RuntimeError):
    """No usable signing key: run ``sensei init`` (or restore the database / the secret)."""


def _secret() -> str:
    return current_app.config["SETTINGS"].SECRET_KEY


def _pem_path(keys_dir: str, kid: str) -> Path:
    return Path(keys_dir) / f"{kid}.pem"


def _public_jwk(kid: str, pem: bytes) -> str:
    public = RSAKey.import_key(pem).as_dict(private=False)
    public.update({"kid": kid, "use": "sig", "alg": "RS256"})
    return json.dumps(public, sort_keys=True)


def create_signing_key(*, activate: bool) -> SigningKey:
    """Generate an RSA-2048 key, sealed in the database: the current key (``activate``) or the next."""
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    kid = f"{utcnow():%Y%m%d}-{random_base62(8)}"
    pem = private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    record = SigningKey(kid=kid, public_jwk=_public_jwk(kid, pem), private_key=seal(_secret(), kid, pem),
                        activated_at=utcnow() if activate else None)
    db.session.add(record)
    db.session.flush()
    return record


def _live() -> list[SigningKey]:
    """Keys not retired, newest first, the chosen current key locked against a concurrent rotation."""
    return list(db.session.scalars(select(SigningKey).where(SigningKey.retired_at.is_(None))
                                   .order_by(SigningKey.created_at.desc(), SigningKey.kid.desc())
                                   .with_for_update()))


def current_key_record() -> SigningKey | None:
    return db.session.scalar(
        select(SigningKey)
        .where(SigningKey.retired_at.is_(None), SigningKey.activated_at.is_not(None))
        .order_by(SigningKey.activated_at.desc(), SigningKey.kid.desc())
        .limit(1)
    )


def private_pem(record: SigningKey, secret: str | None = None) -> bytes:
    """The key's PEM, unsealed with ``secret`` (default: the current app's); SigningKeyMissing if it cannot be."""
    if record.private_key is None:
        raise SigningKeyMissing(f"signing key {record.kid} has no private key: run `sensei init` with its PEM in "
                                "SENSEI_KEYS_DIR")
    try:
        return unseal(secret or _secret(), record.kid, record.private_key)
    except UndecryptableKey as error:
        raise SigningKeyMissing(f"{error}: restore the SENSEI_SECRET_KEY the keys were made with") from None


def import_pem_keys(*, keys_dir: str) -> list[str]:
    """Seal the PEMs of earlier versions (``SENSEI_KEYS_DIR/<kid>.pem``) into the database."""
    imported = []
    for record in db.session.scalars(select(SigningKey).where(SigningKey.private_key.is_(None))):
        path = _pem_path(keys_dir, record.kid)
        if path.is_file():
            pem = path.read_bytes()
            if json.loads(_public_jwk(record.kid, pem))["n"] != json.loads(record.public_jwk)["n"]:
                raise SigningKeyMissing(f"{path} is not the private key of signing key {record.kid}")
            record.private_key = seal(_secret(), record.kid, pem)
            imported.append(record.kid)
    db.session.commit()
    return imported


def ensure_signing_key(*, keys_dir: str) -> tuple[SigningKey, bool]:
    """The current key, creating one if there is none, and a next key; PEMs of earlier
    versions are sealed into the database first. Raises if the current key cannot be used."""
    import_pem_keys(keys_dir=keys_dir)
    live = _live()
    current = next((r for r in live if r.activated_at is not None), None)
    created = current is None
    if current is None:
        current = create_signing_key(activate=True)
    if not any(r.activated_at is None for r in live):
        create_signing_key(activate=False)
    db.session.commit()
    private_pem(current)  # raises SigningKeyMissing when it cannot sign
    return current, created


def rotate_signing_key() -> tuple[SigningKey, list[str], SigningKey]:
    """The next key signs from now on (every process within ``REFRESH_SECONDS``), a new next
    key is published, and the previous current keys are retired (published until their
    tokens expire). Returns (new current, retired kids, new next)."""
    live = _live()
    now = utcnow()
    waiting = [r for r in live if r.activated_at is None]
    promoted = waiting[0] if waiting else create_signing_key(activate=False)
    retired = []
    for record in live:
        if record.activated_at is not None:
            record.retired_at = now
            retired.append(record.kid)
    for record in waiting[1:]:  # more than one next key (an interrupted rotation): keep the newest
        record.retired_at = now
    promoted.activated_at = now
    upcoming = create_signing_key(activate=False)
    db.session.commit()
    return promoted, retired, upcoming


def published_records(*, access_token_ttl: int, now: datetime | None = None) -> list[SigningKey]:
    """Keys a verifier may meet: the current and next keys and those retired less than a token ago."""
    now = now or utcnow()
    horizon = now - timedelta(seconds=access_token_ttl + 60)
    rows = db.session.scalars(select(SigningKey).order_by(SigningKey.created_at.desc()))
    return [r for r in rows if r.retired_at is None or r.retired_at > horizon]


def key_states(*, access_token_ttl: int) -> dict[str, list[str]]:
    """The published kids by state: current, next and retiring."""
    states: dict[str, list[str]] = {"current": [], "next": [], "retiring": []}
    for record in published_records(access_token_ttl=access_token_ttl):
        state = "retiring" if record.retired_at else "current" if record.activated_at else "next"
        states[state].append(record.kid)
    return states


def prune_signing_keys(*, access_token_ttl: int) -> list[str]:
    """Forget retired keys no token can still carry."""
    keep = {r.kid for r in published_records(access_token_ttl=access_token_ttl)}
    removed = []
    for record in db.session.scalars(select(SigningKey)).all():
        if record.kid not in keep:
            removed.append(record.kid)
            db.session.delete(record)
    db.session.commit()
    return removed


class KeyRing:
    """Per-process cache of the signing key object and the published key set."""

    def __init__(self, *, secret_key: str, access_token_ttl: int) -> None:
        self.secret_key = secret_key
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
            current = max((r for r in records if r.retired_at is None and r.activated_at is not None),
                          key=lambda r: (r.activated_at, r.kid), default=None)
            if current is None:
                raise SigningKeyMissing("no signing key: run `sensei init`")
            if current.kid != self._kid:
                pem = private_pem(current, self.secret_key)
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
