"""`sensei init` upgrades a database made by every earlier migration, with data in it, and
everything in it keeps working: keys authenticate, users sign in, clients get tokens signed
by the key of that time, audit entries chain."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc.jwk import RSAKey
from sqlalchemy import MetaData, Table, func, select

from app import create_app
from app.extensions import db
from app.oauth.tokens import AccessTokenGenerator, keyring, principal_for_access_token
from app.security.digests import digest
from app.security.passwords import hash_password
from app.services import audit as audit_log
from app.services import clients as client_service
from app.services import schema, signing_keys
from app.services.api_keys import authenticate_api_key, generate_key
from app.services.audit import operator_context
from app.services.orgs import authenticate_user
from tests.conftest import fresh_database

EARLIER = ["0001", "0002", "0003", "0004", "0005"]
PASSWORD = "an old but long password"


def _insert(table_name: str, **values) -> None:
    table = Table(table_name, MetaData(), autoload_with=db.session.connection())
    db.session.execute(table.insert().values(**values))


@pytest.mark.parametrize("revision", EARLIER)
def test_init_upgrades_every_earlier_revision_with_its_data(backend, tmp_path, revision):
    now = datetime.now(UTC).replace(microsecond=0)
    plaintext = generate_key("live")
    pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    kid = f"{now:%Y%m%d}-old{revision}"
    keys_dir = tmp_path / "keys"
    keys_dir.mkdir()
    (keys_dir / f"{kid}.pem").write_bytes(pem)
    public = RSAKey.import_key(pem).as_dict(private=False) | {"kid": kid, "use": "sig", "alg": "RS256"}
    with fresh_database(backend, tmp_path) as url:
        application = create_app({"DATABASE_URL": url, "KEYS_DIR": str(keys_dir)})
        with application.app_context():
            schema.upgrade_schema(revision)
            # What a server of that revision left behind (columns of revision 0001, which every
            # later one keeps).
            _insert("organizations", id="org_old", name="Old Org", tier="enterprise", created_at=now)
            if revision >= "0003":  # from 0003 on, an organization is created with its audit chain head
                _insert("audit_chain_heads", org_id="org_old", seq=0, hash="0" * 64)
            _insert("users", id="usr_old", org_id="org_old", email="owner@old.example",
                    password_hash=hash_password(PASSWORD), role="owner", created_at=now)
            _insert("api_keys", id="key_old", org_id="org_old", name="Old key", key_digest=digest(plaintext),
                    environment="live", last4=plaintext[-4:], scope="*", ip_whitelist=[], created_at=now)
            _insert("oauth_clients", client_id="cl_old", org_id="org_old", name="Old client",
                    secret_digest=digest("old-client-secret"), is_public=False, redirect_uris=[],
                    grant_types="client_credentials", scope="migrations:read", created_at=now)
            # From 0005 on a key signs once activated (its PEM still in the keys directory,
            # as a 0005 server that had not run `sensei init` since would have it).
            since = {"activated_at": now} if revision >= "0005" else {}
            _insert("signing_keys", kid=kid, public_jwk=json.dumps(public), created_at=now, **since)
            _insert("revoked_access_tokens", jti="jti_old", org_id="org_old", expires_at=now + timedelta(hours=1),
                    revoked_at=now, reason="revoked")
            db.session.commit()
            counted = ("organizations", "users", "api_keys", "oauth_clients", "revoked_access_tokens")
            before = {name: _count(name) for name in counted}
            db.session.rollback()  # end the read: the migrations take their locks on another connection

            upgraded_from, head = schema.upgrade_schema()  # what `sensei init` does
            current, created = signing_keys.ensure_signing_key(keys_dir=str(keys_dir))

            assert upgraded_from == revision and head > revision
            assert {name: _count(name) for name in counted} == before
            assert current.kid == kid and created is False  # the key of that time still signs
            principal = authenticate_api_key(plaintext)
            assert principal.org_id == "org_old" and "admin:write" in principal.scopes
            assert authenticate_user(email="owner@old.example", password=PASSWORD).id == "usr_old"
            client = client_service.get_active_client("cl_old")
            settings = application.config["SETTINGS"]
            keyring().invalidate()
            token = AccessTokenGenerator(issuer=settings.ISSUER, audience=settings.AUDIENCE, access_ttl=300)(
                "client_credentials", client, include_refresh_token=False)["access_token"]
            assert principal_for_access_token(token).org_id == "org_old"
            audit_log.record(operator_context(), org_id="org_old", action="orgs.update", resource="org_old")
            db.session.commit()
            assert audit_log.seal_pending() >= 1
            assert audit_log.verify_chain(org_id="org_old")["problems"] == []
            db.session.remove()
        with application.app_context():
            db.engine.dispose()


def _count(table_name: str) -> int:
    table = Table(table_name, MetaData(), autoload_with=db.session.connection())
    return db.session.scalar(select(func.count()).select_from(table)) or 0
