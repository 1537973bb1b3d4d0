"""Signing keys every host shares, rotated with the next key published ahead (SPEC §4)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import jwt
import pytest
import requests

from app.extensions import db
from app.models import SigningKey
from app.security.key_encryption import UndecryptableKey, seal, unseal
from tests.conftest import free_port, start_server, stop_server
from tests.factories import make_client, make_org


@pytest.fixture(scope="module")
def second_host(server, settings_overrides, app, tmp_path_factory):
    """Another instance of the same issuer on the same database, with an empty keys directory."""
    empty = tmp_path_factory.mktemp("empty-keys")
    port = free_port()
    host = start_server(settings_overrides | {"KEYS_DIR": str(empty)}, port,
                        tmp_path_factory.mktemp("second-host") / "gunicorn.log")
    host.keys_dir = empty
    yield host
    stop_server(host)


def _mint(url: str, client) -> str:
    answer = requests.post(f"{url}/oauth/token", auth=(client.client_id, client.client_secret),
                           data={"grant_type": "client_credentials"}, timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()["access_token"]


def test_a_rotation_on_one_host_is_seen_by_every_host_and_old_jwks_verify_new_tokens(
        server, second_host, settings_overrides, ctx):
    assert list(Path(second_host.keys_dir).iterdir()) == []  # nothing on disk: it signs from the database
    org = make_org()
    client = make_client(org)
    # A resource server's JWKS, fetched before the rotation: the current key and the next one.
    fetched = requests.get(f"{server.url}/.well-known/jwks.json").json()["keys"]
    keys = {k["kid"]: jwt.PyJWK(k).key for k in fetched}
    before = {jwt.get_unverified_header(_mint(url, client))["kid"] for url in (server.url, second_host.url)}
    assert len(before) == 1 and len(keys) >= 2
    # `sensei rotate-signing-key` run on the second host (its environment: an empty keys directory).
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENSEI_")}
    env.update({f"SENSEI_{k}": str(v) for k, v in settings_overrides.items()})
    env["SENSEI_KEYS_DIR"] = str(second_host.keys_dir)
    rotated = subprocess.run([str(Path(sys.executable).parent / "sensei"), "rotate-signing-key", "--json"],
                             capture_output=True, text=True, env=env, timeout=60)
    assert rotated.returncode == 0, rotated.stderr
    report = json.loads(rotated.stdout)
    promoted = report["signing_key"]
    assert report["current"] == [promoted] and promoted in keys  # it was published ahead
    assert report["retiring"] == sorted(before) and len(report["next"]) == 1
    # For 35 s every token either host mints verifies against the JWKS fetched before.
    minted, signed_by = 0, {server.url: set(), second_host.url: set()}
    deadline = time.monotonic() + 35
    while time.monotonic() < deadline:
        for url in signed_by:
            token = _mint(url, client)
            kid = jwt.get_unverified_header(token)["kid"]
            assert kid in keys, f"{url} signed with {kid}, unknown to the JWKS fetched before the rotation"
            claims = jwt.decode(token, keys[kid], algorithms=["RS256"], audience=settings_overrides["ISSUER"],
                                issuer=settings_overrides["ISSUER"])
            assert claims["client_id"] == client.client_id
            signed_by[url].add(kid)
            minted += 1
        time.sleep(0.2)
    assert minted >= 100
    # Within 30 s (and without a restart) both hosts sign with the promoted key.
    for url in signed_by:
        assert jwt.get_unverified_header(_mint(url, client))["kid"] == promoted
    # The JWKS now carries the retiring key, the current one and a new next key.
    published = {k["kid"] for k in requests.get(f"{second_host.url}/.well-known/jwks.json").json()["keys"]}
    assert published >= {*before, promoted, *report["next"]}


def test_private_keys_are_sealed_bound_to_their_kid_and_to_the_secret(ctx):
    record = db.session.query(SigningKey).filter(SigningKey.private_key.is_not(None)).first()
    secret = ctx.config["SETTINGS"].SECRET_KEY
    pem = unseal(secret, record.kid, record.private_key)
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----") and b"PRIVATE KEY" not in record.private_key.encode()
    with pytest.raises(UndecryptableKey):
        unseal("another-secret-of-at-least-32-characters", record.kid, record.private_key)
    with pytest.raises(UndecryptableKey):  # a sealed key moved onto another kid does not open
        unseal(secret, "someone-else", record.private_key)
    tampered = record.private_key[:-2] + ("A" if record.private_key[-2] != "A" else "B") + record.private_key[-1]
    with pytest.raises(UndecryptableKey):
        unseal(secret, record.kid, tampered)
    resealed = seal(secret, record.kid, pem)
    assert resealed != record.private_key and unseal(secret, record.kid, resealed) == pem  # a fresh nonce
