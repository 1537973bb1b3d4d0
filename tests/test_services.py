"""Services and rules, called directly (real database, real crypto)."""

from __future__ import annotations

import json
import os

import jwt
import pytest

from app.config import ConfigError, load_settings
from app.errors import ApiError
from app.extensions import db
from app.oauth.tokens import AccessTokenGenerator, keyring, principal_for_access_token
from app.services import api_keys as key_service
from app.services import clients as client_service
from app.services import scopes as scope_rules
from app.services import signing_keys
from app.services import tokens as token_service
from tests.factories import make_api_key, make_client, make_org, make_user

# -- scopes (SPEC §2) ---------------------------------------------------------------

def test_catalogue_has_the_seeds_twelve_scopes():
    assert len(scope_rules.CATALOGUE) == 12
    assert scope_rules.CATALOGUE["validation:read"] == "View validation results and certificates"


@pytest.mark.parametrize("wildcard, expected", [
    ("migrations:*", {"migrations:read", "migrations:write"}),
    ("*:read", {s for s in scope_rules.CATALOGUE if s.endswith(":read")}),
    ("*", set(scope_rules.CATALOGUE)),
])
def test_wildcards_expand(wildcard, expected):
    assert scope_rules.expand(scope_rules.parse(wildcard)) == expected


@pytest.mark.parametrize("bad", ["migrations:delete", "migrations", "*:*", "MIGRATIONS:READ", "", "a b"])
def test_unknown_scopes_are_refused_by_name(bad):
    if not bad:
        assert scope_rules.parse(bad) == []
        return
    with pytest.raises(scope_rules.ScopeError) as error:
        scope_rules.parse(bad)
    assert error.value.scope in bad.split()


def test_role_bounds():
    developer = scope_rules.for_role("developer")
    assert "migrations:write" in developer and "admin:read" in developer
    assert not developer & {"billing:read", "billing:write", "admin:write"}
    viewer = scope_rules.for_role("viewer")
    assert viewer == {s for s in scope_rules.CATALOGUE if s.endswith(":read")} - {"billing:read"}
    assert scope_rules.for_role("owner") == scope_rules.for_role("admin") == scope_rules.ALL


def test_nobody_grants_more_than_they_hold():
    held = scope_rules.for_role("developer")
    scope_rules.check_grantable(["migrations:*"], held, granter_role="developer")
    with pytest.raises(scope_rules.ScopeError, match="billing:read"):
        scope_rules.check_grantable(["*:read"], held, granter_role="developer")
    with pytest.raises(scope_rules.ScopeError, match=r"\*"):
        scope_rules.check_grantable(["*"], scope_rules.ALL, granter_role="developer")


# -- API key format (SPEC §3) -----------------------------------------------------------

def test_api_key_format_and_checksum():
    key = key_service.generate_key("live")
    assert key.startswith("sk_live_") and len(key) == len("sk_live_") + 38
    assert key_service.is_well_formed(key)
    body = key[len("sk_live_"):-6]
    assert sum(c.isalnum() for c in body) == 32
    typo = key[:-7] + ("A" if key[-7] != "A" else "B") + key[-6:]
    assert not key_service.is_well_formed(typo)
    assert not key_service.is_well_formed(key.replace("sk_live_", "sk_test_"))
    assert key_service.is_well_formed(key_service.generate_key("test"))


def test_api_key_is_stored_as_a_digest_only(ctx):
    org = make_org()
    key, plaintext = make_api_key(org, scopes="migrations:read")
    row = db.session.execute(db.text("SELECT * FROM api_keys WHERE id = :id"), {"id": key.id}).mappings().one()
    assert plaintext not in json.dumps({k: str(v) for k, v in row.items()})
    assert row["last4"] == plaintext[-4:]
    principal = key_service.authenticate_api_key(plaintext)
    assert principal.org_id == org.id and principal.scopes == {"migrations:read"}
    with pytest.raises(ApiError) as error:
        key_service.authenticate_api_key(key_service.generate_key("live"))
    assert error.value.code == "unauthorized"


# -- clients --------------------------------------------------------------------------

