"""Hostile and malformed input over real HTTP: never a 500, never a stack trace or SQL,
always the error shape of the surface (RFC 6749 JSON for /oauth, the /v1 envelope, HTML
pages), and always an X-Request-Id (SPEC §4, §5, §9)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import string
import time
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from app.services import signing_keys
from tests.factories import (
    PASSWORD,
    REDIRECT_URI,
    Browser,
    make_api_key,
    make_client,
    make_org,
    make_user,
)

TIMEOUT = 30
LEAK_MARKERS_CASELESS = ("traceback", "sqlalchemy", "psycopg", "sqlite3", "operationalerror",
                         "programmingerror", "integrityerror", 'file "/', "werkzeug debugger")
LEAK_MARKERS_EXACT = ("SELECT ", "INSERT INTO", "UPDATE ", "DELETE FROM", " WHERE ")
SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{8,128}$")
BASE62 = string.digits + string.ascii_letters
UNKNOWN_GRANT_TYPES = [
    "password",
    "implicit",
    'client_credentials"',
    "client_credentials\\",
    "' OR '1'='1",
    '{"grant_type": "client_credentials"}',
    "urn:ietf:params:oauth:grant-type:jwt-bearer",
    "ünïcødé-☃-𝔤𝔯𝔞𝔫𝔱",
    "client_credentials\u202e",
    "\ufeffclient_credentials",
    "%00",
]


# -- helpers --------------------------------------------------------------------------


def clean(response: requests.Response) -> requests.Response:
    """What every response must satisfy, whatever was sent."""
    assert response.status_code < 500, (response.status_code, response.text[:1000])
    request_id = response.headers.get("X-Request-Id")
    assert request_id and SANE_REQUEST_ID.match(request_id), response.headers
    body = response.text
    for marker in LEAK_MARKERS_CASELESS:
        assert marker not in body.lower(), (marker, body[:1000])
    for marker in LEAK_MARKERS_EXACT:
        assert marker not in body, (marker, body[:1000])
    return response


def oauth_error(response: requests.Response, status: int | tuple[int, ...], errors: str | tuple[str, ...]):
    """RFC 6749 §5.2: a JSON object with a string ``error`` (and optional string description)."""
    clean(response)
    statuses = (status,) if isinstance(status, int) else status
    expected = (errors,) if isinstance(errors, str) else errors
    assert response.status_code in statuses, (response.status_code, response.text[:500])
    assert response.headers.get("Content-Type", "").startswith("application/json"), response.headers
    body = response.json()
    assert isinstance(body, dict), body
    assert body.get("error") in expected, body
    assert isinstance(body.get("error_description", ""), str)
    assert set(body) <= {"error", "error_description", "error_uri", "state"}, body
    return body


def envelope(response: requests.Response, status: int, code: str) -> dict:
    """SPEC §9: {"error": {"code", "message", "documentation_url"[, "param"]}}."""
    clean(response)
    assert response.status_code == status, (response.status_code, response.text[:500])
    assert response.headers.get("Content-Type", "").startswith("application/json"), response.headers
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert error["code"] == code, body
    assert isinstance(error["message"], str) and error["message"], body
    assert error["documentation_url"].startswith("http") and error["documentation_url"].endswith(f"#{code}"), body
    assert set(error) <= {"code", "message", "documentation_url", "param"}, body
    return error


def error_page(response: requests.Response, status: int = 400) -> str:
    """An HTML page for a person, never a redirect."""
    clean(response)
    assert response.status_code == status, (response.status_code, response.text[:500])
    assert "Location" not in response.headers, response.headers
    assert response.headers.get("Content-Type", "").startswith("text/html"), response.headers
    assert "<html" in response.text.lower()
    return response.text


def basic(client_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


def post(live, path: str, **kwargs) -> requests.Response:
    kwargs.setdefault("allow_redirects", False)
    return requests.post(f"{live.url}{path}", timeout=TIMEOUT, **kwargs)


def get(live, path: str, **kwargs) -> requests.Response:
    kwargs.setdefault("allow_redirects", False)
    return requests.get(f"{live.url}{path}", timeout=TIMEOUT, **kwargs)


def random_base62(n: int) -> str:
    return "".join(secrets.choice(BASE62) for _ in range(n))


def flip(text: str, index: int) -> str:
    """``text`` with one base62 character at ``index`` replaced by another."""
    old = text[index]
    new = "A" if old != "A" else "B"
    return text[:index] + new + text[index + 1:]


@pytest.fixture()
def confidential(live):
    org = make_org()
    client = make_client(org)
    return client


@pytest.fixture()
def api_key(live):
    org = make_org()
    _, plaintext = make_api_key(org, scopes="admin:read")
    return plaintext


# -- /oauth/token ---------------------------------------------------------------------


def test_token_missing_grant_type(live, confidential):
    auth = (confidential.client_id, confidential.client_secret)
    oauth_error(post(live, "/oauth/token", auth=auth, data={}), 400, "invalid_request")
    oauth_error(post(live, "/oauth/token", auth=auth, data={"scope": "migrations:read"}), 400, "invalid_request")
    oauth_error(post(live, "/oauth/token", auth=auth, data={"grant_type": ""}), 400, "invalid_request")
    oauth_error(post(live, "/oauth/token"), 400, "invalid_request")


@pytest.mark.parametrize("grant_type", UNKNOWN_GRANT_TYPES)
def test_token_unknown_grant_type(live, confidential, grant_type):
    auth = (confidential.client_id, confidential.client_secret)
    response = post(live, "/oauth/token", auth=auth, data={"grant_type": grant_type})
    oauth_error(response, 400, "unsupported_grant_type")
    assert "access_token" not in response.text
    # Unauthenticated, too: still a clean 4xx in the RFC shape.
    oauth_error(post(live, "/oauth/token", data={"grant_type": grant_type}), (400, 401),
                ("unsupported_grant_type", "invalid_client"))


@pytest.mark.parametrize("grant_type", ["client_credentials\x00", "a\x00b", "\x00", "x" * 10 * 1024,
                                        "client_credentials" + "\\" * 10 * 1024, "☃" * 5000])
def test_token_grant_type_with_nul_or_huge(live, confidential, grant_type):
    auth = (confidential.client_id, confidential.client_secret)
    response = post(live, "/oauth/token", auth=auth, data={"grant_type": grant_type})
    oauth_error(response, 400, ("invalid_request", "unsupported_grant_type"))
    assert "access_token" not in response.text


def test_token_json_body_is_not_a_token_request(live, confidential):
    auth = (confidential.client_id, confidential.client_secret)
    response = post(live, "/oauth/token", auth=auth, json={"grant_type": "client_credentials"})
    oauth_error(response, (400, 415), "invalid_request")
    assert "access_token" not in response.text
    # JSON text labelled as a form, and a form labelled as JSON.
    mislabelled = post(live, "/oauth/token", auth=auth, data='{"grant_type": "client_credentials"}',
                       headers={"Content-Type": "application/x-www-form-urlencoded"})
    oauth_error(mislabelled, (400, 415), ("invalid_request", "unsupported_grant_type"))
    as_json = post(live, "/oauth/token", auth=auth, data="grant_type=client_credentials",
                   headers={"Content-Type": "application/json"})
    oauth_error(as_json, (400, 415), "invalid_request")
    broken_json = post(live, "/oauth/token", auth=auth, data='{"grant_type": ',
                       headers={"Content-Type": "application/json"})
    oauth_error(broken_json, (400, 415), "invalid_request")


def test_token_multipart_body(live, confidential):
    auth = (confidential.client_id, confidential.client_secret)
    response = post(live, "/oauth/token", auth=auth,
                    files={"grant_type": (None, "client_credentials"), "blob": ("x.bin", b"\x00\xff" * 100)})
    # RFC 6749 §4.4.2 asks for form-urlencoded; anything else must still fail cleanly (or work).
    clean(response)
    assert response.status_code in (200, 400, 415), response.text[:500]


def test_token_repeated_parameters(live, confidential):
    auth = (confidential.client_id, confidential.client_secret)
    twice = post(live, "/oauth/token", auth=auth,
                 data=[("grant_type", "client_credentials"), ("grant_type", "client_credentials")])
    body = oauth_error(twice, 400, "invalid_request")
    assert "access_token" not in body
    conflicting = post(live, "/oauth/token", auth=auth,
                       data=[("grant_type", "client_credentials"), ("grant_type", "authorization_code")])
    oauth_error(conflicting, 400, "invalid_request")
    codes = post(live, "/oauth/token", auth=auth,
                 data=[("grant_type", "authorization_code"), ("code", "a"), ("code", "b"),
                       ("redirect_uri", REDIRECT_URI)])
    oauth_error(codes, 400, "invalid_request")
    scopes = post(live, "/oauth/token", auth=auth,
                  data=[("grant_type", "client_credentials"), ("scope", "migrations:read"), ("scope", "*")])
    oauth_error(scopes, 400, "invalid_request")
    secrets_twice = post(live, "/oauth/token",
                         data=[("grant_type", "client_credentials"), ("client_id", confidential.client_id),
                               ("client_secret", "wrong"), ("client_secret", confidential.client_secret)])
    oauth_error(secrets_twice, (400, 401), ("invalid_request", "invalid_client"))
    assert "access_token" not in secrets_twice.text


def test_token_repeated_parameter_in_query_string(live, confidential):
    auth = (confidential.client_id, confidential.client_secret)
    response = post(live, "/oauth/token?grant_type=client_credentials&grant_type=refresh_token", auth=auth,
                    data={"grant_type": "client_credentials"})
    oauth_error(response, 400, "invalid_request")


@pytest.mark.parametrize("length", [600, 4000, 5000, 100_000])
def test_token_huge_client_id_in_body(live, confidential, length):
    client_id = confidential.client_id + "a" * length
    response = post(live, "/oauth/token", data={"grant_type": "client_credentials", "client_id": client_id,
                                                "client_secret": confidential.client_secret})
    oauth_error(response, (400, 401), ("invalid_request", "invalid_client"))


def test_token_huge_client_id_in_basic_header(live, confidential):
    header = basic(confidential.client_id + "x" * 5000, confidential.client_secret)
    response = post(live, "/oauth/token", headers={"Authorization": header},
                    data={"grant_type": "client_credentials"})
    oauth_error(response, 401, "invalid_client")


GARBAGE_BASIC_HEADERS = [
    "Basic !!!not-base64!!!",
    "Basic " + base64.b64encode(b"\xff\xfe\xfd:\x80\x81").decode(),
    "Basic " + base64.b64encode(b"cl_\xc3\x28:secret").decode(),
    "Basic " + base64.b64encode(b"no-colon-here").decode(),
    "Basic " + base64.b64encode(b":").decode(),
    "Basic " + base64.b64encode(b"\x00:\x00").decode(),
    "Basic " + base64.b64encode(b"cl_x%00:secret%zz").decode(),
    "Basic ",
    "Basic",
    "Basic ====",
    "Basic Y2w=Y2w=",
    "Basic " + "A" * 3000,
    "basic\tabc",
    "Bearer",
    "Digest username=\"x\"",
    "☃",
]


@pytest.mark.parametrize("header", GARBAGE_BASIC_HEADERS)
def test_token_garbage_basic_header(live, confidential, header):
    response = post(live, "/oauth/token", headers={"Authorization": header.encode("utf-8")},
                    data={"grant_type": "client_credentials"})
    body = oauth_error(response, 401, "invalid_client")
    assert "access_token" not in body
    # RFC 6749 §5.2: a failed Authorization-header authentication answers with a challenge.
    assert "WWW-Authenticate" in response.headers, response.headers


def test_token_basic_header_never_falls_back_to_body_credentials(live, confidential):
    response = post(live, "/oauth/token", headers={"Authorization": "Basic !!!"},
                    data={"grant_type": "client_credentials", "client_id": confidential.client_id,
                          "client_secret": confidential.client_secret})
    oauth_error(response, 401, "invalid_client")


@pytest.mark.parametrize("body", [
    b"grant_type=client_credentials&scope=\xff\xfe\xfd",
    b"grant_type=\xff\xfe",
    b"\xff\xfe\x00\x01=\x80",
    b"grant_type=client_credentials&scope=migrations%3Aread%ff",
    b"grant_type=client_credentials&scope=%C0%AF",
    b"%%%%&&&===",
    b"\x00" * 64,
])
def test_token_raw_non_utf8_form_body(live, confidential, body):
    response = post(live, "/oauth/token", auth=(confidential.client_id, confidential.client_secret), data=body,
                    headers={"Content-Type": "application/x-www-form-urlencoded"})
    oauth_error(response, 400, ("invalid_request", "invalid_scope", "unsupported_grant_type"))
    assert "access_token" not in response.text


@pytest.mark.parametrize("value", ['"quoted"', "back\\slash", "ünïcødé ☃", "' OR 1=1 --", "a" * 4000])
def test_token_grants_with_garbage_values(live, confidential, value):
    """Values Authlib might echo into error_description (which must be plain ASCII) never 500."""
    auth = (confidential.client_id, confidential.client_secret)
    requests_and_errors = [
        ({"grant_type": "authorization_code", "code": value, "redirect_uri": REDIRECT_URI},
         ("invalid_grant", "invalid_request")),
        ({"grant_type": "authorization_code", "code": "abc", "redirect_uri": value},
         ("invalid_grant", "invalid_request")),
        ({"grant_type": "authorization_code", "code": "abc", "redirect_uri": REDIRECT_URI, "code_verifier": value},
         ("invalid_grant", "invalid_request")),
        ({"grant_type": "refresh_token", "refresh_token": value}, ("invalid_grant", "invalid_request")),
        ({"grant_type": "refresh_token", "refresh_token": "rt_" + value}, ("invalid_grant", "invalid_request")),
        ({"grant_type": "refresh_token", "refresh_token": "rt_x", "scope": value},
         ("invalid_grant", "invalid_request", "invalid_scope")),
        ({"grant_type": "client_credentials", "scope": value}, ("invalid_scope", "invalid_request")),
    ]
    for data, errors in requests_and_errors:
        oauth_error(post(live, "/oauth/token", auth=auth, data=data), 400, errors)
    public = post(live, "/oauth/token", data={"grant_type": "authorization_code", "client_id": value,
                                              "code": "abc", "redirect_uri": REDIRECT_URI})
    oauth_error(public, (400, 401), ("invalid_client", "invalid_request"))


def test_token_body_over_one_mebibyte_is_413(live, confidential):
    filler = "a" * (1024 * 1024 + 10)
    response = post(live, "/oauth/token", auth=(confidential.client_id, confidential.client_secret),
                    data={"grant_type": "client_credentials", "padding": filler})
    oauth_error(response, 413, ("invalid_request",))


def test_token_chunked_body_over_one_mebibyte_is_413(live, confidential):
    def chunks():
        yield b"grant_type=client_credentials&padding="
        for _ in range(17):
            yield b"a" * 65536

    response = post(live, "/oauth/token", auth=(confidential.client_id, confidential.client_secret), data=chunks(),
                    headers={"Content-Type": "application/x-www-form-urlencoded"})
    oauth_error(response, 413, ("invalid_request",))


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
def test_token_wrong_method_is_405_with_allow(live, method):
    response = requests.request(method, f"{live.url}/oauth/token", timeout=TIMEOUT, allow_redirects=False,
                                params={"grant_type": "client_credentials"})
    oauth_error(response, 405, "invalid_request")
    allowed = {m.strip() for m in response.headers["Allow"].split(",")}
    assert "POST" in allowed and method not in allowed


def test_token_success_still_works_after_all_this(live, confidential):
    """The baseline the refusals above are measured against: a correct request is answered."""
    response = post(live, "/oauth/token", auth=(confidential.client_id, confidential.client_secret),
                    data={"grant_type": "client_credentials", "scope": "migrations:read"})
    clean(response)
    assert response.status_code == 200 and response.json()["access_token"]


# -- /oauth/revoke and /oauth/introspect ------------------------------------------------


ENDPOINTS = ["/oauth/revoke", "/oauth/introspect"]


@pytest.mark.parametrize("path", ENDPOINTS)
def test_revoke_introspect_without_authentication_is_401(live, path):
    oauth_error(post(live, path, data={"token": "anything"}), 401, "invalid_client")
    oauth_error(post(live, path, data={}), (400, 401), ("invalid_client", "invalid_request"))


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize("credential", [
    "garbage", "sk_live_" + "x" * 38, "sk_live_", "sk_test_" + "A" * 38, "a.b.c", "rt_abc",
    "x" * 3000, "\u2603", '"; DROP TABLE api_keys; --',
])
def test_revoke_introspect_with_garbage_bearer_is_401(live, path, credential):
    response = post(live, path, headers={"Authorization": f"Bearer {credential}".encode()},
                    data={"token": "anything"})
    oauth_error(response, 401, ("invalid_client", "invalid_token"))


@pytest.mark.parametrize("path", ENDPOINTS)
def test_revoke_introspect_with_empty_bearer_is_401(live, path):
    for header in ("Bearer", "Bearer ", "Bearer    "):
        oauth_error(post(live, path, headers={"Authorization": header}, data={"token": "x"}), 401,
                    ("invalid_client", "invalid_token"))


@pytest.mark.parametrize("path", ENDPOINTS)
def test_revoke_introspect_missing_token_is_invalid_request(live, path, api_key, confidential):
    bearer = {"Authorization": f"Bearer {api_key}"}
    oauth_error(post(live, path, headers=bearer, data={}), 400, "invalid_request")
    oauth_error(post(live, path, headers=bearer, data={"token": ""}), 400, "invalid_request")
    oauth_error(post(live, path, headers=bearer, data={"token_type_hint": "access_token"}), 400, "invalid_request")
    oauth_error(post(live, path, auth=(confidential.client_id, confidential.client_secret), data={}), 400,
                "invalid_request")
    oauth_error(post(live, path, headers=bearer, data=[("token", "a"), ("token", "b")]), 400, "invalid_request")


GARBAGE_TOKENS = [
    "garbage",
    "sk_live_" + "A" * 38,
    "sk_test_",
    "rt_" + "x" * 43,
    "rt_",
    "a.b.c",
    "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.",
    "eyJhbGciOiJSUzI1NiJ9.%%%.@@@",
    "....",
    '"\'\\',
    "ünïcødé ☃ 𝔱𝔬𝔨𝔢𝔫",
    "' OR 1=1 --",
    "x" * 4000,
]


@pytest.mark.parametrize("token", GARBAGE_TOKENS)
def test_introspect_garbage_token_is_inactive(live, api_key, confidential, token):
    response = post(live, "/oauth/introspect", headers={"Authorization": f"Bearer {api_key}"},
                    data={"token": token})
    clean(response)
    assert response.status_code == 200, response.text[:500]
    assert response.json() == {"active": False}
    by_client = post(live, "/oauth/introspect", auth=(confidential.client_id, confidential.client_secret),
                     data={"token": token, "token_type_hint": "refresh_token"})
    clean(by_client)
    assert by_client.status_code == 200 and by_client.json() == {"active": False}


@pytest.mark.parametrize("token", GARBAGE_TOKENS)
def test_revoke_garbage_token_is_200(live, api_key, confidential, token):
    response = post(live, "/oauth/revoke", headers={"Authorization": f"Bearer {api_key}"}, data={"token": token})
    clean(response)
    assert response.status_code == 200, response.text[:500]
    by_client = post(live, "/oauth/revoke", auth=(confidential.client_id, confidential.client_secret),
                     data={"token": token, "token_type_hint": "\u2603"})
    clean(by_client)
    assert by_client.status_code in (200, 400), by_client.text[:500]
    if by_client.status_code == 400:
        oauth_error(by_client, 400, "unsupported_token_type")


@pytest.mark.parametrize("path", ENDPOINTS)
def test_revoke_introspect_token_with_nul_or_oversized(live, api_key, path):
    for token in ("abc\x00def", "x" * 20_000):
        response = post(live, path, headers={"Authorization": f"Bearer {api_key}"}, data={"token": token})
        clean(response)
        if response.status_code == 200:
            if path == "/oauth/introspect":
                assert response.json() == {"active": False}
        else:
            oauth_error(response, 400, "invalid_request")


@pytest.mark.parametrize("path", ENDPOINTS)
def test_revoke_introspect_raw_bytes_and_json(live, api_key, path):
    bearer = {"Authorization": f"Bearer {api_key}"}
    raw = post(live, path, headers=bearer | {"Content-Type": "application/x-www-form-urlencoded"},
               data=b"token=\xff\xfe\x80")
    clean(raw)
    assert raw.status_code in (200, 400), raw.text[:500]
    if path == "/oauth/introspect" and raw.status_code == 200:
        assert raw.json() == {"active": False}
    as_json = post(live, path, headers=bearer, json={"token": "abc"})
    oauth_error(as_json, (400, 415), "invalid_request")
    huge = post(live, path, headers=bearer, data={"token": "a" * (1024 * 1024 + 1)})
    oauth_error(huge, 413, "invalid_request")


@pytest.mark.parametrize("path", ENDPOINTS)
def test_revoke_introspect_get_is_405_with_allow(live, path):
    response = get(live, path, params={"token": "x"})
    oauth_error(response, 405, "invalid_request")
    assert "POST" in response.headers["Allow"]


# -- /oauth/authorize ------------------------------------------------------------------


def authorize(live, **params) -> requests.Response:
    return get(live, f"/oauth/authorize?{urlencode(params)}")


def test_authorize_unknown_or_missing_client_is_an_error_page(live):
    for client_id in ("cl_doesnotexist", "", "x" * 3000, "cl_\x00", "☃", "' OR 1=1 --", 'cl_"\\'):
        response = authorize(live, client_id=client_id, redirect_uri=REDIRECT_URI, response_type="code",
                             state="s")
        error_page(response)
    error_page(authorize(live, redirect_uri=REDIRECT_URI, response_type="code"))
    error_page(get(live, "/oauth/authorize"))


@pytest.mark.parametrize("redirect_uri", [
    None,
    "",
    "https://evil.example/callback",
    REDIRECT_URI + "/",
    REDIRECT_URI.upper(),
    "https://APP.example.com/callback",
    "https://app.example.com/Callback",
    REDIRECT_URI + "?extra=1",
    REDIRECT_URI + "?",
    REDIRECT_URI + "#",
    REDIRECT_URI + "#frag",
    REDIRECT_URI + "%20",
    " " + REDIRECT_URI,
    "http://app.example.com/callback",
    "https://app.example.com:443/callback",
    "https://app.example.com./callback",
    "https://app.example.com@evil.example/callback",
    "https://evil.example\\@app.example.com/callback",
    "https://app.example.com/callback/../callback",
    "https://app.example.com/%63allback",
    "//app.example.com/callback",
    "/callback",
    "javascript:alert(1)",
    'https://app.example.com/callback"><script>alert(1)</script>',
    "https://app.example.com/callback\\",
    "https://app.example.com/callback\u2603",
    "https://app.exаmple.com/callback",  # Cyrillic "а"
    "https://app.example.com/callback\x00",
    "https://app.example.com/callback\r\nSet-Cookie: x=1",
    "x" * 3000,
    REDIRECT_URI + "?" + "a" * 2500,
])
def test_authorize_redirect_uri_not_registered_exactly_is_an_error_page(live, redirect_uri):
    org = make_org()
    client = make_client(org)
    params = {"client_id": client.client_id, "response_type": "code", "state": "s",
              "scope": "migrations:read"}
    if redirect_uri is not None:
        params["redirect_uri"] = redirect_uri
    text = error_page(authorize(live, **params))
    assert "<script>alert(1)" not in text
    # Signed in, the answer is the same: an error page, never a redirect.
    user = make_user(org)
    browser = Browser(live.url)
    assert browser.login(user.email).status_code == 303
    error_page(browser.authorize(f"{live.url}/oauth/authorize?{urlencode(params)}"))


def test_authorize_repeated_parameters_are_an_error_page(live):
    org = make_org()
    client = make_client(org)
    query = urlencode([("client_id", client.client_id), ("client_id", client.client_id),
                       ("redirect_uri", REDIRECT_URI), ("response_type", "code")])
    error_page(get(live, f"/oauth/authorize?{query}"))
    query = urlencode([("client_id", client.client_id), ("redirect_uri", REDIRECT_URI),
                       ("redirect_uri", "https://evil.example/cb"), ("response_type", "code")])
    error_page(get(live, f"/oauth/authorize?{query}"))


def test_authorize_raw_non_utf8_query_is_not_a_500(live):
    org = make_org()
    client = make_client(org)
    response = get(live, f"/oauth/authorize?client_id={client.client_id}&redirect_uri=%FF%FE&response_type=code")
    error_page(response)
    response = get(live, "/oauth/authorize?client_id=%C0%AF%FF&redirect_uri=x")
    error_page(response)


def test_authorize_request_line_beyond_the_front_server_limit_is_a_clean_4xx(live):
    """Past gunicorn's request-line limit the answer comes from gunicorn: still a 4xx, no trace."""
    response = get(live, "/oauth/authorize?client_id=" + "x" * 9000)
    assert 400 <= response.status_code < 500, response.status_code
    assert "Traceback" not in response.text and "Location" not in response.headers


