"""End-to-end OAuth 2.0 against a real gunicorn, with real clients (Authlib, requests-oauthlib)
and tokens verified by PyJWT against the published JWKS."""

from __future__ import annotations

import base64
from urllib.parse import quote

import jwt
import pytest
import requests
from authlib.common.security import generate_token
from authlib.integrations.requests_client import OAuth2Session as AuthlibSession
from oauthlib.oauth2 import BackendApplicationClient
from requests_oauthlib import OAuth2Session

from tests.factories import (
    REDIRECT_URI,
    Browser,
    callback_params,
    make_client,
    make_org,
    make_user,
)


def verify(server, token: str) -> dict:
    """Verify an access token the way a resource server would: JWKS + RFC 9068 checks."""
    header = jwt.get_unverified_header(token)
    assert header["typ"] == "at+jwt" and header["alg"] == "RS256" and header["kid"]
    signing_key = jwt.PyJWKClient(f"{server.url}/.well-known/jwks.json").get_signing_key_from_jwt(token)
    return jwt.decode(token, signing_key.key, algorithms=["RS256"], audience=server.url, issuer=server.url,
                      options={"require": ["iss", "sub", "aud", "exp", "iat", "jti"]})


def code_flow(live, client, user, *, scope="migrations:read migrations:write", public=False):
    """Authorization code + PKCE S256 with Authlib's client; consent given in the browser."""
    session = AuthlibSession(client.client_id, None if public else client.client_secret, scope=scope,
                             redirect_uri=REDIRECT_URI, code_challenge_method="S256",
                             token_endpoint_auth_method="none" if public else "client_secret_basic")
    verifier = generate_token(48)
    url, state = session.create_authorization_url(f"{live.url}/oauth/authorize", code_verifier=verifier)
    browser = Browser(live.url)
    assert browser.login(user.email).status_code == 303
    page = browser.authorize(url)
    assert page.status_code == 200, page.text
    redirect = browser.decide(page, "allow")
    params = callback_params(redirect)
    assert params["state"] == state
    token = session.fetch_token(f"{live.url}/oauth/token", authorization_response=redirect.headers["Location"],
                                code_verifier=verifier)
    return session, token, browser


def test_metadata_and_jwks(live):
    meta = requests.get(f"{live.url}/.well-known/oauth-authorization-server").json()
    assert meta["issuer"] == live.url
    assert meta["code_challenge_methods_supported"] == ["S256"]
    assert meta["response_types_supported"] == ["code"]
    assert set(meta["grant_types_supported"]) == {"authorization_code", "client_credentials", "refresh_token",
                                                  "urn:ietf:params:oauth:grant-type:device_code"}
    assert "migrations:read" in meta["scopes_supported"]
    keys = requests.get(meta["jwks_uri"]).json()["keys"]
    assert keys and all(k["kty"] == "RSA" and k["kid"] and "d" not in k for k in keys)


