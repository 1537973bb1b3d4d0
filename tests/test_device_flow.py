"""The device authorization grant (RFC 8628, issue 11) over real HTTP: a device asks, a person
enters the code at /device and approves or denies, the device polls once for its tokens."""

from __future__ import annotations

import re
from datetime import timedelta

import requests
from sqlalchemy import update

from app.extensions import db
from app.models import DeviceAuthorization
from app.models.base import utcnow
from tests.factories import (
    CSRF_RE,
    Browser,
    audit_written,
    bearer,
    make_client,
    make_org,
    make_user,
)

DEVICE_CODE = "urn:ietf:params:oauth:grant-type:device_code"


def device_client(org, *, public=True, scopes="openid email migrations:read"):
    return make_client(org, scopes=scopes, redirect_uris=(), public=public, grant_types=["device_code", "refresh_token"])


def start(live, client, scope: str | None = "openid email migrations:read") -> dict:
    data = {"client_id": client.client_id} | ({"scope": scope} if scope else {})
    auth = None if client.client_secret is None else (client.client_id, client.client_secret)
    answer = requests.post(f"{live.url}/oauth/device_authorization", data=data, auth=auth)
    assert answer.status_code == 200, answer.text
    return answer.json()


def poll(live, client, device_code: str) -> requests.Response:
    auth = None if client.client_secret is None else (client.client_id, client.client_secret)
    return requests.post(f"{live.url}/oauth/token", auth=auth, data={
        "grant_type": DEVICE_CODE, "device_code": device_code, "client_id": client.client_id})


def enter_code(browser: Browser, live, typed: str) -> requests.Response:
    page = browser.http.get(f"{live.url}/device")
    assert page.status_code == 200
    return browser.http.post(f"{live.url}/device", data={"csrf_token": browser.csrf(page.text), "user_code": typed})


def decide(browser: Browser, live, consent: requests.Response, decision: str) -> requests.Response:
    code = re.search(r'name="user_code" value="([^"]+)"', consent.text).group(1)
    return browser.http.post(f"{live.url}/device", data={"csrf_token": CSRF_RE.search(consent.text).group(1),
                                                         "user_code": code, "decision": decision})


def allow_past_the_interval() -> None:
    """Make the last poll look older than the interval (no sleeping in tests)."""
    db.session.execute(update(DeviceAuthorization).values(last_polled_at=utcnow() - timedelta(seconds=60)))
    db.session.commit()


def test_a_person_approves_and_the_device_gets_its_tokens_once(live):
    org = make_org()
    user = make_user(org, name="Dev Ice")
    client = device_client(org)
    started = start(live, client)
    assert re.fullmatch(r"[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}", started["user_code"])
    assert started["verification_uri"] == f"{live.url}/device"
    assert started["verification_uri_complete"] == f"{live.url}/device?user_code={started['user_code']}"
    assert started["expires_in"] == 600 and started["interval"] == 5
    pending = poll(live, client, started["device_code"])
    assert pending.status_code == 400 and pending.json()["error"] == "authorization_pending"

    browser = Browser(live.url)
    browser.login(user.email)
    typed = started["user_code"].lower().replace("-", "")  # case-insensitive, dash optional
    consent = enter_code(browser, live, typed)
    assert consent.status_code == 200 and "Test App" in consent.text and "migrations:read" in consent.text
    done = decide(browser, live, consent, "allow")
    assert done.status_code == 200 and "Device connected" in done.text

    allow_past_the_interval()
    granted = poll(live, client, started["device_code"])
    assert granted.status_code == 200, granted.text
    token = granted.json()
    assert token["scope"] == "openid email migrations:read" and token["refresh_token"] and token["id_token"]
    me = requests.get(f"{live.url}/v1/me", headers=bearer(token["access_token"])).json()
    assert me["principal"]["id"] == user.id
    info = requests.get(f"{live.url}/oauth/userinfo", headers=bearer(token["access_token"])).json()
    assert info == {"sub": user.id, "email": user.email, "email_verified": False}
    again = poll(live, client, started["device_code"])  # single use
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    audit_written(org.id, 1, action="oauth.device.authorize", actor_id=user.id)


