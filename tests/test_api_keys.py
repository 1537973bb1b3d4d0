"""/v1/api-keys over real HTTP: the seed's requests verbatim, scopes, tenancy, bad input."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
import requests
from sqlalchemy import func, select

from app.extensions import db
from app.models import ApiKey
from app.models.base import utcnow
from app.services import api_keys as key_service
from tests.factories import bearer, http_from, make_api_key, make_org


def envelope(response, status: int, code: str, param: str | None = None) -> dict:
    assert response.status_code == status, (response.status_code, response.text[:400])
    error = response.json()["error"]
    assert error["code"] == code, error
    assert error["documentation_url"].endswith(f"/errors#{code}")
    if param is not None:
        assert error.get("param") == param, error
    return error


def test_seed_create_key_request(live):
    org = make_org()
    _, admin = make_api_key(org)
    # The seed's request, verbatim but for the host.
    response = requests.post(
        f"{live.url}/v1/api-keys",
        headers={"Authorization": f"Bearer {admin}", "Content-Type": "application/json"},
        data="""{
    "name": "CI/CD Pipeline Key",
    "scopes": ["migrations:read", "migrations:write"],
    "expires_at": "2027-01-01T00:00:00Z"
  }""",
    )
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["id"].startswith("key_") and created["object"] == "api_key"
    assert key_service.is_well_formed(created["key"]) and created["key"].startswith("sk_live_")
    assert created["scopes"] == ["migrations:read", "migrations:write"]
    assert created["expires_at"] == "2027-01-01T00:00:00Z" and created["environment"] == "live"
    assert created["ip_whitelist"] == [] and created["last_used_at"] is None and created["created_at"]
    me = requests.get(f"{live.url}/v1/me", headers=bearer(created["key"])).json()
    assert me["scopes"] == ["migrations:read", "migrations:write"]
    # The plaintext is never shown again.
    listed = requests.get(f"{live.url}/v1/api-keys", headers=bearer(admin)).json()
    one = requests.get(f"{live.url}/v1/api-keys/{created['id']}", headers=bearer(admin)).json()
    assert created["key"] not in json.dumps(listed) + json.dumps(one)
    assert one["redacted_key"] == f"sk_live_...{created['key'][-4:]}" and "key" not in one
    assert one["last_used_at"] is not None


@pytest.mark.parametrize("content_type", [None, "application/x-www-form-urlencoded"])
def test_seed_key_rotation_script(live, content_type):
    org = make_org()
    old_key_row, current = make_api_key(org)
    headers = bearer(current) | ({"Content-Type": content_type} if content_type else {})
    # `curl -d '{...}'` sends JSON labelled as a form (or, from other clients, unlabelled).
    created = requests.post(f"{live.url}/v1/api-keys", headers=headers,
                            data='{"name": "Rotated Key", "scopes": ["migrations:*"]}')
    assert created.status_code == 201, created.text
    new_key = created.json()["key"]
    assert created.json()["scopes"] == ["migrations:*"]
    deleted = requests.delete(f"{live.url}/v1/api-keys/{old_key_row.id}", headers=bearer(current))
    assert deleted.status_code == 200 and deleted.json() == {"id": old_key_row.id, "object": "api_key", "deleted": True}
    envelope(requests.get(f"{live.url}/v1/me", headers=bearer(current)), 401, "unauthorized")
    assert requests.get(f"{live.url}/v1/me", headers=bearer(new_key)).status_code == 200


def test_seed_ip_whitelist_patch_and_allow_list_enforcement(live):
    org = make_org()
    _, admin = make_api_key(org)
    key_row, key = make_api_key(org, scopes="migrations:read")
    # The seed's request, verbatim but for the host.
    patched = requests.patch(f"{live.url}/v1/api-keys/{key_row.id}",
                             headers={"Authorization": f"Bearer {admin}", "Content-Type": "application/json"},
                             data='{\n    "ip_whitelist": ["203.0.113.0/24", "198.51.100.0/24"]\n  }')
    assert patched.status_code == 200, patched.text
    assert patched.json()["ip_whitelist"] == ["203.0.113.0/24", "198.51.100.0/24"]
    error = envelope(requests.get(f"{live.url}/v1/me", headers=bearer(key)), 403, "forbidden")
    assert "127.0.0.1" in error["message"]
    requests.patch(f"{live.url}/v1/api-keys/{key_row.id}", headers=bearer(admin), json={"ip_whitelist": ["127.0.0.1"]})
    assert requests.get(f"{live.url}/v1/me", headers=bearer(key)).status_code == 200
    other_machine = http_from("127.0.0.2")
    envelope(other_machine.get(f"{live.url}/v1/me", headers=bearer(key)), 403, "forbidden")
    # A forged X-Forwarded-For from a direct client changes nothing (no trusted proxies).
    forged = other_machine.get(f"{live.url}/v1/me", headers=bearer(key) | {"X-Forwarded-For": "127.0.0.1"})
    envelope(forged, 403, "forbidden")
    requests.patch(f"{live.url}/v1/api-keys/{key_row.id}", headers=bearer(admin), json={"ip_whitelist": ["127.0.0.0/30", "::1"]})
    assert other_machine.get(f"{live.url}/v1/me", headers=bearer(key)).status_code == 200


def test_missing_scope_is_403_naming_it(live):
    org = make_org()
    _, reader = make_api_key(org, scopes="admin:read")
    error = envelope(requests.post(f"{live.url}/v1/api-keys", headers=bearer(reader),
                                   json={"name": "x", "scopes": ["migrations:read"]}), 403, "forbidden")
    assert "admin:write" in error["message"]
    _, none = make_api_key(org, scopes="migrations:read")
    assert "admin:read" in envelope(requests.get(f"{live.url}/v1/api-keys", headers=bearer(none)), 403, "forbidden")["message"]


def test_nobody_grants_more_than_they_hold(live):
    org = make_org()
    _, limited = make_api_key(org, scopes="admin:write migrations:read")
    error = envelope(requests.post(f"{live.url}/v1/api-keys", headers=bearer(limited),
                                   json={"name": "x", "scopes": ["migrations:*"]}), 403, "forbidden")
    assert "migrations:write" in error["message"]
    ok = requests.post(f"{live.url}/v1/api-keys", headers=bearer(limited), json={"name": "x", "scopes": ["migrations:read"]})
    assert ok.status_code == 201
    envelope(requests.post(f"{live.url}/v1/api-keys", headers=bearer(limited), json={"name": "x", "scopes": ["migrations:fly"]}),
             400, "invalid_request", "scopes")


def test_test_keys_create_and_see_only_test_keys(live):
    org = make_org()
    live_row, _ = make_api_key(org, scopes="migrations:read")
    _, test_admin = make_api_key(org, environment="test")
    envelope(requests.post(f"{live.url}/v1/api-keys", headers=bearer(test_admin),
                           json={"name": "x", "scopes": ["migrations:read"], "environment": "live"}), 403, "forbidden")
    created = requests.post(f"{live.url}/v1/api-keys", headers=bearer(test_admin), json={"name": "x", "scopes": ["migrations:read"]})
    assert created.status_code == 201 and created.json()["key"].startswith("sk_test_")
    listed = requests.get(f"{live.url}/v1/api-keys?limit=100", headers=bearer(test_admin)).json()["data"]
    assert {k["environment"] for k in listed} == {"test"}
    envelope(requests.delete(f"{live.url}/v1/api-keys/{live_row.id}", headers=bearer(test_admin)), 404, "not_found")


def test_expired_and_deleted_keys_are_401_at_once(live):
    org = make_org()
    row, key = make_api_key(org, expires_at=utcnow() + timedelta(days=1))
    assert requests.get(f"{live.url}/v1/me", headers=bearer(key)).status_code == 200
    row.expires_at = utcnow() - timedelta(seconds=1)
    db.session.commit()
    envelope(requests.get(f"{live.url}/v1/me", headers=bearer(key)), 401, "unauthorized")
    row2, key2 = make_api_key(org)
    _, admin = make_api_key(org)
    requests.delete(f"{live.url}/v1/api-keys/{row2.id}", headers=bearer(admin))
    envelope(requests.get(f"{live.url}/v1/me", headers=bearer(key2)), 401, "unauthorized")
    assert db.session.get(ApiKey, row2.id) is not None  # the record stays for the audit trail


def test_pagination(live):
    org = make_org()
    _, admin = make_api_key(org)
    ids = [make_api_key(org, scopes="migrations:read")[0].id for _ in range(5)]
    seen, cursor = [], None
    while True:
        url = f"{live.url}/v1/api-keys?limit=2" + (f"&starting_after={cursor}" if cursor else "")
        page = requests.get(url, headers=bearer(admin)).json()
        assert len(page["data"]) <= 2
        seen += [k["id"] for k in page["data"]]
        if not page["has_more"]:
            break
        cursor = page["data"][-1]["id"]
    assert set(ids) <= set(seen) and len(seen) == len(set(seen)) == 6
    for bad in ("0", "101", "abc", "-1", "1e3", "9" * 40):
        envelope(requests.get(f"{live.url}/v1/api-keys?limit={bad}", headers=bearer(admin)), 400, "invalid_request", "limit")
    other_row, _ = make_api_key(make_org(name="Other"))
    envelope(requests.get(f"{live.url}/v1/api-keys?starting_after={other_row.id}", headers=bearer(admin)),
             400, "invalid_request", "starting_after")


def test_other_orgs_keys_are_404_and_never_listed(live):
    org, other = make_org(), make_org(name="Other")
    _, admin = make_api_key(org)
    foreign, foreign_key = make_api_key(other)
    url = f"{live.url}/v1/api-keys/{foreign.id}"
    envelope(requests.get(url, headers=bearer(admin)), 404, "not_found")
    envelope(requests.patch(url, headers=bearer(admin), json={"name": "mine"}), 404, "not_found")
    envelope(requests.delete(url, headers=bearer(admin)), 404, "not_found")
    listed = requests.get(f"{live.url}/v1/api-keys?limit=100", headers=bearer(admin)).json()["data"]
    assert foreign.id not in {k["id"] for k in listed}
    assert requests.get(f"{live.url}/v1/me", headers=bearer(foreign_key)).status_code == 200


def test_patch_narrows_scopes_only_and_updates_fields(live):
    org = make_org()
    _, admin = make_api_key(org)
    row, _ = make_api_key(org, scopes="migrations:*")
    url = f"{live.url}/v1/api-keys/{row.id}"
    envelope(requests.patch(url, headers=bearer(admin), json={"scopes": ["migrations:read", "billing:read"]}),
             400, "invalid_request", "scopes")
    narrowed = requests.patch(url, headers=bearer(admin), json={"scopes": ["migrations:read"], "name": "Renamed",
                                                              "expires_at": "2030-01-01T00:00:00+00:00"})
    assert narrowed.status_code == 200
    assert narrowed.json()["scopes"] == ["migrations:read"] and narrowed.json()["name"] == "Renamed"
    assert narrowed.json()["expires_at"] == "2030-01-01T00:00:00Z"
    cleared = requests.patch(url, headers=bearer(admin), json={"expires_at": None})
    assert cleared.json()["expires_at"] is None


BAD_BODIES = [
    ('{"name": "x", "scopes": ["migrations:read"], "colour": "red"}', "colour"),
    ('{"name": "x", "scope": ["migrations:read"]}', "scope"),
    ('{"name": 5, "scopes": ["migrations:read"]}', "name"),
    ('{"name": "' + "n" * 201 + '", "scopes": ["migrations:read"]}', "name"),
    ('{"name": "a\\u0000b", "scopes": ["migrations:read"]}', "name"),
    ('{"name": "x", "scopes": "migrations:nope"}', "scopes"),
    ('{"name": "x", "scopes": [1, 2]}', "scopes"),
    ('{"name": "x", "scopes": []}', "scopes"),
    ('{"name": "x", "scopes": {"a": 1}}', "scopes"),
    ('{"name": "x", "scopes": ["migrations:read"], "expires_at": "2001-01-01T00:00:00Z"}', "expires_at"),
    ('{"name": "x", "scopes": ["migrations:read"], "expires_at": "tomorrow"}', "expires_at"),
    ('{"name": "x", "scopes": ["migrations:read"], "expires_at": "2030-01-01T00:00:00"}', "expires_at"),
    ('{"name": "x", "scopes": ["migrations:read"], "expires_at": 1893456000}', "expires_at"),
    ('{"name": "x", "scopes": ["migrations:read"], "ip_whitelist": ["10.0.0.0/33"]}', "ip_whitelist"),
    ('{"name": "x", "scopes": ["migrations:read"], "ip_whitelist": "10.0.0.1"}', "ip_whitelist"),
    ('{"name": "x", "scopes": ["migrations:read"], "ip_whitelist": ["example.com"]}', "ip_whitelist"),
    ('{"name": "x", "scopes": ["migrations:read"], "environment": "prod"}', "environment"),
    ('{"name": "x", "scopes": ["migrations:read"], "service_account_id": "sa_nope"}', "service_account_id"),
    ('{"scopes": ["migrations:read"]}', "name"),
    ('{"name": "x"}', "scopes"),
    ('["name", "x"]', None),
    ('"just a string"', None),
    ("{not json", None),
    ("", None),
    ("[" * 100000 + "]" * 100000, None),
    ('{"name": "x", "scopes": ["migrations:read"], "n": NaN}', None),
]


@pytest.mark.parametrize("body, param", BAD_BODIES)
def test_bad_bodies_are_400_naming_the_param_and_change_nothing(live, body, param):
    org = make_org()
    _, admin = make_api_key(org)
    before = db.session.scalar(select(func.count()).select_from(ApiKey))
    response = requests.post(f"{live.url}/v1/api-keys", headers=bearer(admin) | {"Content-Type": "application/json"},
                             data=body.encode())
    error = envelope(response, 400, "invalid_request", param)
    if param:
        assert param in error["message"] or param == error["param"]
    assert db.session.scalar(select(func.count()).select_from(ApiKey)) == before


def test_invalid_allow_list_entry_is_named(live):
    org = make_org()
    _, admin = make_api_key(org)
    error = envelope(requests.post(f"{live.url}/v1/api-keys", headers=bearer(admin),
                                   json={"name": "x", "scopes": ["migrations:read"], "ip_whitelist": ["10.0.0.1", "300.1.1.1"]}),
                     400, "invalid_request", "ip_whitelist")
    assert "300.1.1.1" in error["message"]


def test_non_utf8_and_wrong_media_type(live):
    org = make_org()
    _, admin = make_api_key(org)
    url = f"{live.url}/v1/api-keys"
    envelope(requests.post(url, headers=bearer(admin) | {"Content-Type": "application/json"},
                           data=b'{"name": "\xff\xfe", "scopes": ["migrations:read"]}'), 400, "invalid_request")
    envelope(requests.post(url, headers=bearer(admin) | {"Content-Type": "text/plain"}, data=b"{}"),
             415, "unsupported_media_type")
    envelope(requests.post(url, headers=bearer(admin) | {"Content-Type": "application/yaml"}, data=b"name: x"),
             415, "unsupported_media_type")
    envelope(requests.post(url, headers=bearer(admin) | {"Content-Type": "application/json"}, data=b"x" * (1024 * 1024 + 10)),
             413, "payload_too_large")


@pytest.mark.parametrize("path_id", ["nope", "key_" + "x" * 300, "key_%00abc", "%FF%FE", "..%2F..%2Fetc"])
def test_garbage_path_ids_are_404(live, path_id):
    org = make_org()
    _, admin = make_api_key(org)
    for method in ("GET", "PATCH", "DELETE"):
        response = requests.request(method, f"{live.url}/v1/api-keys/{path_id}", headers=bearer(admin),
                                    json={"name": "x"} if method == "PATCH" else None)
        envelope(response, 404, "not_found")
