"""Behind a proxy (SENSEI_TRUSTED_PROXIES=1) the client address is the hop the proxy added."""

from __future__ import annotations

import requests

from app.extensions import db
from tests.factories import bearer, make_api_key, make_org


def key_allowed_from(address: str) -> str:
    """A new key whose allow-list holds ``address`` only."""
    row, key = make_api_key(make_org(), scopes="migrations:read")
    row.ip_whitelist = [address]
    db.session.commit()
    return key


def test_the_trusted_hop_decides_and_a_forged_prefix_changes_nothing(behind_one_proxy, ctx):
    key = key_allowed_from("203.0.113.7")
    url = f"{behind_one_proxy.url}/v1/me"
    # The proxy appended the real client address as the last hop.
    assert requests.get(url, headers=bearer(key) | {"X-Forwarded-For": "203.0.113.7"}).status_code == 200
    assert requests.get(url, headers=bearer(key) | {"X-Forwarded-For": "10.9.9.9, 203.0.113.7"}).status_code == 200
    # A client that forges the allowed address in front of its real one gains nothing.
    forged = requests.get(url, headers=bearer(key) | {"X-Forwarded-For": "203.0.113.7, 198.51.100.1"})
    assert forged.status_code == 403 and forged.json()["error"]["code"] == "forbidden"
    assert requests.get(url, headers=bearer(key)).status_code == 403  # no header: the proxy itself


def test_an_allow_list_holding_the_proxy_does_not_admit_its_clients(behind_one_proxy, ctx):
    """Every layer judges the forwarded address, the hot paths included (a cached key)."""
    key = key_allowed_from("127.0.0.1")
    url = f"{behind_one_proxy.url}/v1/me"
    for _ in range(12):  # both workers cache and confirm the key
        assert requests.get(url, headers=bearer(key) | {"X-Forwarded-For": "127.0.0.1"}).status_code == 200
    for path in ("/v1/me", "/gateway/check"):
        refused = {requests.get(f"{behind_one_proxy.url}{path}",
                                headers=bearer(key) | {"X-Forwarded-For": "198.51.100.1"}).status_code
                   for _ in range(12)}
        assert refused == {403}
