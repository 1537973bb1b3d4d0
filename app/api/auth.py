"""Bearer authentication, authorization and the audit entry of every /v1 call.

Each route names its audit action. The entry is written by the service inside the
transaction of a change, or here after a read; a refused or failed authenticated call is
recorded as a failure. Unauthenticated calls have no actor and are not recorded.
"""

from __future__ import annotations

from functools import wraps

from flask import g, request

from app import metrics
from app.errors import ApiError
from app.extensions import db
from app.oauth.tokens import resolve_access_token
from app.observability import principal_audit_context
from app.security import rate_limits
from app.security.rate_limits import Hit
from app.services import api_keys as key_service
from app.services import audit as audit_log
from app.services.audit import AuditContext
from app.services.principals import Principal, require_address_allowed, require_scope


def bearer_principal() -> tuple[Principal, Hit]:
    """The caller of a Bearer API key or access token, with its request counted against its
    rate limit; 401 if there is none that is valid.

    Failed attempts count against the client address's anonymous quota (429 when spent)."""
    try:
        return _authenticate()
    except ApiError:
        metrics.authentication_failed("api")
        if not rate_limits.enforce_anonymous(request.remote_addr).allowed:
            raise ApiError("rate_limited", "Too many requests from this address; retry later") from None
        raise


def _authenticate() -> tuple[Principal, Hit]:
    header = request.headers.get("Authorization", "")
    scheme, _, credential = header.partition(" ")
    credential = credential.strip()
    if scheme.lower() != "bearer" or not credential:
        raise ApiError("unauthorized", "Missing API key or access token: send Authorization: Bearer <credential>")
    if credential.startswith("sk_"):
        key, hit = key_service.resolve_api_key(credential, count=rate_limits.count)
        return key.principal, rate_limits.remember(hit)
    resolved = resolve_access_token(credential, count=rate_limits.count)
    if resolved is None:
        raise ApiError("unauthorized", "Invalid, expired or revoked access token")
    principal, hit = resolved
    return principal, rate_limits.remember(hit)


def audit_context(principal: Principal) -> AuditContext:
    return principal_audit_context(principal)


def require_principal(scope: str | None = None, *, action: str):
    """Authenticate, check address and ``scope``, run the view, and audit it as ``action``."""

    def decorator(view):
        @wraps(view)
        def wrapper(*args, **kwargs):
            principal, hit = bearer_principal()
            g.principal = principal
            g.audit = context = audit_context(principal)
            resource = next(iter(kwargs.values()), None)
            try:
                require_address_allowed(principal, request.remote_addr)
                if not hit.decision.allowed:
                    raise ApiError("rate_limited", "Rate limit exceeded for this credential; retry after the "
                                   "number of seconds in Retry-After")
                if scope is not None:
                    require_scope(principal, scope)
                response = view(*args, **kwargs)
            except ApiError:
                db.session.rollback()
                audit_log.record_now(context, org_id=principal.org_id, action=action,
                                     resource=resource, result="failure")
                raise
            if not context.recorded:
                audit_log.record_now(context, org_id=principal.org_id, action=action, resource=resource)
            return response

        wrapper.required_scope = scope  # type: ignore[attr-defined]  # for the OpenAPI document
        return wrapper

    return decorator


def creator_id(principal: Principal) -> str:
    """What ``created_by`` records: the user, or else the credential that acted."""
    return principal.id if principal.type == "user" else principal.credential_id
