"""Issue 10's attack list: the security checks of RFC 9700 and the OpenID conformance suite,
each run against a real gunicorn as an attacker would run it.

Only the attacks (or variants) that no other test already makes are here; the others are
named where they live:

- redirect-URI variants (error page, never a redirect): test_bad_input.py
  ``test_authorize_redirect_uri_not_registered_exactly_is_an_error_page``; a code bound to its
  client and redirect URI: test_oauth_flows.py ``test_code_is_bound_to_client_and_redirect_uri``
- ``next`` on /login: test_bad_input.py ``test_login_next_never_leaves_the_site``
- CSRF on /login without or with a forged token: test_bad_input.py
  ``test_login_without_csrf_token_is_400_and_does_not_sign_in``
- framing headers on every dashboard page: test_dashboard_http.py
  ``test_every_page_renders_with_strict_headers_and_roles_see_only_what_they_may_do``
- API keys and service accounts of another organization: test_api_keys.py
  ``test_other_orgs_keys_are_404_and_never_listed``, test_service_accounts.py
  ``test_list_get_patch_and_tenancy``; audit log: test_audit.py ``test_append_only_and_tenancy``
- public clients without a challenge: test_oauth_flows.py ``test_public_client_needs_pkce_s256``
- JWTs signed by another key (real or foreign ``kid``): test_bad_input.py
  ``test_v1_me_with_jwt_signed_by_another_key_is_401``
- sign-in throttling: test_rate_limits.py
  ``test_sign_in_attempts_are_throttled_per_account_and_per_address``
- YAML bombs and tags on /v1: test_service_accounts.py ``test_hostile_yaml_is_refused``;
  non-UTF-8 and NUL bodies: test_bad_input.py, test_api_keys.py
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import socket
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt
import pytest
import requests
from authlib.common.security import generate_token
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from sqlalchemy import func, select

from app.extensions import db
from app.models import AuditEvent, AuthorizationCode, Consent, Organization, ServiceAccount
from app.services import consents as consent_service
from app.services import signing_keys
from tests.conftest import free_port, start_server, stop_server
from tests.factories import (
    PASSWORD,
    REDIRECT_URI,
    Browser,
    audit_written,
    bearer,
    callback_params,
    make_api_key,
    make_client,
    make_org,
    make_user,
)

TIMEOUT = 30
EVIL = "evil.example"
ALL_SCOPES = "migrations:read migrations:write connections:read"


# -- helpers ------------------------------------------------------------------------------


def authorize_path(client, **extra) -> str:
    """An authorization request (``None`` leaves a parameter out)."""
    params = {"client_id": client.client_id, "redirect_uri": REDIRECT_URI, "response_type": "code",
              "scope": "migrations:read", "state": "st4te"} | extra
    return "/oauth/authorize?" + urlencode({k: v for k, v in params.items() if v is not None})


def signed_in(live, user) -> Browser:
    browser = Browser(live.url)
    assert browser.login(user.email).status_code == 303
    return browser


def consenting(live, *, public: bool = False, redirect_uris=(REDIRECT_URI,)):
    """A client and a signed-in browser whose user already approved it: a valid request is
    answered at once with a code, so nothing but the check under test stands in the way."""
    org = make_org()
    user = make_user(org)
    client = make_client(org, public=public, redirect_uris=redirect_uris)
    consent_service.record_consent(user_id=user.id, client_id=client.client_id, org_id=org.id, scope=ALL_SCOPES)
    return client, signed_in(live, user)


def codes_issued(client_id: str) -> int:
    db.session.rollback()  # a fresh snapshot
    return db.session.scalar(select(func.count()).select_from(AuthorizationCode)
                             .where(AuthorizationCode.client_id == client_id)) or 0


def code_for(live, client, browser: Browser, **extra) -> str:
    return callback_params(browser.authorize(f"{live.url}{authorize_path(client, **extra)}"))["code"]


def token_request(live, data: dict, client=None) -> requests.Response:
    """POST /oauth/token as ``client`` (Basic for a confidential one, client_id for a public one)."""
    auth = None
    if client is not None and client.client_secret:
        auth = (client.client_id, client.client_secret)
    elif client is not None:
        data = data | {"client_id": client.client_id}
    return requests.post(f"{live.url}/oauth/token", data=data, auth=auth, timeout=TIMEOUT)


def redeem(live, client, code: str, **extra) -> requests.Response:
    return token_request(live, {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI}
                         | extra, client)


def oauth_refusal(response: requests.Response, error: str) -> None:
    assert response.status_code == 400, (response.status_code, response.text[:300])
    body = response.json()
    assert body["error"] == error, body
    assert "access_token" not in body


def envelope(response: requests.Response, status: int, code: str) -> dict:
    assert response.status_code == status, (response.status_code, response.text[:300])
    error = response.json()["error"]
    assert error["code"] == code, error
    return error


def error_page(response: requests.Response) -> None:
    """The authorization endpoint's answer to a request it cannot trust: a page, never a redirect."""
    assert response.status_code == 400, (response.status_code, response.headers.get("Location"))
    assert "Location" not in response.headers
    assert response.headers["Content-Type"].startswith("text/html")


def introspect(live, token: str, **how) -> dict:
    response = requests.post(f"{live.url}/oauth/introspect", data={"token": token}, timeout=TIMEOUT, **how)
    assert response.status_code == 200, response.text[:300]
    return response.json()


def client_token(live, client, scope: str = "migrations:read", **how) -> str:
    response = requests.post(f"{live.url}/oauth/token", auth=(client.client_id, client.client_secret),
                             data={"grant_type": "client_credentials", "scope": scope}, timeout=TIMEOUT, **how)
    assert response.status_code == 200, response.text[:300]
    return response.json()["access_token"]


