"""Rate limits (SPEC §8) against real gunicorn servers (2 workers) and the real Redis.

The Redis tests need ``SENSEI_TEST_REDIS_URL`` (CI sets it); each session uses its own key
prefix. The limits here are the defaults (the shared test server raises the anonymous and
sign-in limits, since the rest of the suite fails and signs in far more than people do).
"""

from __future__ import annotations

import secrets
import subprocess
import threading
import time

import pytest
import redis
import requests

from app.services import orgs as org_service
from tests.conftest import REDIS_URL, free_port, start_server, stop_process, stop_server
from tests.factories import audit_written, bearer, make_api_key, make_client, make_org, make_user
from tests.test_api_keys import envelope

needs_redis = pytest.mark.skipif(not REDIS_URL, reason="needs Redis: set SENSEI_TEST_REDIS_URL")
DEFAULT_LIMITS = {"ANONYMOUS_PER_SECOND": 10, "ANONYMOUS_PER_DAY": 1000,
                  "LOGIN_PER_MINUTE_PER_ADDRESS": 10, "LOGIN_PER_MINUTE_PER_ACCOUNT": 5}


def limited_server(settings_overrides, tmp_path_factory, **extra):
    port = free_port()
    # No Redis unless asked for: the shared server's counters (and prefix) are not these tests'.
    settings = settings_overrides | {"REDIS_URL": ""} | DEFAULT_LIMITS | {"ISSUER": f"http://127.0.0.1:{port}"} | extra
    return start_server(settings, port, tmp_path_factory.mktemp("limits") / "gunicorn.log")


@pytest.fixture(scope="module")
def redis_server(settings_overrides, app, tmp_path_factory):
    if not REDIS_URL:
        pytest.skip("needs Redis: set SENSEI_TEST_REDIS_URL")
    server = limited_server(settings_overrides, tmp_path_factory, REDIS_URL=REDIS_URL,
                            REDIS_PREFIX=f"sensei-test-{secrets.token_hex(6)}")
    yield server
    stop_server(server)


