"""The ``sensei`` console command run as operators and scripts run it (SPEC §1): a real
subprocess on a database and keys directory of its own; ``--json`` prints exactly one
JSON object, bad input exits non-zero with one line on stderr and never a traceback."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import sqlite3
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
from conftest import free_port

from app import create_app
from app.extensions import db

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SENSEI = BIN / "sensei"
KEY_RE = re.compile(r"^sk_(live|test)_[0-9A-Za-z]{38}$")
PASSWORD = "a perfectly long password"
TIMEOUT = 120


class Cli:
    """The console script with SENSEI_DATABASE_URL / SENSEI_KEYS_DIR under a temporary directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.database_url = f"sqlite:///{directory / 'x.db'}"
        self.keys_dir = directory / "keys"
        env = {k: v for k, v in os.environ.items() if not k.startswith("SENSEI_")}
        env.update({"SENSEI_DATABASE_URL": self.database_url, "SENSEI_KEYS_DIR": str(self.keys_dir),
                    # The tree under test (not whatever an editable install points at).
                    "PYTHONPATH": str(ROOT)})
        self.env = env

    def run(self, *args: str, input: str | None = None, env: dict | None = None,
            program: list[str] | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*(program or [str(SENSEI)]), *args], input=input, capture_output=True, text=True,
            env=self.env | (env or {}), cwd=self.directory, timeout=TIMEOUT,
        )

    def json(self, *args: str, input: str | None = None) -> dict:
        """Run with --json; it must succeed and print exactly one JSON object and nothing else."""
        result = self.run(*args, "--json", input=input)
        assert result.returncode == 0, (args, result.returncode, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr, result.stderr
        payload = json.loads(result.stdout)  # one document, or this raises
        assert isinstance(payload, dict), result.stdout
        assert result.stdout.count("\n") == 1 and result.stdout.endswith("\n"), repr(result.stdout)
        return payload

    def fails(self, *args: str, input: str | None = None, env: dict | None = None) -> str:
        """Must exit non-zero with one line on stderr, no traceback, nothing on stdout."""
        result = self.run(*args, input=input, env=env)
        assert result.returncode != 0, (args, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr and "Traceback" not in result.stdout, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].strip(), (args, result.stderr)
        assert result.stdout == "", (args, result.stdout)
        return lines[0]

    def fails_each(self, calls: list[tuple[tuple[str, ...], str | None]]) -> list[str]:
        """``fails`` for independent calls (args, stdin), run three at a time (each CLI run
        costs a second or more): the lines in the order of ``calls``."""
        with ThreadPoolExecutor(max_workers=3) as pool:
            return list(pool.map(lambda call: self.fails(*call[0], input=call[1]), calls))

    def app(self):
        return create_app({"DATABASE_URL": self.database_url, "KEYS_DIR": str(self.keys_dir)})


@pytest.fixture()
def cli(tmp_path) -> Cli:
    return Cli(tmp_path)


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> tuple[Path, str]:
    """One `sensei init` + `sensei create-org` per module, copied for each test (each CLI run costs ~1 s)."""
    cli = Cli(tmp_path_factory.mktemp("template"))
    cli.json("init")
    return cli.directory, cli.json("create-org", "Acme")["id"]


@pytest.fixture()
def ready(template, tmp_path) -> Cli:
    """An initialized database and keys directory of this test's own."""
    source, _ = template
    for path in source.glob("x.db*"):
        shutil.copy2(path, tmp_path / path.name)
    if (source / "keys").exists():
        shutil.copytree(source / "keys", tmp_path / "keys")
    return Cli(tmp_path)


@pytest.fixture()
def org_id(template, ready) -> str:
    return template[1]


def pem_files(cli: Cli) -> list[Path]:
    return sorted(cli.keys_dir.glob("*.pem")) if cli.keys_dir.exists() else []


def stored_keys(cli: Cli) -> dict[str, dict]:
    """The signing_keys rows, read straight from the database file."""
    with sqlite3.connect(cli.directory / "x.db") as conn:
        rows = conn.execute("SELECT kid, private_key, activated_at, retired_at FROM signing_keys").fetchall()
    return {kid: {"private_key": sealed, "activated_at": activated, "retired_at": retired}
            for kid, sealed, activated, retired in rows}


def future(days: int = 30) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).isoformat().replace("+00:00", "Z")


