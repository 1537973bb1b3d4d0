"""The device authorization grant (RFC 8628) with a person in a real headless Chromium and a
device polling beside it, against a real gunicorn.

The device is a thread that polls the token endpoint as §3.4-3.5 say: never sooner than the
interval the server gave (5 s), 5 s more after ``slow_down``, until it gets tokens or an error
other than ``authorization_pending`` — bounded in polls and in time. The person opens
``verification_uri_complete``, signs in, continues with the code already filled in, and allows
or denies on the consent page. tests/test_device_flow.py covers the same rules over plain HTTP.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
import requests
from authlib.oidc.core import CodeIDToken
from joserfc import jwt
from joserfc.jwk import KeySet
from playwright.sync_api import Page, expect
from sqlalchemy import select, update

from app.extensions import db
from app.models import DeviceAuthorization
from app.models.base import utcnow
from tests.browser_support import screenshot
from tests.factories import PASSWORD, bearer, make_client, make_org, make_user

DEVICE_CODE = "urn:ietf:params:oauth:grant-type:device_code"
SCOPE = "openid email migrations:read"
ACTION_MS = 5_000  # every click, fill, navigation and expectation gives up after this
HTTP_S = 5  # seconds, for each request the device makes
POLLS_MAX = 5  # the device gives up after this many polls ...
POLLING_S = 30.0  # ... or this long, whichever comes first


@pytest.fixture()
def page(page: Page) -> Page:
    """The harness's tab with tighter timeouts; page errors kept in .console_errors."""
    page.set_default_timeout(ACTION_MS)
    page.set_default_navigation_timeout(ACTION_MS)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: errors.append(message.text) if message.type == "error"
            and not message.location.get("url", "").endswith("/favicon.ico") else None)
    page.console_errors = errors  # type: ignore[attr-defined]
    return page


class Device(threading.Thread):
    """A device that asked for a code and polls for its tokens in the background.

    ``answers`` holds every (status, body) the token endpoint gave, in order; ``result()``
    waits (bounded) for the last one."""

    def __init__(self, live, client) -> None:
        super().__init__(daemon=True)
        self.token_url = f"{live.url}/oauth/token"
        self.client_id = client.client_id
        started = requests.post(f"{live.url}/oauth/device_authorization", timeout=HTTP_S,
                                data={"client_id": client.client_id, "scope": SCOPE})
        assert started.status_code == 200, started.text
        self.started = started.json()
        self.answers: list[tuple[int, dict]] = []
        self.pending_seen = threading.Event()
        self.failure: BaseException | None = None
        self.cancelled = threading.Event()

    def run(self) -> None:
        try:
            self._poll()
        except BaseException as error:  # handed to the test by result()
            self.failure = error

    def _poll(self) -> None:
        interval = self.started["interval"]
        deadline = time.monotonic() + POLLING_S
        for _ in range(POLLS_MAX):
            if self.cancelled.wait(interval) or time.monotonic() > deadline:
                return
            answer = requests.post(self.token_url, timeout=HTTP_S, data={
                "grant_type": DEVICE_CODE, "device_code": self.started["device_code"], "client_id": self.client_id})
            self.answers.append((answer.status_code, answer.json()))
            error = answer.json().get("error")
            if error == "slow_down":
                interval += 5  # RFC 8628 §3.5
            elif error == "authorization_pending":
                self.pending_seen.set()
            else:
                return  # tokens, or a final error

    def result(self) -> tuple[int, dict]:
        self.join(timeout=POLLING_S + HTTP_S)
        assert not self.is_alive(), f"the device was still polling: {self.answers}"
        if self.failure is not None:
            raise self.failure
        assert self.answers, "the device never polled"
        return self.answers[-1]

    def __enter__(self) -> Device:
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.cancelled.set()
        self.join(timeout=HTTP_S + 1)


def device_client(org):
    return make_client(org, scopes=SCOPE, redirect_uris=(), public=True, grant_types=["device_code", "refresh_token"])


def sign_in_from_the_device_link(page: Page, live, device: Device, email: str) -> None:
    """Open verification_uri_complete, be sent to sign in, come back with the code filled in."""
    user_code = device.started["user_code"]
    page.goto(device.started["verification_uri_complete"])
    assert urlsplit(page.url).path == "/login"
    expect(page.locator("h1")).to_have_text("Sign in")
    page.fill("#email", email)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live.url}/device?user_code={user_code}")
    expect(page.locator("h1")).to_have_text("Connect a device")
    expect(page.locator("#user_code")).to_have_value(user_code)