def test_client_credentials_seed_request(live):
    org = make_org()
    client = make_client(org, redirect_uris=())
    # The seed's curl, verbatim but for the host.
    response = requests.post(
        f"{live.url}/oauth/token",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        data="grant_type=client_credentials"
        f"&client_id={client.client_id}&client_secret={client.client_secret}"
        "&scope=migrations:read migrations:write",
    )
    assert response.status_code == 200, response.text
    assert response.headers["Cache-Control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 3600
    assert body["scope"] == "migrations:read migrations:write"
    assert "refresh_token" not in body
    claims = verify(live, body["access_token"])
    assert claims["sub"] == claims["client_id"] == client.client_id
    assert claims["org"] == org.id and claims["scope"] == "migrations:read migrations:write"
    me = requests.get(f"{live.url}/v1/me", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert me.status_code == 200
    assert me.json()["principal"] == {"type": "client", "id": client.client_id, "name": "Test App"}


def test_client_credentials_with_requests_oauthlib_basic_auth(live):
    org = make_org()
    client = make_client(org, redirect_uris=())
    session = OAuth2Session(client=BackendApplicationClient(client_id=client.client_id))
    token = session.fetch_token(f"{live.url}/oauth/token", client_id=client.client_id,
                                client_secret=client.client_secret, scope=["connections:read"])
    assert token["scope"] == ["connections:read"]
    assert verify(live, token["access_token"])["scope"] == "connections:read"


def test_basic_credentials_are_form_urlencoded(live):
    org = make_org()
    client = make_client(org, redirect_uris=())
    # RFC 6749 §2.3.1: each half is form-urlencoded before base64; encode every character.
    encoded = "".join(f"%{ord(c):02X}" for c in client.client_secret)
    basic = base64.b64encode(f"{quote(client.client_id)}:{encoded}".encode()).decode()
    response = requests.post(f"{live.url}/oauth/token", headers={"Authorization": f"Basic {basic}"},
                             data={"grant_type": "client_credentials"})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("how", ["basic", "post"])
def test_wrong_client_secret_is_401(live, how):
    org = make_org()
    client = make_client(org, redirect_uris=())
    data = {"grant_type": "client_credentials"}
    auth = None
    if how == "basic":
        auth = (client.client_id, client.client_secret + "x")
    else:
        data.update(client_id=client.client_id, client_secret=client.client_secret + "x")
    response = requests.post(f"{live.url}/oauth/token", data=data, auth=auth)
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert response.headers["WWW-Authenticate"].startswith("Basic")
    assert client.client_secret not in response.text


@pytest.mark.parametrize(
    "scope, error, granted",
    [
        ("billing:read", "invalid_scope", None),
        ("no-such:scope", "invalid_scope", None),
        ("migrations:*", None, "migrations:read migrations:write"),
        (None, None, "migrations:read migrations:write connections:read"),
    ],
)
def test_client_credentials_scope_bounds(live, scope, error, granted):
    org = make_org()
    client = make_client(org, redirect_uris=())
    data = {"grant_type": "client_credentials"} | ({"scope": scope} if scope else {})
    response = requests.post(f"{live.url}/oauth/token", data=data, auth=(client.client_id, client.client_secret))
    if error:
        assert response.status_code == 400 and response.json()["error"] == error
    else:
        assert response.status_code == 200 and response.json()["scope"] == granted


def test_authorization_code_flow_with_pkce_refresh_and_rotation(live):
    org = make_org()
    owner = make_user(org, "owner")
    client = make_client(org, created_by=owner.id)
    session, token, _ = code_flow(live, client, owner)
    claims = verify(live, token["access_token"])
    assert claims["sub"] == owner.id and claims["client_id"] == client.client_id and claims["org"] == org.id
    assert token["refresh_token"].startswith("rt_")
    me = requests.get(f"{live.url}/v1/me", headers={"Authorization": f"Bearer {token['access_token']}"}).json()
    assert me["principal"]["type"] == "user" and me["principal"]["name"] == owner.email

    # The seed's refresh request, verbatim but for the host.
    first_refresh = token["refresh_token"]
    refreshed = requests.post(
        f"{live.url}/oauth/token", headers={"Content-Type": "application/x-www-form-urlencoded"},
        data=f"grant_type=refresh_token&refresh_token={first_refresh}"
        f"&client_id={client.client_id}&client_secret={client.client_secret}",
    )
    assert refreshed.status_code == 200, refreshed.text
    second = refreshed.json()
    assert second["refresh_token"] != first_refresh and second["scope"] == "migrations:read migrations:write"
    # Authlib's client refreshes too (rotation gives it a third token).
    third = session.refresh_token(f"{live.url}/oauth/token", refresh_token=second["refresh_token"])
    assert verify(live, third["access_token"])["sub"] == owner.id

    # Reusing a rotated refresh token revokes the whole family, access tokens included.
    reuse = requests.post(f"{live.url}/oauth/token", data={"grant_type": "refresh_token", "refresh_token": first_refresh},
                          auth=(client.client_id, client.client_secret))
    assert reuse.status_code == 400 and reuse.json()["error"] == "invalid_grant"
    after = requests.post(f"{live.url}/oauth/token",
                          data={"grant_type": "refresh_token", "refresh_token": third["refresh_token"]},
                          auth=(client.client_id, client.client_secret))
    assert after.json()["error"] == "invalid_grant"
    for access in (token["access_token"], second["access_token"], third["access_token"]):
        response = requests.get(f"{live.url}/v1/me", headers={"Authorization": f"Bearer {access}"})
        assert response.status_code == 401


def test_refresh_may_narrow_but_not_widen(live):
    org = make_org()
    owner = make_user(org)
    client = make_client(org)
    _, token, _ = code_flow(live, client, owner, scope="migrations:read migrations:write")
    auth = (client.client_id, client.client_secret)
    wide = requests.post(f"{live.url}/oauth/token", auth=auth, data={
        "grant_type": "refresh_token", "refresh_token": token["refresh_token"], "scope": "connections:read"})
    assert wide.status_code == 400 and wide.json()["error"] == "invalid_scope"
    narrow = requests.post(f"{live.url}/oauth/token", auth=auth, data={
        "grant_type": "refresh_token", "refresh_token": token["refresh_token"], "scope": "migrations:read"})
    assert narrow.status_code == 200, narrow.text
    assert narrow.json()["scope"] == "migrations:read"
    # The new refresh token keeps the original grant (RFC 6749 §6).
    again = requests.post(f"{live.url}/oauth/token", auth=auth, data={
        "grant_type": "refresh_token", "refresh_token": narrow.json()["refresh_token"]})
    assert again.json()["scope"] == "migrations:read migrations:write"


def _approved_code(live, client, user, *, challenge=None, method="S256", scope="migrations:read"):
    browser = Browser(live.url)
    browser.login(user.email)
    params = {"client_id": client.client_id, "redirect_uri": REDIRECT_URI, "response_type": "code",
              "scope": scope, "state": "xyz"}
    if challenge:
        params.update(code_challenge=challenge, code_challenge_method=method)
    page = browser.authorize(f"{live.url}/oauth/authorize?" + requests.compat.urlencode(params))
    if page.status_code == 200:
        page = browser.decide(page, "allow")
    return callback_params(page)


def test_code_replay_fails_and_revokes_what_it_issued(live):
    org = make_org()
    user = make_user(org)
    client = make_client(org)
    code = _approved_code(live, client, user)["code"]
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI}
    auth = (client.client_id, client.client_secret)
    first = requests.post(f"{live.url}/oauth/token", data=data, auth=auth)
    assert first.status_code == 200, first.text
    access = first.json()["access_token"]
    assert requests.get(f"{live.url}/v1/me", headers={"Authorization": f"Bearer {access}"}).status_code == 200
    replay = requests.post(f"{live.url}/oauth/token", data=data, auth=auth)
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    assert requests.get(f"{live.url}/v1/me", headers={"Authorization": f"Bearer {access}"}).status_code == 401
    refresh = requests.post(f"{live.url}/oauth/token", auth=auth, data={
        "grant_type": "refresh_token", "refresh_token": first.json()["refresh_token"]})
    assert refresh.json()["error"] == "invalid_grant"


def test_code_is_bound_to_client_and_redirect_uri(live):
    org = make_org()
    user = make_user(org)
    client = make_client(org, redirect_uris=(REDIRECT_URI, "https://app.example.com/other"))
    other = make_client(org)
    code = _approved_code(live, client, user)["code"]
    wrong_client = requests.post(f"{live.url}/oauth/token", auth=(other.client_id, other.client_secret),
                                 data={"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI})
    assert wrong_client.json()["error"] == "invalid_grant"
    wrong_uri = requests.post(f"{live.url}/oauth/token", auth=(client.client_id, client.client_secret), data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": "https://app.example.com/other"})
    assert wrong_uri.json()["error"] == "invalid_grant"


def test_public_client_needs_pkce_s256(live):
    org = make_org()
    user = make_user(org)
    client = make_client(org, public=True)
    missing = _approved_code(live, client, user)
    assert missing["error"] == "invalid_request" and missing["state"] == "xyz"
    verifier = generate_token(48)
    from authlib.oauth2.rfc7636 import create_s256_code_challenge

    plain = _approved_code(live, client, user, challenge=verifier, method="plain")
    assert plain["error"] == "invalid_request"
    code = _approved_code(live, client, user, challenge=create_s256_code_challenge(verifier))["code"]
    wrong = requests.post(f"{live.url}/oauth/token", data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI,
        "client_id": client.client_id, "code_verifier": generate_token(48)})
    assert wrong.json()["error"] == "invalid_grant"
    code = _approved_code(live, client, user, challenge=create_s256_code_challenge(verifier))["code"]
    no_verifier = requests.post(f"{live.url}/oauth/token", data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI, "client_id": client.client_id})
    assert no_verifier.json()["error"] == "invalid_request"
    code = _approved_code(live, client, user, challenge=create_s256_code_challenge(verifier))["code"]
    ok = requests.post(f"{live.url}/oauth/token", data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI,
        "client_id": client.client_id, "code_verifier": verifier})
    assert ok.status_code == 200, ok.text
    # A public client refreshes with its client_id alone, and rotation applies.
    refreshed = requests.post(f"{live.url}/oauth/token", data={
        "grant_type": "refresh_token", "refresh_token": ok.json()["refresh_token"], "client_id": client.client_id})
    assert refreshed.status_code == 200


def test_public_client_flow_with_authlib_client(live):
    org = make_org()
    user = make_user(org)
    client = make_client(org, public=True)
    _, token, _ = code_flow(live, client, user, public=True, scope="migrations:read")
    assert verify(live, token["access_token"])["scope"] == "migrations:read"


def test_verifier_for_a_challengeless_code_is_a_downgrade(live):
    org = make_org()
    user = make_user(org)
    client = make_client(org)
    code = _approved_code(live, client, user)["code"]
    response = requests.post(f"{live.url}/oauth/token", auth=(client.client_id, client.client_secret), data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI,
        "code_verifier": generate_token(48)})
    assert response.status_code == 400 and response.json()["error"] == "invalid_request"
