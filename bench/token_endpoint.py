#!/usr/bin/env python3
"""Throughput of Sensei Auth's hot endpoints against a bare Flask endpoint, measured with wrk.

A benchmark, not a test: it sets up a fresh database and keys directory in a temporary
directory, starts two gunicorn servers with identical settings (Sensei Auth and
bench/bare_app.py), checks one sample response per target, then runs wrk against each target
and prints requests/second, the ratio to the bare endpoint, a table and one JSON line.

    .venv/bin/python bench/token_endpoint.py                  # SQLite (make bench)
    .venv/bin/python bench/token_endpoint.py --postgres postgresql+psycopg://postgres@127.0.0.1:5432/test

Targets: POST /oauth/token (client_credentials, client_secret_basic), GET /v1/me with an API
key and with an access token, POST /oauth/introspect with an API key (introspecting an access
token). The bare endpoint is measured first and last; ratios use the mean of the two runs.
With ``--rounds N`` the whole sequence is repeated and medians are reported (useful on a busy
machine: wrk shares the CPUs with both servers, so the ratios are steadier than the req/s).

Exit status: 0 on success, 2 if wrk is missing, 1 if set-up, a sample request or wrk fails.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median
from urllib.parse import quote, urlencode

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = Path(__file__).resolve().parent
READY_TIMEOUT = 60.0  # seconds for gunicorn to answer its first request
STOP_TIMEOUT = 20.0  # seconds for gunicorn to exit after SIGTERM before SIGKILL


class BenchError(RuntimeError):
    """Set-up, a sample request or wrk failed; the message is shown as one line."""


# -- processes ------------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    url: str
    process: subprocess.Popen
    log_path: Path

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def gunicorn_argv(chdir: Path, port: int, app_spec: str, workers: int, threads: int) -> list[str]:
    # The settings of `sensei serve` (app/cli.py), for both servers.
    return [
        sys.executable, "-m", "gunicorn", "--chdir", str(chdir), "--bind", f"127.0.0.1:{port}",
        "--workers", str(workers), "--worker-class", "gthread", "--threads", str(threads),
        "--graceful-timeout", "20", "--timeout", "30", "--forwarded-allow-ips=", "--no-control-socket",
        app_spec,
    ]


def start_server(name: str, argv: list[str], env: dict, ready_path: str, log_path: Path,
                 started: list[Server]) -> Server:
    url = argv[argv.index("--bind") + 1]
    with log_path.open("wb") as log:  # the child keeps its own descriptor
        # A session of its own: the server is stopped by us (by PID), not by a terminal's ^C.
        process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    server = Server(name, f"http://{url}", process, log_path)
    started.append(server)
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BenchError(f"{name} server exited with status {process.returncode}:\n{server.log_tail()}")
        try:
            with urllib.request.urlopen(server.url + ready_path, timeout=5) as response:
                if response.status == 200:
                    return server
        except (urllib.error.URLError, OSError):
            pass  # not listening yet, or workers still booting
        time.sleep(0.2)
    raise BenchError(f"{name} server did not answer within {READY_TIMEOUT:.0f}s:\n{server.log_tail()}")


def stop_server(server: Server) -> None:
    """SIGTERM the gunicorn master we started (it stops its workers); SIGKILL its group if stuck."""
    process = server.process
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(process.pid, signal.SIGKILL)  # its own session: only the master and its workers
        except ProcessLookupError:
            pass
        process.wait(timeout=STOP_TIMEOUT)


# -- database and credentials ---------------------------------------------------------------


@contextmanager
def fresh_database(postgres_url: str | None, directory: Path):
    """A SQLite file in ``directory``, or a PostgreSQL schema of its own, dropped afterwards."""
    if not postgres_url:
        yield f"sqlite:///{directory / 'sensei.db'}"
        return
    from sqlalchemy import create_engine, text

    schema_name = f"sensei_bench_{os.getpid()}_{secrets.token_hex(4)}"
    admin = create_engine(postgres_url)
    try:
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema_name}"'))
    except Exception as error:
        admin.dispose()
        raise BenchError(f"cannot create schema on {postgres_url}: {type(error).__name__}: {error}") from None
    separator = "&" if "?" in postgres_url else "?"
    try:
        yield f"{postgres_url}{separator}options={quote(f'-csearch_path={schema_name}', safe='')}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema_name}" CASCADE'))
        admin.dispose()


@dataclass
class Credentials:
    client_id: str
    client_secret: str
    api_key: str
    access_token: str = ""


def set_up(settings: dict) -> Credentials:
    """What `sensei init` does, plus an org, a confidential client and an API key."""
    sys.path.insert(0, str(ROOT))
    from app import create_app
    from app.extensions import db
    from app.services import api_keys, clients, orgs, schema, signing_keys

    application = create_app(settings)
    with application.app_context():
        schema.upgrade_schema()
        signing_keys.ensure_signing_key(keys_dir=settings["KEYS_DIR"])
        # Enterprise: no rate limit until one is set, so the run measures work, not 429s.
        org = orgs.create_org(name="Bench Org", tier="enterprise")
        client, secret = clients.create_client(
            org_id=org.id, name="Bench client", redirect_uris=[],
            scopes=["migrations:read", "migrations:write"],
        )
        _key, plaintext = api_keys.create_api_key(org_id=org.id, name="Bench key", scopes=["*"])
        credentials = Credentials(client.client_id, secret or "", plaintext)
        db.session.remove()
        db.engine.dispose()  # nothing of ours holds the database while the servers run
    return credentials


# -- HTTP samples ---------------------------------------------------------------------------


@dataclass
class Target:
    name: str
    label: str
    server: str  # "bare" | "sensei"
    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    body: str = ""
    expect: str = ""  # a JSON key the sample response must carry


def sample(base_url: str, target: Target) -> tuple[int, dict]:
    data = target.body.encode() if target.method == "POST" else None
    request = urllib.request.Request(base_url + target.path, data=data, method=target.method,
                                     headers=target.headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        body = error.read()[:500].decode(errors="replace")
        raise BenchError(f"{target.label}: sample request answered {error.code}: {body}") from None
    except (urllib.error.URLError, OSError, ValueError) as error:
        raise BenchError(f"{target.label}: sample request failed: {error}") from None


def check_sample(base_url: str, target: Target) -> None:
    status, body = sample(base_url, target)
    if status != 200:
        raise BenchError(f"{target.label}: sample request answered {status}, expected 200")
    if target.expect and not body.get(target.expect):
        raise BenchError(f"{target.label}: sample response lacks {target.expect!r}: {json.dumps(body)[:300]}")


# -- wrk ------------------------------------------------------------------------------------


def lua_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def write_lua(directory: Path, target: Target) -> Path:
    lines = [f"wrk.method = {lua_string(target.method)}"]
    if target.body:
        lines.append(f"wrk.body = {lua_string(target.body)}")
    for name, value in target.headers.items():
        lines.append(f"wrk.headers[{lua_string(name)}] = {lua_string(value)}")
    path = directory / f"{target.name}.lua"
    path.write_text("\n".join(lines) + "\n")
    return path


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0, "h": 3600000.0}


def parse_wrk(output: str) -> dict:
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.M)
    if not rps:
        raise BenchError(f"could not find 'Requests/sec' in wrk's output:\n{output}")
    result: dict = {"rps": float(rps.group(1))}
    total = re.search(r"^\s*(\d+) requests in ([\d.]+)(\w+),", output, re.M)
    result["requests"] = int(total.group(1)) if total else None
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    result["non_2xx_3xx"] = int(non2xx.group(1)) if non2xx else 0
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    result["socket_errors"] = sum(int(n) for n in errors.groups()) if errors else 0
    latency = re.search(r"^\s*Latency\s+([\d.]+)(us|ms|s|m|h)", output, re.M)
    result["latency_avg_ms"] = round(float(latency.group(1)) * _UNITS_MS[latency.group(2)], 3) if latency else None
    return result


def run_wrk(url: str, script: Path, seconds: float, threads: int, connections: int) -> dict:
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "10s",
            "-s", str(script), url]
    try:
        completed = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60,
                                   stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise BenchError(f"wrk did not finish within {seconds + 60:.0f}s: {' '.join(argv)}") from None
    if completed.returncode != 0:
        raise BenchError(f"wrk exited with {completed.returncode}: {completed.stderr.strip() or completed.stdout}")
    return parse_wrk(completed.stdout)


def git_revision() -> str | None:
    """The commit measured, with ``-dirty`` when the work tree has changes (None outside git)."""
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


# -- main -----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of wrk per target (default 10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of unmeasured wrk first (default 2)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads, -t (default 2)")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections, -c (default 16)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="measure every target this many times and report medians (default 1)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers for both servers (default 2)")
    parser.add_argument("--worker-threads", type=int, default=4, help="gthread threads per worker (default 4)")
    parser.add_argument("--postgres", metavar="URL", default=None,
                        help="use PostgreSQL, e.g. postgresql+psycopg://postgres@127.0.0.1:5432/test "
                             "(a fresh schema is created and dropped)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, database)")
    args = parser.parse_args(argv)
    if not (1 <= args.duration <= 600 and 0 <= args.warmup <= 60):
        parser.error("--duration must be 1-600 seconds and --warmup 0-60 seconds")
    if not 1 <= args.rounds <= 10:
        parser.error("--rounds must be 1-10")
    if not (1 <= args.threads <= args.connections <= 10000):
        parser.error("need 1 <= --threads <= --connections <= 10000")
    if not (1 <= args.workers <= 64 and 1 <= args.worker_threads <= 64):
        parser.error("--workers and --worker-threads must be 1-64")
    return args


def print_table(rows: list[dict]) -> None:
    header = f"{'target':<44} {'req/s':>9} {'ratio':>7} {'avg lat':>9} {'requests':>9} {'non-2xx':>8} {'sock err':>8}"
    print(header)
    print("-" * len(header))
    for row in rows:
        ratio = f"{row['ratio']:.3f}" if row.get("ratio") is not None else "-"
        latency = f"{row['latency_avg_ms']:.2f}ms" if row.get("latency_avg_ms") else "-"
        print(f"{row['label']:<44} {row['rps']:>9.1f} {ratio:>7} {latency:>9} {row['requests']:>9} "
              f"{row['non_2xx_3xx']:>8} {row['socket_errors']:>8}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        print("error: wrk is not installed; install it (e.g. `apt-get install -y wrk`, `brew install wrk`) "
              "and run the benchmark again", file=sys.stderr)
        return 2

    # SIGTERM/SIGHUP end the run through the finally blocks, so our servers are stopped.
    def _terminate(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)

    tmp = Path(tempfile.mkdtemp(prefix="sensei-bench-"))
    started: list[Server] = []
    try:
        with fresh_database(args.postgres, tmp) as database_url:
            try:
                return run(args, tmp, database_url, started)
            finally:  # before the database goes away
                for server in reversed(started):
                    stop_server(server)
    except BenchError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def run(args: argparse.Namespace, tmp: Path, database_url: str, started: list[Server]) -> int:
    sensei_port, bare_port = free_port(), free_port()
    settings = {
        "DATABASE_URL": database_url,
        "KEYS_DIR": str(tmp / "keys"),
        "ISSUER": f"http://127.0.0.1:{sensei_port}",
        "SECRET_KEY": secrets.token_urlsafe(32),
    }
    print(f"Setting up {'PostgreSQL' if args.postgres else 'SQLite'} database and signing key in {tmp} ...",
          file=sys.stderr)
    try:
        creds = set_up(settings)
    except BenchError:
        raise
    except Exception as error:  # the app's own errors, e.g. a migration that does not apply
        first = (str(error).splitlines() or [""])[0]
        raise BenchError(f"set-up failed: {type(error).__name__}: {first}") from error

    env = {k: v for k, v in os.environ.items() if not k.startswith("SENSEI_")}
    env.update({f"SENSEI_{k}": str(v) for k, v in settings.items()})
    print(f"Starting gunicorn ({args.workers} workers, gthread, {args.worker_threads} threads) "
          f"on :{sensei_port} (sensei) and :{bare_port} (bare) ...", file=sys.stderr)
    servers = {
        "sensei": start_server("sensei", gunicorn_argv(ROOT, sensei_port, "wsgi:app", args.workers,
                                                       args.worker_threads),
                               env, "/.well-known/oauth-authorization-server", tmp / "sensei.log", started),
        "bare": start_server("bare", gunicorn_argv(BENCH_DIR, bare_port, "bare_app:app", args.workers,
                                                   args.worker_threads),
                             env, "/", tmp / "bare.log", started),
    }

    basic = base64.b64encode(f"{quote(creds.client_id, safe='')}:{quote(creds.client_secret, safe='')}"
                             .encode()).decode()
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    token_target = Target("token", "POST /oauth/token (client_credentials)", "sensei", "POST", "/oauth/token",
                          {"Authorization": f"Basic {basic}", **form},
                          urlencode({"grant_type": "client_credentials"}), expect="access_token")
    _, issued = sample(servers["sensei"].url, token_target)
    creds.access_token = issued.get("access_token", "")
    if not creds.access_token:
        raise BenchError(f"the token endpoint issued no access token: {json.dumps(issued)[:300]}")

    bare = Target("bare", "GET / (bare Flask)", "bare", "GET", "/", expect="hello")
    targets = [
        token_target,
        Target("me_api_key", "GET /v1/me (API key)", "sensei", "GET", "/v1/me",
               {"Authorization": f"Bearer {creds.api_key}"}, expect="principal"),
        Target("me_access_token", "GET /v1/me (access token)", "sensei", "GET", "/v1/me",
               {"Authorization": f"Bearer {creds.access_token}"}, expect="principal"),
        Target("introspect_api_key", "POST /oauth/introspect (API key, JWT)", "sensei", "POST",
               "/oauth/introspect", {"Authorization": f"Bearer {creds.api_key}", **form},
               urlencode({"token": creds.access_token}), expect="active"),
    ]
    for target in [bare, *targets]:
        check_sample(servers[target.server].url, target)

    scripts = {target.name: write_lua(tmp, target) for target in [bare, *targets]}
    load_before = os.getloadavg()
    # Each round: bare, every target, bare again; a target's ratio is to that round's bare mean.
    runs: dict[str, list[dict]] = {target.name: [] for target in [bare, *targets]}
    ratios: dict[str, list[float]] = {target.name: [] for target in targets}
    for round_number in range(1, args.rounds + 1):
        if args.rounds > 1:
            print(f"Round {round_number}/{args.rounds}", file=sys.stderr)
        measured: dict[str, dict] = {}
        for index, target in enumerate([bare, *targets, bare]):
            url = servers[target.server].url + target.path
            if args.warmup:
                run_wrk(url, scripts[target.name], args.warmup, args.threads, args.connections)
            print(f"  {target.label:<44} {args.duration:.0f}s ...", end="", file=sys.stderr, flush=True)
            result = run_wrk(url, scripts[target.name], args.duration, args.threads, args.connections)
            print(f" {result['rps']:.1f} req/s", file=sys.stderr)
            measured[target.name if index == 0 or target is not bare else "bare_after"] = result
            for server in servers.values():
                if server.process.poll() is not None:
                    raise BenchError(f"{server.name} server died during the run:\n{server.log_tail()}")
        round_bare = (measured["bare"]["rps"] + measured["bare_after"]["rps"]) / 2
        runs["bare"] += [measured["bare"], measured["bare_after"]]
        for target in targets:
            runs[target.name].append(measured[target.name])
            ratios[target.name].append(measured[target.name]["rps"] / round_bare if round_bare else 0.0)
    load_after = os.getloadavg()

    rows = []
    for target in [bare, *targets]:
        row = {
            "label": target.label + (" (first and last)" if target is bare else ""),
            "rps": median([r["rps"] for r in runs[target.name]]),
            "rps_runs": [round(r["rps"], 1) for r in runs[target.name]],
            "ratio": median(ratios[target.name]) if target is not bare else None,
            "latency_avg_ms": round(median([r["latency_avg_ms"] for r in runs[target.name]
                                            if r["latency_avg_ms"] is not None] or [0.0]), 3),
            "requests": sum(r["requests"] or 0 for r in runs[target.name]),
            "non_2xx_3xx": sum(r["non_2xx_3xx"] for r in runs[target.name]),
            "socket_errors": sum(r["socket_errors"] for r in runs[target.name]),
        }
        rows.append((target.name, row))

    cpus = os.cpu_count() or 1
    print()
    print(f"wrk -t{args.threads} -c{args.connections} -d{args.duration:.0f}s (warm-up {args.warmup:.0f}s), "
          f"{args.rounds} round(s), median shown; gunicorn {args.workers} workers x gthread "
          f"{args.worker_threads} threads; database {'postgresql' if args.postgres else 'sqlite'}; {cpus} CPUs")
    print_table([row for _, row in rows])
    print("ratio = target req/s / mean of the bare runs of the same round (median over rounds)")
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} (1 min)")
    if max(load_before[0], load_after[0]) > cpus:
        print(f"warning: the machine was busy (load average above {cpus} CPUs): req/s are noisy; "
              "compare ratios" + (", or rerun with --rounds 3" if args.rounds < 3 else ""))
    for _, row in rows:
        errors = row["non_2xx_3xx"] + row["socket_errors"]
        row["valid"] = errors <= 0.01 * max(row["requests"], 1)
        if errors:
            print(f"warning: {row['label']}: {row['non_2xx_3xx']} non-2xx/3xx responses and "
                  f"{row['socket_errors']} socket errors in {row['requests']} requests"
                  + ("" if row["valid"] else " -- over 1%: this req/s does not measure successful requests"))
    bare_rps = rows[0][1]["rps"]
    summary = {
        "bench": "token_endpoint",
        "database": "postgresql" if args.postgres else "sqlite",
        "cpus": cpus,
        "python": platform.python_version(),
        "git": git_revision(),
        "loadavg_1m": [round(load_before[0], 2), round(load_after[0], 2)],
        "wrk": {"threads": args.threads, "connections": args.connections, "duration_s": args.duration,
                "warmup_s": args.warmup, "rounds": args.rounds},
        "gunicorn": {"workers": args.workers, "worker_class": "gthread", "threads": args.worker_threads},
        "bare_rps": round(bare_rps, 1),
        "targets": {
            name: {"rps": round(row["rps"], 1), "ratio": round(row["ratio"], 4) if row["ratio"] is not None else None,
                   "rps_runs": row["rps_runs"], "latency_avg_ms": row["latency_avg_ms"], "requests": row["requests"],
                   "non_2xx_3xx": row["non_2xx_3xx"], "socket_errors": row["socket_errors"],
                   "valid": row["valid"]}
            for name, row in rows
        },
    }
    print(json.dumps(summary, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
