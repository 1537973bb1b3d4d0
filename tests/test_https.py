"""Production HTTPS mode (SPEC §11) on a real gunicorn, directly and behind a trusted proxy."""

from __future__ import annotations

import pytest
import requests

from tests.conftest import free_port, start_server, stop_server
from tests.factories import bearer, make_api_key, make_client, make_org

HTTPS = {"X-Forwarded-Proto": "https"}


def production_server(settings_overrides, tmp_path_factory, proxies: int):
    port = free_port()
    settings = settings_overrides | {
        # The suite's own secret (43 characters): it opens the signing keys in the shared database.
        "ENV": "production", "ISSUER": "https://auth.example.test",
        "SQLITE_SINGLE_HOST": "1", "TRUSTED_PROXIES": proxies,
    }
    return start_server(settings, port, tmp_path_factory.mktemp("prod") / "gunicorn.log")


@pytest.fixture(scope="module")
def behind_proxy(settings_overrides, app, tmp_path_factory):
    server = production_server(settings_overrides, tmp_path_factory, proxies=1)
    yield server
    stop_server(server)


@pytest.fixture(scope="module")
def direct(settings_overrides, app, tmp_path_factory):
    server = production_server(settings_overrides, tmp_path_factory, proxies=0)
    yield server
    stop_server(server)


def test_plain_http_is_refused_on_api_and_oauth_and_redirected_on_pages(direct, ctx):
    org = make_org()
    _, key = make_api_key(org)
    client = make_client(org, redirect_uris=())
    api = requests.get(f"{direct.url}/v1/me", headers=bearer(key))
    assert api.status_code == 403 and api.json()["error"]["code"] == "https_required"
    token = requests.post(f"{direct.url}/oauth/token", auth=(client.client_id, client.client_secret),
                          data={"grant_type": "client_credentials"})
    assert token.status_code == 403 and token.json()["error"] == "https_required"
    page = requests.get(f"{direct.url}/login?next=/x", allow_redirects=False)
    assert page.status_code == 308 and page.headers["Location"].startswith("https://")
    for response in (api, token, page):
        assert response.headers["Strict-Transport-Security"].startswith("max-age=")
    # Without trusted proxies, a client claiming HTTPS is not believed.
    forged = requests.get(f"{direct.url}/v1/me", headers=bearer(key) | HTTPS)
    assert forged.status_code == 403


def test_https_through_the_trusted_proxy_works_with_secure_cookies(behind_proxy, ctx):
    org = make_org()
    _, key = make_api_key(org)
    assert requests.get(f"{behind_proxy.url}/v1/me", headers=bearer(key) | HTTPS).status_code == 200
    downgraded = requests.get(f"{behind_proxy.url}/v1/me", headers=bearer(key) | {"X-Forwarded-Proto": "http"})
    assert downgraded.status_code == 403 and downgraded.json()["error"]["code"] == "https_required"
    login = requests.get(f"{behind_proxy.url}/login", headers=HTTPS)
    assert login.status_code == 200
    assert "Secure" in login.headers["Set-Cookie"] and "HttpOnly" in login.headers["Set-Cookie"]
    assert login.headers["Strict-Transport-Security"].startswith("max-age=")
    meta = requests.get(f"{behind_proxy.url}/.well-known/oauth-authorization-server", headers=HTTPS).json()
    assert meta["issuer"] == "https://auth.example.test"