def continue_to_consent(page: Page, device: Device) -> None:
    page.click("button:has-text('Continue')")
    expect(page.locator("h1")).to_have_text("Authorize Test App")
    expect(page.locator("form.decision")).to_contain_text(f"Device code {device.started['user_code']}")
    for scope in SCOPE.split():
        expect(page.locator("ul.scopes")).to_contain_text(scope)


def validated_id_token(live, token: dict, client_id: str) -> dict:
    """The ID token's claims, checked as Authlib's client checks them (signature by the JWKS)."""
    keys = KeySet.import_key_set(requests.get(f"{live.url}/.well-known/jwks.json", timeout=HTTP_S).json())
    decoded = jwt.decode(token["id_token"], keys, algorithms=["RS256"])
    claims = CodeIDToken(decoded.claims, decoded.header, {"iss": {"values": [live.url]}},
                         {"client_id": client_id, "access_token": token["access_token"]})
    claims.validate(leeway=5)
    return dict(claims)


def test_a_person_allows_in_chromium_and_the_polling_device_gets_its_tokens(live, page, tmp_path):
    org = make_org()
    user = make_user(org, name="Dev Ice")
    client = device_client(org)
    with Device(live, client) as device:
        assert device.started["interval"] == 5
        sign_in_from_the_device_link(page, live, device, user.email)
        screenshot(page, "device-code", tmp_path)
        continue_to_consent(page, device)
        screenshot(page, "device-consent", tmp_path)
        # The device keeps being told to wait while the person reads the consent page.
        assert device.pending_seen.wait(timeout=device.started["interval"] + HTTP_S)
        page.click("button:has-text('Allow')")
        expect(page.locator("h1")).to_have_text("Device connected")
        expect(page.locator("main")).to_contain_text("Test App is now signed in.")
        screenshot(page, "device-connected", tmp_path)
        status, token = device.result()
    assert status == 200, token
    # Polled at the interval: never slow_down, pending until the person allowed.
    assert all(body.get("error") == "authorization_pending" for _, body in device.answers[:-1])
    assert token["token_type"] == "Bearer" and token["scope"] == SCOPE and token["expires_in"] > 0
    assert token["access_token"] and token["refresh_token"] and token["id_token"]
    claims = validated_id_token(live, token, client.client_id)
    assert claims["sub"] == user.id and claims["aud"] == client.client_id and claims["email"] == user.email
    assert "nonce" not in claims and claims["auth_time"] <= claims["iat"]
    info = requests.get(f"{live.url}/oauth/userinfo", headers=bearer(token["access_token"]), timeout=HTTP_S)
    assert info.status_code == 200 and info.json() == {"sub": user.id, "email": user.email, "email_verified": False}
    refreshed = requests.post(f"{live.url}/oauth/token", timeout=HTTP_S, data={
        "grant_type": "refresh_token", "refresh_token": token["refresh_token"], "client_id": client.client_id})
    assert refreshed.status_code == 200, refreshed.text
    assert refreshed.json()["refresh_token"] != token["refresh_token"]  # rotated
    assert page.console_errors == []


def test_a_person_denies_in_chromium_and_the_device_is_told_access_denied(live, page, tmp_path):
    org = make_org()
    user = make_user(org)
    client = device_client(org)
    with Device(live, client) as device:
        sign_in_from_the_device_link(page, live, device, user.email)
        continue_to_consent(page, device)
        page.click("button:has-text('Deny')")
        expect(page.locator("h1")).to_have_text("Access denied")
        expect(page.locator("main")).to_contain_text("Test App was not given access.")
        screenshot(page, "device-denied", tmp_path)
        status, answer = device.result()
    assert status == 400 and answer["error"] == "access_denied"
    assert page.console_errors == []


def test_a_code_that_expires_on_the_consent_page_is_refused_and_the_device_told_expired_token(
        live, page, tmp_path):
    org = make_org()
    user = make_user(org)
    client = device_client(org)
    with Device(live, client) as device:
        sign_in_from_the_device_link(page, live, device, user.email)
        continue_to_consent(page, device)
        # Ten minutes pass (RFC 8628 §3.2 expires_in) while the person reads the page.
        db.session.execute(update(DeviceAuthorization).values(expires_at=utcnow() - timedelta(seconds=1)))
        db.session.commit()
        page.click("button:has-text('Allow')")
        expect(page.locator("h1")).to_have_text("Connect a device")
        expect(page.locator("p.error[role=alert]")).to_contain_text("That code is not valid, or it has expired")
        screenshot(page, "device-expired", tmp_path)
        status, answer = device.result()
    assert status == 400 and answer["error"] == "expired_token"
    assert all(body.get("error") == "authorization_pending" for _, body in device.answers[:-1])
    row = db.session.scalars(select(DeviceAuthorization)).one()
    db.session.refresh(row)
    assert row.decision is None and row.used_at is None  # nothing was approved after the expiry