def raw_exchange(url: str, request: bytes) -> bytes:
    """Send ``request`` as bytes on its own connection; everything the server answered."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=TIMEOUT) as sock:
        try:
            sock.sendall(request)
        except OSError:
            pass  # the server may stop reading (and close) once it has seen enough to refuse
        received = []
        try:
            while chunk := sock.recv(65536):
                received.append(chunk)
        except ConnectionResetError:
            pass  # a close with our bytes still unread; what came before it is kept
    return b"".join(received)


def response_head(raw: bytes) -> tuple[int, list[bytes]]:
    """Status and header lines of a raw HTTP/1.1 response."""
    head, separator, _ = raw.partition(b"\r\n\r\n")
    assert separator, raw[:300]
    status_line, *lines = head.split(b"\r\n")
    return int(status_line.split()[1]), lines


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _compact(header: dict, claims: dict, signature: bytes) -> str:
    return f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}.{_b64(signature)}"


# -- 1. redirect URIs ----------------------------------------------------------------------------

# Each differs from the registered https://app.example.com/callback in one way; a server that
# normalised, prefix-matched or parsed loosely would send the code to an attacker.
REDIRECT_URI_VARIANTS = {
    "path suffix": [REDIRECT_URI + "/evil", REDIRECT_URI + "evil", REDIRECT_URI + "/../../evil",
                    REDIRECT_URI + ".evil.example"],
    "host suffix or subdomain": ["https://app.example.com.evil.example/callback", "https://evil.app.example.com/callback",
                                 "https://example.com/callback", "https://app.example.com.:443/callback"],
    "userinfo": ["https://attacker@app.example.com/callback", "https://app.example.com:x@evil.example/callback",
                 "https://app.example.com%40evil.example/callback", "https://app.example.com\\@evil.example/callback"],
    "percent-encoding": ["https://app.example.com/%63allback", "https://app%2Eexample.com/callback",
                         "https://app.example.com/callback%2F", "https%3A%2F%2Fapp.example.com%2Fcallback",
                         "https://app.example.com/callback%23"],
    "case": ["HTTPS://app.example.com/callback", "https://APP.example.com/callback",
             "https://app.example.com/CALLBACK"],
    "trailing slash or dot": [REDIRECT_URI + "/", "https://app.example.com./callback", REDIRECT_URI + "/."],
    "extra query": [REDIRECT_URI + "?next=https://evil.example", REDIRECT_URI + "?code=attacker", REDIRECT_URI + "?"],
    "fragment": [REDIRECT_URI + "#", REDIRECT_URI + "#@evil.example", REDIRECT_URI + "#code="],
    "port or scheme": ["https://app.example.com:443/callback", "https://app.example.com:8443/callback",
                       "http://app.example.com/callback", "//app.example.com/callback"],
}


@pytest.mark.parametrize("family", REDIRECT_URI_VARIANTS)
def test_a_redirect_uri_variant_gets_an_error_page_even_from_a_user_who_approved_the_app(live, family):
    client, browser = consenting(live)
    for variant in REDIRECT_URI_VARIANTS[family]:
        error_page(browser.authorize(f"{live.url}{authorize_path(client, redirect_uri=variant)}"))
    assert codes_issued(client.client_id) == 0
    # The same request with the registered URI is answered at once with a code.
    assert "code" in callback_params(browser.authorize(f"{live.url}{authorize_path(client)}"))


def test_the_token_endpoint_refuses_any_redirect_uri_but_the_authorized_one(live):
    client, browser = consenting(live, redirect_uris=(REDIRECT_URI, "https://app.example.com/other"))
    code = code_for(live, client, browser)
    variants = [None, "", "https://app.example.com/other", REDIRECT_URI + "/", REDIRECT_URI.upper(),
                REDIRECT_URI + "?x=1", REDIRECT_URI + "#", "https://app.example.com/%63allback",
                "https://evil.example/callback", "https://attacker@app.example.com/callback", " " + REDIRECT_URI]
    for variant in variants:
        data = {"grant_type": "authorization_code", "code": code}
        if variant is not None:
            data["redirect_uri"] = variant
        oauth_refusal(token_request(live, data, client), "invalid_grant")
    # Refusals do not spend the code: the authorized URI still redeems it.
    assert redeem(live, client, code).status_code == 200


# -- 3. CSRF ----------------------------------------------------------------------------------------

CSRF_FORGERIES = ["missing", "empty", "forged", "the attacker's own token", "no session cookie"]


def consent_action(page: requests.Response) -> str:
    action = re.search(r'<form method="post" action="([^"]+)" class="decision">', page.text)
    assert action, page.text[:500]
    return action.group(1).replace("&amp;", "&")


@pytest.mark.parametrize("forgery", CSRF_FORGERIES)
def test_a_consent_post_without_the_victims_csrf_token_issues_no_code(live, forgery):
    org = make_org()
    victim, attacker = make_user(org), make_user(org)
    client = make_client(org)
    browser = signed_in(live, victim)
    page = browser.authorize(f"{live.url}{authorize_path(client)}")
    assert page.status_code == 200 and 'value="allow"' in page.text
    action = consent_action(page)
    data = {"decision": "allow"}
    if forgery == "empty":
        data["csrf_token"] = ""
    elif forgery == "forged":
        data["csrf_token"] = "IjAxMjM0NTY3ODlhYmNkZWYi.ZZZZZZ.forged-signature"
    elif forgery in ("the attacker's own token", "no session cookie"):
        theirs = signed_in(live, attacker)
        data["csrf_token"] = theirs.csrf(theirs.authorize(f"{live.url}{authorize_path(client)}").text)
    sender = requests.Session() if forgery == "no session cookie" else browser.http
    response = sender.post(f"{live.url}{action}", data=data, allow_redirects=False, timeout=TIMEOUT)
    assert response.status_code == 400 and "Location" not in response.headers, response.status_code
    assert codes_issued(client.client_id) == 0
    assert db.session.scalar(select(func.count()).select_from(Consent).where(Consent.user_id == victim.id)) == 0
    # The victim is still asked.
    again = browser.authorize(f"{live.url}{authorize_path(client)}")
    assert again.status_code == 200 and 'value="allow"' in again.text


def test_a_login_post_with_another_sessions_csrf_token_signs_nobody_in(live):
    """Login CSRF: the attacker's own valid token, posted from the victim's browser, does not sign
    the victim in as the attacker."""
    attacker = make_user(make_org())
    theirs = Browser(live.url)
    token = theirs.csrf(theirs.http.get(f"{live.url}/login", timeout=TIMEOUT).text)
    victim = Browser(live.url)
    victim.http.get(f"{live.url}/login", timeout=TIMEOUT)  # the victim's own session
    for sender in (victim.http, requests.Session()):
        response = sender.post(f"{live.url}/login", allow_redirects=False, timeout=TIMEOUT, data={
            "email": attacker.email, "password": PASSWORD, "csrf_token": token, "next": "/"})
        assert response.status_code == 400 and "Location" not in response.headers
    home = victim.http.get(f"{live.url}/", allow_redirects=False, timeout=TIMEOUT)
    assert home.status_code == 302 and attacker.email not in home.text


# -- 4. clickjacking ----------------------------------------------------------------------------------


def assert_unframeable(response: requests.Response, label: str) -> None:
    assert response.headers.get("X-Frame-Options") == "DENY", (label, response.headers)
    assert "frame-ancestors 'none'" in response.headers.get("Content-Security-Policy", ""), (label, response.headers)


def test_sign_in_consent_and_dashboard_pages_refuse_to_be_framed(live):
    org = make_org()
    user = make_user(org)
    client = make_client(org)
    anonymous = Browser(live.url)
    pages = {
        "sign-in form": anonymous.http.get(f"{live.url}/login", timeout=TIMEOUT),
        "sign-in refused": anonymous.login(user.email, PASSWORD + "!"),
        "sign-in CSRF refusal": requests.post(f"{live.url}/login", data={"email": user.email}, timeout=TIMEOUT),
        "authorization error page": anonymous.authorize(f"{live.url}{authorize_path(client, redirect_uri='x')}"),
        "not found": anonymous.http.get(f"{live.url}/no-such-page", timeout=TIMEOUT),
    }
    browser = signed_in(live, user)
    consent = browser.authorize(f"{live.url}{authorize_path(client)}")
    assert consent.status_code == 200 and 'value="allow"' in consent.text
    pages |= {
        "consent": consent,
        "home": browser.http.get(f"{live.url}/", timeout=TIMEOUT),
        "sign-out": browser.http.get(f"{live.url}/logout", timeout=TIMEOUT),
        "dashboard": browser.http.get(f"{live.url}/dashboard/api-keys", timeout=TIMEOUT),
        "dashboard form": browser.http.get(f"{live.url}/dashboard/api-keys/new", timeout=TIMEOUT),
        "authorized apps": browser.http.get(f"{live.url}/dashboard/authorized-apps", timeout=TIMEOUT),
    }
    for label, response in pages.items():
        assert response.headers["Content-Type"].startswith("text/html"), label
        assert_unframeable(response, label)


# -- 5. codes and refresh tokens belong to their client -----------------------------------------------

THIEVES = ["confidential client of the same org", "public client of the same org", "client of another org"]


def _org_of(client) -> Organization:
    return db.session.get(Organization, client.org_id)


def thief_client(org, thief: str):
    """Another client, registered by ``org`` or by an organization of its own."""
    if thief == "public client of the same org":
        return make_client(org, public=True)
    return make_client(org if thief.endswith("same org") else make_org(name="Other"))


@pytest.mark.parametrize("thief", THIEVES)
def test_a_code_issued_to_one_client_is_refused_to_another(live, thief):
    client, browser = consenting(live)
    other = thief_client(_org_of(client), thief)
    code = code_for(live, client, browser)
    oauth_refusal(redeem(live, other, code), "invalid_grant")
    oauth_refusal(redeem(live, other, code, code_verifier=generate_token(48)), "invalid_grant")
    # RFC 6749 §4.1.3 asks that the code was issued to the client redeeming it, nothing more:
    # another client's attempt neither spends the code nor revokes anything.
    first = redeem(live, client, code)
    assert first.status_code == 200, first.text
    assert requests.get(f"{live.url}/v1/me", headers=bearer(first.json()["access_token"]),
                        timeout=TIMEOUT).status_code == 200


@pytest.mark.parametrize("thief", THIEVES)
def test_a_refresh_token_issued_to_one_client_is_refused_to_another(live, thief):
    client, browser = consenting(live)
    other = thief_client(_org_of(client), thief)
    tokens = redeem(live, client, code_for(live, client, browser)).json()
    oauth_refusal(token_request(live, {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
                                other), "invalid_grant")
    # Not treated as a reuse: the grant stands and its client refreshes as usual.
    assert requests.get(f"{live.url}/v1/me", headers=bearer(tokens["access_token"]), timeout=TIMEOUT).status_code == 200
    refreshed = token_request(live, {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}, client)
    assert refreshed.status_code == 200, refreshed.text


# -- 6. one organization's credentials against another's ---------------------------------------------


def test_a_foreign_id_is_answered_exactly_as_a_missing_one(live):
    """No 403 that would confirm the object exists: another organization's id gets the very
    answer an id that never existed gets, for every method, and nothing of it changes."""
    org, other = make_org(), make_org(name="Other")
    _, admin = make_api_key(org)
    foreign_key, other_admin = make_api_key(other)
    account = requests.post(f"{live.url}/v1/service-accounts", headers=bearer(other_admin), timeout=TIMEOUT,
                            json={"name": "theirs", "scopes": ["migrations:read"]}).json()
    requests.get(f"{live.url}/v1/me", headers=bearer(other_admin), timeout=TIMEOUT)
    audit_written(other.id, 1, action="me.read")
    foreign_entry = db.session.scalar(select(AuditEvent.id).where(AuditEvent.org_id == other.id).limit(1))

    def answer(method: str, template: str, object_id: str, body: dict | None) -> tuple[int, str]:
        """Status and body for the id put in ``template`` (and for "{}" in ``body``), the id masked
        (an error may name it)."""
        sent = None if body is None else {k: object_id if v == "{}" else v for k, v in body.items()}
        response = requests.request(method, f"{live.url}{template.format(object_id)}", headers=bearer(admin),
                                    json=sent, timeout=TIMEOUT)
        return response.status_code, response.text.replace(object_id, "<id>")

    cases = [
        ("GET", "/v1/api-keys/{}", foreign_key.id, None),
        ("PATCH", "/v1/api-keys/{}", foreign_key.id, {"name": "mine"}),
        ("DELETE", "/v1/api-keys/{}", foreign_key.id, None),
        ("GET", "/v1/service-accounts/{}", account["id"], None),
        ("PATCH", "/v1/service-accounts/{}", account["id"], {"description": "mine"}),
        ("DELETE", "/v1/service-accounts/{}", account["id"], None),
        ("POST", "/v1/api-keys", account["id"], {"name": "x", "scopes": ["migrations:read"], "service_account_id": "{}"}),
        ("GET", "/v1/api-keys?starting_after={}", foreign_key.id, None),
        ("GET", "/v1/service-accounts?starting_after={}", account["id"], None),
        ("GET", "/v1/audit-logs?starting_after={}", foreign_entry, None),
    ]
    for method, template, object_id, body in cases:
        never_existed = object_id.split("_")[0] + "_" + secrets.token_hex(10)  # same prefix and length
        foreign = answer(method, template, object_id, body)
        assert foreign == answer(method, template, never_existed, body), (method, template, foreign)
        assert foreign[0] in (400, 404), (method, template, foreign)
    listed = requests.get(f"{live.url}/v1/audit-logs?limit=100&actor_id={foreign_key.id}", headers=bearer(admin),
                          timeout=TIMEOUT)
    assert listed.status_code == 200 and listed.json()["data"] == []
    # Nothing of theirs changed.
    assert requests.get(f"{live.url}/v1/api-keys/{foreign_key.id}", headers=bearer(other_admin),
                        timeout=TIMEOUT).json()["name"] == "Test key"
    theirs = requests.get(f"{live.url}/v1/service-accounts/{account['id']}", headers=bearer(other_admin),
                          timeout=TIMEOUT).json()
    assert theirs["name"] == "theirs" and theirs.get("description") in (None, "")


def test_a_client_of_another_org_sees_its_tokens_as_inactive_and_cannot_revoke_them(live):
    client, browser = consenting(live)
    org = _org_of(client)
    _, own_key = make_api_key(org, scopes="admin:read")
    tokens = redeem(live, client, code_for(live, client, browser)).json()
    machine = client_token(live, make_client(org, redirect_uris=()))
    stranger = make_client(make_org(name="Other"), redirect_uris=())
    stranger_auth = {"auth": (stranger.client_id, stranger.client_secret)}
    theirs = {"access token": tokens["access_token"], "refresh token": tokens["refresh_token"],
              "client-credentials token": machine, "API key": own_key}
    for label, token in theirs.items():
        assert introspect(live, token, headers=bearer(own_key))["active"] is True, label  # its own org sees it
        assert introspect(live, token, **stranger_auth) == {"active": False}, label
        revoked = requests.post(f"{live.url}/oauth/revoke", data={"token": token}, timeout=TIMEOUT, **stranger_auth)
        assert revoked.status_code == 200, label  # RFC 7009 §2.2: no hint of what exists
    for label, token in theirs.items():
        assert introspect(live, token, headers=bearer(own_key))["active"] is True, label
    for token in (tokens["access_token"], machine, own_key):
        assert requests.get(f"{live.url}/v1/me", headers=bearer(token), timeout=TIMEOUT).status_code == 200


@pytest.fixture()
def server_key(live):
    """The server's own current signing key (the test shares its database and secret)."""
    record = signing_keys.current_key_record()
    return record.kid, serialization.load_pem_private_key(signing_keys.private_pem(record), password=None)


