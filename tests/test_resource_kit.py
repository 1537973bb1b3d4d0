"""The resource-server kit for real: examples/migrations_service.py (sensei.resource) in its
own gunicorn against a live Sensei server, and Debian's nginx (examples/nginx.conf) asking
the gateway check in front of a tiny upstream — the product documentation's first curl."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa

from app.extensions import db
from app.services import api_keys as key_service
from tests.conftest import ROOT, free_port, stop_process
from tests.factories import bearer, eventually, make_api_key, make_client, make_org


def _wait_for(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited: {log.read_text(errors='replace')[-3000:]}")
        try:
            requests.get(url, timeout=2)
            return
        except requests.RequestException:
            time.sleep(0.1)
    raise RuntimeError(f"not serving: {log.read_text(errors='replace')[-3000:]}")


@pytest.fixture(scope="module")
def migrations_service(server, tmp_path_factory):
    """The example service, on its own port, trusting the live Sensei server."""
    port = free_port()
    log = tmp_path_factory.mktemp("example") / "service.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENSEI_")} | {"SENSEI_ISSUER": server.url}
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "gunicorn", "--chdir", str(ROOT / "examples"),
                                    "--bind", f"127.0.0.1:{port}", "--workers", "1", "--no-control-socket",
                                    "migrations_service:app"], env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for(f"{url}/", process, log)
        yield url
    finally:
        stop_process(process)


def test_api_keys_need_their_scopes_and_see_only_their_organization(migrations_service, live):
    org, other = make_org(), make_org("Other")
    _, reader = make_api_key(org, scopes="migrations:read")
    _, writer = make_api_key(org, scopes="migrations:*")
    _, outsider = make_api_key(other, scopes="migrations:*")
    url = f"{migrations_service}/v1/migrations"
    # The seed's first curl, against the service.
    listed = requests.get(url, headers=bearer(reader))
    assert listed.status_code == 200 and listed.json() == {"object": "list", "data": [], "has_more": False}
    refused = requests.post(url, headers=bearer(reader), json={"name": "orders"})
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "forbidden" and "migrations:write" in refused.json()["error"]["message"]
    created = requests.post(url, headers=bearer(writer), json={"name": "orders"})
    assert created.status_code == 201
    assert [m["name"] for m in requests.get(url, headers=bearer(reader)).json()["data"]] == ["orders"]
    assert requests.get(url, headers=bearer(outsider)).json()["data"] == []


def test_access_tokens_are_verified_offline_and_forgeries_refused(migrations_service, live):
    org = make_org()
    client = make_client(org, scopes="migrations:read")
    token = requests.post(f"{live.url}/oauth/token", auth=(client.client_id, client.client_secret),
                          data={"grant_type": "client_credentials"}).json()["access_token"]
    url = f"{migrations_service}/v1/migrations"
    assert requests.get(url, headers=bearer(token)).status_code == 200
    assert requests.post(url, headers=bearer(token), json={"name": "x"}).status_code == 403
    # Same claims and kid, signed by a key that is not the issuer's.
    claims = jwt.decode(token, options={"verify_signature": False})
    header = jwt.get_unverified_header(token)
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt.encode(claims, stranger, algorithm="RS256", headers={"kid": header["kid"], "typ": "at+jwt"})
    unknown_kid = jwt.encode(claims, stranger, algorithm="RS256", headers={"kid": "nobody", "typ": "at+jwt"})
    not_an_access_token = jwt.encode(claims, "secret-secret-secret-secret-32by", algorithm="HS256",
                                     headers={"kid": header["kid"], "typ": "at+jwt"})
    for bad in (forged, unknown_kid, not_an_access_token, token[:-4] + "AAAA"):
        answer = requests.get(url, headers=bearer(bad))
        assert answer.status_code == 401 and answer.json()["error"]["code"] == "unauthorized", answer.text
        assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    missing = requests.get(url)
    assert missing.status_code == 401 and "Authorization: Bearer" in missing.json()["error"]["message"]


def test_a_deleted_key_stops_working_once_the_short_cache_expires(migrations_service, live):
    org = make_org()
    row, key = make_api_key(org, scopes="migrations:read")
    url = f"{migrations_service}/v1/migrations"
    assert requests.get(url, headers=bearer(key)).status_code == 200
    key_service.delete_api_key(org_id=org.id, key_id=row.id, viewer=None, audit=None)
    db.session.commit()
    eventually(lambda: _status_is(url, key, 401), timeout=12, interval=0.5)  # cache: 5 s


def _status_is(url: str, key: str, status: int) -> None:
    assert requests.get(url, headers=bearer(key)).status_code == status


# -- nginx + the gateway check ---------------------------------------------------------------


class _JsonHandler(BaseHTTPRequestHandler):
    """A tiny HTTP server's handler: ``answer()`` is sent as JSON to every GET."""

    def answer(self) -> object:
        raise NotImplementedError

    def do_GET(self):  # noqa: N802 (http.server's naming)
        body = json.dumps(self.answer()).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class _Upstream(_JsonHandler):
    def answer(self):
        return {"object": "list", "data": [], "org": self.headers.get("X-Sensei-Org-Id"),
                "saw_credential": bool(self.headers.get("Authorization"))}


