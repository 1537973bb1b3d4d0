"""Single use under contention: 2 and 20 callers redeem one code (or one refresh token) at
once; a key deleted while 8 clients use it stops at once."""

from __future__ import annotations

import threading
import time

import pytest
import requests

from tests.factories import (
    REDIRECT_URI,
    Browser,
    bearer,
    callback_params,
    make_api_key,
    make_client,
    make_org,
    make_user,
)

# (callers, rounds): two callers often, twenty a few times (the test server serves 8 at once).
RACES = [(2, 6), (20, 3)]


def race(url: str, data: dict, auth: tuple[str, str], callers: int = 2) -> list[requests.Response]:
    """Fire identical POSTs as close together as ``callers`` threads can."""
    barrier = threading.Barrier(callers)
    results: list[requests.Response] = []
    lock = threading.Lock()

    def fire() -> None:
        session = requests.Session()  # separate connections, so gunicorn may use both workers
        barrier.wait(timeout=10)
        response = session.post(url, data=data, auth=auth, timeout=30)
        with lock:
            results.append(response)

    threads = [threading.Thread(target=fire) for _ in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(results) == callers
    return results


def one_winner(results: list[requests.Response]) -> dict:
    """Exactly one 200; every other answer invalid_grant (never a 5xx or a serialization error)."""
    statuses = sorted(r.status_code for r in results)
    assert statuses == [200] + [400] * (len(results) - 1), [r.text[:200] for r in results]
    assert all(r.json()["error"] == "invalid_grant" for r in results if r.status_code == 400)
    return next(r for r in results if r.status_code == 200).json()


def fresh_code(live, browser, client) -> str:
    query = requests.compat.urlencode({"client_id": client.client_id, "redirect_uri": REDIRECT_URI,
                                       "response_type": "code", "scope": "migrations:read", "state": "s"})
    page = browser.authorize(f"{live.url}/oauth/authorize?{query}")
    if page.status_code == 200:
        page = browser.decide(page, "allow")
    return callback_params(page)["code"]


@pytest.mark.parametrize(("callers", "rounds"), RACES)
def test_concurrent_code_redemptions_have_exactly_one_winner(live, callers, rounds):
    org = make_org()
    user = make_user(org)
    client = make_client(org)
    browser = Browser(live.url)
    browser.login(user.email)
    auth = (client.client_id, client.client_secret)
    for _ in range(rounds):
        code = fresh_code(live, browser, client)
        winner = one_winner(race(f"{live.url}/oauth/token", {"grant_type": "authorization_code", "code": code,
                                                              "redirect_uri": REDIRECT_URI}, auth, callers))
        # The losers are replays: what the winner got is revoked (RFC 6749 §4.1.2).
        me = requests.get(f"{live.url}/v1/me", headers={"Authorization": f"Bearer {winner['access_token']}"})
        assert me.status_code == 401


@pytest.mark.parametrize(("callers", "rounds"), RACES)
def test_concurrent_refreshes_have_exactly_one_winner_and_revoke_the_family(live, callers, rounds):
    org = make_org()
    user = make_user(org)
    client = make_client(org)
    browser = Browser(live.url)
    browser.login(user.email)
    auth = (client.client_id, client.client_secret)
    for _ in range(rounds):
        code = fresh_code(live, browser, client)
        token = requests.post(f"{live.url}/oauth/token", auth=auth, data={
            "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI}).json()
        winner = one_winner(race(f"{live.url}/oauth/token", {"grant_type": "refresh_token",
                                                              "refresh_token": token["refresh_token"]},
                                 auth, callers))
        follow = requests.post(f"{live.url}/oauth/token", auth=auth, data={
            "grant_type": "refresh_token", "refresh_token": winner["refresh_token"]})
        assert follow.json()["error"] == "invalid_grant"


def test_a_key_deleted_while_eight_clients_use_it_is_refused_from_that_moment(live):
    org = make_org()
    key, plaintext = make_api_key(org, scopes="migrations:read")
    _, admin = make_api_key(org)
    deleted_at: list[float] = []
    answers: list[tuple[float, int]] = []  # (when the request was sent, its status)
    lock = threading.Lock()
    stop = time.monotonic() + 30  # bound: the loop ends after the deletion, or at this time

    def use() -> None:
        session = requests.Session()
        while time.monotonic() < stop:
            sent = time.monotonic()
            status = session.get(f"{live.url}/v1/me", headers=bearer(plaintext), timeout=10).status_code
            with lock:
                answers.append((sent, status))
            if deleted_at and sent > deleted_at[0] + 0.5:
                return
        session.close()

    threads = [threading.Thread(target=use) for _ in range(8)]
    for thread in threads:
        thread.start()
    time.sleep(1.0)  # the key in use (and cached) everywhere
    assert requests.delete(f"{live.url}/v1/api-keys/{key.id}", headers=bearer(admin)).status_code == 200
    deleted_at.append(time.monotonic())
    for thread in threads:
        thread.join(timeout=40)
    before = [status for sent, status in answers if sent < deleted_at[0]]
    after = [status for sent, status in answers if sent > deleted_at[0]]
    # (A request sent while the DELETE was committing may already be refused.)
    assert before.count(200) >= 8 and set(before) <= {200, 401}
    assert after and set(after) == {401}, sorted(set(after))  # nothing accepted once it returned