def test_an_access_token_sees_only_its_own_organization(live, server_key):
    org, other = make_org(), make_org(name="Other")
    client = make_client(org, scopes="admin:read", redirect_uris=())
    mine, _ = make_api_key(org)
    foreign, other_admin = make_api_key(other)
    account = requests.post(f"{live.url}/v1/service-accounts", headers=bearer(other_admin), timeout=TIMEOUT,
                            json={"name": "theirs", "scopes": ["migrations:read"]}).json()
    requests.get(f"{live.url}/v1/me", headers=bearer(other_admin), timeout=TIMEOUT)
    audit_written(other.id, 1, action="me.read")
    their_entries = set(db.session.scalars(select(AuditEvent.id).where(AuditEvent.org_id == other.id)))
    token = client_token(live, client, scope="admin:read")
    headers = bearer(token)

    def get(path: str) -> requests.Response:
        return requests.get(f"{live.url}{path}", headers=headers, timeout=TIMEOUT)

    assert get("/v1/me").json()["organization"]["id"] == org.id
    audit_written(org.id, 1, action="me.read")
    assert {k["id"] for k in get("/v1/api-keys?limit=100").json()["data"]} == {mine.id}
    assert get("/v1/service-accounts?limit=100").json()["data"] == []
    entries = {e["id"] for e in get("/v1/audit-logs?limit=100").json()["data"]}
    assert entries and not entries & their_entries
    envelope(get(f"/v1/api-keys/{foreign.id}"), 404, "not_found")
    envelope(get(f"/v1/service-accounts/{account['id']}"), 404, "not_found")
    # The same token re-signed with the server's real key but claiming the other organization:
    # its client is not of that organization, so it speaks for nobody there.
    kid, private_key = server_key
    claims = jwt.decode(token, options={"verify_signature": False}) | {"org": other.id,
                                                                      "jti": secrets.token_urlsafe(16)}
    forged = jwt.encode(claims, private_key, algorithm="RS256", headers={"typ": "at+jwt", "kid": kid})
    envelope(requests.get(f"{live.url}/v1/me", headers=bearer(forged), timeout=TIMEOUT), 401, "unauthorized")
    envelope(requests.get(f"{live.url}/v1/api-keys", headers=bearer(forged), timeout=TIMEOUT), 401, "unauthorized")
    assert introspect(live, forged, headers=bearer(other_admin)) == {"active": False}


