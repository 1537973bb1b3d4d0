"""/v1/api-keys (SPEC §3): create, list, get, update, delete."""

from __future__ import annotations

from flask import g

from app.api import bp
from app.api.auth import creator_id, require_principal
from app.api.openapi import operation
from app.api.schemas import (
    ApiKeyCreate,
    ApiKeyList,
    ApiKeyObject,
    ApiKeyUpdate,
    Deleted,
    ListQuery,
    api_key_json,
    deleted_json,
    list_json,
    present,
    read_body,
    read_query,
)
from app.services import api_keys as key_service


@bp.post("/api-keys")
@operation("Create an API key", body=ApiKeyCreate, response=ApiKeyObject, status=201,
           description="The response is the only time the key itself (`key`) is shown.")
@require_principal("admin:write", action="api_keys.create")
def create_api_key():
    body = read_body(ApiKeyCreate)
    principal = g.principal
    key, plaintext = key_service.create_api_key(
        org_id=principal.org_id,
        name=body.name,
        scopes=body.scopes,
        environment=body.environment,
        expires_at=body.expires_at,
        ip_whitelist=body.ip_whitelist,
        service_account_id=body.service_account_id,
        granter=principal,
        created_by=creator_id(principal),
        audit=g.audit,
    )
    return api_key_json(key, plaintext), 201


@bp.get("/api-keys")
@operation("List API keys", query=ListQuery, response=ApiKeyList, description="Newest first.")
@require_principal("admin:read", action="api_keys.list")
def list_api_keys():
    query = read_query(ListQuery)
    page = key_service.list_api_keys(org_id=g.principal.org_id, viewer=g.principal, limit=query.limit,
                                     starting_after=query.starting_after)
    return list_json(page, api_key_json)


@bp.get("/api-keys/<key_id>")
@operation("Retrieve an API key", response=ApiKeyObject)
@require_principal("admin:read", action="api_keys.read")
def get_api_key(key_id: str):
    return api_key_json(key_service.get_api_key(org_id=g.principal.org_id, key_id=key_id, viewer=g.principal))


@bp.patch("/api-keys/<key_id>")
@operation("Update an API key", body=ApiKeyUpdate, response=ApiKeyObject,
           description="Only the fields sent change; scopes can only be narrowed.")
@require_principal("admin:write", action="api_keys.update")
def update_api_key(key_id: str):
    changes = present(read_body(ApiKeyUpdate))
    key = key_service.update_api_key(org_id=g.principal.org_id, key_id=key_id, changes=changes,
                                     granter=g.principal, audit=g.audit)
    return api_key_json(key)


@bp.delete("/api-keys/<key_id>")
@operation("Delete an API key", response=Deleted, description="It stops working at once.")
@require_principal("admin:write", action="api_keys.delete")
def delete_api_key(key_id: str):
    key = key_service.delete_api_key(org_id=g.principal.org_id, key_id=key_id, viewer=g.principal,
                                     audit=g.audit)
    return deleted_json(key.id, "api_key")