# -- init ------------------------------------------------------------------------------------


def test_init_json_creates_schema_and_sealed_current_and_next_keys(cli):
    first = cli.json("init")
    assert first["signing_key_created"] is True and first["signing_key"] and first["next_signing_key"]
    assert first["schema_revision"]
    assert pem_files(cli) == []  # nothing on disk: the keys live in the database, sealed
    stored = stored_keys(cli)
    assert set(stored) == {first["signing_key"], first["next_signing_key"]}
    assert stored[first["signing_key"]]["activated_at"] and not stored[first["next_signing_key"]]["activated_at"]
    for row in stored.values():
        assert row["private_key"].startswith("v1.") and "PRIVATE KEY" not in row["private_key"]
    raw = (cli.directory / "x.db").read_bytes()
    assert b"BEGIN PRIVATE KEY" not in raw
    # Idempotent: the second run upgrades nothing and keeps both keys.
    second = cli.json("init")
    assert second["signing_key"] == first["signing_key"] and second["signing_key_created"] is False
    assert second["next_signing_key"] == first["next_signing_key"]
    assert second["schema_revision"] == first["schema_revision"] == second["previous_revision"]
    assert stored_keys(cli).keys() == stored.keys()


def test_init_demo_prints_credentials_only_on_the_first_run(cli):
    first = cli.run("init", "--demo")
    assert first.returncode == 0, first.stderr
    assert "Traceback" not in first.stderr
    keys = re.findall(r"sk_live_[0-9A-Za-z]{38}", first.stdout)
    assert len(keys) == 1, first.stdout
    assert "Password" in first.stdout and "@" in first.stdout
    password = re.search(r"Password:\s+(\S+)", first.stdout).group(1)
    email = re.search(r"Email:\s+(\S+)", first.stdout).group(1)
    second = cli.run("init", "--demo")
    assert second.returncode == 0, second.stderr
    assert "sk_live_" not in second.stdout and password not in second.stdout and "Password" not in second.stdout
    # What was printed works: the key authenticates, the login signs in.
    from app.services.api_keys import authenticate_api_key
    from app.services.orgs import authenticate_user

    application = cli.app()
    with application.app_context():
        principal = authenticate_api_key(keys[0])
        assert "admin:write" in principal.scopes
        user = authenticate_user(email=email, password=password)
        assert user is not None and user.role == "owner" and user.org_id == principal.org_id
        db.engine.dispose()


def test_init_demo_json_carries_the_demo_once(cli):
    first = cli.json("init", "--demo")
    assert KEY_RE.match(first["demo"]["api_key"]) and first["demo"]["password"]
    second = cli.json("init", "--demo")
    assert "demo" not in second


def test_init_seals_the_pem_key_of_an_earlier_version_and_keeps_signing_with_it(cli):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from joserfc.jwk import RSAKey
    from sqlalchemy import text

    from app.config import DEV_SECRET_KEY
    from app.security.key_encryption import unseal
    from app.services import schema

    # A database as revision 0004 left it: the private PEM in SENSEI_KEYS_DIR, the public half stored.
    pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    kid = "20261101-legacy01"
    public = RSAKey.import_key(pem).as_dict(private=False) | {"kid": kid, "use": "sig", "alg": "RS256"}
    application = cli.app()
    with application.app_context():
        schema.upgrade_schema("0004")
        db.session.execute(text("INSERT INTO signing_keys (kid, public_jwk, created_at) VALUES (:kid, :jwk, :at)"),
                           {"kid": kid, "jwk": json.dumps(public), "at": "2026-11-01 00:00:00.000000"})
        db.session.commit()
        db.engine.dispose()
    cli.keys_dir.mkdir()
    (cli.keys_dir / f"{kid}.pem").write_bytes(pem)
    upgraded = cli.json("init")
    assert upgraded["previous_revision"] == "0004" and upgraded["signing_key"] == kid
    assert upgraded["signing_key_created"] is False and upgraded["next_signing_key"] not in (None, kid)
    stored = stored_keys(cli)[kid]
    assert stored["activated_at"] and unseal(DEV_SECRET_KEY, kid, stored["private_key"]) == pem
    # The PEM is no longer needed: the key signs from the database.
    (cli.keys_dir / f"{kid}.pem").unlink()
    assert cli.json("init")["signing_key"] == kid