# -- 7. PKCE downgrade ---------------------------------------------------------------------------------


@pytest.mark.parametrize("public", [True, False], ids=["public client", "confidential client"])
def test_a_pkce_bound_code_is_refused_without_its_verifier(live, public):
    client, browser = consenting(live, public=public)
    verifier = generate_token(48)
    challenge = create_s256_code_challenge(verifier)
    code = code_for(live, client, browser, code_challenge=challenge, code_challenge_method="S256")
    # A missing or malformed verifier makes a malformed request (RFC 6749 §5.2: invalid_request);
    # a well-formed one that does not match is invalid_grant (RFC 7636 §4.6). Neither spends the code.
    attempts = [
        ("no verifier", None, "invalid_request"),
        ("empty verifier", "", "invalid_request"),
        ("too short", verifier[:42], "invalid_request"),
        ("too long", verifier + "a" * 100, "invalid_request"),
        ("outside the alphabet", verifier[:-1] + "!", "invalid_request"),
        ("another verifier", generate_token(48), "invalid_grant"),
        ("the challenge itself (plain)", challenge, "invalid_grant"),
        ("the verifier one character off", verifier[:-1] + ("A" if verifier[-1] != "A" else "B"), "invalid_grant"),
    ]
    for label, attempt, error in attempts:
        extra = {} if attempt is None else {"code_verifier": attempt}
        response = redeem(live, client, code, **extra)
        assert response.status_code == 400 and response.json()["error"] == error, (label, response.text)
    good = redeem(live, client, code, code_verifier=verifier)
    assert good.status_code == 200, good.text