@pytest.mark.parametrize("response_type", ["token", "id_token", "code token", "", "CODE", "☃", "tökén",
                                           'token"', "token\\"])
def test_authorize_unsupported_response_type_redirects_with_error_and_state(live, response_type):
    org = make_org()
    client = make_client(org)
    state = "st-\u00e9\"'<>"
    response = authorize(live, client_id=client.client_id, redirect_uri=REDIRECT_URI,
                         response_type=response_type, state=state, scope="migrations:read")
    clean(response)
    assert response.status_code in (302, 303), (response.status_code, response.text[:500])
    location = response.headers["Location"]
    assert location.startswith(REDIRECT_URI + "?"), location
    params = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
    assert params["error"] in ("unsupported_response_type", "invalid_request"), params
    if response_type == "token":
        assert params["error"] == "unsupported_response_type", params
    assert params["state"] == state
    assert "code" not in params and "access_token" not in location and "#" not in location


def test_authorize_unknown_scope_redirects_with_invalid_scope(live):
    org = make_org()
    client = make_client(org)
    response = authorize(live, client_id=client.client_id, redirect_uri=REDIRECT_URI, response_type="code",
                         state="xyz", scope="migrations:read '; DROP TABLE users; -- \u2603")
    clean(response)
    assert response.status_code in (302, 303), response.text[:500]
    params = {k: v[0] for k, v in parse_qs(urlsplit(response.headers["Location"]).query).items()}
    assert params["error"] == "invalid_scope" and params["state"] == "xyz"


