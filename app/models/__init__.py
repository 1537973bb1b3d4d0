"""SQLAlchemy models, one module per aggregate. Importing this registers every table."""

from app.models.api_key import ApiKey
from app.models.audit import AuditChainHead, AuditEvent
from app.models.client import Consent, OAuthClient
from app.models.org import ROLES, TIERS, Organization, User, UserSession
from app.models.service_account import ServiceAccount
from app.models.token import (
    AuthorizationCode,
    DeviceAuthorization,
    RefreshToken,
    RevokedAccessToken,
    SigningKey,
)

__all__ = [
    "ApiKey",
    "AuditChainHead",
    "AuditEvent",
    "AuthorizationCode",
    "Consent",
    "DeviceAuthorization",
    "OAuthClient",
    "Organization",
    "RefreshToken",
    "RevokedAccessToken",
    "ROLES",
    "ServiceAccount",
    "SigningKey",
    "TIERS",
    "User",
    "UserSession",
]
