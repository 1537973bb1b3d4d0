"""The Python SDK (sdk/, module `sensei`) against a live server, as its users run it."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta

import pytest
import sensei
from sensei import (
    AuthenticationError,
    ClientCredentials,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    Sensei,
)

from tests.factories import audit_written, make_api_key, make_client, make_org


@pytest.fixture()
def connect():
    """Build SDK clients that are closed after the test (their connection pools)."""
    made = []

    def build(cls, *args, **kwargs):
        made.append(cls(*args, **kwargs))
        return made[-1]

    yield build
    for client in made:
        client.close()


def test_the_seed_example_runs_as_written(live, connect, tmp_path):
    org = make_org()
    _, key = make_api_key(org)
    script = tmp_path / "example.py"
    script.write_text(textwrap.dedent("""
        import os
        from sensei import Sensei

        # Load from environment
        client = Sensei(api_key=os.environ["SENSEI_API_KEY"])
        print(client.me()["organization"]["id"])
    """))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60,
                          env={"SENSEI_API_KEY": key, "SENSEI_BASE_URL": live.url, "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == org.id


def test_api_keys_round_trip_with_objects_and_paging(live, connect):
    org = make_org()
    _, admin = make_api_key(org)
    client = connect(Sensei, api_key=admin, base_url=live.url)
    expires = datetime.now(UTC) + timedelta(days=30)
    created = client.api_keys.create(name="CI/CD Pipeline Key", scopes=["migrations:read", "migrations:write"],
                                     expires_at=expires)
    assert created.id.startswith("key_") and created.key.startswith("sk_live_")
    assert created.scopes == ["migrations:read", "migrations:write"] and created.name == "CI/CD Pipeline Key"
    assert abs((created.expires_at - expires).total_seconds()) < 1 and created.created_at.tzinfo is not None
    for n in range(4):
        client.api_keys.create(name=f"extra {n}", scopes="migrations:read")
    listed = list(client.api_keys.list(limit=2))  # three pages of two (and the admin key)
    assert len(listed) == 6 and len({k.id for k in listed}) == 6 and all(k.key is None for k in listed)
    assert client.api_keys.retrieve(created.id).redacted_key == f"sk_live_...{created.key[-4:]}"
    updated = client.api_keys.update(created.id, ip_whitelist=["203.0.113.0/24"], expires_at=None)
    assert updated.ip_whitelist == ["203.0.113.0/24"] and updated.expires_at is None
    assert updated.scopes == created.scopes  # untouched fields stay
    assert client.api_keys.delete(created.id).deleted is True
    with pytest.raises(NotFoundError) as missing:
        client.api_keys.retrieve(created.id)
    assert missing.value.status == 404 and missing.value.code == "not_found" and missing.value.request_id


def test_errors_are_typed_and_carry_what_the_server_said(live, connect):
    org = make_org()
    _, admin = make_api_key(org)
    _, reader = make_api_key(org, scopes="migrations:read")
    with pytest.raises(InvalidRequestError) as bad:
        connect(Sensei, api_key=admin, base_url=live.url).api_keys.create(name="k", scopes=["no:such"])
    assert bad.value.param == "scopes" and bad.value.status == 400 and "no:such" in bad.value.message
    with pytest.raises(PermissionDeniedError) as denied:
        connect(Sensei, api_key=reader, base_url=live.url).api_keys.create(name="k", scopes=["migrations:read"])
    assert denied.value.code == "forbidden" and "admin:write" in denied.value.message
    with pytest.raises(AuthenticationError) as unknown:
        list(connect(Sensei, api_key="sk_live_" + "0" * 40, base_url=live.url).api_keys.list())
    assert unknown.value.status == 401 and unknown.value.request_id.startswith("req_")
    assert isinstance(unknown.value, sensei.SenseiError)


def test_service_accounts_from_a_yaml_file_and_the_audit_log_shows_the_sdk(live, connect, tmp_path):
    org = make_org()
    _, admin = make_api_key(org)
    client = connect(Sensei, api_key=admin, base_url=live.url)
    spec = tmp_path / "ci-bot.yaml"
    spec.write_text("name: ci-bot\ndescription: Deploys\nscopes:\n  - migrations:read\n  - migrations:write\n")
    account = client.service_accounts.create(yaml_file=spec)
    assert account.name == "ci-bot" and account.client_secret and account.client_id
    assert [a.id for a in client.service_accounts.list()] == [account.id]
    assert client.service_accounts.update(account.id, description="Deploys nightly").description == "Deploys nightly"
    audit_written(org.id, 1, action="service_accounts.create", user_agent=f"sensei-sdk/{sensei.__version__}")
    events = list(client.audit_logs.list(action="service_accounts.create"))
    assert events and events[0].user_agent == f"sensei-sdk/{sensei.__version__}"
    assert events[0].actor["type"] == "api_key" and events[0].timestamp.tzinfo is not None
    assert client.service_accounts.delete(account.id).deleted


def test_client_credentials_session_fetches_renews_and_introspects(live, connect):
    org = make_org()
    registered = make_client(org, scopes="migrations:read")
    session = connect(ClientCredentials, registered.client_id, registered.client_secret, ["migrations:read"],
                                base_url=live.url)
    first = session.token()
    assert session.token() == first  # kept while valid
    assert session.get("/v1/me").json()["scopes"] == ["migrations:read"]
    client = connect(Sensei, client_id=registered.client_id, client_secret=registered.client_secret, base_url=live.url)
    seen = client.tokens.introspect(first)
    assert seen.active and seen.scopes == ["migrations:read"] and seen.client_id == registered.client_id
    client.tokens.revoke(first)
    assert client.tokens.introspect(first).active is False
    # The revoked token is refused once; the session fetches a new one by itself.
    assert session.get("/v1/me").status_code == 200 and session.token() != first


def test_a_429_is_retried_after_retry_after_then_raised(live, connect):
    org = make_org(tier="free")  # 10 a second
    _, key = make_api_key(org)
    patient = connect(Sensei, api_key=key, base_url=live.url, max_retries=3)
    impatient = connect(Sensei, api_key=key, base_url=live.url, max_retries=0)
    refused = None
    for _ in range(30):
        try:
            impatient.me()
        except RateLimitError as error:
            refused = error
            break
    assert refused is not None and refused.status == 429 and refused.retry_after >= 1
    assert patient.me()["organization"]["id"] == org.id  # waited out the window


def test_no_credential_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("SENSEI_API_KEY", raising=False)
    with pytest.raises(sensei.SenseiError, match="no credential"):
        Sensei()
