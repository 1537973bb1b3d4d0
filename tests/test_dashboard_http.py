"""The dashboard over real HTTP: every page, role visibility, CSRF, errors next to fields.
(tests/test_browser_dashboard.py drives the same pages in Chromium.)"""

from __future__ import annotations

import re

import pytest
import requests

from app.services import audit as audit_log
from tests.factories import (
    PASSWORD,
    Browser,
    audit_written,
    bearer,
    make_api_key,
    make_client,
    make_org,
    make_user,
)

PAGES = ["/dashboard/api-keys", "/dashboard/apps", "/dashboard/service-accounts", "/dashboard/audit",
         "/dashboard/authorized-apps", "/dashboard/organization", "/dashboard/members"]


def signed_in(live, user, password: str = PASSWORD) -> Browser:
    browser = Browser(live.url)
    assert browser.login(user.email, password).status_code == 303
    return browser


def post_form(browser: Browser, path: str, data: dict, page_path: str | None = None, files=None):
    page = browser.http.get(f"{browser.base_url}{page_path or path}")
    assert page.status_code == 200, page.text[:300]
    return browser.http.post(f"{browser.base_url}{path}", data={"csrf_token": browser.csrf(page.text)} | data,
                             files=files, allow_redirects=False)


def test_signed_out_goes_to_login_and_back(live):
    response = requests.get(f"{live.url}/dashboard/api-keys", allow_redirects=False)
    assert response.status_code == 302 and "/login?next=" in response.headers["Location"]


@pytest.mark.parametrize("role, visible", [
    ("owner", PAGES), ("admin", PAGES),
    ("developer", PAGES[:-1]), ("viewer", PAGES[:-1]),
])
def test_every_page_renders_with_strict_headers_and_roles_see_only_what_they_may_do(live, role, visible):
    org = make_org()
    browser = signed_in(live, make_user(org, role))
    for path in PAGES:
        response = browser.http.get(f"{live.url}{path}", allow_redirects=False)
        if path in visible:
            assert response.status_code == 200, (path, response.status_code)
            assert response.headers["X-Frame-Options"] == "DENY"
            assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
        else:
            assert response.status_code == 403, path
    keys_page = browser.http.get(f"{live.url}/dashboard/api-keys").text
    assert ("Create New Key" in keys_page) is (role in ("owner", "admin"))
    nav = browser.http.get(f"{live.url}/dashboard/authorized-apps").text
    assert ("Members" in nav) is (role in ("owner", "admin"))
    if role not in ("owner", "admin"):
        assert browser.http.get(f"{live.url}/dashboard/api-keys/new").status_code == 403


def test_create_a_key_shown_once_that_works_then_revoke_it(live):
    org = make_org()
    browser = signed_in(live, make_user(org))
    created = post_form(browser, "/dashboard/api-keys/new", {
        "name": "CI key", "environment": "test", "scopes": ["migrations:read", "migrations:write"]})
    assert created.status_code == 200 and "won't be shown again" in created.text
    key = re.search(r'value="(sk_test_[0-9A-Za-z]+)"', created.text).group(1)
    me = requests.get(f"{live.url}/v1/me", headers=bearer(key)).json()
    assert me["environment"] == "test" and me["scopes"] == ["migrations:read", "migrations:write"]
    listing = browser.http.get(f"{live.url}/dashboard/api-keys").text
    assert key not in listing and f"sk_test_...{key[-4:]}" in listing
    key_id = re.search(r'data-key-id="(key_[0-9A-Za-z]+)"', listing).group(1)
    revoked = post_form(browser, f"/dashboard/api-keys/{key_id}/revoke", {})
    assert revoked.status_code == 303
    assert requests.get(f"{live.url}/v1/me", headers=bearer(key)).status_code == 401


def test_errors_are_shown_next_to_the_field(live):
    org = make_org()
    browser = signed_in(live, make_user(org))
    response = post_form(browser, "/dashboard/api-keys/new", {
        "name": "x", "environment": "live", "scopes": ["migrations:read"], "ip_whitelist": "10.0.0.0/8\nnot-an-ip"})
    assert response.status_code == 400
    assert re.search(r'id="ip_whitelist-error"[^>]*>[^<]*not-an-ip', response.text)
    no_scopes = post_form(browser, "/dashboard/api-keys/new", {"name": "x", "environment": "live"})
    assert no_scopes.status_code == 400 and "at least one scope" in no_scopes.text
    forged = browser.http.post(f"{live.url}/dashboard/api-keys/new", data={"name": "x", "scopes": ["migrations:read"]})
    assert forged.status_code == 400  # no CSRF token


