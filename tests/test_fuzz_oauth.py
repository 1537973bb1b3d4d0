"""Hypothesis against the OAuth and sign-in endpoints of a live server (issue 10).

Random, hostile and almost-right values for every parameter of the token, revoke, introspect,
authorize and login requests. Whatever arrives: no 5xx, no traceback, the answer in the shape
of its surface (RFC 6749 error JSON, an HTML page, a redirect only to the client's registered
URI or to the sign-in page), never a credential issued, and no row written but audit entries.

`make test` runs a bounded share; `make fuzz` (SENSEI_FUZZ=full) many more examples.
"""

from __future__ import annotations

import base64
from urllib.parse import urlsplit

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import FUZZ_FULL
from tests.factories import (
    PASSWORD,
    REDIRECT_URI,
    Browser,
    make_client,
    make_org,
    make_user,
    row_counts,
)

pytestmark = pytest.mark.server

EXAMPLES = 2_000 if FUZZ_FULL else 50
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=not FUZZ_FULL,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

OAUTH_ERRORS = {"invalid_request", "invalid_client", "invalid_grant", "unauthorized_client",
                "unsupported_grant_type", "invalid_scope", "unsupported_token_type", "temporarily_unavailable"}

# Values a careless or hostile client sends: empty, control characters, CR/LF, NUL, encodings,
# injections, huge, and names that are almost right.
NASTY = [
    "", " ", "\x00", "a\x00b", "\r\n", "x\r\nSet-Cookie: a=b", "%00", "%0d%0aLocation:%20https://evil.example",
    "../../../etc/passwd", "' OR '1'='1", "<script>alert(1)</script>", "null", "[]", "{}", "true", "-1",
    "9" * 40, "é" * 100, "\ud7ff", "\uffff", "x" * 5_000, "https://evil.example/callback",
    REDIRECT_URI, REDIRECT_URI + "/", REDIRECT_URI.upper(), REDIRECT_URI + "?x=1", REDIRECT_URI + "#f",
    "https://app.example.com.evil.example/callback", "https://user@app.example.com/callback",
    "authorization_code", "refresh_token", "password", "implicit", "urn:ietf:params:oauth:grant-type:jwt-bearer",
    "code", "token", "id_token", "S256", "plain", "migrations:read", "openid", "*", "access_token", "refresh_token",
    "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.", "sk_live_" + "A" * 40, "sk_test_", "rt_" + "B" * 40,
]
values = st.one_of(st.sampled_from(NASTY), st.text(max_size=200), st.text(st.characters(codec="ascii"), max_size=60))


def form(names: list[str]):
    """A form of some of ``names`` (and now and then an unknown one), each a value above."""
    return st.dictionaries(st.sampled_from([*names, "unknown", "client_secret"]), values, max_size=len(names) + 1)