def test_commands_before_init_fail_in_one_line(cli):
    line = cli.fails("create-org", "Acme", "--json")
    assert "init" in line


def test_another_secret_key_cannot_open_the_signing_key_and_says_so(ready):
    other = {"SENSEI_SECRET_KEY": "another-secret-key-of-more-than-32-characters"}
    line = ready.fails("init", "--json", env=other)
    assert "SENSEI_SECRET_KEY" in line and "decrypt" in line


# -- create-* ---------------------------------------------------------------------------------


def test_create_org(ready):
    org = ready.json("create-org", "Acme Corp")
    assert org["id"].startswith("org_") and org["name"] == "Acme Corp" and org["tier"] == "free"
    enterprise = ready.json("create-org", "Big Co", "--tier", "enterprise")
    assert enterprise["tier"] == "enterprise" and enterprise["id"] != org["id"]
    unicode_name = ready.json("create-org", "Ünïcødé ☃ \"quoted\" \\ Co")
    assert unicode_name["name"] == "Ünïcødé ☃ \"quoted\" \\ Co"


def test_create_user_with_password_stdin(ready, org_id):
    user = ready.json("create-user", "Dev@Example.com", "--org", org_id, "--role", "developer",
                      "--password-stdin", input=PASSWORD + "\n")
    assert user["id"].startswith("usr_") and user["org_id"] == org_id and user["role"] == "developer"
    assert user["email"] == "dev@example.com"
    assert PASSWORD not in json.dumps(user)
    from app.services.orgs import authenticate_user

    application = ready.app()
    with application.app_context():
        assert authenticate_user(email="dev@example.com", password=PASSWORD).id == user["id"]
        assert authenticate_user(email="dev@example.com", password=PASSWORD + "x") is None
        db.engine.dispose()


def test_create_api_key(ready, org_id):
    live = ready.json("create-api-key", "--org", org_id, "--name", "CI", "--scopes", "migrations:read migrations:write")
    assert KEY_RE.match(live["key"]) and live["key"].startswith("sk_live_")
    assert live["id"].startswith("key_") and live["environment"] == "live"
    assert live["scopes"] == ["migrations:read", "migrations:write"] and live["expires_at"] is None
    expires = future()
    test = ready.json("create-api-key", "--org", org_id, "--name", "Test", "--scopes", "*:read", "--test",
                      "--expires-at", expires)
    assert test["key"].startswith("sk_test_") and test["environment"] == "test" and test["expires_at"]
    assert abs(datetime.fromisoformat(test["expires_at"].replace("Z", "+00:00"))
               - datetime.fromisoformat(expires.replace("Z", "+00:00"))) < timedelta(seconds=1)
    # Shown once: the database holds a digest, never the key itself.
    raw = (ready.directory / "x.db").read_bytes()
    for key in (live["key"], test["key"]):
        assert key.encode() not in raw
        assert key[len("sk_live_"):].encode() not in raw


def test_create_client(ready, org_id):
    confidential = ready.json("create-client", "--org", org_id, "--name", "Web App",
                              "--redirect-uri", "https://app.example.com/callback",
                              "--redirect-uri", "http://127.0.0.1:8765/cb", "--scopes", "migrations:read")
    assert confidential["client_id"].startswith("cl_") and confidential["client_secret"]
    assert len(confidential["client_secret"]) >= 32 and confidential["public"] is False
    assert confidential["redirect_uris"] == ["https://app.example.com/callback", "http://127.0.0.1:8765/cb"]
    public = ready.json("create-client", "--org", org_id, "--name", "CLI App", "--public",
                        "--redirect-uri", "http://127.0.0.1/cb", "--scopes", "migrations:read")
    assert public["public"] is True and public["client_secret"] is None
    assert "client_credentials" not in public["grant_types"]
    raw = (ready.directory / "x.db").read_bytes()
    assert confidential["client_secret"].encode() not in raw