def test_authorize_plain_pkce_and_garbage_challenge_are_refused(live):
    org = make_org()
    client = make_client(org)
    for challenge, method in (("a" * 43, "plain"), ("a" * 43, "S512"), ("short", "S256"),
                              ("\u2603" * 43, "S256")):
        response = authorize(live, client_id=client.client_id, redirect_uri=REDIRECT_URI, response_type="code",
                             state="s", code_challenge=challenge, code_challenge_method=method)
        clean(response)
        assert response.status_code in (302, 303, 400), response.text[:500]
        if response.status_code == 400:
            error_page(response)
        else:
            location = response.headers["Location"]
            if location.startswith(REDIRECT_URI):
                params = parse_qs(urlsplit(location).query)
                assert params["error"] == ["invalid_request"] and params["state"] == ["s"]
            else:  # validated later, after sign-in
                assert urlsplit(location).path == "/login"


# -- /v1 -----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/nope", "/v1/", "/v1", "/v1/me/extra", "/v1/%FF%FE", "/v1/\u2603",
                                  "/v1/api-keys/..%2F..%2Fetc%2Fpasswd", "/v1/" + "x" * 3000])
def test_v1_unknown_route_is_404_envelope(live, path):
    response = requests.get(f"{live.url}{path}", timeout=TIMEOUT, allow_redirects=False)
    envelope(response, 404, "not_found")


