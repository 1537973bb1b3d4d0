"""GET /v1/me: who the bearer is (SPEC §2). Needs no particular scope."""

from __future__ import annotations

from flask import g

from app.api import bp
from app.api.auth import require_principal
from app.api.openapi import operation
from app.api.schemas import Me
from app.services import principals as principal_service
from app.services import scopes as scope_rules
from app.services.principals import Principal


@bp.get("/me")
@operation("Who the caller is", response=Me,
           description="The organization, principal and credential behind the bearer; needs no scope.")
@require_principal(action="me.read")
def me():
    return describe(g.principal)


def describe(principal: Principal) -> Me:
    """The answer of GET /v1/me (its view and its hot path, ``app.hot_paths``)."""
    org = principal_service.organization_of(principal)
    body: Me = {
        "object": "principal",
        "organization": {"id": org.id, "name": org.name, "tier": org.tier},
        "principal": {
            "type": principal.type,
            "id": principal.id,
            "name": principal_service.display_name(principal),
        },
        "credential": {"type": principal.credential, "id": principal.credential_id},
        "scopes": scope_rules.to_string(principal.scopes).split(),
    }
    if principal.environment:
        body["environment"] = principal.environment
    if principal.client_id:
        body["client_id"] = principal.client_id
    return body