@pytest.mark.parametrize("public", [True, False], ids=["public client", "confidential client"])
def test_a_challenge_other_than_s256_is_refused_and_issues_no_code(live, public):
    client, browser = consenting(live, public=public)
    verifier = generate_token(48)
    refused = [
        {"code_challenge": verifier, "code_challenge_method": "plain"},
        {"code_challenge": verifier},  # no method: RFC 7636 §4.3 reads it as plain
        {"code_challenge": create_s256_code_challenge(verifier), "code_challenge_method": "s256"},
        {"code_challenge": create_s256_code_challenge(verifier), "code_challenge_method": "S512"},
        {"code_challenge_method": "S256"},  # a method without a challenge
    ]
    if public:
        refused.append({})  # a public client must send a challenge
    for extra in refused:
        params = callback_params(browser.authorize(f"{live.url}{authorize_path(client, **extra)}"))
        assert params.get("error") == "invalid_request" and params["state"] == "st4te", (extra, params)
        assert "code" not in params
    assert codes_issued(client.client_id) == 0
    ok = code_for(live, client, browser, code_challenge=create_s256_code_challenge(verifier),
                  code_challenge_method="S256")
    assert redeem(live, client, ok, code_verifier=verifier).status_code == 200


# -- 8. forged JWTs ------------------------------------------------------------------------------------