@pytest.mark.parametrize("uri, ok", [
    ("https://app.example.com/callback", True),
    ("http://127.0.0.1:5000/cb", True),
    ("http://localhost/cb", True),
    ("com.example.app:/oauth", True),
    ("http://app.example.com/cb", False),
    ("https://app.example.com/cb#frag", False),
    ("https://*.example.com/cb", False),
    ("javascript:alert(1)", False),
    ("https://app.example.com/c b", False),
    ("", False),
])
def test_redirect_uri_rules(uri, ok):
    assert (client_service.redirect_uri_problem(uri) is None) is ok


def test_client_secret_is_a_digest_compared_in_constant_time(ctx):
    org = make_org()
    creds = make_client(org)
    client = client_service.get_active_client(creds.client_id)
    assert client.secret_digest and creds.client_secret not in client.secret_digest
    assert client_service.check_client_secret(client, creds.client_secret)
    assert not client_service.check_client_secret(client, creds.client_secret[:-1])


# -- tokens and signing keys ----------------------------------------------------------

def test_signing_key_rotation_keeps_old_tokens_verifiable(isolated_ctx):
    settings = isolated_ctx.config["SETTINGS"]
    org = make_org()
    creds = make_client(org)
    client = client_service.get_active_client(creds.client_id)
    generator = AccessTokenGenerator(issuer=settings.ISSUER, audience=settings.AUDIENCE, access_ttl=600)
    old = generator("client_credentials", client)["access_token"]
    old_kid = jwt.get_unverified_header(old)["kid"]
    published_before = {k["kid"] for k in keyring().jwks()["keys"]}
    new_record, retired, upcoming = signing_keys.rotate_signing_key()
    assert old_kid in retired and new_record.kid in published_before  # the next key was already published
    keyring().invalidate()
    new = generator("client_credentials", client)["access_token"]
    assert jwt.get_unverified_header(new)["kid"] == new_record.kid != old_kid
    published = {k["kid"] for k in keyring().jwks()["keys"]}
    assert published == {old_kid, new_record.kid, upcoming.kid}
    assert principal_for_access_token(old) and principal_for_access_token(new)
    # Once no token signed by it can be alive, the old key leaves the JWKS.
    assert signing_keys.prune_signing_keys(access_token_ttl=-3600) == [old_kid]
    keyring().invalidate()
    assert {k["kid"] for k in keyring().jwks()["keys"]} == {new_record.kid, upcoming.kid}
    assert principal_for_access_token(old) is None


def test_revoked_jti_and_family_revocation(ctx):
    settings = ctx.config["SETTINGS"]
    org = make_org()
    user = make_user(org)
    creds = make_client(org)
    client = client_service.get_active_client(creds.client_id)
    generator = AccessTokenGenerator(issuer=settings.ISSUER, audience=settings.AUDIENCE, access_ttl=600)
    issued = generator("authorization_code", client, user=user)
    token_service.record_issue(access=issued["_issued"], refresh_token=issued["refresh_token"], org_id=org.id,
                               client_id=client.client_id, user_id=user.id, scope=issued["scope"], refresh_ttl=60)
    row = token_service.find_refresh_token(issued["refresh_token"])
    assert row is not None and token_service.claim_refresh_token(row)
    assert not token_service.claim_refresh_token(row)  # second claim loses and revokes the family
    assert principal_for_access_token(issued["access_token"]) is None
    assert token_service.find_refresh_token(issued["refresh_token"]) is None


# -- settings ------------------------------------------------------------------------

def test_production_refuses_insecure_settings(monkeypatch):
    for name in list(os.environ):
        if name.startswith("SENSEI_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("SENSEI_ENV", "production")
    with pytest.raises(ConfigError, match="SENSEI_SECRET_KEY"):
        load_settings()
    monkeypatch.setenv("SENSEI_SECRET_KEY", "x" * 40)
    with pytest.raises(ConfigError, match="SENSEI_ISSUER"):
        load_settings()
    monkeypatch.setenv("SENSEI_ISSUER", "https://auth.example.com")
    with pytest.raises(ConfigError, match="SQLite"):
        load_settings()
    monkeypatch.setenv("SENSEI_DATABASE_URL", "postgresql+psycopg://db/sensei")
    assert load_settings().production
    monkeypatch.setenv("SENSEI_ACCESS_TOKEN_TTL", "ten")
    with pytest.raises(ConfigError, match="SENSEI_ACCESS_TOKEN_TTL"):
        load_settings()


def test_migrations_create_exactly_the_models_schema(ctx):
    """Alembic's migrations and the SQLAlchemy models describe the same schema."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    with db.engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), db.metadata) == []
