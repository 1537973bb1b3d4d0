"""Liveness, readiness and Prometheus metrics (SPEC §13), against real gunicorn servers."""

from __future__ import annotations

import re

import pytest
import requests

from tests.conftest import free_port, start_server, stop_server
from tests.factories import bearer, eventually, http_from, make_api_key, make_client, make_org

TOKEN = "metrics-scraper-token-0123456789"


@pytest.fixture(scope="module")
def multiprocess(settings_overrides, app, tmp_path_factory):
    """Two workers writing metrics to one directory, as `sensei serve` runs them."""
    port = free_port()
    directory = tmp_path_factory.mktemp("metrics")
    server = start_server(settings_overrides | {"ISSUER": f"http://127.0.0.1:{port}", "METRICS_TOKEN": TOKEN},
                          port, tmp_path_factory.mktemp("ops") / "gunicorn.log",
                          extra_env={"PROMETHEUS_MULTIPROC_DIR": str(directory)},
                          extra_args=["--config", "python:app.gunicorn_conf"])
    yield server
    stop_server(server)


def sample(text: str, name: str, **labels) -> float:
    """The value of one sample of the exposition (0 when absent)."""
    total = 0.0
    for line in text.splitlines():
        match = re.match(r"^([a-z_]+)(?:\{(.*)\})? ([0-9.e+-]+)$", line)
        if not match or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(match.group(3))
    return total


def test_healthz_needs_nothing_and_readyz_checks_the_database(live):
    assert requests.get(f"{live.url}/healthz").json() == {"status": "ok"}
    ready = requests.get(f"{live.url}/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready" and ready.json()["database"] == "ok"


def test_readyz_names_what_is_down_while_healthz_stays_up(settings_overrides, app, tmp_path_factory, ctx):
    port = free_port()
    nowhere = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    server = start_server(settings_overrides | {"ISSUER": f"http://127.0.0.1:{port}", "REDIS_URL": nowhere},
                          port, tmp_path_factory.mktemp("ready") / "gunicorn.log")
    try:
        ready = requests.get(f"{server.url}/readyz")
        assert ready.status_code == 503
        assert ready.json() == {"status": "unavailable", "database": "ok", "redis": "unavailable",
                                "reason": "redis is not answering"}
        assert requests.get(f"{server.url}/healthz").status_code == 200
    finally:
        stop_server(server)


def test_metrics_add_up_every_worker_and_count_what_happened(multiprocess, ctx):
    org = make_org()
    _, key = make_api_key(org)
    client = make_client(org)
    before = requests.get(f"{multiprocess.url}/metrics").text
    for _ in range(20):  # spread over both workers
        assert requests.get(f"{multiprocess.url}/v1/me", headers=bearer(key)).status_code == 200
    assert requests.get(f"{multiprocess.url}/v1/me", headers=bearer("sk_live_" + "x" * 40)).status_code == 401
    token = requests.post(f"{multiprocess.url}/oauth/token", auth=(client.client_id, client.client_secret),
                          data={"grant_type": "client_credentials"})
    assert token.status_code == 200
    refused = requests.post(f"{multiprocess.url}/oauth/token", auth=(client.client_id, "wrong"),
                            data={"grant_type": "client_credentials"})
    assert refused.status_code == 401
    scraped = requests.get(f"{multiprocess.url}/metrics")
    assert scraped.status_code == 200 and scraped.headers["Content-Type"].startswith("text/plain")
    after = scraped.text

    def grew(name: str, **labels) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert grew("sensei_http_requests_total", route="/v1/me", method="GET", status="200") == 20
    assert grew("sensei_http_request_duration_seconds_count", route="/v1/me", method="GET") == 21
    assert grew("sensei_tokens_issued_total", grant="client_credentials") == 1
    assert grew("sensei_authentication_failures_total", surface="api") == 1
    assert grew("sensei_authentication_failures_total", surface="oauth_client") == 1
    # The writers report their backlog once they have written (0 when they keep up).
    eventually(lambda: assert_backlog_reported(multiprocess.url))


def assert_backlog_reported(url: str) -> None:
    text = requests.get(f"{url}/metrics").text
    assert re.search(r"^sensei_audit_backlog [0-9.]+$", text, re.M), "no audit backlog gauge yet"


def test_rate_limit_rejections_are_counted_by_route(multiprocess, ctx):
    org = make_org(tier="free")  # 10 a second
    _, key = make_api_key(org)
    before = sample(requests.get(f"{multiprocess.url}/metrics").text, "sensei_rate_limit_rejections_total",
                    route="/v1/me")
    statuses = [requests.get(f"{multiprocess.url}/v1/me", headers=bearer(key)).status_code for _ in range(40)]
    assert 429 in statuses
    after = sample(requests.get(f"{multiprocess.url}/metrics").text, "sensei_rate_limit_rejections_total",
                   route="/v1/me")
    assert after - before == statuses.count(429)


def test_metrics_are_for_this_host_or_the_token_holder(multiprocess):
    url = f"{multiprocess.url}/metrics"
    assert requests.get(url).status_code == 200  # this host, directly
    # From another machine, or through a proxy (which adds X-Forwarded-For): not without the token.
    assert http_from("127.0.0.2").get(url).status_code == 404
    assert http_from("127.0.0.2").get(url, headers=bearer(TOKEN)).status_code == 200
    assert requests.get(url, headers={"X-Forwarded-For": "198.51.100.7"}).status_code == 404
    assert requests.get(url, headers={"X-Forwarded-For": "198.51.100.7"} | bearer("wrong-token")).status_code == 404
    allowed = requests.get(url, headers={"X-Forwarded-For": "198.51.100.7"} | bearer(TOKEN))
    assert allowed.status_code == 200 and "sensei_http_requests_total" in allowed.text