def burst(url: str, count: int, **kwargs) -> list[requests.Response]:
    """``count`` requests at once, each on its own connection (so both workers serve them)."""
    method = kwargs.pop("method", "GET")
    barrier = threading.Barrier(count)
    results: list[requests.Response] = []
    lock = threading.Lock()

    def one() -> None:
        session = requests.Session()
        barrier.wait(timeout=30)
        response = session.request(method, url, timeout=30, **kwargs)
        with lock:
            results.append(response)

    threads = [threading.Thread(target=one) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(results) == count
    return results


@needs_redis
def test_headers_count_down(redis_server, ctx):
    org = make_org(tier="professional")
    _, key = make_api_key(org)
    remaining = []
    for _ in range(3):
        response = requests.get(f"{redis_server.url}/v1/me", headers=bearer(key))
        assert response.status_code == 200
        assert response.headers["X-RateLimit-Limit"] == "200"
        reset = int(response.headers["X-RateLimit-Reset"])
        assert time.time() - 1 <= reset <= time.time() + 2
        remaining.append(int(response.headers["X-RateLimit-Remaining"]))
    assert remaining[0] > remaining[1] > remaining[2] and remaining[0] <= 199


@needs_redis
def test_the_eleventh_request_in_a_second_on_free_is_429(redis_server, ctx):
    org = make_org(tier="free")
    key_row, key = make_api_key(org)
    for _attempt in range(3):  # a burst that straddles a window boundary is retried
        results = burst(f"{redis_server.url}/v1/me", 11, headers=bearer(key))
        statuses = sorted(r.status_code for r in results)
        if statuses == [200] * 10 + [429]:
            break
        time.sleep(1.1)
        key_row, key = make_api_key(org)
    assert statuses == [200] * 10 + [429], statuses
    refused = next(r for r in results if r.status_code == 429)
    envelope(refused, 429, "rate_limited")
    assert int(refused.headers["Retry-After"]) >= 1
    assert refused.headers["X-RateLimit-Remaining"] == "0" and refused.headers["X-RateLimit-Limit"] == "10"
    _, admin = make_api_key(org, scopes="admin:read")
    audit_written(org.id, 1, actor_id=key_row.id, result="failure")
    failures = requests.get(f"{redis_server.url}/v1/audit-logs", headers=bearer(admin),
                            params={"result": "failure", "actor_id": key_row.id}).json()["data"]
    assert [e["action"] for e in failures] == ["me.read"]


@needs_redis
def test_two_workers_share_one_daily_limit_exactly(redis_server, ctx):
    org = make_org(tier="enterprise")
    org_service.set_limits(org_id=org.id, per_second=1000, per_day=25)
    _, key = make_api_key(org)
    results = burst(f"{redis_server.url}/v1/me", 40, headers=bearer(key))
    assert sum(r.status_code == 200 for r in results) == 25
    assert sum(r.status_code == 429 for r in results) == 15
    refused = next(r for r in results if r.status_code == 429)
    assert refused.headers["X-RateLimit-Limit"] == "25"  # the daily window is the one exhausted
    assert int(refused.headers["Retry-After"]) > 3600


@needs_redis
def test_token_endpoint_limits_per_client_in_rfc6749_shape(redis_server, ctx):
    org = make_org(tier="free")
    client = make_client(org, redirect_uris=())
    for _ in range(3):
        results = burst(f"{redis_server.url}/oauth/token", 11, method="POST",
                        data={"grant_type": "client_credentials"}, auth=(client.client_id, client.client_secret))
        if sorted(r.status_code for r in results) == [200] * 10 + [429]:
            break
        time.sleep(1.1)
        client = make_client(org, redirect_uris=())
    assert sorted(r.status_code for r in results) == [200] * 10 + [429]
    refused = next(r for r in results if r.status_code == 429)
    assert refused.json()["error"] == "rate_limited" and int(refused.headers["Retry-After"]) >= 1
    ok = next(r for r in results if r.status_code == 200)
    assert ok.headers["X-RateLimit-Limit"] == "10"


@needs_redis
def test_enterprise_without_limits_is_unlimited_and_sends_no_headers(redis_server, ctx):
    org = make_org(tier="enterprise")
    _, key = make_api_key(org)
    results = burst(f"{redis_server.url}/v1/me", 15, headers=bearer(key))
    assert all(r.status_code == 200 and "X-RateLimit-Limit" not in r.headers for r in results)


@needs_redis
def test_sign_in_attempts_are_throttled_per_account_and_per_address(redis_server, ctx):
    from tests.factories import PASSWORD, Browser

    org = make_org()
    user = make_user(org)
    statuses = [Browser(redis_server.url).login(user.email, "wrong password!!").status_code for _ in range(5)]
    assert statuses == [401] * 5
    # Counted before the password is checked: even the right one is refused now.
    throttled = Browser(redis_server.url).login(user.email, PASSWORD)
    assert throttled.status_code == 429 and "Too many sign-in attempts" in throttled.text
    # Per address: other accounts from the same address run into the address limit.
    statuses = [Browser(redis_server.url).login(f"nobody{i}@example.com", PASSWORD).status_code for i in range(6)]
    assert statuses[-1] == 429 and statuses.count(401) == 4  # 6 + 5 attempts so far, limit 10/min


def test_device_codes_typed_at_the_device_page_are_throttled_like_sign_ins(redis_server, ctx):
    from tests.factories import Browser, http_from
    from tests.test_device_flow import enter_code

    org = make_org()
    user = make_user(org)
    browser = Browser(redis_server.url)
    browser.http = http_from("127.0.0.2")  # signed in from another address: this test's own sign-in budget
    assert browser.login(user.email).status_code == 303
    answers = [enter_code(browser, redis_server, "BCDF-GHJK").status_code for _ in range(6)]
    assert answers == [400] * 5 + [429]  # 5 a minute per person, as sign-in attempts per account


def test_without_redis_limits_are_per_process_and_still_enforced(settings_overrides, app, tmp_path_factory, ctx):
    server = limited_server(settings_overrides, tmp_path_factory)
    try:
        org = make_org(tier="free")
        _, key = make_api_key(org)
        response = requests.get(f"{server.url}/v1/me", headers=bearer(key))
        assert response.headers["X-RateLimit-Limit"] == "10"
        statuses = [r.status_code for r in burst(f"{server.url}/v1/me", 30, headers=bearer(key))]
        assert 429 in statuses and statuses.count(200) <= 20  # at most 10 per worker per second
        assert requests.get(f"{server.url}/readyz").json()["redis"] == "not configured"
    finally:
        stop_server(server)


def test_redis_down_fails_open_for_the_api_and_closed_for_sign_in(settings_overrides, app, tmp_path_factory, ctx):
    nowhere = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    server = limited_server(settings_overrides, tmp_path_factory, REDIS_URL=nowhere)
    try:
        org = make_org(tier="free")
        _, key = make_api_key(org)
        response = requests.get(f"{server.url}/v1/me", headers=bearer(key))
        assert response.status_code == 200 and "X-RateLimit-Limit" not in response.headers
        ready = requests.get(f"{server.url}/readyz")
        assert ready.status_code == 503 and ready.json()["redis"] == "unavailable"
        from tests.factories import PASSWORD, Browser

        user = make_user(org)
        refused = Browser(server.url).login(user.email, PASSWORD)
        assert refused.status_code == 503 and "temporarily unavailable" in refused.text
        assert "rate-limit storage unavailable" in server.log()
    finally:
        stop_server(server)


def start_private_redis(port: int, directory) -> subprocess.Popen:
    """A redis-server of this test's own (never the shared one), on ``port``."""
    process = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                "--appendonly", "no", "--dir", str(directory)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1)
    deadline = time.monotonic() + 10
    while True:  # bounded by the deadline
        try:
            if client.ping():
                return process
        except redis.RedisError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise
        time.sleep(0.05)


