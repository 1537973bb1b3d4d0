"""The dashboard and the consent flow in a real headless Chromium against a real gunicorn."""

from __future__ import annotations

import base64
import hashlib
import secrets
from urllib.parse import parse_qs, urlencode, urlsplit

import requests
from playwright.sync_api import Page, expect

from tests.browser_support import fits_width, screenshot, sign_in
from tests.factories import REDIRECT_URI, audit_written, bearer, make_api_key, make_org, make_user
from tests.test_service_accounts import SEED_YAML


def create_key(page: Page, base: str, *, name: str, live: bool, scopes: list[str]) -> str:
    """The seed's "Creating API Keys" steps, in the browser; returns the copied key."""
    page.goto(f"{base}/dashboard")
    page.click("text=API Keys")
    page.click("text=Create New Key")
    page.fill("#name", name)
    page.check("input[name=environment][value=%s]" % ("live" if live else "test"))
    for scope in scopes:
        page.check(f"input[name=scopes][value='{scope}']")
    page.click("button:has-text('Create key')")
    expect(page.locator(".warning")).to_contain_text("won't be shown again")
    page.click("button[data-copy='new-key']")
    expect(page.locator("button[data-copy='new-key']")).to_have_text("Copied")
    return page.input_value("#new-key")


def test_create_live_and_test_keys_use_them_and_revoke(live, page, tmp_path):
    org = make_org()
    owner = make_user(org)
    sign_in(page, live.url, owner.email)
    live_key = create_key(page, live.url, name="CI/CD Pipeline Key", live=True,
                          scopes=["migrations:read", "migrations:write"])
    screenshot(page, "api-key-created", tmp_path)
    test_key = create_key(page, live.url, name="Sandbox", live=False, scopes=["connections:read"])
    assert live_key.startswith("sk_live_") and test_key.startswith("sk_test_")
    me = requests.get(f"{live.url}/v1/me", headers=bearer(live_key)).json()
    assert me["scopes"] == ["migrations:read", "migrations:write"] and me["environment"] == "live"
    assert requests.get(f"{live.url}/v1/me", headers=bearer(test_key)).json()["environment"] == "test"
    page.goto(f"{live.url}/dashboard/api-keys")
    expect(page.locator("table")).to_contain_text(f"sk_live_...{live_key[-4:]}")
    assert live_key not in page.content()
    screenshot(page, "api-keys", tmp_path)
    row = page.locator("tr", has_text="CI/CD Pipeline Key")
    row.locator("text=Revoke").click()
    expect(page.locator("h1")).to_contain_text("Revoke CI/CD Pipeline Key?")
    page.click("button:has-text('Revoke key')")
    expect(page.locator("table")).not_to_contain_text("CI/CD Pipeline Key")
    assert requests.get(f"{live.url}/v1/me", headers=bearer(live_key)).status_code == 401


def test_errors_show_next_to_the_field(live, page):
    org = make_org()
    sign_in(page, live.url, make_user(org).email)
    page.goto(f"{live.url}/dashboard/api-keys/new")
    page.fill("#name", "Bad list")
    page.check("input[name=scopes][value='migrations:read']")
    page.fill("#ip_whitelist", "10.0.0.1\n999.1.1.1")
    page.click("button:has-text('Create key')")
    expect(page.locator("#ip_whitelist-error")).to_contain_text("999.1.1.1")


