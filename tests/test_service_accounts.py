"""/v1/service-accounts over real HTTP: YAML and JSON, client credentials, keys, deletion."""

from __future__ import annotations

import requests
from oauthlib.oauth2 import BackendApplicationClient
from requests_oauthlib import OAuth2Session

from tests.factories import bearer, http_from, make_api_key, make_org
from tests.test_api_keys import envelope

SEED_YAML = """\
# service-account.yaml
name: ci-pipeline
description: 'GitHub Actions deployment pipeline'
scopes:
  - migrations:read
  - migrations:write
  - connections:read
ip_whitelist:
  - 192.30.252.0/22 # GitHub Actions
  - 185.199.108.0/22
"""
LOOPBACK_YAML = SEED_YAML.replace("192.30.252.0/22 # GitHub Actions", "127.0.0.1").replace("185.199.108.0/22", "::1")


def create(live, admin: str, body: str, content_type: str = "application/yaml") -> requests.Response:
    return requests.post(f"{live.url}/v1/service-accounts",
                         headers=bearer(admin) | {"Content-Type": content_type}, data=body.encode())


def client_credentials(live, account: dict, http=requests) -> requests.Response:
    return http.post(f"{live.url}/oauth/token", auth=(account["client_id"], account["client_secret"]),
                     data={"grant_type": "client_credentials"})


def test_seed_yaml_creates_an_account_whose_allow_list_applies(live):
    org = make_org()
    _, admin = make_api_key(org)
    for content_type in ("application/yaml", "application/x-yaml", "text/yaml", "application/json"):
        response = create(live, admin, SEED_YAML, content_type)  # JSON type: `--data-binary @file`
        assert response.status_code == 201, response.text
        account = response.json()
        assert account["id"].startswith("sa_") and account["object"] == "service_account"
        assert account["name"] == "ci-pipeline" and account["description"] == "GitHub Actions deployment pipeline"
        assert account["scopes"] == ["migrations:read", "migrations:write", "connections:read"]
        assert account["ip_whitelist"] == ["192.30.252.0/22", "185.199.108.0/22"]
        assert account["client_id"] and account["client_secret"]
    # We are not GitHub Actions: the account's allow-list refuses our address.
    refused = client_credentials(live, account)
    assert refused.status_code == 403 and refused.json()["error"] == "access_denied"
    shown = requests.get(f"{live.url}/v1/service-accounts/{account['id']}", headers=bearer(admin)).json()
    assert "client_secret" not in shown


def test_the_seeds_curl_d_at_file_gets_a_helpful_error(live):
    org = make_org()
    _, admin = make_api_key(org)
    # `curl -d @service-account.yaml` strips newlines before sending.
    stripped = SEED_YAML.replace("\n", "")
    error = envelope(create(live, admin, stripped, "application/json"), 400, "invalid_request")
    assert "--data-binary" in error["message"]


def test_json_account_gets_client_credentials_tokens_from_allowed_addresses(live):
    org = make_org()
    _, admin = make_api_key(org)
    account = requests.post(f"{live.url}/v1/service-accounts", headers=bearer(admin), json={
        "name": "deployer", "scopes": ["migrations:*"], "ip_whitelist": ["127.0.0.1"]}).json()
    session = OAuth2Session(client=BackendApplicationClient(client_id=account["client_id"]))
    token = session.fetch_token(f"{live.url}/oauth/token", client_id=account["client_id"],
                                client_secret=account["client_secret"])
    me = requests.get(f"{live.url}/v1/me", headers=bearer(token["access_token"])).json()
    assert me["principal"] == {"type": "service_account", "id": account["id"], "name": "deployer"}
    assert me["scopes"] == ["migrations:read", "migrations:write"]
    other = http_from("127.0.0.2")
    assert client_credentials(live, account, other).status_code == 403
    # A token carried to another machine is refused there too.
    envelope(other.get(f"{live.url}/v1/me", headers=bearer(token["access_token"])), 403, "forbidden")


def test_keys_of_an_account_are_bounded_by_it(live):
    org = make_org()
    _, admin = make_api_key(org)
    account = create(live, admin, LOOPBACK_YAML).json()
    envelope(requests.post(f"{live.url}/v1/api-keys", headers=bearer(admin), json={
        "name": "k", "scopes": ["admin:read"], "service_account_id": account["id"]}), 400, "invalid_request", "scopes")
    key = requests.post(f"{live.url}/v1/api-keys", headers=bearer(admin), json={
        "name": "k", "scopes": ["migrations:read"], "service_account_id": account["id"]}).json()
    assert key["service_account_id"] == account["id"]
    me = requests.get(f"{live.url}/v1/me", headers=bearer(key["key"])).json()
    assert me["principal"]["type"] == "service_account" and me["principal"]["id"] == account["id"]
    assert me["credential"] == {"type": "api_key", "id": key["id"]}
    envelope(http_from("127.0.0.2").get(f"{live.url}/v1/me", headers=bearer(key["key"])), 403, "forbidden")
    # Narrowing the account narrows its keys at once.
    requests.patch(f"{live.url}/v1/service-accounts/{account['id']}", headers=bearer(admin),
                   json={"scopes": ["connections:read"]})
    assert requests.get(f"{live.url}/v1/me", headers=bearer(key["key"])).json()["scopes"] == []


