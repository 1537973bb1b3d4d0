"""/v1/service-accounts (SPEC §6): create (JSON or YAML), list, get, update, delete."""

from __future__ import annotations

from flask import g

from app.api import bp
from app.api.auth import creator_id, require_principal
from app.api.openapi import operation
from app.api.schemas import (
    Deleted,
    ListQuery,
    ServiceAccountCreate,
    ServiceAccountList,
    ServiceAccountObject,
    ServiceAccountUpdate,
    deleted_json,
    list_json,
    present,
    read_body,
    read_query,
    service_account_json,
)
from app.services import service_accounts as account_service


@bp.post("/service-accounts")
@operation("Create a service account", body=ServiceAccountCreate, yaml=True, response=ServiceAccountObject,
           status=201, description="JSON or YAML. The response is the only time `client_secret` is shown.")
@require_principal("admin:write", action="service_accounts.create")
def create_service_account():
    body = read_body(ServiceAccountCreate, yaml_ok=True)
    principal = g.principal
    account, secret = account_service.create_service_account(
        org_id=principal.org_id,
        name=body.name,
        scopes=body.scopes,
        description=body.description,
        ip_whitelist=body.ip_whitelist,
        granter=principal,
        created_by=creator_id(principal),
        audit=g.audit,
    )
    return service_account_json(account, secret), 201


@bp.get("/service-accounts")
@operation("List service accounts", query=ListQuery, response=ServiceAccountList)
@require_principal("admin:read", action="service_accounts.list")
def list_service_accounts():
    query = read_query(ListQuery)
    page = account_service.list_service_accounts(org_id=g.principal.org_id, limit=query.limit,
                                                 starting_after=query.starting_after)
    return list_json(page, service_account_json)


@bp.get("/service-accounts/<account_id>")
@operation("Retrieve a service account", response=ServiceAccountObject)
@require_principal("admin:read", action="service_accounts.read")
def get_service_account(account_id: str):
    return service_account_json(account_service.get_service_account(org_id=g.principal.org_id,
                                                                    account_id=account_id))


@bp.patch("/service-accounts/<account_id>")
@operation("Update a service account", body=ServiceAccountUpdate, yaml=True, response=ServiceAccountObject,
           description="Only the fields sent change; scopes can only be narrowed.")
@require_principal("admin:write", action="service_accounts.update")
def update_service_account(account_id: str):
    changes = present(read_body(ServiceAccountUpdate, yaml_ok=True))
    account = account_service.update_service_account(org_id=g.principal.org_id, account_id=account_id,
                                                     changes=changes, granter=g.principal, audit=g.audit)
    return service_account_json(account)


@bp.delete("/service-accounts/<account_id>")
@operation("Delete a service account", response=Deleted,
           description="Its API keys, client secret and tokens stop working at once.")
@require_principal("admin:write", action="service_accounts.delete")
def delete_service_account(account_id: str):
    account = account_service.delete_service_account(org_id=g.principal.org_id, account_id=account_id,
                                                     audit=g.audit)
    return deleted_json(account.id, "service_account")
