"""Authorization codes, refresh-token families and revoked access tokens."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.extensions import Base
from app.models.base import UTCDateTime, utcnow


class AuthorizationCode(Base):
    """RFC 6749 §4.1.2: single use, short-lived, bound to client, redirect URI and PKCE."""

    __tablename__ = "authorization_codes"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    code_digest: Mapped[str] = mapped_column(String(64), unique=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"))
    client_id: Mapped[str] = mapped_column(ForeignKey("oauth_clients.client_id"))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    redirect_uri: Mapped[str] = mapped_column(Text)
    scope: Mapped[str] = mapped_column(Text)
    code_challenge: Mapped[str | None] = mapped_column(String(128), default=None)
    code_challenge_method: Mapped[str | None] = mapped_column(String(10), default=None)
    # OpenID Connect: the request's nonce, and the sign-in the code came from.
    nonce: Mapped[str | None] = mapped_column(Text, default=None)
    auth_time: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    sid: Mapped[str | None] = mapped_column(String(64), default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    # What the one successful redemption issued, so that a replay can revoke it.
    issued_jti: Mapped[str | None] = mapped_column(String(64), default=None)
    issued_access_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    issued_family_id: Mapped[str | None] = mapped_column(String(32), default=None)

    # Authlib's AuthorizationCodeMixin
    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope

    # authlib.oidc.core.AuthorizationCodeMixin
    def get_nonce(self) -> str | None:
        return self.nonce

    def get_auth_time(self) -> int | None:
        return int(self.auth_time.timestamp()) if self.auth_time else None

    def get_acr(self) -> None:
        return None

    def get_amr(self) -> None:
        return None


class RefreshToken(Base):
    """One link of a rotation chain; every link of a grant shares ``family_id``."""

    __tablename__ = "refresh_tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    token_digest: Mapped[str] = mapped_column(String(64), unique=True)
    family_id: Mapped[str] = mapped_column(String(32), index=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"))
    client_id: Mapped[str] = mapped_column(ForeignKey("oauth_clients.client_id"), index=True)
    user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id"), index=True, default=None)
    scope: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    # OpenID Connect: the sign-in the grant came from (a refresh's ID token repeats them).
    auth_time: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    sid: Mapped[str | None] = mapped_column(String(64), default=None)
    # The access token issued together with this refresh token.
    access_jti: Mapped[str] = mapped_column(String(64))
    access_expires_at: Mapped[datetime] = mapped_column(UTCDateTime)

    # Authlib's TokenMixin
    def check_client(self, client) -> bool:
        return client.client_id == self.client_id

    def get_scope(self) -> str:
        return self.scope


class DeviceAuthorization(Base):
    """RFC 8628: a device's pending request. ``device_code`` is kept as a digest; the user
    code (8 characters, stored without the dash) is what a person types at /device."""

    __tablename__ = "device_authorizations"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    device_code_digest: Mapped[str] = mapped_column(String(64), unique=True)
    user_code: Mapped[str] = mapped_column(String(16), unique=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"))
    client_id: Mapped[str] = mapped_column(ForeignKey("oauth_clients.client_id"), index=True)
    scope: Mapped[str] = mapped_column(Text)
    interval: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    last_polled_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    # Set once by the person at /device: "approved" or "denied".
    decision: Mapped[str | None] = mapped_column(String(10), default=None)
    user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id"), default=None)
    scope_granted: Mapped[str | None] = mapped_column(Text, default=None)
    auth_time: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    sid: Mapped[str | None] = mapped_column(String(64), default=None)
    # Single use: set by the conditional UPDATE of the one poll that gets the tokens.
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)

    # Authlib's DeviceCredentialMixin
    def get_client_id(self) -> str:
        return self.client_id

    def get_scope(self) -> str:
        return self.scope_granted or self.scope

    def get_user_code(self) -> str:
        return self.user_code

    def is_expired(self) -> bool:
        return self.expires_at <= utcnow()


class RevokedAccessToken(Base):
    """Access tokens are self-contained JWTs; revoking one records its ``jti`` until it expires."""

    __tablename__ = "revoked_access_tokens"

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(32))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    revoked_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    reason: Mapped[str] = mapped_column(String(40))


class SigningKey(Base):
    """An RS256 signing key: *next* (published, not yet signing: ``activated_at`` null),
    *current* (signing) or *retired* (published until its tokens expire). The private key is
    sealed with ``SENSEI_SECRET_KEY`` (``app/security/key_encryption.py``)."""

    __tablename__ = "signing_keys"

    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    public_jwk: Mapped[str] = mapped_column(Text)
    private_key: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    activated_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
