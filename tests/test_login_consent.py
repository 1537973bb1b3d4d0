"""Sign-in and the consent page over real HTTP (SPEC §5)."""

from __future__ import annotations

from urllib.parse import parse_qs, urlencode, urlsplit

import requests

from tests.factories import (
    PASSWORD,
    REDIRECT_URI,
    Browser,
    callback_params,
    make_client,
    make_org,
    make_user,
)


def authorize_url(live, client, **extra) -> str:
    params = {"client_id": client.client_id, "redirect_uri": REDIRECT_URI, "response_type": "code",
              "scope": "migrations:read migrations:write", "state": "st4te"} | extra
    return f"{live.url}/oauth/authorize?{urlencode(params)}"


def test_signed_out_browser_goes_to_login_and_back(live):
    org = make_org()
    user = make_user(org)
    client = make_client(org)
    browser = Browser(live.url)
    url = authorize_url(live, client)
    first = browser.authorize(url)
    assert first.status_code == 302
    location = first.headers["Location"]
    assert urlsplit(location).path == "/login"
    next_path = parse_qs(urlsplit(location).query)["next"][0]
    assert next_path.startswith("/oauth/authorize?")
    login = browser.login(user.email, next_path=next_path)
    assert login.status_code == 303 and login.headers["Location"] == next_path
    consent = browser.http.get(f"{live.url}{next_path}", allow_redirects=False)
    assert consent.status_code == 200 and "Authorize" in consent.text


def test_session_cookie_changes_at_login_and_logout_ends_it(live):
    org = make_org()
    user = make_user(org)
    browser = Browser(live.url)
    browser.http.get(f"{live.url}/login")
    before = browser.http.cookies.get("sensei_session")
    response = browser.login(user.email)
    after = browser.http.cookies.get("sensei_session")
    assert response.status_code == 303 and after and after != before
    cookie_header = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie_header and "SameSite=Lax" in cookie_header
    home = browser.http.get(f"{live.url}/", allow_redirects=False)
    assert home.status_code == 200 and user.email in home.text
    stolen = dict(browser.http.cookies)
    page = browser.http.get(f"{live.url}/logout")
    out = browser.http.post(f"{live.url}/logout", data={"csrf_token": browser.csrf(page.text)}, allow_redirects=False)
    assert out.status_code == 303
    # The old cookie, replayed after sign-out, no longer signs anyone in.
    replay = requests.get(f"{live.url}/", cookies=stolen, allow_redirects=False)
    assert replay.status_code == 302 and replay.headers["Location"].endswith("/login")


def test_consent_page_shows_app_org_and_scope_descriptions_with_strict_headers(live):
    org = make_org(name="Acme Corp")
    owner = make_user(org)
    client = make_client(org, created_by=owner.id)
    browser = Browser(live.url)
    browser.login(owner.email)
    page = browser.authorize(authorize_url(live, client))
    assert page.status_code == 200
    assert "Test App" in page.text and "Acme Corp" in page.text
    assert "View migrations and their status" in page.text
    assert "Create, start, pause, cancel migrations" in page.text
    assert 'name="decision" value="allow"' in page.text and 'name="decision" value="deny"' in page.text
    assert page.headers["X-Frame-Options"] == "DENY"
    csp = page.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in csp and "default-src 'none'" in csp


def test_deny_returns_access_denied_with_state(live):
    org = make_org()
    user = make_user(org)
    client = make_client(org)
    browser = Browser(live.url)
    browser.login(user.email)
    denied = browser.decide(browser.authorize(authorize_url(live, client)), "deny")
    params = callback_params(denied)
    assert params == {"error": "access_denied", "state": "st4te", "iss": live.url} | (
        {"error_description": params["error_description"]} if "error_description" in params else {})
    assert "code" not in params


def test_consent_is_remembered_unless_prompt_consent(live):
    org = make_org()
    user = make_user(org)
    client = make_client(org)
    browser = Browser(live.url)
    browser.login(user.email)
    assert "code" in callback_params(browser.decide(browser.authorize(authorize_url(live, client)), "allow"))
    again = browser.authorize(authorize_url(live, client))
    assert "code" in callback_params(again)  # no page this time
    narrower = browser.authorize(authorize_url(live, client, scope="migrations:read"))
    assert "code" in callback_params(narrower)
    asked = browser.authorize(authorize_url(live, client, prompt="consent"))
    assert asked.status_code == 200 and 'value="allow"' in asked.text
    wider = browser.authorize(authorize_url(live, client, scope="connections:read"))
    assert wider.status_code == 200  # a scope not consented to yet is asked for


def test_prompt_none(live):
    org = make_org()
    user = make_user(org)
    client = make_client(org)
    browser = Browser(live.url)
    assert callback_params(browser.authorize(authorize_url(live, client, prompt="none")))["error"] == "login_required"
    browser.login(user.email)
    assert callback_params(browser.authorize(authorize_url(live, client, prompt="none")))["error"] == "consent_required"


def test_role_bounds_what_a_user_can_delegate(live):
    org = make_org()
    viewer = make_user(org, "viewer")
    client = make_client(org)
    browser = Browser(live.url)
    browser.login(viewer.email)
    page = browser.authorize(authorize_url(live, client))
    assert page.status_code == 200
    assert "Not granted" in page.text  # migrations:write is withheld for a viewer
    code = callback_params(browser.decide(page, "allow"))["code"]
    token = requests.post(f"{live.url}/oauth/token", auth=(client.client_id, client.client_secret), data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI}).json()
    assert token["scope"] == "migrations:read"


def test_user_of_another_org_cannot_authorize_the_app(live):
    org = make_org()
    client = make_client(org)
    stranger = make_user(make_org(name="Other"))
    browser = Browser(live.url)
    browser.login(stranger.email)
    assert callback_params(browser.authorize(authorize_url(live, client)))["error"] == "access_denied"


def test_consent_post_without_csrf_token_is_refused(live):
    org = make_org()
    user = make_user(org)
    client = make_client(org)
    browser = Browser(live.url)
    browser.login(user.email)
    browser.authorize(authorize_url(live, client))
    forged = browser.http.post(authorize_url(live, client), data={"decision": "allow"}, allow_redirects=False)
    assert forged.status_code == 400 and "Location" not in forged.headers


def test_login_failure_message_is_the_same_for_unknown_email_and_wrong_password(live):
    org = make_org()
    user = make_user(org)
    browser = Browser(live.url)
    wrong_password = browser.login(user.email, PASSWORD + "x")
    unknown_email = Browser(live.url).login("nobody@example.com", PASSWORD)
    assert wrong_password.status_code == unknown_email.status_code == 401
    assert "Invalid email or password." in wrong_password.text and "Invalid email or password." in unknown_email.text
    home = browser.http.get(f"{live.url}/", allow_redirects=False)
    assert home.status_code == 302  # still signed out
