"""The audit log (SPEC §10): what is recorded, the seed's request, filters, the hash chain."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from datetime import timedelta

import pytest
import requests
from flask import current_app
from sqlalchemy import text

from app.extensions import db
from app.models import AuditEvent
from app.models.base import utcnow
from app.services import audit as audit_log
from tests.factories import (
    REDIRECT_URI,
    Browser,
    audit_written,
    bearer,
    callback_params,
    eventually,
    make_api_key,
    make_client,
    make_org,
    make_user,
)
from tests.test_api_keys import envelope

UA = {"User-Agent": "sensei-sdk/1.0.0"}


def entries(live, admin: str, **params) -> list[dict]:
    response = requests.get(f"{live.url}/v1/audit-logs", headers=bearer(admin), params=params)
    assert response.status_code == 200, response.text
    return response.json()["data"]


def test_seed_request_and_entry_shape(live):
    org = make_org()
    admin_row, admin = make_api_key(org)
    created = requests.post(f"{live.url}/v1/api-keys", headers=bearer(admin) | UA,
                            json={"name": "CI Pipeline Key", "scopes": ["migrations:read"]}).json()
    # The seed's request, verbatim but for the host.
    response = requests.get(f"{live.url}/v1/audit-logs?limit=50", headers={"Authorization": f"Bearer {admin}"})
    assert response.status_code == 200
    body = response.json()
    assert set(body) >= {"data", "has_more"} and body["has_more"] is False
    entry = next(e for e in body["data"] if e["action"] == "api_keys.create")
    assert set(entry) == {"id", "timestamp", "actor", "action", "resource", "ip_address", "user_agent", "result"}
    assert entry["id"].startswith("log_") and entry["timestamp"].endswith("Z")
    assert entry["actor"] == {"type": "api_key", "id": admin_row.id, "name": "Test key"}
    assert entry["resource"] == created["id"] and entry["ip_address"] == "127.0.0.1"
    assert entry["user_agent"] == "sensei-sdk/1.0.0" and entry["result"] == "success"
    assert body["data"][0]["action"] == "api_keys.create"  # the list call is recorded after its own page
    assert created["key"] not in json.dumps(body)


def test_refusals_are_recorded_as_failures(live):
    org = make_org()
    _, admin = make_api_key(org)
    reader_row, reader = make_api_key(org, scopes="migrations:read")
    requests.post(f"{live.url}/v1/api-keys", headers=bearer(reader), json={"name": "x", "scopes": ["migrations:read"]})
    fenced_row, fenced = make_api_key(org, scopes="migrations:read")
    fenced_row.ip_whitelist = ["203.0.113.0/24"]
    db.session.commit()
    requests.get(f"{live.url}/v1/me", headers=bearer(fenced))
    audit_written(org.id, 2, result="failure")
    failures = entries(live, admin, result="failure")
    assert {(e["action"], e["actor"]["id"]) for e in failures} >= {("api_keys.create", reader_row.id),
                                                                   ("me.read", fenced_row.id)}


def test_oauth_and_login_events(live):
    org = make_org()
    _, admin = make_api_key(org)
    user = make_user(org)
    client = make_client(org)
    auth = (client.client_id, client.client_secret)
    cc = requests.post(f"{live.url}/oauth/token", auth=auth, data={"grant_type": "client_credentials"}).json()
    Browser(live.url).login(user.email, "wrong password!!")
    browser = Browser(live.url)
    browser.login(user.email)
    query = requests.compat.urlencode({"client_id": client.client_id, "redirect_uri": REDIRECT_URI,
                                       "response_type": "code", "scope": "migrations:read", "state": "s"})
    code = callback_params(browser.decide(browser.authorize(f"{live.url}/oauth/authorize?{query}")))["code"]
    token = requests.post(f"{live.url}/oauth/token", auth=auth, data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI}).json()
    first = token["refresh_token"]
    requests.post(f"{live.url}/oauth/token", auth=auth, data={"grant_type": "refresh_token", "refresh_token": first})
    requests.post(f"{live.url}/oauth/token", auth=auth, data={"grant_type": "refresh_token", "refresh_token": first})
    requests.post(f"{live.url}/oauth/revoke", headers=bearer(admin), data={"token": cc["access_token"]})
    requests.post(f"{live.url}/oauth/token", auth=auth, data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI})
    expected = {
        ("oauth.token.issue", "success", "client"),
        ("auth.login.failure", "failure", "user"),
        ("auth.login.success", "success", "user"),
        ("oauth.consent.grant", "success", "user"),
        ("oauth.token.refresh", "success", "client"),
        ("oauth.refresh_token.reuse_detected", "failure", "client"),
        ("oauth.token.revoke", "success", "api_key"),
        ("oauth.code.replay_detected", "failure", "client"),
    }

    def all_seen() -> None:  # standalone entries reach the table a moment after their response
        seen = {(e["action"], e["result"], e["actor"]["type"]) for e in entries(live, admin, limit=100)}
        assert expected <= seen, expected - seen

    eventually(all_seen)
    text_of_log = json.dumps(entries(live, admin, limit=100))
    for secret in (client.client_secret, first, token["access_token"], code, admin):
        assert secret not in text_of_log


def test_filters_pagination_and_validation(live):
    org = make_org()
    admin_row, admin = make_api_key(org)
    other_row, other = make_api_key(org, scopes="migrations:read")
    for _ in range(3):
        requests.get(f"{live.url}/v1/me", headers=bearer(other))
    audit_written(org.id, 3, actor_id=other_row.id)
    mine = entries(live, admin, actor_id=other_row.id)
    assert len(mine) == 3 and all(e["actor"]["id"] == other_row.id and e["action"] == "me.read" for e in mine)
    assert all(e["action"] == "me.read" for e in entries(live, admin, action="me.read"))
    assert entries(live, admin, action="no.such.action") == []
    page = requests.get(f"{live.url}/v1/audit-logs", headers=bearer(admin), params={"limit": 2}).json()
    assert len(page["data"]) == 2 and page["has_more"] is True
    following = entries(live, admin, limit=2, starting_after=page["data"][-1]["id"])
    assert following and following[0]["timestamp"] <= page["data"][-1]["timestamp"]
    assert {e["id"] for e in following}.isdisjoint({e["id"] for e in page["data"]})
    future = (utcnow() + timedelta(hours=1)).isoformat()
    past = (utcnow() - timedelta(hours=1)).isoformat()
    assert entries(live, admin, since=future) == []
    audit_written(org.id, 4)  # the reads above are recorded a moment after they are answered
    assert len(entries(live, admin, since=past, limit=100)) >= 4
    assert entries(live, admin, until=past) == []
    for bad in ("0", "101", "abc", "-5", ""):
        envelope(requests.get(f"{live.url}/v1/audit-logs", headers=bearer(admin), params={"limit": bad}),
                 400, "invalid_request", "limit")
    envelope(requests.get(f"{live.url}/v1/audit-logs", headers=bearer(admin), params={"since": "yesterday"}),
             400, "invalid_request", "since")
    envelope(requests.get(f"{live.url}/v1/audit-logs", headers=bearer(admin), params={"result": "maybe"}),
             400, "invalid_request", "result")
    envelope(requests.get(f"{live.url}/v1/audit-logs", headers=bearer(admin), params={"colour": "red"}),
             400, "invalid_request", "colour")
    envelope(requests.get(f"{live.url}/v1/audit-logs", headers=bearer(other)), 403, "forbidden")


def test_append_only_and_tenancy(live):
    org, stranger_org = make_org(), make_org(name="Other")
    _, admin = make_api_key(org)
    _, stranger = make_api_key(stranger_org)
    requests.get(f"{live.url}/v1/me", headers=bearer(admin))
    audit_written(org.id, 1, action="me.read")
    entry_id = entries(live, admin)[0]["id"]
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        assert requests.request(method, f"{live.url}/v1/audit-logs", headers=bearer(admin)).status_code == 405
        assert requests.request(method, f"{live.url}/v1/audit-logs/{entry_id}", headers=bearer(admin)).status_code in (404, 405)
    assert entry_id not in {e["id"] for e in entries(live, stranger, limit=100)}
    envelope(requests.get(f"{live.url}/v1/audit-logs", headers=bearer(stranger), params={"starting_after": entry_id}),
             400, "invalid_request", "starting_after")


def test_concurrent_appends_keep_one_unbroken_chain(live):
    org = make_org()
    org_id = org.id
    _, key = make_api_key(org)

    def hammer():
        session = requests.Session()
        for _ in range(10):
            assert session.get(f"{live.url}/v1/me", headers=bearer(key), timeout=30).status_code == 200

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    def chain_of_40():
        report = audit_log.verify_chain(org_id=org_id)
        assert report["problems"] == [] and report["entries"] == 40

    eventually(chain_of_40)


def _verify_cli(app) -> subprocess.CompletedProcess:
    settings = app.config["SETTINGS"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENSEI_")}
    env.update(SENSEI_DATABASE_URL=settings.DATABASE_URL, SENSEI_KEYS_DIR=settings.KEYS_DIR)
    return subprocess.run([sys.executable, "-c", "from app.cli import main; main()", "audit", "verify", "--json"],
                          env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("tamper", ["edit", "delete_middle", "delete_newest"])
def test_verify_detects_edited_and_deleted_entries(live, tamper):
    org = make_org()
    _, key = make_api_key(org)
    for _ in range(3):
        requests.get(f"{live.url}/v1/me", headers=bearer(key))
    audit_written(org.id, 3, action="me.read")
    clean = _verify_cli(live_app := current_app._get_current_object())
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert json.loads(clean.stdout)["problems"] == []
    rows = db.session.query(AuditEvent).filter_by(org_id=org.id).order_by(AuditEvent.seq).all()
    target = {"edit": rows[1], "delete_middle": rows[1], "delete_newest": rows[-1]}[tamper]
    if tamper == "edit":
        db.session.execute(text("UPDATE audit_events SET result = 'failure' WHERE id = :id"), {"id": target.id})
    else:
        db.session.execute(text("DELETE FROM audit_events WHERE id = :id"), {"id": target.id})
    db.session.commit()
    broken = _verify_cli(live_app)
    assert broken.returncode == 1
    problems = json.loads(broken.stdout)["problems"]
    assert [p["org_id"] for p in problems] == [org.id]
