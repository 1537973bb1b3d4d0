"""/v1/service-accounts (SPEC §6): create (JSON or YAML), list, get, update, delete."""

from __future__ import annotations

from flask import g

from app.api import bp
from app.api.auth import creator_id, require_principal
from app.api.schemas import deleted_json, list_json, list_params, read_object, service_account_json
from app.services import service_accounts as account_service

FIELDS = {"name", "description", "scopes", "ip_whitelist"}


@bp.post("/service-accounts")
@require_principal("admin:write", action="service_accounts.create")
def create_service_account():
    body = read_object(allowed=FIELDS, required=("name", "scopes"), yaml_ok=True)
    principal = g.principal
    account, secret = account_service.create_service_account(
        org_id=principal.org_id,
        name=body["name"],
        scopes=body["scopes"],
        description=body.get("description"),
        ip_whitelist=body.get("ip_whitelist"),
        granter=principal,
        created_by=creator_id(principal),
        audit=g.audit,
    )
    return service_account_json(account, secret), 201


@bp.get("/service-accounts")
@require_principal("admin:read", action="service_accounts.list")
def list_service_accounts():
    limit, starting_after = list_params()
    page = account_service.list_service_accounts(org_id=g.principal.org_id, limit=limit,
                                                 starting_after=starting_after)
    return list_json(page, service_account_json)


@bp.get("/service-accounts/<account_id>")
@require_principal("admin:read", action="service_accounts.read")
def get_service_account(account_id: str):
    return service_account_json(account_service.get_service_account(org_id=g.principal.org_id,
                                                                    account_id=account_id))


@bp.patch("/service-accounts/<account_id>")
@require_principal("admin:write", action="service_accounts.update")
def update_service_account(account_id: str):
    body = read_object(allowed=FIELDS, yaml_ok=True)
    account = account_service.update_service_account(org_id=g.principal.org_id, account_id=account_id,
                                                     changes=body, granter=g.principal,
                                                     audit=g.audit)
    return service_account_json(account)


@bp.delete("/service-accounts/<account_id>")
@require_principal("admin:write", action="service_accounts.delete")
def delete_service_account(account_id: str):
    account = account_service.delete_service_account(org_id=g.principal.org_id, account_id=account_id,
                                                     audit=g.audit)
    return deleted_json(account.id, "service_account")
