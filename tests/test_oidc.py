"""OpenID Connect (issue 11, SPEC §12) against a real gunicorn: discovery, ID tokens validated
by Authlib's client claims (CodeIDToken) against the JWKS, UserInfo, prompt / max_age /
login_hint / nonce, RFC 9207's iss on every authorization response, RP-initiated logout."""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests
from authlib.common.security import generate_token
from authlib.integrations.requests_client import OAuth2Session
from authlib.oidc.core import CodeIDToken
from joserfc import jwt
from joserfc.jwk import KeySet

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

OIDC_SCOPES = "openid profile email migrations:read"
LOGGED_OUT = "https://app.example.com/logged-out"


def oidc_client(org, **extra):
    return make_client(org, scopes=OIDC_SCOPES, post_logout_redirect_uris=(LOGGED_OUT,), **extra)


def validated_id_token(live, token: dict, nonce: str | None, client_id: str, **params) -> tuple[dict, dict]:
    """(header, claims) of the response's ID token, validated as Authlib's client does."""
    keys = KeySet.import_key_set(requests.get(f"{live.url}/.well-known/jwks.json").json())
    decoded = jwt.decode(token["id_token"], keys, algorithms=["RS256"])
    claims = CodeIDToken(decoded.claims, decoded.header, {"iss": {"values": [live.url]}},
                         {"nonce": nonce, "client_id": client_id, "access_token": token["access_token"], **params})
    claims.validate(leeway=5)
    return dict(decoded.header), dict(claims)


def sign_in_with_sensei(live, client, user, *, scope=OIDC_SCOPES, extra: dict | None = None, browser=None):
    """The code flow with PKCE and a nonce, by Authlib's client; consent in the browser."""
    session = OAuth2Session(client.client_id, client.client_secret, scope=scope, redirect_uri=REDIRECT_URI,
                            code_challenge_method="S256")
    verifier, nonce = generate_token(48), generate_token(20)
    url, state = session.create_authorization_url(f"{live.url}/oauth/authorize", code_verifier=verifier,
                                                  nonce=nonce, **(extra or {}))
    if browser is None:
        browser = Browser(live.url)
        assert browser.login(user.email).status_code == 303
    page = browser.authorize(url)
    if page.status_code == 302 and urlsplit(page.headers["Location"]).path == "/login":  # asked to sign in again
        back = parse_qs(urlsplit(page.headers["Location"]).query)["next"][0]
        assert browser.login(user.email, next_path=back).headers["Location"] == back
        page = browser.authorize(live.url + back)
    if page.status_code == 200:
        page = browser.decide(page, "allow")
    params = callback_params(page)
    assert params["state"] == state and params["iss"] == live.url
    token = session.fetch_token(f"{live.url}/oauth/token", authorization_response=page.headers["Location"],
                                code_verifier=verifier)
    return token, nonce, browser


def test_discovery_lists_the_openid_connect_endpoints(live):
    oidc = requests.get(f"{live.url}/.well-known/openid-configuration")
    assert oidc.status_code == 200
    meta = oidc.json()
    assert meta["issuer"] == live.url
    for name, path in (("userinfo_endpoint", "/oauth/userinfo"), ("end_session_endpoint", "/oauth/logout"),
                       ("device_authorization_endpoint", "/oauth/device_authorization"),
                       ("jwks_uri", "/.well-known/jwks.json")):
        assert meta[name] == live.url + path
    assert meta["subject_types_supported"] == ["public"]
    assert meta["id_token_signing_alg_values_supported"] == ["RS256"]
    assert {"openid", "profile", "email"} <= set(meta["scopes_supported"])
    assert {"sub", "email", "email_verified", "name", "nonce", "auth_time", "sid"} <= set(meta["claims_supported"])
    assert "urn:ietf:params:oauth:grant-type:device_code" in meta["grant_types_supported"]
    assert meta["authorization_response_iss_parameter_supported"] is True
    rfc8414 = requests.get(f"{live.url}/.well-known/oauth-authorization-server").json()
    assert rfc8414["device_authorization_endpoint"] == meta["device_authorization_endpoint"]
    assert rfc8414["authorization_response_iss_parameter_supported"] is True