def test_rotate_signing_key_promotes_the_published_next_key(ready):
    before = ready.json("init")
    old, upcoming = before["signing_key"], before["next_signing_key"]
    rotated = ready.json("rotate-signing-key")
    assert rotated["signing_key"] == upcoming and rotated["retired"] == [old]
    assert rotated["current"] == [upcoming] and rotated["retiring"] == [old]
    assert len(rotated["next"]) == 1 and rotated["next"][0] not in (old, upcoming)
    stored = stored_keys(ready)
    assert set(stored) == {old, upcoming, rotated["next"][0]} and stored[old]["retired_at"]
    after = ready.json("init")
    assert after["signing_key"] == upcoming and after["next_signing_key"] == rotated["next"][0]


def test_prune(ready, org_id):
    result = ready.json("prune")
    assert isinstance(result["deleted"], dict) and result["deleted"]
    assert all(isinstance(n, int) and n >= 0 for n in result["deleted"].values())
    assert ready.json("prune")["deleted"] == {k: 0 for k in result["deleted"]}


def test_human_output_of_create_api_key_is_the_key(ready, org_id):
    result = ready.run("create-api-key", "--org", org_id, "--name", "n", "--scopes", "migrations:read")
    assert result.returncode == 0, result.stderr
    assert KEY_RE.match(result.stdout.strip().splitlines()[-1])


def test_flask_cli_group_runs_the_same_commands(ready):
    result = ready.run("--app", "wsgi", "create-org", "Via Flask", "--json", program=[str(BIN / "flask")])
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["name"] == "Via Flask"


# -- bad input --------------------------------------------------------------------------------


def test_create_user_bad_input(ready, org_id):
    def create(email: str, org: str, role: str, password: str = PASSWORD) -> tuple[tuple[str, ...], str]:
        return ("create-user", email, "--org", org, "--role", role, "--password-stdin", "--json"), password + "\n"

    cases = [
        (create("a@example.com", "org_doesnotexist", "owner"), "org"),
        (create("a@example.com", "' OR 1=1 --", "owner"), "org"),
        (create("a@example.com", "x" * 5000, "owner"), "org"),
        (create("a@example.com", org_id, "superuser"), "role"),
        (create("a@example.com", org_id, ""), "role"),
        (create("a@example.com", org_id, "owner", "short"), "password"),
        (create("a@example.com", org_id, "owner", ""), "password"),
        (create("a@example.com", org_id, "owner", "x" * 2000), "password"),
        (create("not-an-email", org_id, "owner"), "email"),
        (create("a@b", org_id, "owner"), "email"),
    ]
    lines = ready.fails_each([call for call, _ in cases])
    for (call, needle), line in zip(cases, lines, strict=True):
        assert needle in line.lower(), (call, line)
    ready.json("create-user", "taken@example.com", "--org", org_id, "--role", "viewer", "--password-stdin",
               input=PASSWORD + "\n")
    taken, tiny = ready.fails_each([create("TAKEN@example.com", org_id, "viewer"),
                                    create("a@example.com", org_id, "owner", "tiny-pw")])
    assert "exists" in taken.lower() and PASSWORD not in taken
    assert "tiny-pw" not in tiny  # never echoed