def test_v1_unknown_route_with_bad_credentials_is_still_an_envelope(live):
    response = get(live, "/v1/nope", headers={"Authorization": "Bearer garbage"})
    clean(response)
    assert response.status_code in (401, 404)
    envelope(response, response.status_code, "not_found" if response.status_code == 404 else "unauthorized")


@pytest.mark.parametrize("method", ["DELETE", "POST", "PUT", "PATCH"])
def test_v1_me_wrong_method_is_405_envelope_with_allow(live, method):
    response = requests.request(method, f"{live.url}/v1/me", timeout=TIMEOUT, allow_redirects=False)
    envelope(response, 405, "method_not_allowed")
    allowed = {m.strip() for m in response.headers["Allow"].split(",")}
    assert "GET" in allowed and method not in allowed


def test_v1_me_body_over_one_mebibyte_is_413_or_405_envelope(live):
    response = post(live, "/v1/me", data=b"x" * (1024 * 1024 + 1),
                    headers={"Content-Type": "application/octet-stream"})
    clean(response)
    assert response.status_code in (405, 413)
    envelope(response, response.status_code,
             "payload_too_large" if response.status_code == 413 else "method_not_allowed")


def test_v1_chunked_body_over_one_mebibyte_is_413_envelope(live):
    """The 1 MiB limit holds for a body sent without Content-Length (Transfer-Encoding: chunked)."""
    from sqlalchemy import func, select

    from app.extensions import db
    from app.models import ApiKey

    org = make_org()
    _, admin = make_api_key(org)
    before = db.session.scalar(select(func.count()).select_from(ApiKey))

    def chunks():
        yield b'{"scopes": ["migrations:read"], "name": "'
        for _ in range(17):
            yield b"a" * 65536
        yield b'"}'

    response = post(live, "/v1/api-keys", data=chunks(),
                    headers={"Authorization": f"Bearer {admin}", "Content-Type": "application/json"})
    envelope(response, 413, "payload_too_large")
    assert db.session.scalar(select(func.count()).select_from(ApiKey)) == before