def test_the_code_flow_returns_an_id_token_that_authlib_validates(live):
    org = make_org()
    user = make_user(org, name="Ada Lovelace")
    client = oidc_client(org)
    before = int(time.time())
    token, nonce, _ = sign_in_with_sensei(live, client, user)
    header, claims = validated_id_token(live, token, nonce, client.client_id)
    assert header["alg"] == "RS256" and header["typ"] == "JWT" and header["kid"]
    assert claims["iss"] == live.url and claims["sub"] == user.id and claims["aud"] == client.client_id
    assert claims["nonce"] == nonce and claims["at_hash"] and claims["sid"]
    assert before - 2 <= claims["auth_time"] <= int(time.time())
    assert claims["email"] == user.email and claims["email_verified"] is False
    assert claims["name"] == "Ada Lovelace"
    assert token["scope"].split()[:3] == ["openid", "profile", "email"]


def test_only_the_granted_scopes_claims_are_in_the_id_token(live):
    org = make_org()
    user = make_user(org, name="Grace Hopper")
    client = oidc_client(org)
    token, nonce, _ = sign_in_with_sensei(live, client, user, scope="openid migrations:read")
    _, claims = validated_id_token(live, token, nonce, client.client_id)
    assert "email" not in claims and "name" not in claims
    plain, _, _ = sign_in_with_sensei(live, client, user, scope="migrations:read")
    assert "id_token" not in plain  # no openid, no ID token


def test_an_id_token_is_never_an_access_token(live):
    org = make_org()
    user = make_user(org)
    client = oidc_client(org)
    token, _, _ = sign_in_with_sensei(live, client, user)
    assert requests.get(f"{live.url}/v1/me", headers=bearer(token["id_token"])).status_code == 401
    assert requests.get(f"{live.url}/oauth/userinfo", headers=bearer(token["id_token"])).status_code == 401
    introspected = requests.post(f"{live.url}/oauth/introspect", data={"token": token["id_token"]},
                                 auth=(client.client_id, client.client_secret)).json()
    assert introspected == {"active": False}
    assert requests.get(f"{live.url}/v1/me", headers=bearer(token["access_token"])).json()["scopes"] == [
        "migrations:read"]  # /v1 sees the API scopes only


def test_a_refresh_returns_a_fresh_id_token_of_the_same_sign_in(live):
    org = make_org()
    user = make_user(org)
    client = oidc_client(org)
    token, nonce, _ = sign_in_with_sensei(live, client, user)
    _, first = validated_id_token(live, token, nonce, client.client_id)
    time.sleep(1.1)
    refreshed = requests.post(f"{live.url}/oauth/token", auth=(client.client_id, client.client_secret),
                              data={"grant_type": "refresh_token", "refresh_token": token["refresh_token"]}).json()
    _, again = validated_id_token(live, refreshed, None, client.client_id)
    assert again["sub"] == user.id and again["iat"] > first["iat"]
    assert again["auth_time"] == first["auth_time"] and again["sid"] == first["sid"]
    assert "nonce" not in again


def test_userinfo_answers_with_the_claims_of_the_granted_scopes(live):
    org = make_org()
    user = make_user(org, name="Katherine Johnson")
    client = oidc_client(org)
    token, _, _ = sign_in_with_sensei(live, client, user)
    for method in ("GET", "POST"):
        answer = requests.request(method, f"{live.url}/oauth/userinfo", headers=bearer(token["access_token"]))
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"sub": user.id, "email": user.email, "email_verified": False,
                                 "name": "Katherine Johnson"}
        assert answer.headers["Cache-Control"] == "no-store"


