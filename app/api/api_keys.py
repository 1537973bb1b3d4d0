"""/v1/api-keys (SPEC §3): create, list, get, update, delete."""

from __future__ import annotations

from flask import g

from app.api import bp
from app.api.auth import creator_id, require_principal
from app.api.schemas import (
    api_key_json,
    deleted_json,
    list_json,
    list_params,
    optional_string,
    optional_time,
    read_object,
)
from app.services import api_keys as key_service

CREATE_FIELDS = {"name", "scopes", "expires_at", "ip_whitelist", "service_account_id", "environment"}
UPDATE_FIELDS = {"name", "scopes", "expires_at", "ip_whitelist"}


@bp.post("/api-keys")
@require_principal("admin:write", action="api_keys.create")
def create_api_key():
    body = read_object(allowed=CREATE_FIELDS, required=("name", "scopes"))
    principal = g.principal
    key, plaintext = key_service.create_api_key(
        org_id=principal.org_id,
        name=body["name"],
        scopes=body["scopes"],
        environment=optional_string(body, "environment"),
        expires_at=optional_time(body, "expires_at"),
        ip_whitelist=body.get("ip_whitelist"),
        service_account_id=optional_string(body, "service_account_id"),
        granter=principal,
        created_by=creator_id(principal),
        audit=g.audit,
    )
    return api_key_json(key, plaintext), 201


@bp.get("/api-keys")
@require_principal("admin:read", action="api_keys.list")
def list_api_keys():
    limit, starting_after = list_params()
    page = key_service.list_api_keys(org_id=g.principal.org_id, viewer=g.principal, limit=limit,
                                     starting_after=starting_after)
    return list_json(page, api_key_json)


@bp.get("/api-keys/<key_id>")
@require_principal("admin:read", action="api_keys.read")
def get_api_key(key_id: str):
    return api_key_json(key_service.get_api_key(org_id=g.principal.org_id, key_id=key_id, viewer=g.principal))


@bp.patch("/api-keys/<key_id>")
@require_principal("admin:write", action="api_keys.update")
def update_api_key(key_id: str):
    body = read_object(allowed=UPDATE_FIELDS)
    if "expires_at" in body:
        body["expires_at"] = optional_time(body, "expires_at")
    key = key_service.update_api_key(org_id=g.principal.org_id, key_id=key_id, changes=body, granter=g.principal,
                                     audit=g.audit)
    return api_key_json(key)


@bp.delete("/api-keys/<key_id>")
@require_principal("admin:write", action="api_keys.delete")
def delete_api_key(key_id: str):
    key = key_service.delete_api_key(org_id=g.principal.org_id, key_id=key_id, viewer=g.principal,
                                     audit=g.audit)
    return deleted_json(key.id, "api_key")
