"""Single use under contention: two processes redeem one code (or one refresh token) at once."""

from __future__ import annotations

import threading

import requests

from tests.factories import REDIRECT_URI, Browser, callback_params, make_client, make_org, make_user

ROUNDS = 6


def race(url: str, data: dict, auth: tuple[str, str]) -> list[requests.Response]:
    """Fire two identical POSTs as close together as two threads can."""
    barrier = threading.Barrier(2)
    results: list[requests.Response] = []
    lock = threading.Lock()

    def fire() -> None:
        session = requests.Session()  # separate connections, so gunicorn may use both workers
        barrier.wait(timeout=10)
        response = session.post(url, data=data, auth=auth, timeout=30)
        with lock:
            results.append(response)

    threads = [threading.Thread(target=fire) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(results) == 2
    return results


def fresh_code(live, browser, client) -> str:
    query = requests.compat.urlencode({"client_id": client.client_id, "redirect_uri": REDIRECT_URI,
                                       "response_type": "code", "scope": "migrations:read", "state": "s"})
    page = browser.authorize(f"{live.url}/oauth/authorize?{query}")
    if page.status_code == 200:
        page = browser.decide(page, "allow")
    return callback_params(page)["code"]


def test_double_code_redemption_has_exactly_one_winner(live):
    org = make_org()
    user = make_user(org)
    client = make_client(org)
    browser = Browser(live.url)
    browser.login(user.email)
    auth = (client.client_id, client.client_secret)
    for _ in range(ROUNDS):
        code = fresh_code(live, browser, client)
        results = race(f"{live.url}/oauth/token",
                       {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI}, auth)
        statuses = sorted(r.status_code for r in results)
        assert statuses == [200, 400], [r.text for r in results]
        loser = next(r for r in results if r.status_code == 400)
        assert loser.json()["error"] == "invalid_grant"
        # The loser is a replay: what the winner got is revoked (RFC 6749 §4.1.2).
        winner = next(r for r in results if r.status_code == 200).json()
        me = requests.get(f"{live.url}/v1/me", headers={"Authorization": f"Bearer {winner['access_token']}"})
        assert me.status_code == 401


def test_double_refresh_has_exactly_one_winner_and_revokes_the_family(live):
    org = make_org()
    user = make_user(org)
    client = make_client(org)
    browser = Browser(live.url)
    browser.login(user.email)
    auth = (client.client_id, client.client_secret)
    for _ in range(ROUNDS):
        code = fresh_code(live, browser, client)
        token = requests.post(f"{live.url}/oauth/token", auth=auth, data={
            "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI}).json()
        results = race(f"{live.url}/oauth/token",
                       {"grant_type": "refresh_token", "refresh_token": token["refresh_token"]}, auth)
        statuses = sorted(r.status_code for r in results)
        assert statuses == [200, 400], [r.text for r in results]
        winner = next(r for r in results if r.status_code == 200).json()
        follow = requests.post(f"{live.url}/oauth/token", auth=auth, data={
            "grant_type": "refresh_token", "refresh_token": winner["refresh_token"]})
        assert follow.json()["error"] == "invalid_grant"
