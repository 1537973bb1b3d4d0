"""Behind a proxy (SENSEI_TRUSTED_PROXIES=1) the client address is the hop the proxy added."""

from __future__ import annotations

import pytest
import requests

from tests.conftest import free_port, start_server, stop_server
from tests.factories import bearer, make_api_key, make_org


@pytest.fixture(scope="module")
def proxied(settings_overrides, app, tmp_path_factory):
    port = free_port()
    server = start_server(settings_overrides | {"TRUSTED_PROXIES": 1, "ISSUER": f"http://127.0.0.1:{port}"},
                          port, tmp_path_factory.mktemp("proxied") / "gunicorn.log")
    yield server
    stop_server(server)


def test_the_trusted_hop_decides_and_a_forged_prefix_changes_nothing(proxied, ctx):
    org = make_org()
    row, key = make_api_key(org, scopes="migrations:read")
    row.ip_whitelist = ["203.0.113.7"]
    from app.extensions import db

    db.session.commit()
    url = f"{proxied.url}/v1/me"
    # The proxy appended the real client address as the last hop.
    assert requests.get(url, headers=bearer(key) | {"X-Forwarded-For": "203.0.113.7"}).status_code == 200
    assert requests.get(url, headers=bearer(key) | {"X-Forwarded-For": "10.9.9.9, 203.0.113.7"}).status_code == 200
    # A client that forges the allowed address in front of its real one gains nothing.
    forged = requests.get(url, headers=bearer(key) | {"X-Forwarded-For": "203.0.113.7, 198.51.100.1"})
    assert forged.status_code == 403 and forged.json()["error"]["code"] == "forbidden"
    assert requests.get(url, headers=bearer(key)).status_code == 403  # no header: the proxy itself