@pytest.fixture()
def real_key(live):
    org = make_org()
    _, plaintext = make_api_key(org, scopes="migrations:read")
    return plaintext


def test_v1_me_with_a_real_key_answers(live, real_key):
    """Baseline: the refusals below are not because /v1/me never works."""
    response = get(live, "/v1/me", headers={"Authorization": f"Bearer {real_key}"})
    clean(response)
    assert response.status_code == 200 and response.json()["principal"]["type"] == "api_key"


def _malformed_keys(real: str) -> list[str]:
    body = real[len("sk_live_"):]
    return [
        flip(real, len(real) - 1),  # bad checksum
        flip(real, 10),  # body changed, checksum kept
        real[:-1],  # truncated
        real + "A",  # too long
        "sk_prod_" + body,  # wrong prefix
        "pk_live_" + body,
        "SK_LIVE_" + body,
        "sk_test_" + body,  # other environment, same body: checksum no longer matches
        "sk_live_" + random_base62(38),
        "sk_live_" + random_base62(32),
        "sk_live_",
        "sk_",
        "sk_live_" + body[:-6] + "!!!!!!",
        "sk_live_" + "☃" * 38,
        real.replace("_", "-"),
        " " + real + " x",
        "sk_live_" + "0" * 38,
        "sk_live_" + "a" * 5000,
    ]