def test_userinfo_refuses_without_openid_and_without_a_token(live):
    org = make_org()
    user = make_user(org)
    client = oidc_client(org)
    token, _, _ = sign_in_with_sensei(live, client, user, scope="migrations:read")
    refused = requests.get(f"{live.url}/oauth/userinfo", headers=bearer(token["access_token"]))
    assert refused.status_code == 403
    assert 'error="insufficient_scope"' in refused.headers["WWW-Authenticate"]
    missing = requests.get(f"{live.url}/oauth/userinfo")
    assert missing.status_code == 401 and missing.headers["WWW-Authenticate"].startswith("Bearer")
    assert "error=" not in missing.headers["WWW-Authenticate"]  # RFC 6750 §3.1: no error without credentials
    bad = requests.get(f"{live.url}/oauth/userinfo", headers=bearer("eyJhbGciOiJub25lIn0.e30."))
    assert bad.status_code == 401 and 'error="invalid_token"' in bad.headers["WWW-Authenticate"]
    machine = requests.post(f"{live.url}/oauth/token", auth=(client.client_id, client.client_secret),
                            data={"grant_type": "client_credentials"}).json()
    assert "openid" not in machine["scope"].split()  # no person, no OpenID Connect scopes
    assert requests.get(f"{live.url}/oauth/userinfo", headers=bearer(machine["access_token"])).status_code == 403
    asked = requests.post(f"{live.url}/oauth/token", auth=(client.client_id, client.client_secret),
                          data={"grant_type": "client_credentials", "scope": "openid"})
    assert asked.status_code == 400 and asked.json()["error"] == "invalid_scope"


def test_an_api_key_never_holds_the_openid_connect_scopes(live):
    org = make_org()
    _, admin = make_api_key(org)
    refused = requests.post(f"{live.url}/v1/api-keys", headers=bearer(admin),
                            json={"name": "oidc", "scopes": ["openid"]})
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "scopes"


def authorize(live, client, browser=None, **params) -> requests.Response:
    query = {"client_id": client.client_id, "redirect_uri": REDIRECT_URI, "response_type": "code",
             "scope": "openid migrations:read", "state": "s1", "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
             "code_challenge_method": "S256"} | params
    return (browser.http if browser else requests).get(f"{live.url}/oauth/authorize?{urlencode(query)}",
                                                        allow_redirects=False)


def test_prompt_none_never_shows_a_page(live):
    org = make_org()
    user = make_user(org)
    client = oidc_client(org)
    signed_out = callback_params(authorize(live, client, prompt="none"))
    assert signed_out["error"] == "login_required" and signed_out["state"] == "s1" and signed_out["iss"] == live.url
    browser = Browser(live.url)
    browser.login(user.email)
    no_consent = callback_params(authorize(live, client, browser, prompt="none"))
    assert no_consent["error"] == "consent_required" and no_consent["iss"] == live.url
    page = authorize(live, client, browser)
    assert page.status_code == 200
    callback_params(browser.decide(page, "allow"))
    approved = callback_params(authorize(live, client, browser, prompt="none"))
    assert approved["code"] and approved["iss"] == live.url
    combined = callback_params(authorize(live, client, browser, prompt="none login"))
    assert combined["error"] == "invalid_request"


def test_prompt_login_and_max_age_ask_for_a_fresh_sign_in(live):
    org = make_org()
    user = make_user(org)
    client = oidc_client(org)
    token, nonce, browser = sign_in_with_sensei(live, client, user)
    _, first = validated_id_token(live, token, nonce, client.client_id)
    for params in ({"prompt": "login"}, {"max_age": "1"}):
        time.sleep(2.1)
        asked = authorize(live, client, browser, **params)
        assert asked.status_code == 302 and urlsplit(asked.headers["Location"]).path == "/login", params
        back = parse_qs(urlsplit(asked.headers["Location"]).query)["next"][0]
        assert "prompt" not in parse_qs(urlsplit(back).query) and "max_age" not in back
        refreshed, nonce, _ = sign_in_with_sensei(live, client, user, extra=params, browser=browser)
        _, claims = validated_id_token(live, refreshed, nonce, client.client_id, max_age=params.get("max_age"))
        assert claims["auth_time"] > first["auth_time"]
        first = claims
    recent = authorize(live, client, browser, max_age="3600")
    assert "code" in callback_params(recent)  # a recent sign-in satisfies a long max_age


def test_login_hint_prefills_the_email(live):
    org = make_org()
    client = oidc_client(org)
    asked = authorize(live, client, login_hint="ada@example.com")
    assert asked.status_code == 302
    page = requests.get(live.url + asked.headers["Location"] if asked.headers["Location"].startswith("/")
                        else asked.headers["Location"])
    assert 'value="ada@example.com"' in page.text


