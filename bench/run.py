#!/usr/bin/env python3
"""The benchmark of `make bench`: Sensei Auth's hot endpoints against a bare Flask app and node-oidc-provider.

A benchmark, not a test: pytest does not collect it and it asserts nothing about speed. It

1. installs what it needs if missing: Debian's ``wrk`` (apt-get) and ``oidc-provider@9`` (npm,
   into ~/.cache/sensei-bench/oidc-provider-9, never into the repository; without node/npm the
   oidc-provider rows are reported as skipped, with the reason);
2. starts bench/bare_app.py and Sensei Auth (``wsgi:app``) with the same gunicorn settings
   (default ``--workers 2 --worker-class sync``, ``--forwarded-allow-ips= --no-control-socket``,
   a free 127.0.0.1 port; ``-c app/gunicorn_conf.py`` for Sensei only, when that file exists)
   and node-oidc-provider (bench/oidc_provider_server.mjs, 2 cluster workers, JWT access tokens);
3. per database variant (SQLite always; PostgreSQL + Redis when configured) sets Sensei up through
   its services (schema, signing key, an Enterprise org with limits far above the load, a
   confidential client and an API key with scope ``*``), checks one sample response per row, and
   runs wrk (``-t1 -c16``, 2 s warm-up, 8 s) on every row in each of ``--rounds`` rounds (the order
   rotated between rounds); each ratio row is measured right after a run of its denominator (the
   bare app) and its ratio taken against that run; medians are reported;
4. reads ``X-Sensei-Round-Trips`` (the server runs with ``SENSEI_BENCH_ROUND_TRIPS=1``): database
   statements and Redis commands per request, sampled after each run and amortised over the run;
5. prints a Markdown table and writes it to bench/results/latest.md (and latest.json).

    .venv/bin/python bench/run.py                                  # make bench
    .venv/bin/python bench/run.py --duration 2 --warmup 1 --rounds 1   # a quick look
    .venv/bin/python bench/run.py --only postgres --postgres postgresql+psycopg://postgres@127.0.0.1:5432/test \\
        --redis redis://127.0.0.1:6379/0

Exit status: 0 when it ran (even if targets are missed), 1 on a set-up or sample failure,
2 if a required tool (wrk) cannot be installed.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import importlib
import json
import os
import platform
import secrets
import shutil
import subprocess
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from statistics import median
from urllib.parse import quote, urlencode

from harness import (
    BENCH_DIR,
    ROOT,
    SENSEI_READY_PATH,
    BenchError,
    Server,
    add_load_options,
    app_context,
    check_alive,
    check_load_options,
    cpu_model,
    free_port,
    git_revision,
    guarded_main,
    gunicorn_argv,
    http_request,
    loadavg,
    postgres_schema,
    prepare_schema,
    rss_kib,
    run_wrk,
    running_servers,
    say,
    sensei_settings,
    server_env,
    set_output,
    start_server,
    stop_server,
    write_lua,
)

RESULTS_DIR = BENCH_DIR / "results"
CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sensei-bench"
OIDC_DIR = CACHE_DIR / "oidc-provider-9"
OIDC_LAUNCHER = BENCH_DIR / "oidc_provider_server.mjs"
GUNICORN_CONF = ROOT / "app" / "gunicorn_conf.py"
ROUND_TRIPS_HEADER = "X-Sensei-Round-Trips"
SAMPLES_AFTER_RUN = 20  # sequential requests after each run, for the per-request round trips
PID_SAMPLES_MAX = 40  # requests at most to see every worker once (before and after a run)
MEMORY_CHECKPOINTS = "10000,200000"
MEMORY_BUDGET_S = 3600.0  # --memory gives up (and says so) after this long
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


class ToolMissing(RuntimeError):
    """A required tool is missing and could not be installed: exit status 2."""


class Skipped(RuntimeError):
    """Rows that cannot run here, with the reason (reported in the table, not dropped)."""


# -- tools ------------------------------------------------------------------------------------------


def _run_quiet(argv: list[str], *, timeout: float, cwd: Path | None = None,
               env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def _tail(text: str, lines: int = 5) -> str:
    return " | ".join(line for line in text.strip().splitlines()[-lines:] if line.strip())


def ensure_wrk() -> str:
    """The path of wrk, installing Debian's package (apt-get install -y wrk) if it is missing."""
    found = shutil.which("wrk")
    if found:
        return found
    if not shutil.which("apt-get"):
        raise ToolMissing("wrk is not installed and there is no apt-get to install it: install wrk "
                          "(e.g. `brew install wrk`) and run again")
    prefix = [] if os.geteuid() == 0 else ["sudo", "-n"] if shutil.which("sudo") else None
    if prefix is None:
        raise ToolMissing("wrk is not installed and installing it needs root: `sudo apt-get install -y wrk`")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    say("wrk is missing: apt-get install -y wrk ...")
    try:
        done = _run_quiet([*prefix, "apt-get", "install", "-y", "wrk"], timeout=600, env=env)
        if done.returncode != 0:  # no package lists yet, or old ones
            say("apt-get update ...")
            _run_quiet([*prefix, "apt-get", "update"], timeout=600, env=env)
            done = _run_quiet([*prefix, "apt-get", "install", "-y", "wrk"], timeout=600, env=env)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise ToolMissing(f"could not install wrk: {error}") from None
    found = shutil.which("wrk")
    if not found:
        raise ToolMissing(f"could not install wrk (apt-get exited {done.returncode}: {_tail(done.stderr)})")
    return found