def test_create_api_key_bad_input(ready, org_id):
    def create(*args: str) -> tuple[tuple[str, ...], None]:
        return ("create-api-key", "--name", "k", *args, "--json"), None

    past = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    cases = [
        (create("--org", "org_doesnotexist", "--scopes", "migrations:read"), "org"),
        (create("--org", org_id, "--scopes", "migrations:delete"), "migrations:delete"),
        (create("--org", org_id, "--scopes", ""), "scope"),
        (create("--org", org_id, "--scopes", "   "), "scope"),
        (create("--org", org_id, "--scopes", "migrations:read ***"), "*"),
        (create("--org", org_id, "--scopes", "migrations:read", "--expires-at", past), "expires_at"),
        (create("--org", org_id, "--scopes", "migrations:read", "--expires-at", "tomorrow"), "expires_at"),
        (create("--org", org_id, "--scopes", "migrations:read", "--expires-at", "2999-01-01T00:00:00"),
         "expires_at"),  # no timezone
        (create("--org", org_id, "--scopes", "migrations:read", "--expires-at", "2999-13-45T99:99:99Z"),
         "expires_at"),
    ]
    lines = ready.fails_each([call for call, _ in cases])
    for (call, needle), line in zip(cases, lines, strict=True):
        assert needle in line.lower(), (call, line)
    # Nothing was created by any of these.
    from app.models import ApiKey

    application = ready.app()
    with application.app_context():
        assert db.session.query(ApiKey).count() == 0
        db.engine.dispose()


def test_create_client_bad_input(ready, org_id):
    def create(*args: str) -> tuple[tuple[str, ...], None]:
        return ("create-client", "--name", "App", *args, "--json"), None

    uris = ("http://evil.example/cb", "https://app.example.com/*", "https://app.example.com/cb#frag",
            "javascript:alert(1)", "not a uri", "https://", "ftp://app.example.com/cb")
    calls = [create("--org", org_id, "--redirect-uri", uri, "--scopes", "migrations:read") for uri in uris]
    calls += [
        create("--org", org_id, "--redirect-uri", "https://app.example.com/cb", "--scopes", "nope:read"),
        create("--org", "org_doesnotexist", "--redirect-uri", "https://app.example.com/cb",
               "--scopes", "migrations:read"),
        create("--org", org_id, "--public", "--scopes", "migrations:read"),
    ]
    lines = ready.fails_each(calls)
    assert "http://evil.example/cb" in lines[0] and "https" in lines[0]
    assert "nope:read" in lines[len(uris)]
    assert "org" in lines[len(uris) + 1].lower()
    assert "redirect" in lines[len(uris) + 2].lower()


def test_create_org_bad_input(ready):
    lines = ready.fails_each([(("create-org", name, "--json"), None) for name in ("", "   ", "x" * 300)])
    assert all("name" in line.lower() for line in lines), lines


def test_usage_errors_name_the_problem_without_a_traceback(ready):
    for args, needle in ((["create-org", "Acme", "--tier", "gold"], "--tier"),
                         (["create-api-key", "--name", "k", "--scopes", "migrations:read"], "--org"),
                         (["no-such-command"], "no-such-command")):
        result = ready.run(*args, "--json")
        assert result.returncode != 0 and result.stdout == ""
        assert "Traceback" not in result.stderr and needle in result.stderr, result.stderr


# -- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize("command", [["init", "--json"], ["create-org", "Acme", "--json"]])
def test_production_without_secret_key_refuses_in_one_line(cli, command):
    line = cli.fails(*command, env={"SENSEI_ENV": "production"})
    assert "SENSEI_SECRET_KEY" in line
    assert not (cli.directory / "x.db").exists()


def test_production_with_a_short_or_default_secret_key_refuses(cli):
    assert "SENSEI_SECRET_KEY" in cli.fails("init", env={"SENSEI_ENV": "production", "SENSEI_SECRET_KEY": "short"})
    from app.config import DEV_SECRET_KEY

    assert "SENSEI_SECRET_KEY" in cli.fails("init", env={"SENSEI_ENV": "production",
                                                         "SENSEI_SECRET_KEY": DEV_SECRET_KEY})


def test_production_with_good_secret_still_names_the_next_problem(cli):
    line = cli.fails("init", env={"SENSEI_ENV": "production", "SENSEI_SECRET_KEY": secrets.token_urlsafe(48)})
    assert "SENSEI_" in line and "SENSEI_SECRET_KEY" not in line


@pytest.mark.parametrize("name,value", [("SENSEI_ENV", "staging"), ("SENSEI_ACCESS_TOKEN_TTL", "abc"),
                                        ("SENSEI_ACCESS_TOKEN_TTL", "1"), ("SENSEI_ISSUER", "ftp://x"),
                                        ("SENSEI_DATABASE_URL", "mysql://x")])