def test_deleting_an_account_revokes_its_keys_and_tokens(live):
    org = make_org()
    _, admin = make_api_key(org)
    account = create(live, admin, LOOPBACK_YAML).json()
    key = requests.post(f"{live.url}/v1/api-keys", headers=bearer(admin), json={
        "name": "k", "scopes": ["migrations:read"], "service_account_id": account["id"]}).json()["key"]
    token = client_credentials(live, account).json()["access_token"]
    assert requests.get(f"{live.url}/v1/me", headers=bearer(token)).status_code == 200
    deleted = requests.delete(f"{live.url}/v1/service-accounts/{account['id']}", headers=bearer(admin))
    assert deleted.json() == {"id": account["id"], "object": "service_account", "deleted": True}
    envelope(requests.get(f"{live.url}/v1/me", headers=bearer(key)), 401, "unauthorized")
    envelope(requests.get(f"{live.url}/v1/me", headers=bearer(token)), 401, "unauthorized")
    assert requests.post(f"{live.url}/oauth/introspect", headers=bearer(admin), data={"token": token}).json() == {"active": False}
    assert client_credentials(live, account).status_code == 401
    envelope(requests.get(f"{live.url}/v1/service-accounts/{account['id']}", headers=bearer(admin)), 404, "not_found")


def test_list_get_patch_and_tenancy(live):
    org, other = make_org(), make_org(name="Other")
    _, admin = make_api_key(org)
    _, other_admin = make_api_key(other)
    ids = [create(live, admin, LOOPBACK_YAML.replace("ci-pipeline", f"sa-{i}")).json()["id"] for i in range(3)]
    page = requests.get(f"{live.url}/v1/service-accounts?limit=2", headers=bearer(admin)).json()
    assert page["has_more"] is True and len(page["data"]) == 2
    rest = requests.get(f"{live.url}/v1/service-accounts?limit=2&starting_after={page['data'][-1]['id']}",
                        headers=bearer(admin)).json()
    assert {a["id"] for a in page["data"] + rest["data"]} == set(ids) and rest["has_more"] is False
    patched = requests.patch(f"{live.url}/v1/service-accounts/{ids[0]}", headers=bearer(admin),
                             json={"description": "nightly", "ip_whitelist": []})
    assert patched.json()["description"] == "nightly" and patched.json()["ip_whitelist"] == []
    foreign = f"{live.url}/v1/service-accounts/{ids[0]}"
    envelope(requests.get(foreign, headers=bearer(other_admin)), 404, "not_found")
    envelope(requests.delete(foreign, headers=bearer(other_admin)), 404, "not_found")
    assert requests.get(f"{live.url}/v1/service-accounts", headers=bearer(other_admin)).json()["data"] == []


def test_only_what_the_creator_holds(live):
    org = make_org()
    _, limited = make_api_key(org, scopes="admin:write admin:read migrations:read")
    error = envelope(requests.post(f"{live.url}/v1/service-accounts", headers=bearer(limited), json={
        "name": "x", "scopes": ["migrations:write"]}), 403, "forbidden")
    assert "migrations:write" in error["message"]


def test_hostile_yaml_is_refused(live):
    org = make_org()
    _, admin = make_api_key(org)
    bomb = 'a: &a ["x","x","x","x","x","x","x","x","x"]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nname: *b\nscopes: [migrations:read]\n'
    envelope(create(live, admin, bomb), 400, "invalid_request")
    envelope(create(live, admin, "name: !!python/object/apply:os.system ['true']\nscopes: [migrations:read]\n"),
             400, "invalid_request")
    envelope(create(live, admin, "name: !!str x\nscopes: [migrations:read]\n"), 400, "invalid_request")
    envelope(create(live, admin, "name: [unclosed\n"), 400, "invalid_request")
    envelope(create(live, admin, "name: x\nscopes: [migrations:read]\n" + "#" * (70 * 1024)), 413, "payload_too_large")
    envelope(create(live, admin, "- just\n- a list\n"), 400, "invalid_request")
    envelope(create(live, admin, "name: x\nscopes: [migrations:read]\nowner: me\n"), 400, "invalid_request", "owner")
    nested = "a:\n" + "".join("  " * i + "- \n" for i in range(1, 40))
    envelope(create(live, admin, nested), 400, "invalid_request")