def stop_private_redis(process: subprocess.Popen) -> None:
    stop_process(process, timeout=10)


@needs_redis
def test_limits_survive_a_script_flush_and_a_redis_stop_and_start(settings_overrides, app, tmp_path_factory, ctx,
                                                         tmp_path):
    port = free_port()
    storage = start_private_redis(port, tmp_path)
    server = limited_server(settings_overrides, tmp_path_factory, REDIS_URL=f"redis://127.0.0.1:{port}/0")
    try:
        org = make_org(tier="starter")
        key, plaintext = make_api_key(org)
        me = f"{server.url}/v1/me"

        def limits_counted(times: int = 8) -> list[bool]:
            responses = [requests.get(me, headers=bearer(plaintext), timeout=10) for _ in range(times)]
            assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
            return ["X-RateLimit-Limit" in r.headers for r in responses]

        assert all(limits_counted())
        redis.Redis(host="127.0.0.1", port=port).script_flush()  # as after a restart or a failover
        assert all(limits_counted())

        from tests.factories import PASSWORD, Browser

        user = make_user(org)
        assert Browser(server.url).login(user.email, PASSWORD).status_code == 303
        stop_private_redis(storage)
        assert not any(limits_counted())  # fails open: served, nothing counted ...
        assert "rate-limit storage unavailable" in server.log()  # ... with an alarm in the log
        ready = requests.get(f"{server.url}/readyz", timeout=10)
        assert ready.status_code == 503 and ready.json()["redis"] == "unavailable"
        refused = Browser(server.url).login(user.email, PASSWORD)  # sign-in throttling fails closed
        assert refused.status_code == 503 and "temporarily unavailable" in refused.text

        storage = start_private_redis(port, tmp_path)
        back = time.monotonic()
        while not all(limits_counted()):  # each worker reconnects on its next request
            assert time.monotonic() - back < 5
        assert requests.get(f"{server.url}/readyz", timeout=10).status_code == 200
        assert Browser(server.url).login(user.email, PASSWORD).status_code == 303
        _, free_key = make_api_key(make_org(tier="free"))  # 10 a second, counted again
        http = requests.Session()
        answers = [http.get(me, headers=bearer(free_key), timeout=10).status_code for _ in range(25)]
        assert answers.count(200) <= 20 and 429 in answers, answers
        # A deletion is still seen at once by every worker (the new Redis's generations).
        _, admin = make_api_key(org)
        deleted = requests.delete(f"{server.url}/v1/api-keys/{key.id}", headers=bearer(admin), timeout=10)
        assert deleted.status_code == 200, deleted.text
        assert {requests.get(me, headers=bearer(plaintext), timeout=10).status_code for _ in range(8)} == {401}
    finally:
        stop_server(server)
        stop_private_redis(storage)