def test_edit_a_key(live):
    org = make_org()
    browser = signed_in(live, make_user(org))
    row, key = make_api_key(org, scopes="migrations:read")
    edited = post_form(browser, f"/dashboard/api-keys/{row.id}/edit",
                       {"name": "Renamed", "ip_whitelist": "127.0.0.1", "expires_at": "2030-01-31"})
    assert edited.status_code == 303
    listing = browser.http.get(f"{live.url}/dashboard/api-keys").text
    assert "Renamed" in listing and "127.0.0.1" in listing and "2030-01-31 23:59 UTC" in listing


def test_register_rotate_and_delete_an_app(live):
    org = make_org()
    browser = signed_in(live, make_user(org))
    created = post_form(browser, "/dashboard/apps/new", {
        "name": "My web app", "redirect_uris": "https://your-app.com/callback", "client_type": "confidential",
        "scopes": ["migrations:read"]})
    assert created.status_code == 200
    client_id = re.search(r'id="client-id" value="(cl_[0-9A-Za-z]+)"', created.text).group(1)
    secret = re.search(r'id="client-secret" value="(cs_[0-9A-Za-z]+)"', created.text).group(1)
    token = lambda s: requests.post(f"{live.url}/oauth/token", auth=(client_id, s),  # noqa: E731
                                    data={"grant_type": "client_credentials"}).status_code
    assert token(secret) == 200
    rotated = post_form(browser, f"/dashboard/apps/{client_id}/rotate", {})
    new_secret = re.search(r'id="client-secret" value="(cs_[0-9A-Za-z]+)"', rotated.text).group(1)
    assert token(secret) == 401 and token(new_secret) == 200
    assert post_form(browser, f"/dashboard/apps/{client_id}/delete", {}).status_code == 303
    assert token(new_secret) == 401


def test_service_account_from_the_yaml_file(live):
    org = make_org()
    browser = signed_in(live, make_user(org))
    from tests.test_service_accounts import SEED_YAML

    page = browser.http.get(f"{live.url}/dashboard/service-accounts/new")
    tokens = re.findall(r'name="(?:yaml-)?csrf_token" type="hidden" value="([^"]+)"', page.text)
    response = browser.http.post(f"{live.url}/dashboard/service-accounts/new",
                                 data={"yaml-csrf_token": tokens[0]},
                                 files={"yaml-file": ("service-account.yaml", SEED_YAML.encode(), "application/yaml")},
                                 allow_redirects=False)
    assert response.status_code == 200, response.text[:500]
    assert "ci-pipeline" in response.text and "won't be shown again" in response.text
    listing = browser.http.get(f"{live.url}/dashboard/service-accounts").text
    assert "GitHub Actions deployment pipeline" in listing and "192.30.252.0/22" in listing
    bomb = browser.http.post(f"{live.url}/dashboard/service-accounts/new", data={"yaml-csrf_token": tokens[0]},
                             files={"yaml-file": ("a.yaml", b"a: &a [1]\nname: *a\nscopes: [x]\n", "application/yaml")})
    assert bomb.status_code == 400 and "anchors" in bomb.text


def test_audit_log_filters_and_entry_details(live):
    org = make_org()
    owner = make_user(org)
    browser = signed_in(live, owner)
    _, key = make_api_key(org)
    requests.get(f"{live.url}/v1/me", headers=bearer(key))
    audit_written(org.id, 1, action="me.read")
    page = browser.http.get(f"{live.url}/dashboard/audit", params={"action": "me.read"}).text
    assert "<code>me.read</code>" in page and "<code>auth.login.success</code>" not in page
    logins = browser.http.get(f"{live.url}/dashboard/audit", params={"actor_id": owner.id}).text
    assert "<code>auth.login.success</code>" in logins and "<code>me.read</code>" not in logins
    entry_id = re.search(r"/dashboard/audit/(log_[0-9A-Za-z]+)", logins).group(1)
    detail = browser.http.get(f"{live.url}/dashboard/audit/{entry_id}")
    assert detail.status_code == 200 and entry_id in detail.text
    bad = browser.http.get(f"{live.url}/dashboard/audit", params={"since": "yesterday"})
    assert bad.status_code == 200 and "Not a valid date" in bad.text
    assert browser.http.get(f"{live.url}/dashboard/audit/log_nope").status_code == 404


def test_authorized_apps_revoke_ends_the_apps_tokens(live):
    org = make_org()
    user = make_user(org)
    client = make_client(org)
    browser = signed_in(live, user)
    from tests.test_revoke_introspect import user_tokens

    tokens = user_tokens(live, client, user)
    page = browser.http.get(f"{live.url}/dashboard/authorized-apps").text
    assert "Test App" in page and "View migrations and their status" in page
    assert post_form(browser, f"/dashboard/authorized-apps/{client.client_id}/revoke", {}).status_code == 303
    assert requests.get(f"{live.url}/v1/me", headers=bearer(tokens["access_token"])).status_code == 401
    refresh = requests.post(f"{live.url}/oauth/token", auth=(client.client_id, client.client_secret),
                            data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]})
    assert refresh.json()["error"] == "invalid_grant"
    assert "Test App" not in browser.http.get(f"{live.url}/dashboard/authorized-apps").text