class AttackerSite:
    """The attacker's web server on loopback: it serves the attacker's JWKS and certificate and
    counts every connection made to it. The server under test must make none."""

    def __init__(self, jwks: dict, certificate_pem: bytes) -> None:
        site = self
        self.connections = 0
        self.lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def setup(self):
                with site.lock:
                    site.connections += 1
                super().setup()

            def do_GET(self):  # noqa: N802 (http.server's naming)
                if self.path.endswith(".pem"):
                    body, kind = certificate_pem, "application/pem-certificate-chain"
                else:
                    body, kind = json.dumps(jwks).encode(), "application/json"
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture(scope="module")
def attacker():
    """The attacker's RSA key, a self-signed certificate for it, and their web server."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(days=1))
                   .not_valid_after(now + timedelta(days=30)).sign(key, hashes.SHA256()))
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key())) | {
        "kid": "attacker-1", "use": "sig", "alg": "RS256"}
    site = AttackerSite({"keys": [jwk]}, certificate.public_bytes(serialization.Encoding.PEM))
    try:
        yield key, certificate, jwk, site
    finally:
        site.close()


JWT_ATTACKS = ["alg none", "HS256 keyed with the public key", "jku", "x5u", "x5c", "jwk"]


def forged_tokens(attack: str, claims: dict, real_kid: str, attacker_material, public_jwk: dict) -> list[str]:
    key, certificate, attacker_jwk, site = attacker_material
    if attack == "alg none":
        return [_compact({"alg": alg, "typ": "at+jwt", "kid": real_kid}, claims, signature)
                for alg in ("none", "None", "NONE", "nOnE") for signature in (b"", b"x" * 256)]
    if attack == "HS256 keyed with the public key":
        public = jwt.algorithms.RSAAlgorithm.from_jwk(json.dumps(public_jwk))
        secrets_tried = [public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
                         public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1),
                         public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo),
                         json.dumps(public_jwk).encode()]
        tokens = []
        for secret in secrets_tried:
            for alg, digest in (("HS256", hashlib.sha256), ("HS512", hashlib.sha512)):
                header = {"alg": alg, "typ": "at+jwt", "kid": real_kid}
                signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
                signature = hmac.new(secret, signing_input.encode(), digest).digest()
                tokens.append(f"{signing_input}.{_b64(signature)}")
        return tokens
    extra = {
        "jku": {"jku": f"{site.url}/.well-known/jwks.json"},
        "x5u": {"x5u": f"{site.url}/certificate.pem"},
        "x5c": {"x5c": [base64.b64encode(certificate.public_bytes(serialization.Encoding.DER)).decode()]},
        "jwk": {"jwk": {k: v for k, v in attacker_jwk.items() if k in ("kty", "n", "e")}},
    }[attack]
    return [jwt.encode(claims, key, algorithm="RS256", headers={"typ": "at+jwt", "kid": kid} | extra)
            for kid in ("attacker-1", real_kid)]


@pytest.mark.parametrize("attack", JWT_ATTACKS)
def test_a_forged_access_token_is_refused_and_no_key_url_is_fetched(live, attacker, attack):
    org = make_org()
    client = make_client(org, redirect_uris=())
    _, key = make_api_key(org, scopes="admin:read")
    real = client_token(live, client)
    # The baseline: the real token is accepted, so the forgeries differ only in how they are signed.
    assert requests.get(f"{live.url}/v1/me", headers=bearer(real), timeout=TIMEOUT).status_code == 200
    assert introspect(live, real, headers=bearer(key))["active"] is True
    real_kid = jwt.get_unverified_header(real)["kid"]
    public_jwk = next(k for k in requests.get(f"{live.url}/.well-known/jwks.json", timeout=TIMEOUT).json()["keys"]
                      if k["kid"] == real_kid)
    site = attacker[3]
    before = site.connections
    claims = jwt.decode(real, options={"verify_signature": False})
    for forged in forged_tokens(attack, claims | {"jti": secrets.token_urlsafe(16)}, real_kid, attacker, public_jwk):
        envelope(requests.get(f"{live.url}/v1/me", headers=bearer(forged), timeout=TIMEOUT), 401, "unauthorized")
        gateway = requests.get(f"{live.url}/gateway/check", params={"scope": "migrations:read"},
                               headers=bearer(forged), timeout=TIMEOUT)
        assert gateway.status_code == 401
        assert introspect(live, forged, headers=bearer(key)) == {"active": False}
        assert introspect(live, forged, auth=(client.client_id, client.client_secret)) == {"active": False}
    time.sleep(0.2)  # a fetch the server started but did not wait for would have connected by now
    assert site.connections == before, "the server fetched a key URL named in a token header"


# -- 9. Host header ------------------------------------------------------------------------------------

SPOOFS = {
    "Host": {"Host": EVIL},
    "X-Forwarded-Host": {"X-Forwarded-Host": EVIL, "X-Forwarded-Proto": "https", "X-Forwarded-Port": "443"},
    "Forwarded": {"Forwarded": f"for=203.0.113.9;host={EVIL};proto=https"},
    "all of them": {"Host": EVIL, "X-Forwarded-Host": EVIL, "X-Forwarded-Server": EVIL, "X-Original-Host": EVIL,
                    "X-Host": EVIL, "Forwarded": f"host={EVIL}", "X-Forwarded-Proto": "https"},
}


def own_address(location: str, base_url: str) -> None:
    """A redirect that stays on the server: relative, or absolute on the issuer's own host."""
    assert EVIL not in location, location
    assert urlsplit(location).netloc in ("", urlsplit(base_url).netloc), location


def spoofed_sign_in(live, user, spoof: dict) -> tuple[requests.Response, str]:
    """Sign in with every request spoofed; cookies passed by hand (a cookie jar files them
    under the Host header's name)."""
    page = requests.get(f"{live.url}/login", headers=spoof, timeout=TIMEOUT)
    assert page.status_code == 200 and EVIL not in page.text
    cookie = f"sensei_session={page.cookies.get('sensei_session')}"
    csrf = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page.text).group(1)
    response = requests.post(f"{live.url}/login", headers=spoof | {"Cookie": cookie}, allow_redirects=False,
                             data={"email": user.email, "password": PASSWORD, "csrf_token": csrf, "next": "/"},
                             timeout=TIMEOUT)
    return response, f"sensei_session={response.cookies.get('sensei_session')}"


@pytest.mark.parametrize("spoof", SPOOFS)
def test_a_spoofed_host_changes_no_issuer_token_link_or_redirect(live, spoof):
    headers = SPOOFS[spoof]
    meta = requests.get(f"{live.url}/.well-known/oauth-authorization-server", headers=headers, timeout=TIMEOUT).json()
    assert meta["issuer"] == live.url
    for name, value in meta.items():
        if isinstance(value, str) and value.startswith("http") and name != "service_documentation":
            assert value.startswith(f"{live.url}/") or value == live.url, (name, value)
    assert requests.get(f"{live.url}/.well-known/jwks.json", headers=headers, timeout=TIMEOUT).json()["keys"]

    org = make_org()
    user = make_user(org)
    client = make_client(org)
    _, key = make_api_key(org, scopes="admin:read")
    token = client_token(live, client, headers=headers)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["iss"] == claims["aud"] == live.url
    assert introspect(live, token, headers=bearer(key) | headers)["iss"] == live.url
    assert requests.get(f"{live.url}/v1/me", headers=bearer(token) | headers, timeout=TIMEOUT).status_code == 200
    missing = requests.get(f"{live.url}/v1/nope", headers=headers, timeout=TIMEOUT)
    assert EVIL not in missing.text

    to_login = requests.get(f"{live.url}{authorize_path(client)}", headers=headers, allow_redirects=False,
                            timeout=TIMEOUT)
    assert to_login.status_code == 302
    own_address(to_login.headers["Location"], live.url)
    signed, cookie = spoofed_sign_in(live, user, headers)
    assert signed.status_code == 303
    own_address(signed.headers["Location"], live.url)
    consent = requests.get(f"{live.url}{authorize_path(client)}", headers=headers | {"Cookie": cookie},
                           allow_redirects=False, timeout=TIMEOUT)
    assert consent.status_code == 200 and EVIL not in consent.text
    for path in ("/", "/dashboard/api-keys", "/logout"):
        page = requests.get(f"{live.url}{path}", headers=headers | {"Cookie": cookie}, allow_redirects=False,
                            timeout=TIMEOUT)
        assert page.status_code == 200 and EVIL not in page.text, path
    assert requests.get(f"{live.url}/dashboard/api-keys", headers=headers, allow_redirects=False,
                        timeout=TIMEOUT).headers["Location"].startswith("/login")