def test_every_authorization_error_response_carries_iss(live):
    org = make_org()
    user = make_user(org)
    client = oidc_client(org)
    browser = Browser(live.url)
    browser.login(user.email)
    for params, error in (({"response_type": "token"}, "unsupported_response_type"),
                          ({"scope": "openid nonsense"}, "invalid_scope"),
                          ({"code_challenge_method": "plain"}, "invalid_request")):
        answer = callback_params(authorize(live, client, browser, **params))
        assert answer["error"] == error and answer["iss"] == live.url and answer["state"] == "s1", answer
    denied = callback_params(browser.decide(authorize(live, client, browser), "deny"))
    assert denied["error"] == "access_denied" and denied["iss"] == live.url


def test_rp_initiated_logout_ends_the_session_and_returns_with_state(live, ctx):
    org = make_org()
    user = make_user(org)
    client = oidc_client(org)
    token, _, browser = sign_in_with_sensei(live, client, user)
    assert browser.http.get(f"{live.url}/", allow_redirects=False).status_code == 200
    out = browser.http.get(f"{live.url}/oauth/logout", allow_redirects=False, params={
        "id_token_hint": token["id_token"], "post_logout_redirect_uri": LOGGED_OUT, "state": "bye"})
    assert out.status_code == 302 and out.headers["Location"] == f"{LOGGED_OUT}?state=bye"
    assert browser.http.get(f"{live.url}/", allow_redirects=False).status_code == 302  # signed out
    assert audit_written(org.id, 1, action="oidc.logout", actor_id=user.id) == 1


def test_logout_redirects_only_to_a_registered_uri(live):
    org = make_org()
    user = make_user(org)
    client = oidc_client(org)
    token, _, browser = sign_in_with_sensei(live, client, user)
    out = browser.http.get(f"{live.url}/oauth/logout", allow_redirects=False, params={
        "id_token_hint": token["id_token"], "post_logout_redirect_uri": "https://evil.example/", "state": "x"})
    assert out.status_code == 303 and out.headers["Location"] == "/login"  # signed out, sent nowhere else
    token2, _, browser2 = sign_in_with_sensei(live, client, user)
    to_redirect_uri = browser2.http.get(f"{live.url}/oauth/logout", allow_redirects=False, params={
        "id_token_hint": token2["id_token"], "post_logout_redirect_uri": REDIRECT_URI})
    assert to_redirect_uri.headers["Location"] == REDIRECT_URI  # a redirect URI counts


@pytest.mark.parametrize("hint", [None, "not-a-token", "access"])
def test_logout_without_a_valid_id_token_hint_asks_first(live, hint):
    org = make_org()
    user = make_user(org)
    client = oidc_client(org)
    token, _, browser = sign_in_with_sensei(live, client, user)
    params = {"post_logout_redirect_uri": LOGGED_OUT, "state": "x"}
    if hint:
        params["id_token_hint"] = token["access_token"] if hint == "access" else hint
    out = browser.http.get(f"{live.url}/oauth/logout", allow_redirects=False, params=params)
    assert out.status_code == 303 and out.headers["Location"] == "/logout"  # the confirmation page
    assert browser.http.get(f"{live.url}/", allow_redirects=False).status_code == 200  # still signed in
    page = browser.http.get(f"{live.url}/logout")
    assert page.status_code == 200 and "Sign out" in page.text


def test_a_person_signed_in_as_someone_else_is_asked_first(live):
    org = make_org()
    alice, bob = make_user(org), make_user(org)
    client = oidc_client(org)
    token, _, _ = sign_in_with_sensei(live, client, alice)
    browser = Browser(live.url)
    assert browser.login(bob.email, PASSWORD).status_code == 303
    out = browser.http.get(f"{live.url}/oauth/logout", allow_redirects=False,
                           params={"id_token_hint": token["id_token"], "post_logout_redirect_uri": LOGGED_OUT})
    assert out.headers["Location"] == "/logout"
    assert browser.http.get(f"{live.url}/", allow_redirects=False).status_code == 200