@needs_redis
def test_a_redis_that_stops_answering_costs_a_request_at_most_the_timeout(settings_overrides, app,
                                                                          tmp_path_factory, ctx, tmp_path):
    port = free_port()
    storage = start_private_redis(port, tmp_path)
    server = limited_server(settings_overrides, tmp_path_factory, REDIS_URL=f"redis://127.0.0.1:{port}/0")
    try:
        _, plaintext = make_api_key(make_org(tier="starter"))
        me = f"{server.url}/v1/me"
        for _ in range(6):  # both workers connected and their credential cached
            assert "X-RateLimit-Limit" in requests.get(me, headers=bearer(plaintext), timeout=10).headers
        redis.Redis(host="127.0.0.1", port=port).execute_command("CLIENT", "PAUSE", 4000, "ALL")
        for _ in range(4):
            started = time.monotonic()
            response = requests.get(me, headers=bearer(plaintext), timeout=10)
            assert response.status_code == 200 and "X-RateLimit-Limit" not in response.headers  # fails open
            assert time.monotonic() - started < 2.5  # the 0.5 s timeouts, not the 4 s pause
        time.sleep(4)
        deadline = time.monotonic() + 10
        while "X-RateLimit-Limit" not in requests.get(me, headers=bearer(plaintext), timeout=10).headers:
            assert time.monotonic() < deadline  # counted again once Redis answers
    finally:
        stop_server(server)
        stop_private_redis(storage)


@needs_redis
def test_a_count_started_on_arrival_is_counted_once_whatever_the_route(redis_server, ctx):
    """A cached key's count is sent as the request arrives and read where it authenticates;
    a request refused before that (an unknown route) counts all the same, exactly once, and
    the connection to Redis stays in step (each answer reads its own count)."""
    org = make_org(tier="enterprise")
    org_service.set_limits(org_id=org.id, per_second=10_000, per_day=1_000)  # the day is the nearest window
    _, key = make_api_key(org)
    me, nowhere = f"{redis_server.url}/v1/me", f"{redis_server.url}/v1/no-such-route"

    def remaining() -> int:
        response = requests.get(me, headers=bearer(key), timeout=10)
        assert response.status_code == 200 and response.headers["X-RateLimit-Limit"] == "1000"
        return int(response.headers["X-RateLimit-Remaining"])

    for _ in range(12):  # fresh connections: both workers cache the key
        remaining()
    seen = [remaining()]
    for _ in range(10):
        assert requests.get(nowhere, headers=bearer(key), timeout=10).status_code == 404
        seen.append(remaining())
    assert [a - b for a, b in zip(seen, seen[1:], strict=False)] == [2] * 10, seen
    assert seen[-1] == 1000 - 13 - 20


@needs_redis
def test_a_free_key_under_sixteen_connections_is_never_accepted_above_ten_a_second(redis_server, ctx):
    """16 connections on 2 workers for 2.5 s: each one-second window (told apart by its
    X-RateLimit-Reset) accepts at most 10, and the key is not held below its limit either."""
    org = make_org(tier="free")  # 10 a second, 1,000 a day
    _, key = make_api_key(org)
    accepted: list[int] = []  # the X-RateLimit-Reset of each 200
    statuses: list[int] = []
    lock = threading.Lock()
    started = time.monotonic()
    stop = started + 2.5

    def hammer() -> None:
        session = requests.Session()
        while time.monotonic() < stop:
            answer = session.get(f"{redis_server.url}/v1/me", headers=bearer(key), timeout=10)
            with lock:
                statuses.append(answer.status_code)
                if answer.status_code == 200:
                    accepted.append(int(answer.headers["X-RateLimit-Reset"]))
            time.sleep(0.05)  # ~300 requests a second in all: well under the daily 1,000
        session.close()

    threads = [threading.Thread(target=hammer) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    elapsed = time.monotonic() - started
    assert set(statuses) == {200, 429} and len(statuses) < 1000
    per_window = {reset: accepted.count(reset) for reset in set(accepted)}
    assert max(per_window.values()) <= 10, per_window
    assert 10 * (elapsed - 1) <= len(accepted) <= 10 * (elapsed + 1), (len(accepted), elapsed)