@pytest.fixture(scope="module")
def production_behind_a_proxy(settings_overrides, app, tmp_path_factory):
    """SENSEI_ENV=production behind one trusted proxy, issuer https://auth.example.test."""
    port = free_port()
    server = start_server(settings_overrides | {"ENV": "production", "ISSUER": "https://auth.example.test",
                                                "SQLITE_SINGLE_HOST": "1", "TRUSTED_PROXIES": 1},
                          port, tmp_path_factory.mktemp("attacks-production") / "gunicorn.log")
    yield server
    stop_server(server)


def test_a_spoofed_host_changes_nothing_behind_a_trusted_proxy_nor_in_the_https_redirect(
        production_behind_a_proxy, ctx):
    url = production_behind_a_proxy.url
    https = {"X-Forwarded-Proto": "https"}
    for spoof in SPOOFS.values():
        meta = requests.get(f"{url}/.well-known/oauth-authorization-server", headers=https | spoof, timeout=TIMEOUT)
        assert meta.status_code == 200 and meta.json()["issuer"] == "https://auth.example.test"
        assert meta.json()["jwks_uri"] == "https://auth.example.test/.well-known/jwks.json"
        # Plain HTTP to a page (as the proxy says) is sent to https: on the issuer's host, whatever
        # the request named.
        page = requests.get(f"{url}/login?next=/dashboard", headers=spoof | {"X-Forwarded-Proto": "http"},
                            allow_redirects=False, timeout=TIMEOUT)
        assert page.status_code == 308, page.status_code
        assert page.headers["Location"] == "https://auth.example.test/login?next=/dashboard", page.headers["Location"]
    org = make_org()
    client = make_client(org, redirect_uris=())
    token = client_token(production_behind_a_proxy, client, headers=https | SPOOFS["all of them"])
    assert jwt.decode(token, options={"verify_signature": False})["iss"] == "https://auth.example.test"


# -- 11. hostile requests -----------------------------------------------------------------------------

OVERSIZED_HEADERS = {
    "one 100 KB header": b"X-Junk: " + b"a" * 100_000 + b"\r\n",
    "a 100 KB cookie": b"Cookie: sensei_session=" + b"a" * 100_000 + b"\r\n",
    "a 100 KB Authorization": b"Authorization: Bearer sk_live_" + b"a" * 100_000 + b"\r\n",
    "500 headers": b"".join(b"X-H%d: v\r\n" % i for i in range(500)),
    "a 100 KB header folded over lines": b"X-Junk: a\r\n" + b" a\r\n" * 25_000,
}


@pytest.mark.parametrize("shape", OVERSIZED_HEADERS)
def test_oversized_headers_get_a_clean_4xx_from_gunicorn(live, shape):
    for path in (b"/v1/me", b"/login", b"/oauth/token"):
        raw = raw_exchange(live.url, b"GET " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                           + OVERSIZED_HEADERS[shape] + b"Connection: close\r\n\r\n")
        status, _ = response_head(raw)
        assert 400 <= status < 500, (shape, path, raw[:300])
        assert b"Traceback" not in raw and b"File \"" not in raw
    assert requests.get(f"{live.url}/healthz", timeout=TIMEOUT).status_code == 200


HOSTILE_YAML = [
    "name: !!python/object/apply:os.system ['touch {marker}']\nscopes: [migrations:read]\n",
    "name: x\nscopes: !!python/object/apply:subprocess.check_call [[touch, '{marker}']]\n",
    "!!python/object/new:os.system ['touch {marker}']\n",
    "name: !<tag:yaml.org,2002:python/object/apply:os.system> ['touch {marker}']\nscopes: [migrations:read]\n",
    "name: !!python/name:os.system\nscopes: [migrations:read]\n",
    "name: !include /etc/passwd\nscopes: [migrations:read]\n",
    # The billion laughs: nine levels of nine aliases.
    "a: &a [lol,lol,lol,lol,lol,lol,lol,lol,lol]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{','.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(8))
    + "name: *i\nscopes: [migrations:read]\n",
    "base: &base {{scopes: [migrations:read]}}\nname: x\n<<: *base\n",
]


@pytest.mark.parametrize("surface", ["/v1/service-accounts", "dashboard upload"])
def test_hostile_yaml_runs_nothing_and_creates_nothing(live, surface, tmp_path):
    org = make_org()
    _, admin = make_api_key(org)
    browser = signed_in(live, make_user(org))
    page = browser.http.get(f"{live.url}/dashboard/service-accounts/new", timeout=TIMEOUT)
    upload_token = re.search(r'name="yaml-csrf_token" type="hidden" value="([^"]+)"', page.text).group(1)
    marker = tmp_path / "executed"
    for template in HOSTILE_YAML:
        document = template.format(marker=marker).encode()
        if surface == "dashboard upload":
            response = browser.http.post(f"{live.url}/dashboard/service-accounts/new", timeout=TIMEOUT,
                                         data={"yaml-csrf_token": upload_token},
                                         files={"yaml-file": ("service-account.yaml", document, "application/yaml")})
            assert response.status_code == 400 and "won't be shown again" not in response.text, template
        else:
            for content_type in ("application/yaml", "application/json"):
                response = requests.post(f"{live.url}{surface}", data=document, timeout=TIMEOUT,
                                         headers=bearer(admin) | {"Content-Type": content_type})
                envelope(response, 400, "invalid_request")
    assert not marker.exists()
    db.session.rollback()
    assert db.session.scalar(select(func.count()).select_from(ServiceAccount)
                             .where(ServiceAccount.org_id == org.id)) == 0