def test_v1_me_without_credentials_is_401(live):
    for headers in ({}, {"Authorization": ""}, {"Authorization": "Bearer"}, {"Authorization": "Bearer "},
                    {"Authorization": "Basic dXNlcjpwYXNz"}, {"Authorization": "Token abc"},
                    {"X-Api-Key": "sk_live_x"}):
        envelope(get(live, "/v1/me", headers=headers), 401, "unauthorized")


def test_v1_me_with_malformed_keys_is_401(live, real_key):
    for key in _malformed_keys(real_key):
        response = get(live, "/v1/me", headers={"Authorization": f"Bearer {key}".encode()})
        error = envelope(response, 401, "unauthorized")
        assert key.strip() not in error["message"] and real_key not in response.text


def test_v1_me_with_wellformed_but_unknown_key_is_401(live, ctx):
    from app.services.api_keys import generate_key

    for environment in ("live", "test"):
        response = get(live, "/v1/me", headers={"Authorization": f"Bearer {generate_key(environment)}"})
        envelope(response, 401, "unauthorized")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unsigned(header: dict, claims: dict, signature: bytes = b"") -> str:
    return f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}.{_b64(signature)}"


@pytest.mark.parametrize("token", [
    "a.b.c",
    "..",
    "a.b",
    "a.b.c.d.e",
    "eyJ.eyJ.eyJ",
    "x" * 5000,
    "x.y." + "z" * 5000,
    "\u2603.\u2603.\u2603",
    _unsigned({"alg": "none", "typ": "at+jwt"}, {"sub": "x"}),
    _unsigned({"alg": "RS256", "typ": "at+jwt", "kid": "../../etc/passwd"}, {"sub": "x"}, b"sig"),
    _unsigned({"alg": "RS256", "typ": "at+jwt", "kid": {"$ne": None}}, {"sub": "x"}, b"sig"),
    _unsigned({"alg": "RS256", "typ": "at+jwt", "jku": "https://evil.example/jwks"}, {"sub": "x"}, b"sig"),
    _unsigned({"alg": "RS256", "crit": ["exp"]}, [], b"sig"),
    _unsigned([], {}, b""),
    "bnVsbA.bnVsbA.bnVsbA",  # "null" everywhere
    "W10.W10.W10",  # "[]" everywhere
])
def test_v1_me_with_garbage_jwts_is_401(live, token):
    response = get(live, "/v1/me", headers={"Authorization": f"Bearer {token}".encode()})
    envelope(response, 401, "unauthorized")


@pytest.fixture(scope="module")
def attacker_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture()
def server_key(live, settings_overrides):
    """The server's own current signing key (the test shares its database and secret)."""
    record = signing_keys.current_key_record()
    pem = signing_keys.private_pem(record)
    return record.kid, serialization.load_pem_private_key(pem, password=None), json.loads(record.public_jwk)


def _claims(live, org_id: str, client_id: str, **overrides) -> dict:
    now = int(time.time())
    claims = {"iss": live.url, "sub": client_id, "aud": live.url, "client_id": client_id,
              "scope": "migrations:read", "jti": secrets.token_urlsafe(16), "iat": now, "exp": now + 600,
              "org": org_id}
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def test_v1_me_with_jwt_signed_by_another_key_is_401(live, attacker_key, server_key):
    org = make_org()
    client = make_client(org)
    real_kid = server_key[0]
    for kid in (real_kid, "attacker-kid", None):
        headers = {"typ": "at+jwt"} | ({"kid": kid} if kid else {})
        token = jwt.encode(_claims(live, org.id, client.client_id), attacker_key, algorithm="RS256",
                           headers=headers)
        response = get(live, "/v1/me", headers={"Authorization": f"Bearer {token}"})
        envelope(response, 401, "unauthorized")
        # Introspection does not vouch for it either.
        _, key = make_api_key(org, scopes="admin:read")
        info = post(live, "/oauth/introspect", headers={"Authorization": f"Bearer {key}"}, data={"token": token})
        clean(info)
        assert info.status_code == 200 and info.json() == {"active": False}


def test_v1_me_with_hs256_token_keyed_by_the_public_key_is_401(live, server_key):
    """Algorithm confusion: HS256 with the published RSA key as the HMAC secret."""
    org = make_org()
    client = make_client(org)
    kid, private_key, _public_jwk = server_key
    public_pem = private_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                       serialization.PublicFormat.SubjectPublicKeyInfo)
    claims = _claims(live, org.id, client.client_id)
    for secret in (public_pem, public_pem.strip(), json.dumps(_public_jwk).encode()):
        header = {"alg": "HS256", "typ": "at+jwt", "kid": kid}
        signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
        signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        token = f"{signing_input}.{_b64(signature)}"
        envelope(get(live, "/v1/me", headers={"Authorization": f"Bearer {token}"}), 401, "unauthorized")


