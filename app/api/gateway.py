"""GET /gateway/check (SPEC §14): the /v1 authorization decision for a proxy in front of
another service — nginx ``auth_request``, Traefik ``forwardAuth``, Envoy ``ext_authz``.

The caller's ``Authorization`` header is checked exactly as for a /v1 call: the API key or
access token, its address allow-list (the client address the trusted proxies forwarded,
``SENSEI_TRUSTED_PROXIES``), its rate limit, every ``scope`` asked for; each check is an
audit entry (``gateway.check``). 200 says who the caller is in ``X-Sensei-*`` headers, for
the proxy to pass on; 401/403/429 is the /v1 error envelope with its headers.
"""

from __future__ import annotations

from flask import Blueprint, g, request

from app.api.auth import require_principal
from app.errors import ApiError
from app.services import scopes as scope_rules
from app.services.principals import Principal, require_scope

bp = Blueprint("gateway", __name__, url_prefix="/gateway")

MAX_SCOPES = 20


@bp.get("/check")
@require_principal(action="gateway.check")
def check():
    wanted = request.args.getlist("scope")
    if not scopes_well_formed(wanted):
        raise ApiError("invalid_request", f"scope: up to {MAX_SCOPES} scope names of 1-128 characters",
                       param="scope")
    principal = g.principal
    for scope in wanted:
        require_scope(principal, scope)
    return allowed(principal)


def scopes_well_formed(wanted: list[str]) -> bool:
    return len(wanted) <= MAX_SCOPES and all(s and len(s) <= 128 and "\x00" not in s for s in wanted)


def allowed(principal: Principal) -> tuple[dict, int, dict[str, str]]:
    """The 200 of a check every scope asked for passed (its view and its hot path)."""
    scopes = scope_rules.to_string(principal.scopes)
    body = {"object": "gateway_check", "allowed": True, "org_id": principal.org_id,
            "principal": {"type": principal.type, "id": principal.id}, "scopes": scopes.split()}
    headers = {
        "X-Sensei-Org-Id": principal.org_id,
        "X-Sensei-Principal-Type": principal.type,
        "X-Sensei-Principal-Id": principal.id,
        "X-Sensei-Scopes": scopes,
        "Cache-Control": "no-store",
    }
    return body, 200, headers
