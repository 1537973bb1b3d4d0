"""Sign-in, consent and the home page in a real headless Chromium against a real gunicorn.

The fixtures (``page``, ``mobile_page``) and helpers come from tests/browser_support.py,
which tests/conftest.py registers as a plugin. Nothing here uses the dashboard.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests
from playwright.sync_api import ConsoleMessage, Page, Response, Route, expect

from tests.browser_support import fits_width, screenshot, sign_in
from tests.factories import PASSWORD, REDIRECT_URI, bearer, make_client, make_org, make_user

ACTION_MS = 5_000  # every click, fill, navigation and expectation gives up after this
HTTP_S = 5  # seconds, for the requests made beside the browser


@pytest.fixture()
def page(page: Page) -> Page:
    """The harness's 1280x800 tab, with tighter timeouts; console errors kept in .console_errors."""
    return _bounded(page)


@pytest.fixture()
def mobile_page(mobile_page: Page) -> Page:
    """The harness's 375x812 tab, with the same bounds."""
    return _bounded(mobile_page)


def _bounded(tab: Page) -> Page:
    tab.set_default_timeout(ACTION_MS)
    tab.set_default_navigation_timeout(ACTION_MS)
    errors: list[str] = []
    tab.on("console", lambda message: _keep_errors(message, errors))
    tab.on("pageerror", lambda error: errors.append(str(error)))
    tab.on("response", lambda response: _keep_failed_subresources(response, errors))
    tab.console_errors = errors  # type: ignore[attr-defined]
    return tab


def _keep_errors(message: ConsoleMessage, errors: list[str]) -> None:
    # Chromium asks for /favicon.ico on its own and the app has none: not a page error.
    if message.type == "error" and not message.location.get("url", "").endswith("/favicon.ico"):
        errors.append(f"{message.text} ({message.location.get('url')})")


def _keep_failed_subresources(response: Response, errors: list[str]) -> None:
    if response.status >= 400 and response.request.resource_type != "document":
        errors.append(f"{response.status} {response.url}")


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def authorize_url(live, client_id: str, **extra: str) -> str:
    params = {"client_id": client_id, "redirect_uri": REDIRECT_URI, "response_type": "code",
              "scope": "migrations:read migrations:write", "state": secrets.token_urlsafe(12)} | extra
    return f"{live.url}/oauth/authorize?{urlencode(params)}"


def intercept_callback(page: Page) -> dict[str, str]:
    """The app's redirect URI, answered in the browser; returns the query it was called with."""
    captured: dict[str, str] = {}

    def callback(route: Route) -> None:
        captured.update({k: v[0] for k, v in parse_qs(urlsplit(route.request.url).query).items()})
        route.fulfill(status=200, content_type="text/html", body="<!doctype html><p>app callback</p>")

    page.route("https://app.example.com/**", callback)
    return captured


def fill_login_form(page: Page, email: str, password: str) -> None:
    page.fill("#email", email)
    page.fill("#password", password)
    page.click("button[type=submit]")


def test_sign_in_with_the_form_reaches_home_and_sign_out_ends_it(live, page, tmp_path):
    org = make_org(name="Acme Corp")
    user = make_user(org, "admin")
    response = page.goto(f"{live.url}/")
    assert response is not None and urlsplit(page.url).path == "/login"
    expect(page.locator("h1")).to_have_text("Sign in")
    expect(page.locator("#email")).to_be_focused()  # autofocus
    # The CSRF token is the page's own hidden field; the form posts it as is.
    assert page.input_value("input[name=csrf_token]")
    screenshot(page, "login", tmp_path)
    with page.expect_response(lambda r: r.request.method == "POST" and r.url.endswith("/login")) as posted:
        fill_login_form(page, user.email, PASSWORD)
    assert posted.value.status == 303
    page.wait_for_url(f"{live.url}/")
    expect(page.locator("h1")).to_have_text("Acme Corp")
    expect(page.locator("main")).to_contain_text(f"Signed in as {user.email} (admin).")
    expect(page.locator("a:has-text('Open the dashboard')")).to_be_visible()
    screenshot(page, "home", tmp_path)
    page.click("button:has-text('Sign out')")
    page.wait_for_url(f"{live.url}/login")
    page.goto(f"{live.url}/")
    assert urlsplit(page.url).path == "/login"  # signed out for good
    assert page.console_errors == []


def test_wrong_password_shows_the_error_next_to_the_form(live, page, tmp_path):
    org = make_org()
    user = make_user(org)
    page.goto(f"{live.url}/login")
    with page.expect_response(lambda r: r.request.method == "POST" and r.url.endswith("/login")) as posted:
        fill_login_form(page, user.email, PASSWORD + "x")
    assert posted.value.status == 401
    alert = page.locator("p.error[role=alert]")
    expect(alert).to_have_text("Invalid email or password.")
    expect(page.locator("p.error[role=alert] + form")).to_be_visible()  # right above the form
    expect(page.locator("#email")).to_have_value(user.email)  # kept, so only the password is retyped
    expect(page.locator("#password")).to_have_value("")
    screenshot(page, "login-error", tmp_path)
    # An unknown account gets the same words.
    fill_login_form(page, "nobody@example.com", PASSWORD)
    expect(alert).to_have_text("Invalid email or password.")
    # Retyping the password on the same page signs in (the re-rendered form has a valid token).
    fill_login_form(page, user.email, PASSWORD)
    page.wait_for_url(f"{live.url}/")
    expect(page.locator("main")).to_contain_text(user.email)