def test_v1_me_checks_typ_iss_aud_exp_of_tokens_signed_with_the_real_key(live, server_key):
    org = make_org()
    client = make_client(org)
    kid, private_key, _ = server_key

    def call(claims: dict, headers: dict | None = None) -> requests.Response:
        token = jwt.encode(claims, private_key, algorithm="RS256",
                           headers={"typ": "at+jwt", "kid": kid} if headers is None else headers)
        return get(live, "/v1/me", headers={"Authorization": f"Bearer {token}"})

    # Baseline: a token with every claim right is accepted, so the refusals below mean something.
    good = call(_claims(live, org.id, client.client_id))
    clean(good)
    assert good.status_code == 200, good.text[:500]
    assert good.json()["organization"]["id"] == org.id

    now = int(time.time())
    refusals = {
        "typ JWT": (_claims(live, org.id, client.client_id), {"typ": "JWT", "kid": kid}),
        "no typ": (_claims(live, org.id, client.client_id), {"kid": kid}),
        "wrong iss": (_claims(live, org.id, client.client_id, iss="https://evil.example"), None),
        "wrong aud": (_claims(live, org.id, client.client_id, aud="https://evil.example"), None),
        "no aud": (_claims(live, org.id, client.client_id, aud=None), None),
        "expired": (_claims(live, org.id, client.client_id, iat=now - 7200, exp=now - 3600), None),
        "no exp": (_claims(live, org.id, client.client_id, exp=None), None),
        "no jti": (_claims(live, org.id, client.client_id, jti=None), None),
        "no org": (_claims(live, org.id, client.client_id, org=None), None),
        "scope list": (_claims(live, org.id, client.client_id, scope=["*"]), None),
    }
    for label, (claims, headers) in refusals.items():
        response = call(claims, headers)
        assert response.status_code == 401, (label, response.status_code, response.text[:300])
        envelope(response, 401, "unauthorized")


