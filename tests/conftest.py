"""Fixtures: one app and one real gunicorn server per database backend.

Every test that uses ``app`` (or ``server``) runs on SQLite and, when
``SENSEI_TEST_DATABASE_URL`` is set, again on PostgreSQL in a schema of its own.
Without that variable the PostgreSQL variants are reported as skipped.
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import pytest
import requests
from sqlalchemy import create_engine, text

from app import create_app
from app.extensions import db
from app.services import schema, signing_keys

pytest_plugins = ["tests.browser_support"]  # Chromium fixtures for the browser tests

ROOT = Path(__file__).resolve().parent.parent
PG_URL = os.environ.get("SENSEI_TEST_DATABASE_URL")
REDIS_URL = os.environ.get("SENSEI_TEST_REDIS_URL")
FUZZ_FULL = os.environ.get("SENSEI_FUZZ") == "full"  # `make fuzz`: the long fuzzing runs
KEEP_TABLES = {"signing_keys", "alembic_version"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def backend(request) -> str:
    if request.param == "postgresql" and not PG_URL:
        pytest.skip("PostgreSQL variant: set SENSEI_TEST_DATABASE_URL to run it")
    return request.param


@contextmanager
def fresh_database(backend: str, directory: Path):
    """An empty database: a SQLite file, or a PostgreSQL schema of its own (dropped after)."""
    if backend == "sqlite":
        yield f"sqlite:///{directory / 'sensei.db'}"
        return
    schema_name = f"sensei_test_{os.getpid()}_{secrets.token_hex(4)}"
    admin = create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema_name}"'))
    separator = "&" if "?" in PG_URL else "?"
    try:
        yield f"{PG_URL}{separator}options={quote(f'-csearch_path={schema_name}')}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema_name}" CASCADE'))
        admin.dispose()


def build_app(overrides: dict):
    """An app with its schema applied and a signing key, as `sensei init` leaves it."""
    application = create_app(overrides)
    with application.app_context():
        schema.upgrade_schema()
        signing_keys.ensure_signing_key(keys_dir=overrides["KEYS_DIR"])
    return application


@pytest.fixture(scope="session")
def database_url(backend, tmp_path_factory):
    with fresh_database(backend, tmp_path_factory.mktemp("db")) as url:
        yield url


@pytest.fixture(scope="session")
def server_port() -> int:
    return free_port()


@pytest.fixture(scope="session")
def settings_overrides(database_url, tmp_path_factory, server_port) -> dict:
    # With Redis the shared server counts limits and validates its credential caches there
    # (and this process's changes reach it through the same keys), as in production.
    shared = {"REDIS_URL": REDIS_URL, "REDIS_PREFIX": f"sensei-test-{secrets.token_hex(6)}"} if REDIS_URL else {}
    return shared | {
        "DATABASE_URL": database_url,
        "KEYS_DIR": str(tmp_path_factory.mktemp("keys")),
        "ISSUER": f"http://127.0.0.1:{server_port}",
        "SECRET_KEY": secrets.token_urlsafe(32),
        # The suite signs in and fails authentication far more often than a person would;
        # tests/test_rate_limits.py checks these limits at their defaults.
        "ANONYMOUS_PER_SECOND": 1_000_000,
        "ANONYMOUS_PER_DAY": 1_000_000_000,
        "LOGIN_PER_MINUTE_PER_ADDRESS": 1_000_000,
        "LOGIN_PER_MINUTE_PER_ACCOUNT": 1_000,
    }


@pytest.fixture(scope="session")
def app(settings_overrides):
    application = build_app(settings_overrides)
    yield application
    with application.app_context():
        db.engine.dispose()


@pytest.fixture()
def ctx(app):
    """An app context for calling services; every row but signing keys is deleted afterwards."""
    with app.app_context():
        yield app
        db.session.rollback()
        # Chain heads first: a server's audit sealer locks a head before its entries.
        tables = [db.metadata.tables["audit_chain_heads"]] + [
            t for t in reversed(db.metadata.sorted_tables) if t.name not in KEEP_TABLES | {"audit_chain_heads"}
        ]
        for table in tables:
            db.session.execute(table.delete())
        db.session.commit()
        db.session.remove()


class Server:
    def __init__(self, url: str, process: subprocess.Popen, log_path: Path) -> None:
        self.url = url
        self.process = process
        self.log_path = log_path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_server(settings: dict, port: int, log_path: Path, extra_env: dict | None = None,
                 extra_args: list[str] | None = None) -> Server:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENSEI_")}
    env.update({f"SENSEI_{k}": str(v) for k, v in settings.items()})
    env.update(extra_env or {})
    with log_path.open("wb") as log:  # the child keeps its own descriptor
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--chdir", str(ROOT), "--bind", f"127.0.0.1:{port}",
             "--workers", "2", "--worker-class", "gthread", "--threads", "4", "--timeout", "60",
             "--forwarded-allow-ips=", "--no-control-socket", *(extra_args or []),
             "wsgi:app"],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        return _wait_until_serving(process, url, log_path)
    except BaseException:
        process.kill()  # never leave a server behind
        process.wait()
        raise


def _wait_until_serving(process: subprocess.Popen, url: str, log_path: Path) -> Server:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gunicorn exited: {log_path.read_text()}")
        try:
            if requests.get(f"{url}/.well-known/oauth-authorization-server", timeout=5).status_code < 500:
                return Server(url, process, log_path)
        except requests.RequestException:
            pass  # not listening yet, or workers still booting
        time.sleep(0.1)
    raise RuntimeError(f"gunicorn did not start: {log_path.read_text()}")


def stop_process(process: subprocess.Popen, timeout: float = 15) -> None:
    """Terminate a child this test started; kill it if it does not exit in ``timeout``."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def stop_server(server: Server) -> None:
    stop_process(server.process)


