"""GET /gateway/check (SPEC §14) over real HTTP: the /v1 decision for a proxy in front of another service."""

from __future__ import annotations

import pytest
import requests

from app.extensions import db
from tests.conftest import free_port, start_server, stop_server
from tests.factories import audit_written, bearer, make_api_key, make_client, make_org


def test_a_key_with_the_scope_passes_and_the_proxy_learns_who_it_is(live):
    org = make_org(tier="professional")
    key, plaintext = make_api_key(org, scopes="migrations:*")
    answer = requests.get(f"{live.url}/gateway/check", params={"scope": "migrations:read"},
                          headers=bearer(plaintext))
    assert answer.status_code == 200, answer.text
    assert answer.headers["X-Sensei-Org-Id"] == org.id
    assert answer.headers["X-Sensei-Principal-Type"] == "api_key"
    assert answer.headers["X-Sensei-Principal-Id"] == key.id
    assert answer.headers["X-Sensei-Scopes"].split() == ["migrations:read", "migrations:write"]
    assert answer.headers["X-RateLimit-Limit"] and answer.headers["X-Request-Id"]
    assert answer.json()["allowed"] is True
    audit_written(org.id, 1, action="gateway.check", actor_id=key.id, result="success")


def test_every_scope_asked_for_is_needed_and_the_403_names_the_missing_one(live):
    org = make_org()
    _, plaintext = make_api_key(org, scopes="migrations:read")
    refused = requests.get(f"{live.url}/gateway/check?scope=migrations:read&scope=migrations:write",
                           headers=bearer(plaintext))
    assert refused.status_code == 403
    error = refused.json()["error"]
    assert error["code"] == "forbidden" and "migrations:write" in error["message"]
    assert "X-Sensei-Org-Id" not in refused.headers
    audit_written(org.id, 1, action="gateway.check", result="failure")


def test_access_tokens_are_checked_as_on_v1(live):
    org = make_org()
    client = make_client(org, scopes="migrations:read")
    token = requests.post(f"{live.url}/oauth/token", auth=(client.client_id, client.client_secret),
                          data={"grant_type": "client_credentials"}).json()["access_token"]
    ok = requests.get(f"{live.url}/gateway/check?scope=migrations:read", headers=bearer(token))
    me = requests.get(f"{live.url}/v1/me", headers=bearer(token)).json()
    assert ok.status_code == 200 and ok.headers["X-Sensei-Org-Id"] == org.id
    assert (ok.headers["X-Sensei-Principal-Type"], ok.headers["X-Sensei-Principal-Id"]) == \
        (me["principal"]["type"], me["principal"]["id"])
    assert ok.headers["X-Sensei-Scopes"] == "migrations:read"
    requests.post(f"{live.url}/oauth/revoke", auth=(client.client_id, client.client_secret), data={"token": token})
    revoked = requests.get(f"{live.url}/gateway/check?scope=migrations:read", headers=bearer(token))
    assert revoked.status_code == 401 and revoked.json()["error"]["code"] == "unauthorized"


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer sk_live_" + "0" * 40},
                                     {"Authorization": "Basic Zm9vOmJhcg=="}])
def test_missing_or_bad_credentials_are_401_in_the_envelope(live, headers):
    answer = requests.get(f"{live.url}/gateway/check?scope=migrations:read", headers=headers)
    assert answer.status_code == 401 and answer.json()["error"]["code"] == "unauthorized"


def test_bad_scope_parameters_are_400(live):
    org = make_org()
    _, plaintext = make_api_key(org)
    answer = requests.get(f"{live.url}/gateway/check?scope=", headers=bearer(plaintext))
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "scope"


def test_the_allow_list_sees_the_address_the_trusted_proxy_forwarded(behind_one_proxy, ctx):
    org = make_org()
    key, plaintext = make_api_key(org, scopes="migrations:read")
    key.ip_whitelist = ["203.0.113.0/24"]
    db.session.commit()
    url = f"{behind_one_proxy.url}/gateway/check?scope=migrations:read"
    assert requests.get(url, headers=bearer(plaintext) | {"X-Forwarded-For": "203.0.113.9"}).status_code == 200
    refused = requests.get(url, headers=bearer(plaintext) | {"X-Forwarded-For": "198.51.100.9"})
    assert refused.status_code == 403 and "198.51.100.9" in refused.json()["error"]["message"]


def test_the_rate_limit_is_counted_and_a_429_carries_retry_after(settings_overrides, app, tmp_path_factory, ctx):
    port = free_port()
    server = start_server(settings_overrides | {"ISSUER": f"http://127.0.0.1:{port}", "REDIS_URL": ""},
                          port, tmp_path_factory.mktemp("gateway-limits") / "gunicorn.log")
    try:
        org = make_org(tier="free")  # 10 a second
        _, plaintext = make_api_key(org)
        answers = [requests.get(f"{server.url}/gateway/check", headers=bearer(plaintext)) for _ in range(40)]
        limited = [a for a in answers if a.status_code == 429]
        assert limited and all(a.status_code in (200, 429) for a in answers)
        assert limited[0].json()["error"]["code"] == "rate_limited" and int(limited[0].headers["Retry-After"]) >= 1
        assert limited[0].headers["X-RateLimit-Remaining"] == "0"
    finally:
        stop_server(server)