@pytest.fixture(scope="module")
def nginx(settings_overrides, app, tmp_path_factory):
    """nginx (examples/nginx.conf, ports rewritten) in front of an upstream, asking a Sensei
    server that trusts it as its one proxy."""
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(binary).exists():
        pytest.fail("nginx is missing: apt-get install -y nginx (.ci/run does this)")
    from tests.conftest import start_server, stop_server

    sensei_port, upstream_port, nginx_port = free_port(), free_port(), free_port()
    sensei = start_server(settings_overrides | {"TRUSTED_PROXIES": 1, "ISSUER": f"http://127.0.0.1:{sensei_port}"},
                          sensei_port, tmp_path_factory.mktemp("gateway-sensei") / "gunicorn.log")
    upstream = ThreadingHTTPServer(("127.0.0.1", upstream_port), _Upstream)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    prefix = tmp_path_factory.mktemp("nginx")
    (prefix / "logs").mkdir()
    (prefix / "tmp").mkdir()
    config = (ROOT / "examples" / "nginx.conf").read_text()
    for old, new in (("127.0.0.1:8000", f"127.0.0.1:{sensei_port}"), ("127.0.0.1:5000", f"127.0.0.1:{upstream_port}"),
                     ("127.0.0.1:8080", f"127.0.0.1:{nginx_port}")):
        assert old in config
        config = config.replace(old, new)
    (prefix / "nginx.conf").write_text(config)
    log = prefix / "logs" / "error.log"
    process = subprocess.Popen([binary, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-g", "daemon off;"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        _wait_for(f"http://127.0.0.1:{nginx_port}/", process, log)
        yield f"http://127.0.0.1:{nginx_port}"
    finally:
        stop_process(process)
        upstream.shutdown()
        upstream.server_close()
        stop_server(sensei)


def test_the_seeds_first_curl_through_nginx(nginx, ctx):
    org = make_org(tier="professional")
    _, allowed = make_api_key(org, scopes="migrations:read")
    _, lacking = make_api_key(org, scopes="connections:read")
    # curl -X GET https://api.sensei.ai/v1/migrations -H "Authorization: Bearer sk_live_..."
    answer = requests.get(f"{nginx}/v1/migrations", headers={"Authorization": f"Bearer {allowed}"})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"object": "list", "data": [], "org": org.id, "saw_credential": False}
    refused = requests.get(f"{nginx}/v1/migrations", headers=bearer(lacking))
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
    assert "migrations:read" in refused.json()["error"]["message"]
    writing = requests.post(f"{nginx}/v1/migrations", headers=bearer(allowed), json={"name": "x"})
    assert writing.status_code == 403 and "migrations:write" in writing.json()["error"]["message"]
    for headers in ({}, bearer("sk_live_" + "0" * 40)):
        unauthorized = requests.get(f"{nginx}/v1/migrations", headers=headers)
        assert unauthorized.status_code == 401 and unauthorized.json()["error"]["code"] == "unauthorized"


def test_allow_lists_see_the_client_nginx_forwarded_and_429_keeps_retry_after(nginx, ctx):
    from tests.factories import http_from

    org = make_org(tier="free")  # 10 a second
    row, key = make_api_key(org, scopes="migrations:read")
    row.ip_whitelist = ["127.0.0.1/32"]
    db.session.commit()
    assert requests.get(f"{nginx}/v1/migrations", headers=bearer(key)).status_code == 200
    assert http_from("127.0.0.2").get(f"{nginx}/v1/migrations", headers=bearer(key)).status_code == 403
    statuses, limited = [], None
    for _ in range(40):
        answer = requests.get(f"{nginx}/v1/migrations", headers=bearer(key))
        statuses.append(answer.status_code)
        if answer.status_code == 429:
            limited = answer
            break
    assert limited is not None, statuses
    assert limited.json()["error"]["code"] == "rate_limited" and int(limited.headers["Retry-After"]) >= 1


class _CountingJwks(_JsonHandler):
    fetches = 0
    keys: dict = {"keys": []}

    def answer(self):
        type(self).fetches += 1
        return type(self).keys


def test_unknown_kids_refetch_the_jwks_at_most_every_few_seconds():
    from sensei.resource import JWKS_REFETCH_INTERVAL, Refused, Verifier

    signer = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(signer.public_key()))
    _CountingJwks.keys = {"keys": [public | {"kid": "k1", "use": "sig", "alg": "RS256"}]}
    _CountingJwks.fetches = 0
    issuer_server = ThreadingHTTPServer(("127.0.0.1", 0), _CountingJwks)
    threading.Thread(target=issuer_server.serve_forever, daemon=True).start()
    issuer = f"http://127.0.0.1:{issuer_server.server_address[1]}"
    verifier = Verifier(issuer)
    try:
        now = int(time.time())
        claims = {"iss": issuer, "aud": issuer, "sub": "cli_1", "org": "org_1", "scope": "migrations:read",
                  "iat": now, "exp": now + 300}
        good = jwt.encode(claims, signer, algorithm="RS256", headers={"kid": "k1", "typ": "at+jwt"})
        assert verifier.principal(good).scopes == frozenset({"migrations:read"})
        assert _CountingJwks.fetches == 1
        for _ in range(5):
            assert verifier.principal(good).org_id == "org_1"  # cached keys: no fetch
        stranger = jwt.encode(claims, signer, algorithm="RS256", headers={"kid": "k2", "typ": "at+jwt"})
        for _ in range(20):  # an unknown kid, over and over: one refetch per interval at most
            with pytest.raises(Refused):
                verifier.principal(stranger)
        assert _CountingJwks.fetches == 1  # the first fetch was under JWKS_REFETCH_INTERVAL ago
        time.sleep(JWKS_REFETCH_INTERVAL + 0.1)
        _CountingJwks.keys = {"keys": [*_CountingJwks.keys["keys"], public | {"kid": "k2", "alg": "RS256"}]}
        assert verifier.principal(stranger).id == "cli_1"  # rotated in: found on the next refetch
        assert _CountingJwks.fetches == 2
        expired = jwt.encode(claims | {"exp": now - 10}, signer, algorithm="RS256",
                             headers={"kid": "k1", "typ": "at+jwt"})
        wrong_audience = jwt.encode(claims | {"aud": "https://elsewhere"}, signer, algorithm="RS256",
                                    headers={"kid": "k1", "typ": "at+jwt"})
        id_token_typ = jwt.encode(claims, signer, algorithm="RS256", headers={"kid": "k1", "typ": "JWT"})
        for bad in (expired, wrong_audience, id_token_typ):
            with pytest.raises(Refused) as refused:
                verifier.principal(bad)
            assert refused.value.status == 401
    finally:
        verifier.http.close()
        issuer_server.shutdown()
        issuer_server.server_close()