def test_bad_setting_refuses_in_one_line_naming_it(cli, name, value):
    assert name in cli.fails("init", "--json", env={name: value})


# -- what the CLI prints works against a real server ------------------------------------------


class Served:
    """``sensei serve`` (gunicorn via execv, so the child's pid is the gunicorn master)."""

    def __init__(self, cli: Cli, port: int, log_path: Path) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        env = cli.env | {"SENSEI_ISSUER": self.url}  # the secret init sealed the keys with
        with log_path.open("wb") as log:
            self.process = subprocess.Popen([str(SENSEI), "serve", "--port", str(port), "--workers", "1"],
                                            env=env, cwd=cli.directory, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"sensei serve exited: {self.log()}")
            try:
                if requests.get(f"{self.url}/.well-known/jwks.json", timeout=5).ok:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        self.stop()
        raise AssertionError(f"sensei serve did not start: {self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def test_sensei_serve_refuses_before_init_in_one_line(cli):
    line = cli.fails("serve", "--port", str(free_port()))
    assert "init" in line


def test_cli_credentials_work_against_sensei_serve(ready, org_id, tmp_path):
    key = ready.json("create-api-key", "--org", org_id, "--name", "CI", "--scopes", "migrations:read")["key"]
    test_key = ready.json("create-api-key", "--org", org_id, "--name", "Test", "--scopes", "*:read",
                          "--test")["key"]
    client = ready.json("create-client", "--org", org_id, "--name", "Svc", "--scopes", "migrations:read")
    server = Served(ready, free_port(), tmp_path / "serve.log")
    try:
        me = requests.get(f"{server.url}/v1/me", headers={"Authorization": f"Bearer {key}"}, timeout=30)
        assert me.status_code == 200, me.text
        body = me.json()
        assert body["organization"]["id"] == org_id and body["principal"]["type"] == "api_key"
        assert body["scopes"] == ["migrations:read"] and body.get("environment") == "live"
        test_me = requests.get(f"{server.url}/v1/me", headers={"Authorization": f"Bearer {test_key}"},
                               timeout=30)
        assert test_me.status_code == 200 and test_me.json().get("environment") == "test"
        # One character off is refused.
        wrong = key[:-1] + ("A" if key[-1] != "A" else "B")
        assert requests.get(f"{server.url}/v1/me", headers={"Authorization": f"Bearer {wrong}"},
                            timeout=30).status_code == 401
        token = requests.post(f"{server.url}/oauth/token", auth=(client["client_id"], client["client_secret"]),
                              data={"grant_type": "client_credentials"}, timeout=30)
        assert token.status_code == 200, token.text
        access = token.json()["access_token"]
        as_client = requests.get(f"{server.url}/v1/me", headers={"Authorization": f"Bearer {access}"}, timeout=30)
        assert as_client.status_code == 200 and as_client.json()["organization"]["id"] == org_id
        # A rotation by the CLI: tokens signed before it still verify (the old key stays published).
        ready.json("rotate-signing-key")
        after = requests.get(f"{server.url}/v1/me", headers={"Authorization": f"Bearer {access}"}, timeout=30)
        assert after.status_code == 200, after.text
    finally:
        server.stop()
    log = server.log()
    assert key not in log and test_key not in log and client["client_secret"] not in log
    assert "Traceback" not in log


def test_cli_key_authenticates_through_the_services(ready, org_id):
    created = ready.json("create-api-key", "--org", org_id, "--name", "CI", "--scopes", "migrations:*")
    from app.errors import ApiError
    from app.services.api_keys import authenticate_api_key

    application = ready.app()
    with application.app_context():
        principal = authenticate_api_key(created["key"])
        assert principal.org_id == org_id and principal.id == created["id"]
        assert principal.scopes == {"migrations:read", "migrations:write"}
        with pytest.raises(ApiError):
            authenticate_api_key(created["key"][:-1] + ("A" if created["key"][-1] != "A" else "B"))
        db.engine.dispose()