class PrivateCluster:
    """A PostgreSQL cluster of one test's own, never the machine's shared one: ``initdb`` in a
    temporary directory, served on a free loopback port, stopped and started at will. The tools
    run as the ``postgres`` user when the tests run as root (PostgreSQL refuses root)."""

    def __init__(self) -> None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        assert found, "PostgreSQL's server tools (/usr/lib/postgresql/*/bin/initdb) are not installed"
        self.bin = Path(found[-1]).parent
        self.dir = Path(tempfile.mkdtemp(prefix="sensei-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"
        self.running = False
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")

    def _run(self, tool: str, *args: str) -> None:
        argv = [str(self.bin / tool), *args]
        if os.geteuid() == 0:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=90)
        assert done.returncode == 0, f"{tool} failed: {done.stdout[-1000:]}{done.stderr[-1000:]}"

    def start(self) -> None:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.dir / "server.log"), "-o", options,
                  "-w", "-t", "60", "start")
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        """``fast``: a clean shutdown; ``immediate``: as a crash (recovery from the WAL on start)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")
        self.running = False

    def close(self) -> None:
        try:
            if self.running:
                self.stop("immediate")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


@contextmanager
def private_postgres():
    cluster = PrivateCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()


@pytest.fixture(scope="session")
def server(app, settings_overrides, server_port, tmp_path_factory):
    """A real gunicorn (2 workers) on a free loopback port, sharing the test database."""
    running = start_server(settings_overrides, server_port, tmp_path_factory.mktemp("log") / "gunicorn.log")
    yield running
    stop_server(running)


@pytest.fixture(scope="module")
def behind_one_proxy(settings_overrides, app, tmp_path_factory):
    """A server behind one trusted proxy (SENSEI_TRUSTED_PROXIES=1): the client address is the
    X-Forwarded-For hop the proxy appended."""
    port = free_port()
    running = start_server(settings_overrides | {"TRUSTED_PROXIES": 1, "ISSUER": f"http://127.0.0.1:{port}"},
                           port, tmp_path_factory.mktemp("proxied") / "gunicorn.log")
    yield running
    stop_server(running)


@pytest.fixture()
def isolated_ctx(backend, tmp_path):
    """An app context on a database and keys directory of its own (for tests that change keys)."""
    with fresh_database(backend, tmp_path) as url:
        application = build_app({"DATABASE_URL": url, "KEYS_DIR": str(tmp_path / "keys")})
        with application.app_context():
            yield application
            db.session.remove()
            db.engine.dispose()


@pytest.fixture()
def live(server, ctx):
    """A running server plus an app context on the same (cleaned) database."""
    return server


@pytest.fixture(autouse=True)
def _oauthlib_allows_loopback_http(monkeypatch):
    # requests-oauthlib refuses http:// unless told; our test server is plain HTTP on loopback.
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")