def test_organization_and_members(live):
    org = make_org(name="Acme Corp", tier="starter")
    owner = make_user(org)
    browser = signed_in(live, owner)
    page = browser.http.get(f"{live.url}/dashboard/organization").text
    assert "Acme Corp" in page and "Starter" in page and "50 requests/second" in page
    added = post_form(browser, "/dashboard/members", {"email": "new@example.com", "role": "viewer",
                                                      "password": "a long password 123"})
    assert added.status_code == 303
    members = browser.http.get(f"{live.url}/dashboard/members").text
    member_id = re.search(r'data-user-id="(usr_[0-9A-Za-z]+)">\s*<td>new@example.com', members).group(1)
    short = post_form(browser, "/dashboard/members", {"email": "x@example.com", "role": "viewer", "password": "short"})
    assert short.status_code == 400 and "at least 12 characters" in short.text
    assert post_form(browser, f"/dashboard/members/{member_id}/role", {"role": "developer"},
                     page_path="/dashboard/members").status_code == 303
    newcomer = Browser(live.url)
    assert newcomer.login("new@example.com", "a long password 123").status_code == 303
    assert newcomer.http.get(f"{live.url}/dashboard/api-keys").status_code == 200  # developer reads keys
    assert post_form(browser, f"/dashboard/members/{member_id}/remove", {}).status_code == 303
    assert newcomer.http.get(f"{live.url}/dashboard/api-keys", allow_redirects=False).status_code == 302
    assert audit_log.verify_chain(org_id=org.id)["problems"] == []


def test_audit_log_load_more_follows_the_cursor(live):
    org = make_org()
    browser = signed_in(live, make_user(org))
    _, key = make_api_key(org, scopes="migrations:read")
    session = requests.Session()
    for _ in range(55):
        session.get(f"{live.url}/v1/me", headers=bearer(key))
    audit_written(org.id, 55, action="me.read")
    first = browser.http.get(f"{live.url}/dashboard/audit", params={"action": "me.read"}).text
    ids = re.findall(r"/dashboard/audit/(log_[0-9A-Za-z]+)", first)
    assert len(ids) == 50
    more = re.search(r'href="(/dashboard/audit\?[^"]*starting_after=[^"]+)"[^>]*>Load more', first)
    assert more, "no Load more link"
    second = browser.http.get(f"{live.url}{more.group(1).replace('&amp;', '&')}").text
    rest = re.findall(r"/dashboard/audit/(log_[0-9A-Za-z]+)", second)
    assert len(rest) == 5 and not set(rest) & set(ids) and "Load more" not in second


def test_register_a_sign_in_and_device_app_then_name_yourself(live):
    org = make_org()
    user = make_user(org)
    browser = signed_in(live, user)
    created = post_form(browser, "/dashboard/apps/new", {
        "name": "mycli", "redirect_uris": "", "client_type": "public", "grant_types": ["device_code"],
        "sign_in_scopes": ["openid", "email"], "scopes": ["migrations:read"],
        "post_logout_redirect_uris": "https://cli.example.com/bye"})
    assert created.status_code == 200, created.text
    client_id = re.search(r'id="client-id" value="(cl_[0-9A-Za-z]+)"', created.text).group(1)
    listed = browser.http.get(f"{live.url}/dashboard/apps").text
    assert "<code>device_code</code>" in listed and "https://cli.example.com/bye" in listed
    started = requests.post(f"{live.url}/oauth/device_authorization",
                            data={"client_id": client_id, "scope": "openid email migrations:read"})
    assert started.status_code == 200, started.text
    refused = post_form(browser, "/dashboard/apps/new", {
        "name": "bad", "redirect_uris": "", "client_type": "public", "grant_types": ["client_credentials"],
        "scopes": ["migrations:read"]})
    assert refused.status_code == 400 and "public client cannot use client_credentials" in refused.text

    assert post_form(browser, "/dashboard/profile", {"name": "  Ada Lovelace "}).status_code == 303
    assert "Ada Lovelace" in browser.http.get(f"{live.url}/dashboard/profile").text
    assert post_form(browser, "/dashboard/members", {"email": "grace@example.com", "name": "Grace Hopper",
                                                     "role": "developer", "password": PASSWORD}).status_code == 303
    members = browser.http.get(f"{live.url}/dashboard/members").text
    assert "Grace Hopper" in members and "Ada Lovelace" in members