def basic(client_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


def oauth_refusal(response: requests.Response) -> None:
    """An RFC 6749 §5.2 error: 4xx JSON with a known ``error``, nothing cached, no traceback."""
    assert response.status_code in (400, 401, 413, 429), (response.status_code, response.text[:300])
    assert response.headers["Content-Type"].startswith("application/json"), response.headers
    assert response.json()["error"] in OAUTH_ERRORS, response.text[:300]
    assert "Traceback" not in response.text
    assert "no-store" in response.headers.get("Cache-Control", "")


class Checked:
    """The server's log from now on, and the rows as they are now: both compared at the end."""

    def __init__(self, live) -> None:
        self.live = live
        self.log_from = len(live.log())
        self.rows = row_counts()
        self.tried = 0  # requests sent: every example is one

    def verify(self) -> None:
        assert self.tried >= EXAMPLES, self.tried
        assert row_counts() == self.rows
        logged = self.live.log()[self.log_from:]
        assert "Traceback" not in logged and "unhandled error" not in logged, logged[-3000:]


def confidential(org):
    return make_client(org, scopes="migrations:read migrations:write")


def test_token_requests_without_a_valid_grant_are_refused_in_rfc6749_shape(live):
    client = confidential(make_org())
    checked = Checked(live)
    auths = st.sampled_from([None, basic(client.client_id, client.client_secret), basic(client.client_id, "wrong"),
                             basic("unknown", "x"), "Basic ", "Basic %%%", "Bearer x", "Basic " + "A" * 5000])
    grant_types = st.one_of(st.sampled_from(["authorization_code", "refresh_token", "password", ""]), values)
    session = requests.Session()

    @FUZZ
    @given(params=form(["grant_type", "code", "redirect_uri", "code_verifier", "refresh_token", "scope",
                        "client_id", "username", "password"]), grant_type=grant_types, auth=auths)
    def attempt(params, grant_type, auth):
        checked.tried += 1
        params = {**params, "grant_type": grant_type}
        headers = {"Authorization": auth} if auth else {}
        oauth_refusal(session.post(f"{live.url}/oauth/token", data=params, headers=headers, timeout=30))

    attempt()
    checked.verify()


def test_client_credentials_with_hostile_scopes_grant_nothing_beyond_the_client(live):
    client = confidential(make_org())
    checked = Checked(live)
    session = requests.Session()

    @FUZZ
    @given(scope=values.filter(lambda s: s.strip() not in ("", "migrations:read", "migrations:write",
                                                            "migrations:read migrations:write",
                                                            "migrations:write migrations:read")))
    def attempt(scope):
        checked.tried += 1
        response = session.post(f"{live.url}/oauth/token", data={"grant_type": "client_credentials", "scope": scope},
                                auth=(client.client_id, client.client_secret), timeout=30)
        if response.status_code == 200:  # a scope string that names allowed scopes only (repeated, spaced)
            granted = set(response.json()["scope"].split())
            assert granted <= {"migrations:read", "migrations:write"} and granted
        else:
            oauth_refusal(response)
            assert response.json()["error"] in ("invalid_scope", "invalid_request")

    attempt()
    checked.verify()


@pytest.mark.parametrize("path", ["/oauth/revoke", "/oauth/introspect"])
def test_revoke_and_introspect_of_anything_but_a_real_token_change_nothing(live, path):
    client = confidential(make_org())
    checked = Checked(live)
    session = requests.Session()

    @FUZZ
    @given(params=form(["token", "token_type_hint"]))
    def attempt(params):
        checked.tried += 1
        response = session.post(f"{live.url}{path}", data=params, timeout=30,
                                auth=(client.client_id, client.client_secret))
        assert "Traceback" not in response.text
        if response.status_code == 200:
            assert "token" in params  # RFC 7009 §2.2: an unknown token is a success; §2.1 of 7662: inactive
            if path.endswith("introspect"):
                assert response.json() == {"active": False}
        else:
            oauth_refusal(response)
            assert response.json()["error"] in ("invalid_request", "unsupported_token_type")

    attempt()
    checked.verify()


def test_authorize_never_redirects_anywhere_but_the_registered_uri_or_sign_in(live):
    org = make_org()
    client = make_client(org, public=True)
    user = make_user(org)
    browser = Browser(live.url)
    assert browser.login(user.email, PASSWORD).status_code == 303
    checked = Checked(live)
    client_ids = st.sampled_from([client.client_id, "unknown", "", client.client_id + "x", client.client_id.upper()])

    @FUZZ
    @given(params=form(["response_type", "redirect_uri", "scope", "state", "code_challenge",
                        "code_challenge_method", "nonce", "prompt"]), client_id=client_ids,
           signed_in=st.booleans())
    def attempt(params, client_id, signed_in):
        checked.tried += 1
        http = browser.http if signed_in else requests.Session()
        response = http.get(f"{live.url}/oauth/authorize", params={**params, "client_id": client_id},
                            allow_redirects=False, timeout=30)
        assert response.status_code in (200, 302, 303, 400, 404, 413, 414, 429), response.status_code
        assert "Traceback" not in response.text
        if response.status_code in (302, 303):
            location = response.headers["Location"]
            assert "\r" not in location and "\n" not in location
            target = urlsplit(location)
            if target.netloc:
                assert f"{target.scheme}://{target.netloc}{target.path}" == REDIRECT_URI, location
                assert "code=" not in location  # an error, never a code: nothing was approved
            else:
                assert target.path == "/login", location
        else:
            assert response.headers["Content-Type"].startswith("text/html")

    attempt()
    checked.verify()


def test_sign_in_with_anything_but_the_password_signs_no_one_in(live):
    org = make_org()
    user = make_user(org)
    checked = Checked(live)
    browser = Browser(live.url)
    page = browser.http.get(f"{live.url}/login", timeout=30)
    token = browser.csrf(page.text)
    emails = st.one_of(st.just(user.email), st.just(user.email.upper()), values)
    passwords = values.filter(lambda p: p != PASSWORD)
    csrf_tokens = st.one_of(st.just(token), values)

    @FUZZ
    @given(email=emails, password=passwords, csrf_token=csrf_tokens, next_path=values)
    def attempt(email, password, csrf_token, next_path):
        checked.tried += 1
        response = browser.http.post(f"{live.url}/login", allow_redirects=False, timeout=30, data={
            "email": email, "password": password, "csrf_token": csrf_token, "next": next_path})
        assert response.status_code in (400, 401, 413, 429), (response.status_code, response.headers)
        assert response.headers["Content-Type"].startswith("text/html")
        assert "Traceback" not in response.text
        assert browser.http.get(f"{live.url}/", allow_redirects=False, timeout=30).status_code == 302  # to /login

    attempt()
    checked.verify()