def test_deep_nesting_on_every_json_body_is_refused_in_the_envelope(live):
    org = make_org()
    key_row, admin = make_api_key(org)
    account = requests.post(f"{live.url}/v1/service-accounts", headers=bearer(admin), timeout=TIMEOUT,
                            json={"name": "sa", "scopes": ["migrations:read"]}).json()
    targets = [("POST", "/v1/api-keys"), ("PATCH", f"/v1/api-keys/{key_row.id}"),
               ("POST", "/v1/service-accounts"), ("PATCH", f"/v1/service-accounts/{account['id']}")]
    bodies = {"100000 [": "[" * 100_000 + "]" * 100_000, "100000 {": '{"a":' * 100_000 + "1" + "}" * 100_000,
              "20000 [ unclosed": "[" * 20_000}
    for method, path in targets:
        for label, body in bodies.items():
            response = requests.request(method, f"{live.url}{path}", data=body.encode(), timeout=TIMEOUT,
                                        headers=bearer(admin) | {"Content-Type": "application/json"})
            if path.startswith("/v1/service-accounts") and len(body) > 64 * 1024:
                # These endpoints read a body that is not JSON as YAML (`curl --data-binary @file.yaml`),
                # and YAML is limited to 64 KiB: refused as too large for that.
                envelope(response, 413, "payload_too_large")
            else:
                error = envelope(response, 400, "invalid_request")
                assert "nested too deeply" in error["message"], (method, path, label, error)
    assert requests.get(f"{live.url}/v1/me", headers=bearer(admin), timeout=TIMEOUT).status_code == 200


def test_nul_bytes_in_audit_filters_and_page_paths_are_not_a_500(live):
    """PostgreSQL refuses a NUL in a query parameter: every value that reaches a query from the
    URL must be refused or answered before it does."""
    org = make_org()
    _, admin = make_api_key(org)
    browser = signed_in(live, make_user(org))
    for query in ("action=a%00b", "actor_id=key_%00", "starting_after=log_%00", "since=2027-01-01%00"):
        response = requests.get(f"{live.url}/v1/audit-logs?{query}", headers=bearer(admin), timeout=TIMEOUT)
        assert response.status_code in (200, 400), (query, response.status_code)
        if response.status_code == 200:
            assert response.json()["data"] == []
        page = browser.http.get(f"{live.url}/dashboard/audit?{query}", timeout=TIMEOUT)
        assert page.status_code in (200, 400), (query, page.status_code)
    client = make_client(org)
    confirm = browser.http.get(f"{live.url}/dashboard/authorized-apps/{client.client_id}/revoke", timeout=TIMEOUT)
    revoked = browser.http.post(f"{live.url}/dashboard/authorized-apps/{client.client_id}%00/revoke",
                                data={"csrf_token": browser.csrf(confirm.text)}, allow_redirects=False,
                                timeout=TIMEOUT)
    assert revoked.status_code in (303, 400, 404), revoked.status_code


STATES = ["x\r\nSet-Cookie: injected=1", "x\rX-Injected: 1", "x\nLocation: https://evil.example/",
          "x%0d%0aX-Injected:%201", "x\u2028\u0085X-Injected: 1"]


def redirect_of(url: str, path: str, cookie: str | None) -> tuple[int, list[bytes]]:
    request = (f"GET {path} HTTP/1.1\r\nHost: {urlsplit(url).netloc}\r\n"
               + (f"Cookie: {cookie}\r\n" if cookie else "") + "Connection: close\r\n\r\n")
    return response_head(raw_exchange(url, request.encode()))


def assert_no_injected_header(lines: list[bytes]) -> None:
    """No header line carries a raw CR or LF, and none of the states' headers got through."""
    assert not any(b"\r" in line or b"\n" in line for line in lines), lines
    names = [line.split(b":", 1)[0].strip().lower() for line in lines]
    assert b"x-injected" not in names, lines
    assert not any(name == b"set-cookie" and b"injected" in line for name, line in zip(names, lines, strict=True))
    assert names.count(b"location") <= 1, lines


@pytest.mark.parametrize("outcome", ["code", "error", "sign-in"])
def test_cr_lf_in_state_never_splits_a_header(live, outcome):
    client, browser = consenting(live)
    cookie = None if outcome == "sign-in" else f"sensei_session={browser.http.cookies.get('sensei_session')}"
    for state in STATES:
        extra = {"state": state} | ({"response_type": "token"} if outcome == "error" else {})
        status, lines = redirect_of(live.url, authorize_path(client, **extra), cookie)
        assert status == 302, (state, status)
        assert_no_injected_header(lines)
        location = next(line for line in lines if line.lower().startswith(b"location:")).split(b":", 1)[1].strip()
        parts = urlsplit(location.decode("ascii"))
        if outcome == "sign-in":
            assert parts.path == "/login" and not parts.netloc
            continue
        params = {k: v[0] for k, v in parse_qs(parts.query).items()}
        assert location.decode().startswith(REDIRECT_URI + "?") and params["state"] == state, location
        assert ("code" in params) is (outcome == "code")


def test_cr_lf_in_redirect_uri_is_an_error_page_without_an_injected_header(live):
    client, browser = consenting(live)
    cookie = f"sensei_session={browser.http.cookies.get('sensei_session')}"
    for tail in ("\r\nSet-Cookie: injected=1", "\rX-Injected: 1", "\nLocation: https://evil.example/"):
        for cookie_sent in (cookie, None):
            status, lines = redirect_of(live.url, authorize_path(client, redirect_uri=REDIRECT_URI + tail), cookie_sent)
            assert status == 400, (tail, status)
            assert_no_injected_header(lines)
            assert not any(line.lower().startswith(b"location:") for line in lines)
    assert codes_issued(client.client_id) == 0
