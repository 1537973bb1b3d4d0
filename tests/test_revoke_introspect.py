"""RFC 7009 revocation and RFC 7662 introspection, with the seed's API-key requests."""

from __future__ import annotations

from datetime import timedelta

import requests

from app.models.base import utcnow
from tests.factories import (
    REDIRECT_URI,
    Browser,
    callback_params,
    make_api_key,
    make_client,
    make_org,
    make_user,
)


def client_token(live, client, scope="migrations:read") -> str:
    response = requests.post(f"{live.url}/oauth/token", auth=(client.client_id, client.client_secret),
                             data={"grant_type": "client_credentials", "scope": scope})
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


def user_tokens(live, client, user) -> dict:
    browser = Browser(live.url)
    browser.login(user.email)
    query = requests.compat.urlencode({"client_id": client.client_id, "redirect_uri": REDIRECT_URI,
                                       "response_type": "code", "scope": "migrations:read", "state": "s"})
    code = callback_params(browser.decide(browser.authorize(f"{live.url}/oauth/authorize?{query}")))["code"]
    return requests.post(f"{live.url}/oauth/token", auth=(client.client_id, client.client_secret), data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI}).json()


def introspect(live, token: str, api_key: str) -> dict:
    # The seed's request, verbatim but for the host.
    response = requests.post(f"{live.url}/oauth/introspect", headers={"Authorization": f"Bearer {api_key}"},
                             data=f"token={token}")
    assert response.status_code == 200, response.text
    return response.json()


def test_seed_revoke_and_introspect_with_an_api_key(live):
    org = make_org()
    client = make_client(org, redirect_uris=())
    _, key = make_api_key(org, scopes="admin:read")
    access = client_token(live, client)
    info = introspect(live, access, key)
    assert info["active"] is True and info["token_type"] == "access_token"
    assert info["client_id"] == client.client_id and info["scope"] == "migrations:read" and info["org"] == org.id
    revoked = requests.post(f"{live.url}/oauth/revoke", headers={"Authorization": f"Bearer {key}"},
                            data=f"token={access}")
    assert revoked.status_code == 200
    assert introspect(live, access, key) == {"active": False}
    assert requests.get(f"{live.url}/v1/me", headers={"Authorization": f"Bearer {access}"}).status_code == 401


def test_client_authenticated_introspection_and_revocation(live):
    org = make_org()
    client = make_client(org, redirect_uris=())
    access = client_token(live, client)
    auth = (client.client_id, client.client_secret)
    info = requests.post(f"{live.url}/oauth/introspect", auth=auth, data={"token": access}).json()
    assert info["active"] is True
    assert requests.post(f"{live.url}/oauth/revoke", auth=auth, data={"token": access}).status_code == 200
    assert requests.post(f"{live.url}/oauth/introspect", auth=auth, data={"token": access}).json() == {"active": False}


def test_no_authentication_is_401(live):
    for path in ("/oauth/introspect", "/oauth/revoke"):
        response = requests.post(f"{live.url}{path}", data={"token": "anything"})
        assert response.status_code == 401 and response.json()["error"] == "invalid_client"


def test_other_orgs_tokens_are_inactive_and_cannot_be_revoked(live):
    org, other = make_org(), make_org(name="Other")
    client = make_client(org, redirect_uris=())
    _, foreign_key = make_api_key(other)
    access = client_token(live, client)
    assert introspect(live, access, foreign_key) == {"active": False}
    assert requests.post(f"{live.url}/oauth/revoke", headers={"Authorization": f"Bearer {foreign_key}"},
                         data={"token": access}).status_code == 200
    me = requests.get(f"{live.url}/v1/me", headers={"Authorization": f"Bearer {access}"})
    assert me.status_code == 200  # the foreign revocation changed nothing


def test_a_client_cannot_revoke_another_clients_token(live):
    org = make_org()
    owner_client, other_client = make_client(org, redirect_uris=()), make_client(org, redirect_uris=())
    access = client_token(live, owner_client)
    requests.post(f"{live.url}/oauth/revoke", auth=(other_client.client_id, other_client.client_secret),
                  data={"token": access})
    assert requests.get(f"{live.url}/v1/me", headers={"Authorization": f"Bearer {access}"}).status_code == 200


def test_refresh_token_introspection_and_revocation_revokes_the_grant(live):
    org = make_org()
    user = make_user(org)
    client = make_client(org)
    _, key = make_api_key(org)
    tokens = user_tokens(live, client, user)
    info = introspect(live, tokens["refresh_token"], key)
    assert info["active"] is True and info["token_type"] == "refresh_token" and info["sub"] == user.id
    requests.post(f"{live.url}/oauth/revoke", auth=(client.client_id, client.client_secret),
                  data={"token": tokens["refresh_token"], "token_type_hint": "refresh_token"})
    assert introspect(live, tokens["refresh_token"], key) == {"active": False}
    assert introspect(live, tokens["access_token"], key) == {"active": False}
    refresh = requests.post(f"{live.url}/oauth/token", auth=(client.client_id, client.client_secret), data={
        "grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]})
    assert refresh.json()["error"] == "invalid_grant"


def test_api_key_introspection_and_expired_or_unknown_tokens(live):
    org = make_org()
    _, key = make_api_key(org)
    _, other_key = make_api_key(org, scopes="migrations:read", environment="test")
    info = introspect(live, other_key, key)
    assert info["active"] is True and info["token_type"] == "api_key" and info["environment"] == "test"
    assert "sk_" not in str(info)
    key_row, expiring = make_api_key(org, expires_at=utcnow() + timedelta(seconds=1))
    from app.extensions import db

    key_row.expires_at = utcnow() - timedelta(seconds=1)
    db.session.commit()
    assert introspect(live, expiring, key) == {"active": False}
    assert introspect(live, "not-a-token", key) == {"active": False}
    assert introspect(live, "rt_" + "x" * 43, key) == {"active": False}
