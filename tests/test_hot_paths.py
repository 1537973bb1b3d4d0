"""The hot paths (issue 8): one Redis round trip and no database read in steady state, and
what must not be traded for it — changes seen at once by every worker and every host,
no audit entry lost on a graceful reload or stop, the clock read once per verification.

The caching tests need Redis (CI sets SENSEI_TEST_REDIS_URL): without it nothing is
cached and every request reads the database.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import threading
import time
from types import SimpleNamespace
from urllib.parse import quote

import pytest
import requests
from sqlalchemy import func, select

from app.extensions import db
from app.models import AuditEvent
from app.oauth import tokens as token_module
from app.oauth.tokens import AccessTokenGenerator, decode_access_token, principal_for_access_token
from app.services import api_keys as key_service
from app.services import audit as audit_log
from app.services import clients as client_service
from app.services import orgs as org_service
from app.services.freshness import CredentialCache
from tests.conftest import REDIS_URL, free_port, start_server, stop_server
from tests.factories import bearer, make_api_key, make_client, make_org

needs_redis = pytest.mark.skipif(not REDIS_URL, reason="needs Redis: set SENSEI_TEST_REDIS_URL")


def basic(client) -> dict[str, str]:
    raw = f"{quote(client.client_id, safe='')}:{quote(client.client_secret, safe='')}"
    return {"Authorization": "Basic " + base64.b64encode(raw.encode()).decode()}


def token_for(url: str, client) -> str:
    response = requests.post(f"{url}/oauth/token", data={"grant_type": "client_credentials"}, headers=basic(client))
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


def warm(url: str, path: str, headers: dict, *, method: str = "GET", data: dict | None = None,
         times: int = 12) -> None:
    """Enough fresh connections that both workers have cached the credential."""
    for _ in range(times):
        response = requests.request(method, f"{url}{path}", headers=headers, data=data, timeout=10)
        assert response.status_code == 200, response.text


def statuses(url: str, path: str, headers: dict, *, method: str = "GET", data: dict | None = None,
             times: int = 12) -> set[int]:
    return {requests.request(method, f"{url}{path}", headers=headers, data=data, timeout=10).status_code
            for _ in range(times)}


# -- changes are seen at once by every worker ----------------------------------------------


@needs_redis
def test_a_deleted_key_stops_at_once_in_every_worker(live):
    org = make_org()
    _, admin = make_api_key(org)
    row, key = make_api_key(org, scopes="migrations:read")
    warm(live.url, "/v1/me", bearer(key))
    deleted = requests.delete(f"{live.url}/v1/api-keys/{row.id}", headers=bearer(admin))
    assert deleted.status_code == 200
    assert statuses(live.url, "/v1/me", bearer(key)) == {401}
    introspected = requests.post(f"{live.url}/oauth/introspect", headers=bearer(key), data={"token": key})
    assert introspected.status_code == 401


@needs_redis
def test_narrowed_scopes_and_allow_list_apply_at_once(live):
    org = make_org()
    _, admin = make_api_key(org)
    row, key = make_api_key(org, scopes="migrations:read connections:read")
    warm(live.url, "/v1/api-keys", bearer(admin))
    warm(live.url, "/v1/me", bearer(key))
    assert requests.patch(f"{live.url}/v1/api-keys/{row.id}", headers=bearer(admin),
                          json={"scopes": ["connections:read"]}).status_code == 200
    scopes = {tuple(requests.get(f"{live.url}/v1/me", headers=bearer(key)).json()["scopes"]) for _ in range(12)}
    assert scopes == {("connections:read",)}
    assert requests.patch(f"{live.url}/v1/api-keys/{row.id}", headers=bearer(admin),
                          json={"ip_whitelist": ["203.0.113.0/24"]}).status_code == 200
    assert statuses(live.url, "/v1/me", bearer(key)) == {403}


@needs_redis
def test_a_rotated_secret_and_a_deleted_client_stop_at_once(live):
    org = make_org()
    client = make_client(org, redirect_uris=())
    token = token_for(live.url, client)
    warm(live.url, "/oauth/token", basic(client), method="POST", data={"grant_type": "client_credentials"})
    warm(live.url, "/v1/me", bearer(token))
    # Through the services, as the dashboard does it.
    client_service.rotate_client_secret(org_id=org.id, client_id=client.client_id)
    assert statuses(live.url, "/oauth/token", basic(client), method="POST",
                    data={"grant_type": "client_credentials"}) == {401}
    client_service.delete_client(org_id=org.id, client_id=client.client_id)
    assert statuses(live.url, "/v1/me", bearer(token)) == {401}


@needs_redis
def test_a_revoked_token_stops_at_once_everywhere(live):
    org = make_org()
    _, key = make_api_key(org)
    client = make_client(org, redirect_uris=())
    token = token_for(live.url, client)
    warm(live.url, "/v1/me", bearer(token))
    warm(live.url, "/oauth/introspect", bearer(key), method="POST", data={"token": token})
    revoked = requests.post(f"{live.url}/oauth/revoke", headers=basic(client), data={"token": token})
    assert revoked.status_code == 200
    assert statuses(live.url, "/v1/me", bearer(token)) == {401}
    answers = [requests.post(f"{live.url}/oauth/introspect", headers=bearer(key), data={"token": token}).json()
               for _ in range(12)]
    assert all(answer == {"active": False} for answer in answers)


@needs_redis
def test_deleting_a_service_account_ends_its_keys_and_tokens_at_once(live):
    org = make_org()
    _, admin = make_api_key(org)
    created = requests.post(f"{live.url}/v1/service-accounts", headers=bearer(admin),
                            json={"name": "ci", "scopes": ["migrations:read"]}).json()
    key = requests.post(f"{live.url}/v1/api-keys", headers=bearer(admin),
                        json={"name": "sa key", "scopes": ["migrations:read"],
                              "service_account_id": created["id"]}).json()["key"]
    warm(live.url, "/v1/me", bearer(key))
    deleted = requests.delete(f"{live.url}/v1/service-accounts/{created['id']}", headers=bearer(admin))
    assert deleted.status_code == 200
    assert statuses(live.url, "/v1/me", bearer(key)) == {401}


@needs_redis
def test_new_limits_apply_at_once(live):
    org = make_org()
    org_service.set_limits(org_id=org.id, per_second=1000, per_day=1_000_000)
    _, key = make_api_key(org)
    warm(live.url, "/v1/me", bearer(key))
    org_service.set_limits(org_id=org.id, per_second=1000, per_day=5000)
    limits = {requests.get(f"{live.url}/v1/me", headers=bearer(key)).headers["X-RateLimit-Limit"]
              for _ in range(12)}
    assert limits == {"1000"}  # the nearest window; the day's now has 5000
    remaining = int(requests.get(f"{live.url}/v1/me", headers=bearer(key)).headers["X-RateLimit-Remaining"])
    org_service.set_limits(org_id=org.id, per_second=3, per_day=5000)
    answers = [requests.get(f"{live.url}/v1/me", headers=bearer(key)) for _ in range(12)]
    assert {r.headers["X-RateLimit-Limit"] for r in answers} == {"3"} and remaining > 3
    assert 429 in {r.status_code for r in answers}


# -- ... and by every other host sharing the database and Redis ----------------------------


@pytest.fixture(scope="module")
def second_host(settings_overrides, app, tmp_path_factory):
    """Another host: its own gunicorn (and caches), the same database, Redis and issuer."""
    if not REDIS_URL:
        pytest.skip("needs Redis: set SENSEI_TEST_REDIS_URL")
    server = start_server(settings_overrides, free_port(), tmp_path_factory.mktemp("host2") / "gunicorn.log")
    yield server
    stop_server(server)


@needs_redis
def test_another_host_sees_a_deletion_and_a_revocation_within_a_second(live, second_host):
    org = make_org()
    _, admin = make_api_key(org)
    row, key = make_api_key(org)
    client = make_client(org, redirect_uris=())
    token = token_for(live.url, client)
    warm(second_host.url, "/v1/me", bearer(key))
    warm(second_host.url, "/v1/me", bearer(token))
    assert requests.delete(f"{live.url}/v1/api-keys/{row.id}", headers=bearer(admin)).status_code == 200
    assert requests.post(f"{live.url}/oauth/revoke", headers=basic(client), data={"token": token}).status_code == 200
    assert statuses(second_host.url, "/v1/me", bearer(key)) == {401}  # at once, not only within 1 s
    assert statuses(second_host.url, "/v1/me", bearer(token)) == {401}


# -- round trips ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def counting_server(settings_overrides, app, tmp_path_factory):
    if not REDIS_URL:
        pytest.skip("needs Redis: set SENSEI_TEST_REDIS_URL")
    server = start_server(settings_overrides | {"BENCH_ROUND_TRIPS": "1"}, free_port(),
                          tmp_path_factory.mktemp("counting") / "gunicorn.log")
    yield server
    stop_server(server)


def steady_round_trips(url: str, path: str, headers: dict, *, method: str = "GET",
                       data: dict | None = None) -> list[dict[str, int]]:
    """Per-request counts once both workers have cached the credential (bounded: 200 requests)."""
    seen: list[dict[str, int]] = []
    for _ in range(200):
        response = requests.request(method, f"{url}{path}", headers=headers, data=data, timeout=10)
        assert response.status_code == 200, response.text
        fields = dict(part.strip().split("=") for part in response.headers["X-Sensei-Round-Trips"].split(";"))
        seen.append({"db": int(fields["db"]), "redis": int(fields["redis"])})
        if len(seen) >= 10 and all(s["db"] == 0 for s in seen[-10:]):
            return seen[-10:]
    return seen[-10:]


@needs_redis
@pytest.mark.parametrize("path", ["me_api_key", "me_access_token", "token", "introspect_client",
                                  "introspect_api_key"])
def test_hot_paths_make_one_redis_round_trip_and_no_database_read(counting_server, ctx, path):
    org = make_org()
    org_service.set_limits(org_id=org.id, per_second=100_000, per_day=100_000_000)  # counted, never reached
    _, key = make_api_key(org)
    client = make_client(org, redirect_uris=())
    token = token_for(counting_server.url, client)
    requests_by_path = {
        "me_api_key": ("GET", "/v1/me", bearer(key), None),
        "me_access_token": ("GET", "/v1/me", bearer(token), None),
        "token": ("POST", "/oauth/token", basic(client), {"grant_type": "client_credentials"}),
        "introspect_client": ("POST", "/oauth/introspect", basic(client), {"token": token}),
        "introspect_api_key": ("POST", "/oauth/introspect", bearer(key), {"token": token}),
    }
    method, url_path, headers, data = requests_by_path[path]
    counts = steady_round_trips(counting_server.url, url_path, headers, method=method, data=data)
    assert counts == [{"db": 0, "redis": 1}] * 10


# -- audit: nothing lost on a graceful reload or stop --------------------------------------


def test_no_audit_entry_is_lost_on_graceful_reload_and_stop_under_load(settings_overrides, app, ctx,
                                                                       tmp_path_factory):
    server = start_server(settings_overrides, free_port(), tmp_path_factory.mktemp("reload") / "gunicorn.log")
    org = make_org()
    row, key = make_api_key(org)
    ok, server_errors, failures = [0], [0], [0]
    lock = threading.Lock()
    stop_at = time.monotonic() + 20

    def load() -> None:
        while time.monotonic() < stop_at:
            try:
                status = requests.get(f"{server.url}/v1/me", headers=bearer(key), timeout=10).status_code
            except requests.RequestException:
                status = None  # refused while stopping: no answer, so no claim either way
            with lock:
                if status == 200:
                    ok[0] += 1
                elif status is not None and status >= 500:
                    server_errors[0] += 1
                else:
                    failures[0] += 1
            if status is None and server.process.poll() is not None:
                return

    threads = [threading.Thread(target=load) for _ in range(6)]
    try:
        for thread in threads:
            thread.start()
        time.sleep(2)
        os.kill(server.process.pid, signal.SIGHUP)  # new workers; the old ones finish and exit
        time.sleep(3)
        os.kill(server.process.pid, signal.SIGHUP)
        time.sleep(3)
        server.process.send_signal(signal.SIGTERM)  # graceful stop while the load goes on
        server.process.wait(timeout=60)
        for thread in threads:
            thread.join(timeout=30)
    finally:
        if server.process.poll() is None:
            stop_server(server)
    assert server_errors[0] == 0
    assert ok[0] > 100, server.log()[-2000:]
    written = db.session.scalar(select(func.count()).select_from(AuditEvent).where(
        AuditEvent.org_id == org.id, AuditEvent.actor_id == row.id, AuditEvent.action == "me.read"))
    # Every 2xx has its entry; a request answered while the client gave up has one too.
    assert ok[0] <= written <= ok[0] + failures[0]
    assert audit_log.verify_chain(org_id=org.id)["problems"] == []


def test_the_writer_queue_is_bounded_and_drains_in_order(ctx):
    org = make_org()
    writer = audit_log.AuditWriter(ctx, max_pending=5)
    context = audit_log.operator_context()
    gate = threading.Lock()
    gate.acquire()
    # Hold the writer on its first batch: it is then busy, and the queue fills up.
    original = audit_log.append_sealed

    def held(by_org):
        with gate:
            return original(by_org)

    audit_log.append_sealed = held
    try:
        accepted = [writer.submit(audit_log._row(context, org_id=org.id, action=f"test.{i}")) for i in range(20)]
        time.sleep(0.2)
        more = [writer.submit(audit_log._row(context, org_id=org.id, action=f"test.more.{i}")) for i in range(20)]
        refused = accepted.count(False) + more.count(False)
        assert 0 < refused and accepted.count(True) + more.count(True) <= 5 + 20  # never more than the bound queued
        gate.release()
        assert writer.flush(timeout=10)
    finally:
        audit_log.append_sealed = original
        if gate.locked():
            gate.release()
        writer.stop()
    written = db.session.scalar(select(func.count()).select_from(AuditEvent).where(AuditEvent.org_id == org.id))
    assert written == accepted.count(True) + more.count(True)
    assert audit_log.verify_chain(org_id=org.id) == {"organizations": 1, "entries": written, "problems": []}


# -- the clock, read once ------------------------------------------------------------------


class TickingClock:
    """A clock that moves one second every time it is read: any second read sees another second."""

    def __init__(self, start: int) -> None:
        self.now = start

    def __call__(self) -> float:
        self.now += 1
        return float(self.now)


def test_introspection_judges_a_token_against_one_reading_of_the_clock(ctx, monkeypatch):
    settings = ctx.config["SETTINGS"]
    start = int(time.time())
    monkeypatch.setattr(token_module, "clock", TickingClock(start))
    generator = AccessTokenGenerator(issuer=settings.ISSUER, audience=settings.AUDIENCE, access_ttl=60)
    org = make_org()
    client = make_client(org, redirect_uris=())
    issued = generator("client_credentials", client_service.get_active_client(client.client_id),
                       include_refresh_token=False)
    # The token says exp = start + 1 + 60; every read of the clock is a second later.
    assert decode_access_token(issued["access_token"], check_expiry=False) is not None
    assert decode_access_token(issued["access_token"]) is not None
    monkeypatch.setattr(token_module, "clock", TickingClock(start + 60))  # the next read is exp itself
    assert decode_access_token(issued["access_token"]) is None  # expired at exp, not a second later
    assert decode_access_token(issued["access_token"], check_expiry=False)["exp"] == start + 61


def test_the_credential_cache_is_bounded():
    cache: CredentialCache = CredentialCache(max_entries=10)
    for i in range(30):
        cache.store(f"k{i}", object(), "g")  # type: ignore[arg-type]
    assert len(cache) == 10 and cache.get("k0") is None and cache.get("k29") is not None


class FixedClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(("offset", "accepted"), [
    (-60.0, True), (-1.0, True), (-0.5, True), (-0.001, True),  # before exp: accepted, up to its last instant
    (0.0, False), (0.001, False), (0.999, False), (1.0, False), (3600.0, False),  # from exp on: refused
])
def test_a_token_is_accepted_until_the_second_it_expires_and_refused_from_it(ctx, monkeypatch, offset, accepted):
    """No leeway (README, Access tokens): `exp` is the first second a token is refused, whatever
    the fraction of a second the clock reads, on every path that verifies tokens."""
    settings = ctx.config["SETTINGS"]
    issued_at = int(time.time())
    monkeypatch.setattr(token_module, "clock", FixedClock(issued_at + 0.25))
    generator = AccessTokenGenerator(issuer=settings.ISSUER, audience=settings.AUDIENCE, access_ttl=60)
    org = make_org()
    client = make_client(org, redirect_uris=())
    token = generator("client_credentials", client_service.get_active_client(client.client_id),
                      include_refresh_token=False)["access_token"]
    exp = issued_at + 60
    monkeypatch.setattr(token_module, "clock", FixedClock(exp + offset))
    assert (decode_access_token(token) is not None) is accepted
    assert (principal_for_access_token(token) is not None) is accepted
    # Introspection reports the expiry itself: the claims stay readable either way.
    assert decode_access_token(token, check_expiry=False)["exp"] == exp


# -- the hot paths answer as the views do ------------------------------------------------
#
# The first call of a credential goes to the view (nothing is cached yet); the next ones take
# the hot path when they are the ordinary case. Flask's request_started signal tells which
# way a call went.

VARYING = {"x-request-id", "x-ratelimit-remaining", "x-ratelimit-reset", "date"}


def answer(response) -> tuple[int, list[tuple[str, str]], bytes]:
    headers = sorted((name.lower(), value) for name, value in response.headers if name.lower() not in VARYING)
    return response.status_code, headers, response.data


class ViewCalls:
    """How many requests reached a Flask view (the hot paths send no request_started)."""

    def __init__(self, app) -> None:
        self.count = 0
        self.app = app

    def __enter__(self):
        from flask import request_started

        request_started.connect(self._seen, self.app)
        return self

    def __exit__(self, *exc):
        from flask import request_started

        request_started.disconnect(self._seen, self.app)

    def _seen(self, _sender, **_extra) -> None:
        self.count += 1


def through_both(app, org_id: str, method: str, path: str, **kwargs):
    """The view's answer, then the hot path's to the same call, and how many took a view.

    A first call caches the credential; a new generation of its organization (what any
    change publishes) sends the next to the view, which reads it again; the one after is hot."""
    web = app.test_client()
    web.open(path, method=method, **kwargs)
    app.extensions["sensei.limiter"].bump([org_id])
    with ViewCalls(app) as views:
        view = web.open(path, method=method, **kwargs)
        by_view = views.count
        hot = web.open(path, method=method, **kwargs)
    return view, hot, (by_view, views.count - by_view)


def audit_count(org_id: str, action: str) -> int:
    db.session.rollback()
    return db.session.scalar(select(func.count()).select_from(AuditEvent)
                             .where(AuditEvent.org_id == org_id, AuditEvent.action == action))


@needs_redis
@pytest.mark.parametrize("kind", ["key", "service_account_key"])
def test_me_and_the_gateway_answer_on_the_hot_path_as_their_views_do(app, ctx, kind):
    from app.services import service_accounts as account_service

    org = make_org()
    if kind == "key":
        _, key = make_api_key(org, scopes="migrations:read connections:read")
    else:
        account, _secret = account_service.create_service_account(org_id=org.id, name="ci", scopes=["migrations:read"])
        key = key_service.create_api_key(org_id=org.id, name="ci key", scopes=["migrations:read"],
                                         environment="test", service_account_id=account.id)[1]
    for path in ("/v1/me", "/gateway/check", "/gateway/check?scope=migrations:read",
                 "/gateway/check?scope=migrations:read&scope=migrations:read"):
        view, hot, (by_view, by_hot) = through_both(app, org.id, "GET", path, headers=bearer(key))
        assert (by_view, by_hot) == (1, 0), path
        assert view.status_code == 200, view.data
        assert answer(hot) == answer(view), path
    assert audit_count(org.id, "me.read") == 3
    assert audit_count(org.id, "gateway.check") == 9


@needs_redis
@pytest.mark.parametrize("caller", ["client", "api_key"])
def test_introspection_answers_on_the_hot_path_as_its_view_does(app, ctx, caller):
    org = make_org()
    client = make_client(org, redirect_uris=())
    _, key = make_api_key(org)
    web = app.test_client()
    token = web.post("/oauth/token", data={"grant_type": "client_credentials"}, headers=basic(client)).json[
        "access_token"]
    headers = basic(client) if caller == "client" else bearer(key)
    for data in ({"token": token}, {"token": token, "token_type_hint": "access_token"}):
        view, hot, (by_view, by_hot) = through_both(app, org.id, "POST", "/oauth/introspect", headers=headers,
                                                    data=data)
        assert view.json["active"] is True
        assert (by_view, by_hot) == (1, 0)
        assert answer(hot) == answer(view)
    assert audit_count(org.id, "oauth.token.introspect") == 6


@needs_redis
def test_what_the_hot_paths_do_not_answer_goes_to_the_view_counted_once(app, ctx):
    """Refusals, inactive tokens and unusual parameters are the views' answers, each request
    counted once against the limit and audited once."""
    org = make_org()
    org_service.set_limits(org_id=org.id, per_second=1_000, per_day=1_000_000)
    _, key = make_api_key(org, scopes="migrations:read")
    client = make_client(org, redirect_uris=())
    web = app.test_client()
    token = web.post("/oauth/token", data={"grant_type": "client_credentials"}, headers=basic(client)).json[
        "access_token"]
    for _ in range(2):  # cached, then confirmed: hot from here on
        assert web.get("/v1/me", headers=bearer(key)).status_code == 200
        assert web.post("/oauth/introspect", data={"token": token}, headers=basic(client)).status_code == 200
    start = int(web.get("/v1/me", headers=bearer(key)).headers["X-RateLimit-Remaining"])
    cases = [
        ("GET", "/gateway/check?scope=billing:read", {}, 403),  # a scope the key lacks
        ("GET", "/gateway/check?scope=", {}, 400),
        ("GET", "/gateway/check?scope=migrations%3Aread", {}, 200),  # encoded: the view decodes it
        ("GET", "/gateway/check?scope=migrations:read&other=1", {}, 200),
        ("POST", "/oauth/introspect", {"data": {"token": "not-a-token"}}, 200),  # inactive
        ("POST", "/oauth/introspect", {"data": "token=" + token + "&token=" + token,
                                       "content_type": "application/x-www-form-urlencoded"}, 400),
        ("POST", "/oauth/introspect", {"data": {}}, 400),
        ("POST", "/oauth/introspect?token=" + token, {"data": {"token": token}}, 200),
    ]
    with ViewCalls(app) as views:
        for index, (method, path, extra, status) in enumerate(cases, start=1):
            response = web.open(path, method=method, headers=bearer(key), **extra)
            assert response.status_code == status, (path, response.data)
            if "X-RateLimit-Remaining" in response.headers:  # not on a refusal before authentication
                assert int(response.headers["X-RateLimit-Remaining"]) == start - index, path  # one count each
        assert views.count == len(cases)
    after = web.get("/v1/me", headers=bearer(key)).headers["X-RateLimit-Remaining"]
    assert int(after) == start - len(cases) - 1
    assert audit_count(org.id, "gateway.check") == 4
    inactive = web.post("/oauth/introspect", data={"token": "not-a-token"}, headers=bearer(key))
    assert inactive.json == {"active": False}


@needs_redis
def test_the_hot_paths_keep_the_limit_and_the_allow_list(app, ctx):
    org = make_org()
    org_service.set_limits(org_id=org.id, per_second=1_000, per_day=3)
    row, key = make_api_key(org)
    web = app.test_client()
    with ViewCalls(app) as views:
        answers = [web.get("/v1/me", headers=bearer(key)).status_code for _ in range(5)]
    assert answers == [200, 200, 200, 429, 429]
    assert views.count == 2 + 2  # two to cache and confirm the key, and the two refusals
    assert audit_count(org.id, "me.read") == 5
    org_service.set_limits(org_id=org.id, per_second=1_000, per_day=1_000_000)
    assert web.get("/v1/me", headers=bearer(key)).status_code == 200
    key_service.update_api_key(org_id=org.id, key_id=row.id, changes={"ip_whitelist": ["203.0.113.0/24"]},
                               granter=None)
    with ViewCalls(app) as views:
        assert [web.get("/v1/me", headers=bearer(key)).status_code for _ in range(3)] == [403] * 3
        assert views.count == 3


def token_answer(response) -> tuple:
    """A token response without what differs per token: the token itself, kept as its claims
    but for the time and id."""
    status, headers, _body = answer(response)
    body = dict(response.json)
    claims = token_module.unverified_header(body["access_token"]), jwt_claims(body.pop("access_token"))
    headers = [(name, value) for name, value in headers if name != "content-length"]
    return status, headers, body, claims


def jwt_claims(token: str) -> dict:
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return {k: v for k, v in claims.items() if k not in ("jti", "iat", "exp")}


@needs_redis
@pytest.mark.parametrize("kind", ["client", "service_account"])
def test_client_credentials_tokens_are_issued_on_the_hot_path_as_the_grant_does(app, ctx, kind):
    from app.services import service_accounts as account_service

    org = make_org()
    if kind == "client":
        client = make_client(org, redirect_uris=())
        headers = basic(client)
    else:
        account, secret = account_service.create_service_account(org_id=org.id, name="ci",
                                                                 scopes=["migrations:read", "connections:read"])
        headers = basic(SimpleNamespace(client_id=account.client_id, client_secret=secret))
    for data in ({"grant_type": "client_credentials"}, {"grant_type": "client_credentials", "scope": "migrations:read"}):
        view, hot, (by_view, by_hot) = through_both(app, org.id, "POST", "/oauth/token", headers=headers, data=data)
        assert view.status_code == 200, view.data
        assert (by_view, by_hot) == (1, 0)
        assert token_answer(hot) == token_answer(view)
        assert decode_access_token(hot.json["access_token"]) is not None  # a token this server accepts
    assert audit_count(org.id, "oauth.token.issue") == 6


@needs_redis
def test_token_requests_out_of_the_ordinary_go_to_the_grant(app, ctx):
    org = make_org()
    client = make_client(org, redirect_uris=(), scopes="migrations:read")
    web = app.test_client()
    for _ in range(2):  # cached, then confirmed
        assert web.post("/oauth/token", data={"grant_type": "client_credentials"}, headers=basic(client)).status_code == 200
    cases = [
        ({"grant_type": "client_credentials", "scope": "billing:read"}, 400, "invalid_scope"),
        ({"grant_type": "client_credentials", "scope": "openid"}, 400, "invalid_scope"),
        ({"grant_type": "client_credentials", "scope": "nonsense"}, 400, "invalid_scope"),
        ({"grant_type": "refresh_token", "refresh_token": "rt_x"}, 400, "unauthorized_client"),
        ({"grant_type": "client_credentials", "extra": "1"}, 200, None),
        ({"grant_type": "client_credentials", "scope": "migrations:read migrations:read"}, 200, None),
    ]
    with ViewCalls(app) as views:
        for data, status, error in cases:
            response = web.post("/oauth/token", data=data, headers=basic(client))
            assert response.status_code == status, (data, response.data)
            assert response.json.get("error") == error
        assert views.count == len(cases)
    code_only = make_client(org, grant_types=["authorization_code"])
    with ViewCalls(app) as views:
        answers = [web.post("/oauth/token", data={"grant_type": "client_credentials"}, headers=basic(code_only))
                   for _ in range(3)]
        assert [a.json.get("error") for a in answers] == ["unauthorized_client"] * 3
        assert views.count == 3


@needs_redis
def test_a_token_refused_by_the_limit_is_neither_sent_nor_recorded(app, ctx):
    """The hot path signs while the count is in flight; a count that refuses discards it."""
    org = make_org()
    org_service.set_limits(org_id=org.id, per_second=1_000, per_day=4)
    client = make_client(org, redirect_uris=())
    web = app.test_client()
    answers = [web.post("/oauth/token", data={"grant_type": "client_credentials"}, headers=basic(client))
               for _ in range(6)]
    assert [a.status_code for a in answers] == [200] * 4 + [429] * 2
    assert all("access_token" not in a.json for a in answers[4:])
    db.session.rollback()
    issued = db.session.execute(select(AuditEvent.result, func.count()).where(
        AuditEvent.org_id == org.id, AuditEvent.action == "oauth.token.issue").group_by(AuditEvent.result)).all()
    assert dict(issued) == {"success": 4}