def test_a_form_without_its_csrf_token_is_refused(live, page, tmp_path):
    org = make_org()
    user = make_user(org)
    page.goto(f"{live.url}/login")
    page.eval_on_selector("input[name=csrf_token]", "el => el.value = 'forged'")
    with page.expect_response(lambda r: r.request.method == "POST" and r.url.endswith("/login")) as posted:
        fill_login_form(page, user.email, PASSWORD)
    assert posted.value.status == 400
    # CSRFProtect refuses it before the view, so the error page says so (not the form).
    expect(page.locator("p.error[role=alert]")).to_contain_text("token")
    screenshot(page, "login-csrf-refused", tmp_path)
    page.goto(f"{live.url}/")
    assert urlsplit(page.url).path == "/login"


def test_code_flow_with_pkce_sign_in_consent_and_token(live, page, tmp_path):
    org = make_org(name="Acme Corp")
    owner = make_user(org)
    client = make_client(org, public=True, created_by=owner.id)  # PKCE is the only proof it has
    verifier, challenge = pkce_pair()
    callback = intercept_callback(page)
    url = authorize_url(live, client.client_id, state="st4te-pkce", code_challenge=challenge,
                        code_challenge_method="S256")

    page.goto(url)
    assert urlsplit(page.url).path == "/login"  # signed out: sent to sign in first
    fill_login_form(page, owner.email, PASSWORD)
    page.wait_for_url("**/oauth/authorize?**")  # and back to the same request

    expect(page.locator("h1")).to_have_text("Authorize Test App")
    expect(page.locator(".meta").first).to_contain_text(f"Registered by Acme Corp ({owner.email})")
    scopes = page.locator("ul.scopes li")
    expect(scopes).to_have_count(2)
    expect(scopes.nth(0)).to_have_text("migrations:read — View migrations and their status")
    expect(scopes.nth(1)).to_contain_text("migrations:write — Create, start, pause, cancel migrations")
    expect(page.locator("button[value=deny]")).to_be_visible()
    screenshot(page, "consent-pkce", tmp_path)

    page.click("button[value=allow]")
    page.wait_for_url("https://app.example.com/**")
    expect(page.locator("p")).to_have_text("app callback")
    assert callback["state"] == "st4te-pkce" and callback["code"]
    assert "error" not in callback

    token_request = {"grant_type": "authorization_code", "code": callback["code"], "redirect_uri": REDIRECT_URI,
                     "client_id": client.client_id}
    token = requests.post(f"{live.url}/oauth/token", data=token_request | {"code_verifier": verifier},
                          timeout=HTTP_S)
    assert token.status_code == 200, token.text
    assert token.json()["scope"] == "migrations:read migrations:write"
    me = requests.get(f"{live.url}/v1/me", headers=bearer(token.json()["access_token"]), timeout=HTTP_S)
    assert me.status_code == 200
    assert me.json()["principal"] == me.json()["principal"] | {"type": "user", "id": owner.id}
    # The code was spent.
    again = requests.post(f"{live.url}/oauth/token", data=token_request | {"code_verifier": verifier},
                          timeout=HTTP_S)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    assert page.console_errors == []


def test_deny_returns_access_denied_with_the_state(live, page):
    org = make_org()
    user = make_user(org)
    client = make_client(org)
    callback = intercept_callback(page)
    sign_in(page, live.url, user.email)
    page.goto(authorize_url(live, client.client_id, state="st4te-deny"))
    page.click("button[value=deny]")
    page.wait_for_url("https://app.example.com/**")
    assert callback["error"] == "access_denied" and callback["state"] == "st4te-deny"
    assert "code" not in callback


def test_the_consent_page_refuses_to_be_framed(live, page):
    org = make_org()
    user = make_user(org)
    client = make_client(org)
    sign_in(page, live.url, user.email)
    url = authorize_url(live, client.client_id)
    response = page.goto(url)
    assert response is not None and response.status == 200
    expect(page.locator("button[value=allow]")).to_be_visible()
    headers = response.headers  # as Chromium received them
    assert headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in headers["content-security-policy"]

    # A same-origin page (the strictest case: it carries the session cookie) that frames it.
    framer = f"{live.url}/__framer__"
    page.route(framer, lambda route: route.fulfill(
        status=200, content_type="text/html",
        body=f'<!doctype html><iframe id="victim" src="{url}" width="800" height="600"></iframe>'))
    with page.expect_console_message(lambda m: "frame" in m.text.lower()) as refusal:
        with page.expect_response(lambda r: r.url == url) as framed:
            page.goto(framer)
    assert framed.value.status == 200  # the server answered; the browser must not show it
    assert "X-Frame-Options" in refusal.value.text or "frame-ancestors" in refusal.value.text, refusal.value.text
    expect(page.frame_locator("#victim").locator("button[value=allow]")).to_have_count(0)
    child = next(f for f in page.frames if f != page.main_frame)
    assert "Authorize" not in child.content()


def test_the_login_page_fits_375px(live, mobile_page, tmp_path):
    org = make_org()
    user = make_user(org)
    mobile_page.goto(f"{live.url}/login")
    assert fits_width(mobile_page, 375), mobile_page.evaluate("document.documentElement.scrollWidth")
    box = mobile_page.locator("button[type=submit]").bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 375
    screenshot(mobile_page, "login-mobile", tmp_path)
    fill_login_form(mobile_page, user.email, PASSWORD)
    mobile_page.wait_for_url(f"{live.url}/")
    assert fits_width(mobile_page, 375)
    assert mobile_page.console_errors == []