def test_v1_me_with_a_revoked_client_token_is_401(live, confidential):
    token = post(live, "/oauth/token", auth=(confidential.client_id, confidential.client_secret),
                 data={"grant_type": "client_credentials", "scope": "migrations:read"}).json()["access_token"]
    assert get(live, "/v1/me", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    revoked = post(live, "/oauth/revoke", auth=(confidential.client_id, confidential.client_secret),
                   data={"token": token})
    assert revoked.status_code == 200
    envelope(get(live, "/v1/me", headers={"Authorization": f"Bearer {token}"}), 401, "unauthorized")
    tampered = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    envelope(get(live, "/v1/me", headers={"Authorization": f"Bearer {tampered}"}), 401, "unauthorized")


# -- X-Request-Id ------------------------------------------------------------------------------


def test_every_surface_sends_a_request_id(live):
    responses = [
        get(live, "/v1/me"),
        get(live, "/v1/nope"),
        requests.delete(f"{live.url}/v1/me", timeout=TIMEOUT),
        get(live, "/oauth/token"),
        post(live, "/oauth/token", data={"grant_type": "nope"}),
        post(live, "/oauth/token", data={"padding": "a" * (1024 * 1024 + 1)}),
        get(live, "/oauth/authorize"),
        get(live, "/login"),
        get(live, "/no-such-page"),
        get(live, "/.well-known/jwks.json"),
        get(live, "/.well-known/oauth-authorization-server"),
    ]
    ids = [clean(r).headers["X-Request-Id"] for r in responses]
    assert len(set(ids)) == len(ids), ids  # fresh for each request


def test_sane_incoming_request_id_is_echoed(live):
    for request_id in ("req_abc12345", "trace-0123456789abcdef", "a.b:c-d_e-f", "X" * 128):
        for path in ("/v1/me", "/oauth/token", "/login"):
            response = requests.request("POST" if path == "/oauth/token" else "GET", f"{live.url}{path}",
                                        headers={"X-Request-Id": request_id}, timeout=TIMEOUT,
                                        allow_redirects=False)
            clean(response)
            assert response.headers["X-Request-Id"] == request_id


@pytest.mark.parametrize("request_id", [
    "has spaces in it",
    "x" * 1000,
    "X" * 129,
    "short",
    "<script>alert(1)</script>",
    "abc\tdefghij",
    "abcdefgh;rm -rf /",
    "req_\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9",
    "",
])
def test_insane_incoming_request_id_is_replaced(live, request_id):
    response = get(live, "/v1/me", headers={"X-Request-Id": request_id.encode("utf-8")})
    clean(response)
    echoed = response.headers["X-Request-Id"]
    assert echoed != request_id and SANE_REQUEST_ID.match(echoed)
    assert len(echoed) <= 128


def access_lines(server, request_id: str) -> list[dict]:
    """The server's access-log lines for ``request_id`` (written as the response leaves)."""
    deadline = time.monotonic() + 5
    while True:  # bounded by the deadline
        lines = [json.loads(line) for line in server.log().splitlines()
                 if line.startswith("{") and request_id in line]
        lines = [line for line in lines if line.get("logger") == "sensei.access"]
        if lines or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


def test_every_request_has_one_access_line_without_query_or_credentials(live):
    _key, plaintext = make_api_key(make_org())
    cases = [
        ("GET", "/v1/me?state=secret-state", {"Authorization": f"Bearer {plaintext}"}, None, 200),
        ("GET", "/v1/me", {"Authorization": "Bearer sk_live_wrong"}, None, 401),
        ("POST", "/oauth/token", {}, {"grant_type": "client_credentials", "client_secret": "s3cret-value"}, 401),
        ("GET", "/v1/n%C3%B6pe", {}, None, 404),
    ]
    logged_paths = ["/v1/me", "/v1/me", "/oauth/token", "/v1/n\u00f6pe"]
    for (method, path, headers, data, status), logged_path in zip(cases, logged_paths, strict=True):
        request_id = f"access-{secrets.token_hex(8)}"
        response = requests.request(method, f"{live.url}{path}", headers={**headers, "X-Request-Id": request_id},
                                    data=data, timeout=TIMEOUT)
        assert response.status_code == status, response.text
        [line] = access_lines(live, request_id)
        assert line["method"] == method and line["status"] == status
        assert line["path"] == logged_path
        assert isinstance(line["duration_ms"], float | int) and line["duration_ms"] >= 0
        text = json.dumps(line)
        assert "secret-state" not in text and "s3cret" not in text and plaintext not in text


# -- /login ---------------------------------------------------------------------------------


ALERT_RE = re.compile(r'<p class="error" role="alert">(.*?)</p>', re.S)


def login_message(response: requests.Response) -> str:
    match = ALERT_RE.search(response.text)
    assert match, response.text[:1000]
    return match.group(1).strip()


def signed_in(browser: Browser) -> bool:
    home = browser.http.get(f"{browser.base_url}/", allow_redirects=False, timeout=TIMEOUT)
    clean(home)
    return home.status_code == 200


def test_login_wrong_password_and_unknown_email_look_the_same(live):
    org = make_org()
    user = make_user(org)
    browsers = [Browser(live.url) for _ in range(3)]
    wrong_password = browsers[0].login(user.email, PASSWORD + "!")
    unknown_email = browsers[1].login(f"nobody-{secrets.token_hex(4)}@example.com", PASSWORD)
    unknown_domain = browsers[2].login(user.email.replace("@example.com", "@example.org"), PASSWORD)
    for response, browser in zip((wrong_password, unknown_email, unknown_domain), browsers, strict=True):
        clean(response)
        assert "Location" not in response.headers and not signed_in(browser)
    assert wrong_password.status_code == unknown_email.status_code == unknown_domain.status_code
    assert wrong_password.status_code in (400, 401)
    assert login_message(wrong_password) == login_message(unknown_email) == login_message(unknown_domain)
    assert user.email not in login_message(wrong_password)


def test_login_without_csrf_token_is_400_and_does_not_sign_in(live):
    org = make_org()
    user = make_user(org)
    browser = Browser(live.url)
    browser.http.get(f"{live.url}/login", timeout=TIMEOUT)  # a session cookie, but no token sent
    response = browser.http.post(f"{live.url}/login", data={"email": user.email, "password": PASSWORD},
                                 allow_redirects=False, timeout=TIMEOUT)
    clean(response)
    assert response.status_code == 400 and "Location" not in response.headers
    assert not signed_in(browser)
    forged = browser.http.post(f"{live.url}/login", data={"email": user.email, "password": PASSWORD,
                                                          "csrf_token": "forged.token.value"},
                               allow_redirects=False, timeout=TIMEOUT)
    clean(forged)
    assert forged.status_code == 400 and not signed_in(browser)
    # With no cookie at all (a cross-site form post), likewise.
    bare = requests.post(f"{live.url}/login", data={"email": user.email, "password": PASSWORD},
                         allow_redirects=False, timeout=TIMEOUT)
    clean(bare)
    assert bare.status_code == 400 and "Location" not in bare.headers


@pytest.mark.parametrize("next_target", [
    "https://evil.example",
    "https://evil.example/",
    "//evil.example",
    "//evil.example/path",
    "/\\evil.example",
    "\\\\evil.example",
    "/\t/evil.example",
    "https:evil.example",
    "http:/evil.example",
    "javascript:alert(1)",
    "evil.example",
    " //evil.example",
    "/\r\nLocation: https://evil.example",
])
def test_login_next_never_leaves_the_site(live, next_target):
    org = make_org()
    user = make_user(org)
    # The attacker's link: /login?next=...; the person signs in on the page it shows.
    browser = Browser(live.url)
    page = browser.http.get(f"{live.url}/login", params={"next": next_target}, timeout=TIMEOUT)
    clean(page)
    assert page.status_code == 200
    response = browser.http.post(f"{live.url}/login", data={
        "email": user.email, "password": PASSWORD, "csrf_token": browser.csrf(page.text),
        "next": next_target}, allow_redirects=False, timeout=TIMEOUT)
    clean(response)
    assert response.status_code in (302, 303), response.text[:500]
    location = response.headers["Location"]
    parts = urlsplit(location)
    assert parts.netloc in ("", urlsplit(live.url).netloc), location
    assert location in ("/", f"{live.url}/"), location
    assert signed_in(browser)


def test_login_next_keeps_a_local_path(live):
    org = make_org()
    user = make_user(org)
    response = Browser(live.url).login(user.email, next_path="/oauth/authorize?client_id=x&state=y")
    clean(response)
    assert response.status_code == 303
    assert response.headers["Location"] == "/oauth/authorize?client_id=x&state=y"


@pytest.mark.parametrize("email,password", [
    ("a\x00b@example.com", PASSWORD),
    ("x" * 10_000 + "@example.com", PASSWORD),
    ("☃@☃.☃", "☃" * 20),
    ("' OR 1=1 --", "' OR 1=1 --"),
    ("owner@example.com", "p" * 100_000),
    ("", ""),
])
def test_login_garbage_is_refused_cleanly(live, email, password):
    browser = Browser(live.url)
    page = browser.http.get(f"{live.url}/login", timeout=TIMEOUT)
    response = browser.http.post(f"{live.url}/login", data={
        "email": email, "password": password, "csrf_token": browser.csrf(page.text)},
        allow_redirects=False, timeout=TIMEOUT)
    clean(response)
    assert response.status_code in (400, 401) and "Location" not in response.headers
    assert response.headers["Content-Type"].startswith("text/html")
    assert not signed_in(browser)


def test_login_raw_non_utf8_body_is_clean(live):
    browser = Browser(live.url)
    page = browser.http.get(f"{live.url}/login", timeout=TIMEOUT)
    token = browser.csrf(page.text)
    body = b"email=\xff\xfe%40example.com&password=\x80\x81\x82&csrf_token=" + token.encode()
    response = browser.http.post(f"{live.url}/login", data=body, allow_redirects=False, timeout=TIMEOUT,
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    clean(response)
    assert response.status_code in (400, 401)
    assert not signed_in(browser)


def test_unknown_page_is_an_html_404(live):
    response = get(live, "/no-such-page/\u2603")
    clean(response)
    assert response.status_code == 404
    assert response.headers["Content-Type"].startswith("text/html")