def ensure_oidc_provider() -> tuple[str, str]:
    """(oidc-provider version, node version), installing oidc-provider@9 into OIDC_DIR if needed.

    Raises Skipped (with the reason) when node or npm is missing or the install fails."""
    node = shutil.which("node")
    if not node:
        raise Skipped("node is not installed")
    try:
        node_version = _run_quiet([node, "--version"], timeout=30).stdout.strip()
    except (OSError, subprocess.TimeoutExpired) as error:
        raise Skipped(f"node does not run: {error}") from None
    package = OIDC_DIR / "node_modules" / "oidc-provider" / "package.json"

    def installed() -> str | None:
        try:
            version = json.loads(package.read_text()).get("version", "")
        except (OSError, ValueError):
            return None
        return version if version.startswith("9.") else None

    version = installed()
    if version:
        return version, node_version
    npm = shutil.which("npm")
    if not npm:
        raise Skipped("npm is not installed (needed once to install oidc-provider@9)")
    OIDC_DIR.mkdir(parents=True, exist_ok=True)
    manifest = OIDC_DIR / "package.json"
    if not manifest.exists():
        manifest.write_text(json.dumps({"name": "sensei-bench-oidc-provider", "private": True}) + "\n")
    say(f"installing oidc-provider@9 into {OIDC_DIR} (npm) ...")
    try:
        done = _run_quiet([npm, "install", "--no-audit", "--no-fund", "--loglevel=error", "oidc-provider@9"],
                          cwd=OIDC_DIR, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise Skipped(f"npm install oidc-provider@9 failed: {error}") from None
    version = installed()
    if done.returncode != 0 or not version:
        raise Skipped(f"npm install oidc-provider@9 failed (exit {done.returncode}): {_tail(done.stderr)}")
    return version, node_version


def shown_path(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def gunicorn_version() -> str:
    try:
        import gunicorn

        return gunicorn.__version__
    except ImportError:
        return "?"


# -- rows -----------------------------------------------------------------------------------------


@dataclass
class Row:
    key: str
    label: str
    server: str  # "bare" | "sensei" | "oidc"
    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    body: str = ""
    expect: str = ""  # a JSON field the sample response must carry, truthy
    ratio_to: str | None = None  # the row whose run right before this one's is the denominator
    target: float | None = None
    target_label: str = ""

    @property
    def round_trips(self) -> bool:
        return self.server == "sensei"


@dataclass
class Comparison:
    """A ratio of two measured rows of the same round (no wrk run of its own)."""

    key: str
    label: str
    numerator: str
    denominator: str
    target: float
    target_label: str


@dataclass
class Credentials:
    org_id: str
    client_id: str
    client_secret: str
    api_key: str
    unlimited: Credentials | None = None
    access_token: str = ""


def basic_auth(client_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{quote(client_id, safe='')}:{quote(secret, safe='')}".encode()).decode()


def bare_rows() -> list[Row]:
    return [
        Row("bare_get", "bare Flask `GET /`", "bare", "GET", "/", expect="hello"),
        Row("bare_post", "bare Flask `POST /` (form body)", "bare", "POST", "/", dict(FORM),
            urlencode({"grant_type": "client_credentials", "scope": "migrations:read"}), expect="hello"),
    ]


def sensei_rows(creds: Credentials, gateway: dict | None) -> list[Row]:
    basic = {"Authorization": basic_auth(creds.client_id, creds.client_secret), **FORM}
    bearer = {"Authorization": f"Bearer {creds.api_key}"}
    token_body = urlencode({"grant_type": "client_credentials"})
    rows = [
        Row("token", "`POST /oauth/token` client_credentials (Basic)", "sensei", "POST", "/oauth/token", basic,
            token_body, "access_token", "bare_post", 0.45, "≥ 0.45× bare POST"),
        Row("introspect_client", "`POST /oauth/introspect` JWT, client auth (Basic)", "sensei", "POST",
            "/oauth/introspect", basic, urlencode({"token": creds.access_token}), "active", "bare_post", 0.8,
            "≥ 0.8× bare POST"),
        Row("introspect_api_key", "`POST /oauth/introspect` JWT, `Bearer <API key>`", "sensei", "POST",
            "/oauth/introspect", {**bearer, **FORM}, urlencode({"token": creds.access_token}), "active",
            "bare_post", 0.8, "≥ 0.8× bare POST"),
        Row("me", "`GET /v1/me` (API key)", "sensei", "GET", "/v1/me", bearer, "", "principal", "bare_get", 0.8,
            "≥ 0.8× bare GET"),
    ]
    if gateway is not None:
        rows.append(Row("gateway", f"`GET {gateway['path']}` ({gateway['auth']})", "sensei", "GET",
                        gateway["path"], gateway["headers"], "", "", "bare_get", 0.8, "≥ 0.8× bare GET"))
    rows.append(Row("token_close", "`POST /oauth/token` client_credentials, `Connection: close`", "sensei", "POST",
                    "/oauth/token", {**basic, "Connection": "close"}, token_body, "access_token", "bare_post"))
    if creds.unlimited is not None:
        u = creds.unlimited
        rows += [
            Row("token_unlimited", "`POST /oauth/token` (unlimited org)", "sensei", "POST", "/oauth/token",
                {"Authorization": basic_auth(u.client_id, u.client_secret), **FORM}, token_body, "access_token",
                "bare_post", 0.45, "≥ 0.45× bare POST"),
            Row("me_unlimited", "`GET /v1/me` (API key, unlimited org)", "sensei", "GET", "/v1/me",
                {"Authorization": f"Bearer {u.api_key}"}, "", "principal", "bare_get", 0.8, "≥ 0.8× bare GET"),
        ]
    return rows


def oidc_rows(client_id: str, secret: str) -> list[Row]:
    headers = {"Authorization": basic_auth(client_id, secret), **FORM}
    body = urlencode({"grant_type": "client_credentials", "scope": "api:read"})
    return [
        Row("oidc_token", "node-oidc-provider `POST /token` (keep-alive)", "oidc", "POST", "/token", headers, body,
            "access_token"),
        Row("oidc_token_close", "node-oidc-provider `POST /token`, `Connection: close`", "oidc", "POST", "/token",
            {**headers, "Connection": "close"}, body, "access_token"),
    ]


COMPARISONS = [
    Comparison("vs_oidc_close", "token ÷ node-oidc-provider token, `Connection: close`", "token_close",
               "oidc_token_close", 1.1, "≥ 1.1× oidc-provider"),
    Comparison("vs_oidc_keepalive", "token ÷ node-oidc-provider token, keep-alive", "token", "oidc_token", 1.1,
               "≥ 1.1× oidc-provider"),
]


def round_order(rows: list[Row], round_index: int, rounds: int) -> list[Row]:
    """Round r starts r/rounds of the way into the list; odd rounds run it backwards."""
    offset = (round_index * len(rows)) // max(rounds, 1)
    order = rows[offset:] + rows[:offset]
    return order[::-1] if round_index % 2 else order


# -- requests and round trips -------------------------------------------------------------------------


def request(server: Server, row: Row, timeout: float = 30.0,
            conn: http.client.HTTPConnection | None = None) -> tuple[int, dict, bytes]:
    status, headers, body = http_request(server.host, server.port, row.method, row.path, row.headers,
                                         row.body.encode() if row.body else None, timeout=timeout, conn=conn)
    return status, {k.lower(): v for k, v in headers.items()}, body


def parse_round_trips(value: str | None) -> dict | None:
    """``db=<n>; redis=<m>; pid=<pid>; total_requests=<N>; total_db=<D>; total_redis=<R>``."""
    if not value:
        return None
    fields: dict[str, int] = {}
    for part in value.split(";"):
        name, _, number = part.strip().partition("=")
        try:
            fields[name.strip()] = int(number.strip())
        except ValueError:
            continue
    return fields if {"db", "redis", "pid"} <= fields.keys() else None


def jwt_alg(token: str) -> str | None:
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        return json.loads(base64.urlsafe_b64decode(parts[0] + "=" * (-len(parts[0]) % 4))).get("alg")
    except ValueError:
        return None


def check_sample(server: Server, row: Row) -> dict:
    """One request; 2xx and the expected field, or BenchError."""
    try:
        status, _headers, body = request(server, row)
    except OSError as error:
        raise BenchError(f"{row.label}: sample request failed: {error}") from None
    if not 200 <= status < 300:
        raise BenchError(f"{row.label}: sample request answered {status}: {body[:300]!r}")
    try:
        payload = json.loads(body or b"{}")
    except ValueError:
        payload = {}
    if row.expect and not (isinstance(payload, dict) and payload.get(row.expect)):
        raise BenchError(f"{row.label}: sample response lacks {row.expect!r}: {body[:300]!r}")
    return payload if isinstance(payload, dict) else {}


def _sample(server: Server, row: Row, conn: http.client.HTTPConnection | None = None) -> tuple[bool, dict | None]:
    """One request: (2xx?, its round-trip fields or None)."""
    try:
        status, headers, _ = request(server, row, conn=conn)
    except (OSError, http.client.HTTPException):
        return False, None
    return 200 <= status < 300, parse_round_trips(headers.get(ROUND_TRIPS_HEADER.lower()))


def sequential_samples(server: Server, row: Row, n: int) -> tuple[list[dict], int]:
    """``n`` requests one after the other: the round-trip fields of each, and the non-2xx count."""
    seen, failures = [], 0
    for _ in range(n):  # bounded
        ok, fields = _sample(server, row)
        failures += not ok
        if fields is None:
            break  # no header: nothing to count
        seen.append(fields)
    return seen, failures


def snapshot(server: Server, row: Row, workers: int, *, first: bool) -> tuple[dict, int]:
    """The round-trip fields of every worker.

    An idle sync worker tends to take every sequential connection, so each attempt first opens
    ``workers`` connections (each sync worker accepts one and waits for its request), then sends
    one request on each; attempts repeat until every worker answered (bounded). Returns (pid ->
    fields of that pid's response with the lowest (``first``) or highest total_requests, non-2xx
    count)."""
    per_pid: dict[int, dict] = {}
    failures = 0
    for _ in range(max(1, PID_SAMPLES_MAX // workers)):  # bounded
        conns = [http.client.HTTPConnection(server.host, server.port, timeout=30) for _ in range(workers)]
        try:
            for conn in conns:
                conn.connect()
            answers = [_sample(server, row, conn) for conn in conns]
        except OSError:
            answers = [(False, None)]
        finally:
            for conn in conns:
                conn.close()
        failures += sum(not ok for ok, _ in answers)
        found = [fields for _, fields in answers if fields is not None]
        if not found:
            break  # no header: nothing to wait for
        for fields in found:
            held = per_pid.get(fields["pid"])
            later = fields.get("total_requests", 0) > (held or {}).get("total_requests", 0)
            if held is None or later != first:
                per_pid[fields["pid"]] = fields
        if len(per_pid) >= workers:
            break
    return per_pid, failures


def wait_for_workers(server: Server, row: Row, workers: int, timeout: float = 30.0) -> None:
    """Until every worker has answered once (the readiness check saw only the first one boot)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(snapshot(server, row, workers, first=False)[0]) < workers:
        time.sleep(0.5)


def amortised(before: dict, after: dict) -> dict | None:
    """Σ Δtotal_db / Σ Δtotal_requests (and redis) over the pids seen both before and after."""
    pids = [pid for pid in before if pid in after and {"total_requests", "total_db", "total_redis"}
            <= before[pid].keys() & after[pid].keys()]
    requests = sum(after[p]["total_requests"] - before[p]["total_requests"] for p in pids)
    if not pids or requests <= 0:
        return None
    return {"db": sum(after[p]["total_db"] - before[p]["total_db"] for p in pids) / requests,
            "redis": sum(after[p]["total_redis"] - before[p]["total_redis"] for p in pids) / requests,
            "requests": requests, "pids": len(pids)}


# -- servers --------------------------------------------------------------------------------------


@dataclass
class Gunicorn:
    workers: int
    worker_class: str
    threads: int | None

    def argv(self, app_spec: str, chdir: Path, port: int, config: Path | None = None) -> list[str]:
        return gunicorn_argv(app_spec, chdir=chdir, port=port, workers=self.workers,
                             worker_class=self.worker_class, threads=self.threads, config=config)

    def describe(self) -> str:
        threads = f" --threads {self.threads}" if self.threads is not None else ""
        return (f"gunicorn {gunicorn_version()} --workers {self.workers} --worker-class {self.worker_class}{threads}"
                " --forwarded-allow-ips= --no-control-socket")


def start_bare(gunicorn: Gunicorn, tmp: Path, started: list[Server]) -> Server:
    port = free_port()
    return start_server("bare", gunicorn.argv("bare_app:app", BENCH_DIR, port), port=port, env=server_env({}),
                        ready_path="/", log_path=tmp / "bare.log", started=started, cwd=ROOT)


def start_sensei(name: str, gunicorn: Gunicorn, settings: dict, port: int, tmp: Path,
                 started: list[Server]) -> Server:
    config = GUNICORN_CONF if GUNICORN_CONF.is_file() else None
    env = server_env(settings, {"SENSEI_BENCH_ROUND_TRIPS": "1"})
    return start_server(name, gunicorn.argv("wsgi:app", ROOT, port, config), port=port, env=env,
                        ready_path=SENSEI_READY_PATH, log_path=tmp / f"{name}.log", started=started, cwd=ROOT)


def start_oidc(workers: int, client_id: str, secret: str, tmp: Path, started: list[Server]) -> Server:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SENSEI_", "NODE_OPTIONS"))}
    env.update({"PORT": str(port), "WORKERS": str(workers), "CLIENT_ID": client_id, "CLIENT_SECRET": secret,
                "OIDC_PROVIDER_DIR": str(OIDC_DIR), "NODE_ENV": "production"})
    node = shutil.which("node") or "node"
    return start_server("oidc-provider", [node, str(OIDC_LAUNCHER)], port=port, env=env,
                        ready_path="/.well-known/openid-configuration", log_path=tmp / "oidc-provider.log",
                        started=started, cwd=tmp)


# -- set-up ---------------------------------------------------------------------------------------


def set_up_sensei(settings: dict, unlimited: bool) -> Credentials:
    """What `sensei init` does, then an Enterprise org with limits far above the load (counted on
    every request), a confidential client (client_credentials) and an API key with scope *."""
    from app.services import api_keys, clients, orgs

    def principal(name: str, limited: bool) -> Credentials:
        org = orgs.create_org(name=name, tier="enterprise")
        if limited:
            orgs.set_limits(org_id=org.id, per_second=1_000_000, per_day=1_000_000_000)
        client, secret = clients.create_client(org_id=org.id, name=f"{name} client", redirect_uris=[],
                                               scopes=["migrations:read", "migrations:write"])
        _key, plaintext = api_keys.create_api_key(org_id=org.id, name=f"{name} key", scopes=["*"])
        return Credentials(org.id, client.client_id, secret or "", plaintext)

    with app_context(settings):
        prepare_schema(settings)
        creds = principal("Bench Org", limited=True)
        if unlimited:
            creds.unlimited = principal("Bench Org (no limits set)", limited=False)
    return creds


def load_seed():
    """bench/seed.py's ``seed`` function, or BenchError saying why not."""
    if not (BENCH_DIR / "seed.py").is_file():
        raise BenchError("--seed needs bench/seed.py (a function seed(database_url, *, api_keys, audit_rows, "
                         "org_id) -> dict), which is not there yet")
    try:
        module = importlib.import_module("bench.seed")
    except Exception as error:
        raise BenchError(f"--seed: cannot import bench/seed.py: {type(error).__name__}: {error}") from None
    if not callable(getattr(module, "seed", None)):
        raise BenchError("--seed: bench/seed.py has no function seed(database_url, *, api_keys, audit_rows, org_id)")
    return module.seed


def probe_gateway(server: Server, creds: Credentials) -> tuple[dict | None, str]:
    """The gateway row if ``GET /gateway/check`` answers 200 (API key first, then the JWT)."""
    path = "/gateway/check?scope=migrations:read"
    answers = []
    for auth, token in (("API key", creds.api_key), ("JWT access token", creds.access_token)):
        headers = {"Authorization": f"Bearer {token}"}
        try:
            status, _, body = http_request(server.host, server.port, "GET", path, headers, timeout=10)
        except OSError as error:
            answers.append(f"{auth}: {error}")
            continue
        if status == 200:
            return {"path": path, "auth": auth, "headers": headers}, ""
        answers.append(f"{auth}: {status}")
    return None, f"`GET {path}` did not answer 200 during set-up ({', '.join(answers)}): row skipped"


def delete_redis_keys(url: str, prefix: str) -> int:
    """SCAN + DEL of the keys under this run's own prefix (and only those)."""
    import redis

    client = redis.Redis.from_url(url)
    deleted = 0
    try:
        batch: list[bytes] = []
        for key in client.scan_iter(match=f"{prefix}*", count=1000):
            batch.append(key)
            if len(batch) >= 500:
                deleted += client.delete(*batch)
                batch = []
        if batch:
            deleted += client.delete(*batch)
    finally:
        client.close()
    return deleted


def check_redis(url: str) -> None:
    import redis

    try:
        client = redis.Redis.from_url(url, socket_timeout=5)
        client.ping()
        client.close()
    except Exception as error:
        raise BenchError(f"Redis at {url} does not answer: {type(error).__name__}: {error}") from None


# -- measuring --------------------------------------------------------------------------------------


@dataclass
class Measured:
    runs: list[dict] = field(default_factory=list)  # one per round
    paired: list[dict] = field(default_factory=list)  # the denominator's run just before each of ``runs``
    errors: int = 0  # non-2xx + socket errors: warm-up, measured runs, samples after the runs
    rt_db: list[int] = field(default_factory=list)
    rt_redis: list[int] = field(default_factory=list)
    amortised: list[dict] = field(default_factory=list)


class Runner:
    def __init__(self, args: argparse.Namespace, tmp: Path, servers: dict[str, Server]) -> None:
        self.args = args
        self.tmp = tmp
        self.servers = servers

    def script(self, row: Row) -> Path:
        return write_lua(self.tmp / f"{row.key}.lua", row.method, row.headers, row.body)

    def wrk(self, row: Row, seconds: float) -> dict:
        return run_wrk(self.servers[row.server].url + row.path, self.script(row), seconds, threads=1,
                       connections=self.args.connections)

    def measure(self, row: Row, measured: Measured, *, keep: bool = True) -> dict:
        """One warm-up and one measured run of ``row``; ``keep=False``: not one of its own
        round's runs (a paired denominator), though its errors still count against it."""
        server = self.servers[row.server]
        if self.args.warmup:
            warm = self.wrk(row, self.args.warmup)
            measured.errors += warm["non_2xx_3xx"] + warm["socket_errors"]
        before = {}
        if row.round_trips:
            before, failures = snapshot(server, row, self.args.workers, first=False)
            measured.errors += failures
        result = self.wrk(row, self.args.duration)
        measured.errors += result["non_2xx_3xx"] + result["socket_errors"]
        if row.round_trips:
            after, failures = snapshot(server, row, self.args.workers, first=True)
            seen, more_failures = sequential_samples(server, row, SAMPLES_AFTER_RUN)
            measured.errors += failures + more_failures
            measured.rt_db += [f["db"] for f in seen]
            measured.rt_redis += [f["redis"] for f in seen]
            result["round_trips_per_request"] = ({"db": median(f["db"] for f in seen),
                                                  "redis": median(f["redis"] for f in seen), "samples": len(seen)}
                                                 if seen else None)
            result["round_trips_amortised"] = amortised(before, after)
            if result["round_trips_amortised"]:
                measured.amortised.append(result["round_trips_amortised"])
        if keep:
            measured.runs.append(result)
        check_alive(self.servers.values())
        return result


def run_rounds(runner: Runner, rows: list[Row], rounds: int) -> dict[str, Measured]:
    """Every row once a round (rotated order). A row with a ratio is measured right after a run
    of its denominator: this machine's speed drifts within seconds (a shared VM), and a ratio
    of two runs minutes apart would measure the drift."""
    results = {row.key: Measured() for row in rows}
    by_key = {row.key: row for row in rows}
    for index in range(rounds):
        say(f"round {index + 1}/{rounds} (load {loadavg()})")
        for row in round_order(rows, index, rounds):
            if row.ratio_to:
                paired = runner.measure(by_key[row.ratio_to], results[row.ratio_to], keep=False)
                results[row.key].paired.append(paired)
                say(f"  {'(' + row.ratio_to + ')':<20} {paired['rps']:9.1f} req/s")
            result = runner.measure(row, results[row.key])
            rt = result.get("round_trips_per_request")
            extra = f"  db {rt['db']:g} redis {rt['redis']:g} per request" if rt else ""
            errors = result["non_2xx_3xx"] + result["socket_errors"]
            say(f"  {row.key:<20} {result['rps']:9.1f} req/s  {result['latency_avg_ms'] or 0:7.2f} ms avg"
                f"{f'  ERRORS {errors}' if errors else ''}{extra}")
    return results


def measure_memory(runner: Runner, server: Server, row: Row, checkpoints_at: list[int]) -> dict:
    """RSS of each worker after 10k and after 200k requests of ``row`` (on a fresh server).

    Requests are counted with the round-trip header's total_requests when it is there (every
    request the workers answered), else with wrk's counts."""
    checkpoints = []
    done = 0
    rate: float | None = None
    started = time.monotonic()
    errors = 0
    for goal in checkpoints_at:
        for _ in range(1000):  # bounded; each pass is one wrk run
            counted = header_total(server, row, runner.args.workers)
            if counted is not None:
                done = counted
            if done >= goal or time.monotonic() - started > MEMORY_BUDGET_S:
                break
            seconds = 2.0 if rate is None else min(60.0, max(1.0, (goal - done) / max(rate, 1.0) * 0.97))
            result = runner.wrk(row, seconds)
            errors += result["non_2xx_3xx"] + result["socket_errors"]
            rate = result["rps"] or rate
            done += result["requests"]  # an estimate until the header's totals are read again
            say(f"  memory: ~{done:,}/{goal:,} requests ({result['rps']:.0f} req/s)")
        workers = {pid: rss_kib(pid) for pid in server.worker_pids()}
        checkpoints.append({"goal": goal, "requests": done, "reached": done >= goal, "rss_kib": workers})
        say(f"  memory after {done:,} requests: " + ", ".join(
            f"pid {pid} {kib / 1024:.1f} MiB" for pid, kib in workers.items() if kib))
    first, last = checkpoints[0]["rss_kib"], checkpoints[-1]["rss_kib"]
    delta = {pid: (last[pid] - first[pid]) / 1024 for pid in first if first[pid] and last.get(pid)}
    return {"row": row.key, "checkpoints": checkpoints, "delta_mib": delta, "errors": errors,
            "seconds": round(time.monotonic() - started, 1),
            "counted_by": "X-Sensei-Round-Trips total_requests" if header_total(server, row, runner.args.workers)
            is not None else "wrk"}


def header_total(server: Server, row: Row, workers: int) -> int | None:
    """Σ total_requests over the workers, from the round-trip header (None without it)."""
    per_pid, _ = snapshot(server, row, workers, first=False)
    totals = [f.get("total_requests") for f in per_pid.values()]
    if len(per_pid) < workers or any(t is None for t in totals):
        return None
    return sum(totals)


# -- one database variant ---------------------------------------------------------------------------


@dataclass
class Variant:
    name: str  # "sqlite" | "postgres"
    title: str
    postgres_url: str | None = None
    redis_url: str | None = None


def run_variant(args: argparse.Namespace, variant: Variant, tmp: Path, gunicorn: Gunicorn,
                shared: dict[str, Server], shared_rows: list[Row], seed) -> dict:
    report: dict = {"name": variant.name, "title": variant.title, "notes": [], "skipped": []}
    vdir = tmp / variant.name
    vdir.mkdir()
    with ExitStack() as stack:
        if variant.postgres_url:
            database_url = stack.enter_context(postgres_schema(variant.postgres_url, label="bench_run"))
        else:
            database_url = f"sqlite:///{vdir / 'sensei.db'}"
        port = free_port()
        extra = {"ACCESS_TOKEN_TTL": 24 * 3600}  # the introspected JWT outlives a long run
        prefix = ""
        if variant.redis_url:
            check_redis(variant.redis_url)
            prefix = f"sensei-bench-{secrets.token_hex(6)}"
            extra.update({"REDIS_URL": variant.redis_url, "REDIS_PREFIX": prefix})
            stack.callback(lambda: say(
                f"deleted {delete_redis_keys(variant.redis_url, prefix)} Redis keys under {prefix}*"))
        settings = sensei_settings(database_url, vdir / "keys", f"http://127.0.0.1:{port}", **extra)
        say(f"\n== {variant.title}: set-up in {vdir}")
        try:
            creds = set_up_sensei(settings, args.unlimited)
        except Exception as error:  # the app's own errors, e.g. a migration that does not apply
            first = (str(error).splitlines() or [""])[0]
            raise BenchError(f"set-up failed: {type(error).__name__}: {first}") from error
        report["org_id"] = creds.org_id
        if seed is not None:
            say(f"seeding: {args.seed_api_keys:,} API keys, {args.seed_audit_rows:,} audit rows ...")
            t = time.monotonic()
            try:
                report["seed"] = seed(database_url, api_keys=args.seed_api_keys, audit_rows=args.seed_audit_rows,
                                      org_id=creds.org_id)
            except Exception as error:
                raise BenchError(f"--seed failed: {type(error).__name__}: {error}") from error
            report["seed_seconds"] = round(time.monotonic() - t, 1)
        with running_servers() as own:
            sensei = start_sensei(f"sensei-{variant.name}", gunicorn, settings, port, vdir, own)
            servers = {**shared, "sensei": sensei}
            token_row = sensei_rows(creds, None)[0]
            issued = check_sample(sensei, token_row)
            creds.access_token = issued["access_token"]
            report["sensei_token_alg"] = jwt_alg(creds.access_token)
            if report["sensei_token_alg"] is None:
                report["notes"].append("Sensei's access token is not a JWT")
            gateway, why = probe_gateway(sensei, creds)
            if gateway is None:
                report["skipped"].append({"row": "gateway", "reason": why})
            rows = [*shared_rows[:2], *sensei_rows(creds, gateway), *shared_rows[2:]]
            for row in rows:
                check_sample(servers[row.server], row)
            rt = parse_round_trips(request(sensei, token_row)[1].get(ROUND_TRIPS_HEADER.lower()))
            if rt is None:
                report["notes"].append(f"no `{ROUND_TRIPS_HEADER}` header in Sensei's responses: round trips n/a "
                                       "(the server runs with SENSEI_BENCH_ROUND_TRIPS=1)")
            else:
                wait_for_workers(sensei, token_row, args.workers)
            say(f"{len(rows)} rows, samples checked; {args.rounds} round(s) of {args.warmup:g}s warm-up + "
                f"{args.duration:g}s each")
            runner = Runner(args, vdir, servers)
            load_before = loadavg()
            measured = run_rounds(runner, rows, args.rounds)
            report["load"] = [load_before, loadavg()]
            report["rows"] = summarise(rows, measured, args.rounds)
            report["comparisons"] = compare(measured, args.rounds, report["rows"])
            if args.memory:
                stop_server(own.pop())
                say("memory: a fresh Sensei server, GET /v1/me ...")
                sensei = start_sensei(f"sensei-{variant.name}-memory", gunicorn, settings, port, vdir, own)
                me = next(row for row in rows if row.key == "me")
                report["memory"] = measure_memory(Runner(args, vdir, {**servers, "sensei": sensei}), sensei, me,
                                                  args.memory_checkpoints)
    return report


def summarise(rows: list[Row], measured: dict[str, Measured], rounds: int) -> list[dict]:
    out = []
    for row in rows:
        m = measured[row.key]
        ratios = []
        if row.ratio_to:
            for index in range(rounds):
                denominator = m.paired[index]["rps"]
                ratios.append(m.runs[index]["rps"] / denominator if denominator else 0.0)
        ratio = median(ratios) if ratios else None
        out.append({
            "key": row.key, "label": row.label, "server": row.server,
            "rps": median(r["rps"] for r in m.runs), "rps_runs": [round(r["rps"], 1) for r in m.runs],
            "latency_avg_ms": median(r["latency_avg_ms"] or 0.0 for r in m.runs),
            "requests": sum(r["requests"] for r in m.runs),
            "non_2xx_3xx": sum(r["non_2xx_3xx"] for r in m.runs),
            "socket_errors": sum(r["socket_errors"] for r in m.runs),
            "errors": m.errors, "valid": m.errors == 0,
            "ratio_to": row.ratio_to, "ratio": ratio, "ratio_runs": [round(x, 4) for x in ratios],
            "target": row.target, "target_label": row.target_label,
            "meets": (ratio >= row.target) if ratio is not None and row.target is not None else None,
            "round_trips": None if not row.round_trips else {
                "db": median(m.rt_db) if m.rt_db else None,
                "redis": median(m.rt_redis) if m.rt_redis else None,
                "db_amortised": median(a["db"] for a in m.amortised) if m.amortised else None,
                "redis_amortised": median(a["redis"] for a in m.amortised) if m.amortised else None,
                "amortised_runs": m.amortised,
            },
        })
    return out


def compare(measured: dict[str, Measured], rounds: int, rows: list[dict]) -> list[dict]:
    valid = {row["key"]: row["valid"] for row in rows}
    out = []
    for c in COMPARISONS:
        if c.numerator not in measured or c.denominator not in measured:
            continue
        ratios = []
        for index in range(rounds):
            denominator = measured[c.denominator].runs[index]["rps"]
            ratios.append(measured[c.numerator].runs[index]["rps"] / denominator if denominator else 0.0)
        ratio = median(ratios)
        out.append({"key": c.key, "label": c.label, "numerator": c.numerator, "denominator": c.denominator,
                    "ratio": ratio, "ratio_runs": [round(x, 4) for x in ratios], "target": c.target,
                    "target_label": c.target_label, "meets": ratio >= c.target,
                    "valid": valid[c.numerator] and valid[c.denominator]})
    return out


# -- report -----------------------------------------------------------------------------------------


def _num(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def markdown(meta: dict, variants: list[dict]) -> str:
    lines = [
        f"## `make bench` — {meta['date']}",
        "",
        f"{meta['date']} · {meta['machine']} · Python {meta['python']} · {meta['gunicorn']} · "
        f"git {meta['git'] or '?'} · load average {meta['load'][0]} (start), {meta['load'][1]} (end)",
        "",
        f"wrk -t1 -c{meta['connections']}, {meta['duration']:g} s per row after a {meta['warmup']:g} s warm-up, "
        f"{meta['rounds']} round(s) in rotated order; req/s and ratios are medians over the rounds, each ratio "
        "taken against a run of its denominator made just before it. " + meta["oidc"],
    ]
    busiest = max(float(load.split()[0]) for load in meta["load"] if load and load != "?") if meta["load"] else 0
    if busiest > (os.cpu_count() or 1):
        lines += ["", f"**The machine was busy** (1-minute load average up to {busiest:.2f} on {os.cpu_count()} "
                      "cores): req/s are noisy, ratios less so; rerun on a quiet machine to quote numbers."]
    for variant in variants:
        lines += ["", f"### {variant['title']}", ""]
        if "rows" not in variant:
            lines += [f"skipped: {variant.get('reason', '?')}"]
            continue
        lines += ["| row | req/s | ratio | target | met | db/req | redis/req | db amortised | redis amortised | valid |",
                  "|---|---:|---:|---|:-:|---:|---:|---:|---:|---|"]
        labels = {row["key"]: row["label"] for row in variant["rows"]}
        short = {"bare_get": "bare GET", "bare_post": "bare POST"}
        for row in variant["rows"]:
            rt = row["round_trips"]
            if row["ratio"] is not None:
                ratio = f"{row['ratio']:.3f}× {short.get(row['ratio_to'], labels.get(row['ratio_to'], ''))}"
            else:
                ratio = "(denominator)" if row["key"] in short else "—"
            met = "—" if row["meets"] is None else "yes" if row["meets"] else "**no**"
            cells = ["—"] * 4 if rt is None else [_num(rt["db"], 1), _num(rt["redis"], 1),
                                                  _num(rt["db_amortised"], 2), _num(rt["redis_amortised"], 2)]
            valid = "valid" if row["valid"] else f"**INVALID** ({row['errors']} errors)"
            lines.append(f"| {row['label']} | {row['rps']:.1f} | {ratio} | {row['target_label'] or '—'} | {met} | "
                         + " | ".join(cells) + f" | {valid} |")
        for c in variant["comparisons"]:
            met = "yes" if c["meets"] else "**no**"
            valid = "valid" if c["valid"] else "**INVALID**"
            lines.append(f"| {c['label']} | — | {c['ratio']:.3f}× | {c['target_label']} | {met} | — | — | — | — "
                         f"| {valid} |")
        for skipped in variant["skipped"]:
            lines.append(f"| {skipped['row']} | skipped | — | — | — | — | — | — | — | {skipped['reason']} |")
        for note in variant["notes"]:
            lines += ["", f"Note: {note}"]
        if variant.get("seed"):
            lines += ["", f"Seeded before the servers started ({variant.get('seed_seconds')} s): "
                          f"`{json.dumps(variant['seed'], default=str)[:300]}`"]
        memory = variant.get("memory")
        if memory:
            lines += ["", f"Memory, `GET /v1/me` on a fresh server ({memory['seconds']} s, {memory['errors']} errors):", "",
                      "| worker | " + " | ".join(f"RSS after {c['requests']:,} requests" for c in memory["checkpoints"])
                      + " | difference |", "|---|" + "---:|" * (len(memory["checkpoints"]) + 1)]
            for pid in memory["checkpoints"][0]["rss_kib"]:
                cells = [_num((c["rss_kib"].get(pid) or 0) / 1024 or None) + " MiB" for c in memory["checkpoints"]]
                lines.append(f"| pid {pid} | " + " | ".join(cells) + f" | {memory['delta_mib'].get(pid, 0):+.1f} MiB |")
            if not all(c["reached"] for c in memory["checkpoints"]):
                lines += ["", "(not every request count was reached within the time budget)"]
    lines += ["", "db/req and redis/req: median over the sequential samples after each run of the statements and "
                  "commands run on the request's own thread (`X-Sensei-Round-Trips`); amortised: the workers' "
                  "totals (all threads, background writers included) over the run divided by its requests."]
    return "\n".join(lines) + "\n"


# -- main -------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_load_options(parser, duration=8.0, rounds=3)
    parser.add_argument("--workers", type=int, default=2, help="workers of every server (default 2)")
    parser.add_argument("--worker-class", default="sync", help="gunicorn worker class of every Python server "
                                                                "(default sync)")
    parser.add_argument("--worker-threads", type=int, default=None,
                        help="gunicorn --threads of every Python server (default: not passed)")
    parser.add_argument("--only", choices=("sqlite", "postgres"), help="one database variant only")
    parser.add_argument("--postgres", metavar="URL", help="PostgreSQL (default $SENSEI_BENCH_DATABASE_URL or "
                                                          "$SENSEI_TEST_DATABASE_URL); a schema of its own")
    parser.add_argument("--redis", metavar="URL", help="Redis for the PostgreSQL variant (default "
                                                       "$SENSEI_BENCH_REDIS_URL or $SENSEI_TEST_REDIS_URL)")
    parser.add_argument("--unlimited", action="store_true",
                        help="also rows for an Enterprise org with no limits set (token, /v1/me)")
    parser.add_argument("--no-oidc-provider", action="store_true", help="skip the node-oidc-provider rows")
    parser.add_argument("--seed", action="store_true", help="seed with bench/seed.py before starting the servers")
    parser.add_argument("--seed-api-keys", type=int, default=1_000_000, metavar="N", help="default 1,000,000")
    parser.add_argument("--seed-audit-rows", type=int, default=10_000_000, metavar="N", help="default 10,000,000")
    parser.add_argument("--memory", action="store_true",
                        help="RSS of each Sensei worker after 10k and 200k GET /v1/me requests")
    parser.add_argument("--memory-checkpoints", default=MEMORY_CHECKPOINTS, metavar="N,M",
                        help=f"request counts at which --memory reads RSS (default {MEMORY_CHECKPOINTS})")
    parser.add_argument("--results", type=Path, default=RESULTS_DIR, metavar="DIR",
                        help="where latest.md and latest.json go (default bench/results)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, SQLite database)")
    args = parser.parse_args(argv)
    check_load_options(parser, args, max_connections=10_000)
    if not 1 <= args.workers <= 64:
        parser.error("--workers must be 1-64")
    if args.worker_threads is not None and not 1 <= args.worker_threads <= 64:
        parser.error("--worker-threads must be 1-64")
    try:
        args.memory_checkpoints = sorted(int(n) for n in args.memory_checkpoints.split(","))
    except ValueError:
        parser.error("--memory-checkpoints takes request counts separated by commas, e.g. 10000,200000")
    if len(args.memory_checkpoints) < 2 or not 1 <= args.memory_checkpoints[0] <= 10_000_000 \
            or args.memory_checkpoints[-1] > 10_000_000:
        parser.error("--memory-checkpoints needs two or more counts of 1-10,000,000")
    if not (0 <= args.seed_api_keys <= 100_000_000 and 0 <= args.seed_audit_rows <= 1_000_000_000):
        parser.error("--seed-api-keys must be 0-100M and --seed-audit-rows 0-1G")
    return args


def variants_of(args: argparse.Namespace) -> tuple[list[Variant], list[dict]]:
    env = os.environ
    pg = args.postgres or env.get("SENSEI_BENCH_DATABASE_URL") or env.get("SENSEI_TEST_DATABASE_URL")
    rd = args.redis or env.get("SENSEI_BENCH_REDIS_URL") or env.get("SENSEI_TEST_REDIS_URL")
    variants, skipped = [], []
    if args.only != "postgres":
        variants.append(Variant("sqlite", "SQLite (no Redis)"))
    if args.only != "sqlite":
        if pg and rd:
            variants.append(Variant("postgres", "PostgreSQL + Redis", pg, rd))
        else:
            reason = ("set SENSEI_BENCH_DATABASE_URL and SENSEI_BENCH_REDIS_URL (or SENSEI_TEST_*), or pass "
                      "--postgres URL --redis URL")
            if args.only == "postgres":
                raise BenchError(f"--only postgres: {reason}")
            skipped.append({"name": "postgres", "title": "PostgreSQL + Redis", "reason": reason})
    return variants, skipped


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    set_output(sys.stderr)  # progress on stderr; the table on stdout
    try:
        seed = load_seed() if args.seed else None
        variants, skipped_variants = variants_of(args)
        ensure_wrk()
    except ToolMissing as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except BenchError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    oidc_skip = "skipped by --no-oidc-provider" if args.no_oidc_provider else ""
    oidc_versions = ("", "")
    if not oidc_skip:
        try:
            oidc_versions = ensure_oidc_provider()
        except Skipped as why:
            oidc_skip = str(why)
            print(f"warning: node-oidc-provider rows skipped: {why}", file=sys.stderr)
    gunicorn = Gunicorn(args.workers, args.worker_class, args.worker_threads)
    meta = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{cpu_model()}, {os.cpu_count()} cores",
        "python": platform.python_version(),
        "gunicorn": gunicorn.describe() + (f"; Sensei also `-c {shown_path(GUNICORN_CONF)}`"
                                           if GUNICORN_CONF.is_file() else ""),
        "git": git_revision(),
        "connections": args.connections, "duration": args.duration, "warmup": args.warmup, "rounds": args.rounds,
        "load": [loadavg(), None],
    }

    def body(tmp: Path) -> int:
        reports = run_all(args, tmp, gunicorn, variants, seed, oidc_skip, oidc_versions, meta)
        meta["load"][1] = loadavg()
        table = markdown(meta, reports + skipped_variants)
        print(table)
        args.results.mkdir(parents=True, exist_ok=True)
        (args.results / "latest.md").write_text(table)
        (args.results / "latest.json").write_text(
            json.dumps({"meta": meta, "variants": reports + skipped_variants}, indent=2, default=str) + "\n")
        print(f"wrote {args.results / 'latest.md'} and latest.json", file=sys.stderr)
        return 0

    return guarded_main(body, prefix="sensei-bench-", keep=args.keep)


def run_all(args: argparse.Namespace, tmp: Path, gunicorn: Gunicorn, variants: list[Variant], seed,
            oidc_skip: str, oidc_versions: tuple[str, str], meta: dict) -> list[dict]:
    """The shared servers (bare Flask, node-oidc-provider), then every variant in turn."""
    reports: list[dict] = []
    with running_servers() as started:
        shared = {"bare": start_bare(gunicorn, tmp, started)}
        shared_rows = bare_rows()
        if not oidc_skip:
            client_id, secret = "bench-" + secrets.token_hex(4), secrets.token_urlsafe(24)
            try:
                shared["oidc"] = start_oidc(args.workers, client_id, secret, tmp, started)
                rows = oidc_rows(client_id, secret)
                for row in rows:
                    issued = check_sample(shared["oidc"], row)
                    if jwt_alg(issued["access_token"]) != "RS256":
                        raise BenchError(f"{row.label}: the access token is not an RS256 JWT")
                shared_rows += rows
            except BenchError as error:
                oidc_skip = f"node-oidc-provider did not start or answer: {str(error).splitlines()[0]}"
                print(f"warning: {oidc_skip}", file=sys.stderr)
                if "oidc" in shared:
                    server = shared.pop("oidc")
                    stop_server(server)
                    started.remove(server)
        meta["oidc"] = (f"node-oidc-provider {oidc_versions[0]} on node {oidc_versions[1]}, {args.workers} cluster "
                        "workers, in-memory adapter, RS256 JWT access tokens; gunicorn sync workers close every "
                        "connection, so Sensei's keep-alive and `Connection: close` rows differ little."
                        if not oidc_skip else f"node-oidc-provider rows skipped: {oidc_skip}.")
        for variant in variants:
            report = run_variant(args, variant, tmp, gunicorn, shared, shared_rows, seed)
            if oidc_skip:
                report["skipped"] += [{"row": "node-oidc-provider token (keep-alive, `Connection: close`) and "
                                              "token ÷ oidc-provider", "reason": oidc_skip}]
            reports.append(report)
    return reports


if __name__ == "__main__":
    sys.exit(main())