def test_polling_too_fast_is_slow_down_and_the_interval_grows(live):
    org = make_org()
    client = device_client(org)
    started = start(live, client)
    assert poll(live, client, started["device_code"]).json()["error"] == "authorization_pending"
    fast = poll(live, client, started["device_code"])
    assert fast.status_code == 400 and fast.json()["error"] == "slow_down"
    row = db.session.query(DeviceAuthorization).one()
    db.session.refresh(row)
    assert row.interval == 10


def test_a_denial_is_access_denied(live):
    org = make_org()
    user = make_user(org)
    client = device_client(org)
    started = start(live, client)
    browser = Browser(live.url)
    browser.login(user.email)
    done = decide(browser, live, enter_code(browser, live, started["user_code"]), "deny")
    assert "Access denied" in done.text
    denied = poll(live, client, started["device_code"])
    assert denied.status_code == 400 and denied.json()["error"] == "access_denied"
    audit_written(org.id, 1, action="oauth.device.deny", actor_id=user.id)


def test_an_expired_code_is_expired_token_and_cannot_be_entered(live):
    org = make_org()
    user = make_user(org)
    client = device_client(org)
    started = start(live, client)
    db.session.execute(update(DeviceAuthorization).values(expires_at=utcnow() - timedelta(seconds=1)))
    db.session.commit()
    expired = poll(live, client, started["device_code"])
    assert expired.status_code == 400 and expired.json()["error"] == "expired_token"
    browser = Browser(live.url)
    browser.login(user.email)
    refused = enter_code(browser, live, started["user_code"])
    assert refused.status_code == 400 and "not valid" in refused.text


def test_the_device_page_needs_a_sign_in_and_keeps_the_code(live):
    page = requests.get(f"{live.url}/device?user_code=BCDF-GHJK", allow_redirects=False)
    assert page.status_code == 302 and page.headers["Location"].startswith("/login?next=")
    assert "user_code%3DBCDF-GHJK" in page.headers["Location"]


def test_a_client_without_the_device_grant_or_asking_beyond_its_scopes_is_refused(live):
    org = make_org()
    plain = make_client(org)
    answer = requests.post(f"{live.url}/oauth/device_authorization", auth=(plain.client_id, plain.client_secret),
                           data={"scope": "migrations:read"})
    assert answer.status_code == 400 and answer.json()["error"] == "unauthorized_client"
    client = device_client(org)
    beyond = requests.post(f"{live.url}/oauth/device_authorization",
                           data={"client_id": client.client_id, "scope": "billing:write"})
    assert beyond.status_code == 400 and beyond.json()["error"] == "invalid_scope"
    unknown = requests.post(f"{live.url}/oauth/device_authorization", data={"client_id": "cl_nope"})
    assert unknown.status_code == 401 and unknown.json()["error"] == "invalid_client"


def test_another_organizations_device_is_refused(live):
    org, other = make_org(), make_org(name="Other")
    client = device_client(org)
    stranger = make_user(other)
    started = start(live, client)
    browser = Browser(live.url)
    browser.login(stranger.email)
    assert enter_code(browser, live, started["user_code"]).status_code == 403
    assert poll(live, client, started["device_code"]).json()["error"] == "authorization_pending"


def test_a_confidential_device_client_and_the_default_scope(live):
    org = make_org()
    user = make_user(org)
    client = device_client(org, public=False, scopes="migrations:read")
    started = start(live, client, scope=None)
    browser = Browser(live.url)
    browser.login(user.email)
    decide(browser, live, enter_code(browser, live, started["user_code"]), "allow")
    allow_past_the_interval()
    token = poll(live, client, started["device_code"]).json()
    assert token["scope"] == "migrations:read" and "id_token" not in token