def test_register_an_app_and_complete_the_code_flow_with_consent_in_the_browser(live, page, tmp_path):
    org = make_org(name="Acme Corp")
    owner = make_user(org)
    sign_in(page, live.url, owner.email)
    page.goto(f"{live.url}/dashboard/apps/new")
    page.fill("#name", "Migration Planner")
    page.fill("#redirect_uris", REDIRECT_URI)
    page.check("input[name=scopes][value='migrations:read']")
    page.check("input[name=scopes][value='migrations:write']")
    page.click("button:has-text('Register')")
    client_id = page.input_value("#client-id")
    client_secret = page.input_value("#client-secret")
    screenshot(page, "oauth-app-registered", tmp_path)

    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    captured: dict[str, str] = {}

    def callback(route):
        captured["url"] = route.request.url
        route.fulfill(status=200, content_type="text/html", body="<p>app callback</p>")

    page.route("https://app.example.com/**", callback)
    query = urlencode({"client_id": client_id, "redirect_uri": REDIRECT_URI, "response_type": "code",
                       "scope": "migrations:read migrations:write", "state": "st4te",
                       "code_challenge": challenge, "code_challenge_method": "S256"})
    page.goto(f"{live.url}/oauth/authorize?{query}")
    expect(page.locator("h1")).to_contain_text("Migration Planner")
    expect(page.locator(".meta").first).to_contain_text("Acme Corp")
    expect(page.locator(".scopes")).to_contain_text("Create, start, pause, cancel migrations")
    screenshot(page, "consent", tmp_path)
    page.click("button[value=allow]")
    page.wait_for_url("https://app.example.com/**")
    params = {k: v[0] for k, v in parse_qs(urlsplit(captured["url"]).query).items()}
    assert params["state"] == "st4te"
    token = requests.post(f"{live.url}/oauth/token", auth=(client_id, client_secret), data={
        "grant_type": "authorization_code", "code": params["code"], "redirect_uri": REDIRECT_URI,
        "code_verifier": verifier}).json()
    me = requests.get(f"{live.url}/v1/me", headers=bearer(token["access_token"])).json()
    assert me["principal"]["type"] == "user" and me["principal"]["id"] == owner.id

    # The app now shows under Authorized apps; revoking it ends its tokens.
    page.goto(f"{live.url}/dashboard/authorized-apps")
    expect(page.locator(".grants")).to_contain_text("Migration Planner")
    screenshot(page, "authorized-apps", tmp_path)
    page.click("text=Revoke access")
    page.click("button:has-text('Revoke access')")
    expect(page.locator("main")).to_contain_text("You have not authorized any application.")
    assert requests.get(f"{live.url}/v1/me", headers=bearer(token["access_token"])).status_code == 401


def test_service_account_from_the_yaml_file(live, page, tmp_path):
    org = make_org()
    sign_in(page, live.url, make_user(org).email)
    yaml_file = tmp_path / "service-account.yaml"
    yaml_file.write_text(SEED_YAML)
    page.goto(f"{live.url}/dashboard/service-accounts")
    page.click("text=Create service account")
    page.set_input_files("#yaml-file", str(yaml_file))
    page.click("button:has-text('Create from file')")
    expect(page.locator("h1")).to_contain_text("ci-pipeline")
    assert page.input_value("#client-secret").startswith("cs_")
    page.goto(f"{live.url}/dashboard/service-accounts")
    expect(page.locator("table")).to_contain_text("GitHub Actions deployment pipeline")
    expect(page.locator("table")).to_contain_text("185.199.108.0/22")
    screenshot(page, "service-accounts", tmp_path)


def test_filter_the_audit_log_and_open_an_entry(live, page, tmp_path):
    org = make_org()
    owner = make_user(org)
    key_row, key = make_api_key(org, scopes="migrations:read")
    for _ in range(3):
        requests.get(f"{live.url}/v1/me", headers=bearer(key))
    audit_written(org.id, 3, action="me.read")
    sign_in(page, live.url, owner.email)
    page.goto(f"{live.url}/dashboard/audit")
    page.fill("#actor_id", key_row.id)
    page.select_option("#result", "success")
    page.click("button:has-text('Filter')")
    rows = page.locator("table.audit tbody tr")
    expect(rows).to_have_count(3)
    expect(page.locator("table.audit")).not_to_contain_text("auth.login.success")
    screenshot(page, "audit-log", tmp_path)
    rows.first.locator("a").click()
    expect(page.locator("h1")).to_have_text("Audit entry")
    expect(page.locator(".details")).to_contain_text("me.read")


def test_pages_work_at_375px_and_a_viewer_sees_no_write_actions(live, mobile_page, tmp_path):
    org = make_org()
    viewer = make_user(org, "viewer")
    make_api_key(org, scopes="migrations:read")
    sign_in(mobile_page, live.url, viewer.email)
    for path in ("/dashboard/api-keys", "/dashboard/audit", "/dashboard/organization", "/dashboard/authorized-apps"):
        mobile_page.goto(f"{live.url}{path}")
        assert fits_width(mobile_page, 375), path
    mobile_page.goto(f"{live.url}/dashboard/api-keys")
    expect(mobile_page.locator("main")).not_to_contain_text("Create New Key")
    expect(mobile_page.locator("main")).not_to_contain_text("Revoke")
    expect(mobile_page.locator("nav")).not_to_contain_text("Members")
    screenshot(mobile_page, "api-keys-mobile", tmp_path)
    mobile_page.goto(f"{live.url}/login")
    assert fits_width(mobile_page, 375)
