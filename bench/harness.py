"""What the benchmarks in bench/ share: processes, databases, wrk, and the machine's description.

Not a benchmark itself. ``bench/run.py`` (``make bench``), ``bench/audit_write_cost.py`` and
``bench/audit_pages.py`` import it (they put ``bench/`` on ``sys.path`` by being run as scripts
from it, and the repository root on ``sys.path`` for ``app``):

- processes: :func:`free_port`, :func:`gunicorn_argv`, :func:`start_server` (a session of its
  own, waits for a 200 on a readiness path), :func:`stop_server` (SIGTERM to the PID we
  started, SIGKILL of its process group after a timeout), worker PIDs, RSS and CPU from /proc;
- databases: :func:`fresh_database` (a SQLite file in a directory, or a PostgreSQL schema of
  its own, created and dropped, selected with ``options=-csearch_path=...``) and
  :func:`app_context` (the app built on given settings, its pool disposed of afterwards);
- wrk: :func:`write_lua`, :func:`parse_wrk`, :func:`run_wrk`;
- description: :func:`git_revision`, :func:`loadavg`, :func:`cpu_model`;
- a script's frame: :func:`guarded_main` (a scratch directory, error messages and exit
  statuses), :func:`add_load_options` (``--duration``/``--warmup``/``--connections``/``--rounds``).
"""

from __future__ import annotations

import argparse
import http.client
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
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

READY_TIMEOUT = 60.0  # seconds for a server to answer its readiness path
STOP_TIMEOUT = 20.0  # seconds for a server to exit after SIGTERM before SIGKILL of its group
SENSEI_READY_PATH = "/.well-known/oauth-authorization-server"


class BenchError(RuntimeError):
    """Set-up, a sample request or the load generator failed; shown as one message."""


_output = sys.stdout


def set_output(stream) -> None:
    """Where :func:`say` writes (stdout unless a script keeps stdout for its result)."""
    global _output
    _output = stream


def say(message: str) -> None:
    print(message, file=_output, flush=True)


def loadavg() -> str:
    """The 1, 5 and 15 minute load averages, e.g. ``"0.52 0.61 0.40"`` (``"?"`` if unknown)."""
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def pct(values: Iterable[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def exit_on_signals() -> None:
    """SIGTERM/SIGHUP unwind through the callers' ``finally`` blocks, so our servers are stopped."""

    def _terminate(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)


def guarded_main(body: Callable[[Path], int], *, prefix: str, keep: bool = False) -> int:
    """``body(tmp)`` in a fresh temporary directory, removed afterwards (unless ``keep``).

    A BenchError is printed as ``error: ...`` and gives status 1, ^C gives 130; SIGTERM and
    SIGHUP unwind the same way, so the servers the body started are stopped."""
    exit_on_signals()
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        return body(tmp)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BenchError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        if keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def add_load_options(parser: argparse.ArgumentParser, *, duration: float, rounds: int,
                     threads: int | None = None) -> None:
    """``--duration``, ``--warmup``, ``--connections``, ``--rounds`` (and ``--threads`` when given
    a default); check them with :func:`check_load_options`."""
    parser.add_argument("--duration", type=float, default=duration,
                        help=f"seconds of load per target and round (default {duration:g})")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of unmeasured load first (default 2)")
    if threads is not None:
        parser.add_argument("--threads", type=int, default=threads, help=f"wrk threads, -t (default {threads})")
    parser.add_argument("--connections", type=int, default=16, help="concurrent connections, wrk -c (default 16)")
    parser.add_argument("--rounds", type=int, default=rounds,
                        help=f"repeat the measurements, report medians (default {rounds})")


def check_load_options(parser: argparse.ArgumentParser, args: argparse.Namespace, max_connections: int) -> None:
    if not (1 <= args.duration <= 600 and 0 <= args.warmup <= 60 and 1 <= args.rounds <= 10):
        parser.error("--duration must be 1-600 s, --warmup 0-60 s, --rounds 1-10")
    if not (getattr(args, "threads", 1) >= 1 and getattr(args, "threads", 1) <= args.connections <= max_connections):
        parser.error(f"need 1 <= --threads <= --connections <= {max_connections}")


# -- processes ------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    name: str
    host: str
    port: int
    process: subprocess.Popen
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def worker_pids(self) -> list[int]:
        """The master's children (gunicorn's workers, node's cluster workers)."""
        return child_pids(self.process.pid)


def gunicorn_argv(app_spec: str, *, chdir: Path, port: int, workers: int = 2, worker_class: str = "gthread",
                  threads: int | None = None, timeout: int | None = None, config: Path | None = None,
                  pythonpath: Path | None = None, extra: Iterable[str] = ()) -> list[str]:
    """``python -m gunicorn`` bound to 127.0.0.1:port; ``threads``/``timeout`` only when given."""
    argv = [sys.executable, "-m", "gunicorn"]
    if config is not None:
        argv += ["-c", str(config)]
    argv += ["--chdir", str(chdir), "--bind", f"127.0.0.1:{port}", "--workers", str(workers),
             "--worker-class", worker_class]
    if threads is not None:
        argv += ["--threads", str(threads)]
    if timeout is not None:
        argv += ["--timeout", str(timeout)]
    argv += ["--forwarded-allow-ips=", "--no-control-socket", *extra]
    if pythonpath is not None:
        argv += ["--pythonpath", str(pythonpath)]
    argv.append(app_spec)
    return argv


def server_env(settings: Mapping[str, object], extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This environment without any ``SENSEI_*``, plus ``SENSEI_<name>`` for each setting."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENSEI_")}
    env.update({f"SENSEI_{k}": str(v) for k, v in settings.items()})
    env.update(extra or {})
    return env


def http_request(host: str, port: int, method: str, path: str, headers: Mapping[str, str] | None = None,
                 body: str | bytes | None = None, *, timeout: float = 30.0,
                 conn: http.client.HTTPConnection | None = None) -> tuple[int, http.client.HTTPMessage, bytes]:
    """One request (on ``conn`` if given, else on a connection of its own): status, headers, body."""
    own = conn is None
    conn = conn or http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=dict(headers or {}))
        response = conn.getresponse()
        return response.status, response.headers, response.read()
    finally:
        if own:
            conn.close()


def start_server(name: str, argv: list[str], *, port: int, env: Mapping[str, str], ready_path: str,
                 log_path: Path, started: list[Server], cwd: Path | None = None,
                 timeout: float = READY_TIMEOUT) -> Server:
    """Start ``argv`` (listening on 127.0.0.1:port) and wait until ``ready_path`` answers 200.

    The server is appended to ``started`` as soon as it runs, so the caller's ``finally`` stops
    it even when it never becomes ready."""
    with log_path.open("wb") as log:  # the child keeps its own descriptor
        # A session of its own: stopped by us, by PID (and its group only if it hangs).
        process = subprocess.Popen(argv, env=dict(env), cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    server = Server(name, "127.0.0.1", port, process, log_path)
    started.append(server)
    say(f"started {name} (PID {process.pid}) on 127.0.0.1:{port}")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:  # bounded by the deadline
        if process.poll() is not None:
            raise BenchError(f"{name} exited with status {process.returncode}:\n{server.log_tail()}")
        try:
            status, _, _ = http_request(server.host, port, "GET", ready_path, timeout=5)
            if status == 200:
                return server
        except (OSError, http.client.HTTPException):
            pass  # not listening yet, or workers still booting
        time.sleep(0.2)
    raise BenchError(f"{name} did not answer within {timeout:.0f}s:\n{server.log_tail()}")


def stop_server(server: Server, timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM the master we started (it stops its workers); SIGKILL its group if it is stuck."""
    process = server.process
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(process.pid, signal.SIGKILL)  # its own session: only that master and its workers
            except ProcessLookupError:
                pass
            process.wait(timeout=timeout)
    say(f"stopped {server.name} (PID {process.pid})")


def stop_all(servers: list[Server]) -> None:
    """Stop every server of the list, newest first, and empty it."""
    while servers:
        stop_server(servers.pop())


@contextmanager
def running_servers() -> Iterator[list[Server]]:
    """A list for :func:`start_server` to add to; every server in it is stopped on the way out."""
    started: list[Server] = []
    try:
        yield started
    finally:
        stop_all(started)


def check_alive(servers: Iterable[Server]) -> None:
    for server in servers:
        if server.process.poll() is not None:
            raise BenchError(f"{server.name} died during the run:\n{server.log_tail()}")


def _proc_stat(pid: int | str) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    except OSError:
        return None  # gone meanwhile, or no /proc


def child_pids(parent: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if entry.isdigit():
            fields = _proc_stat(entry)
            if fields is not None and int(fields[1]) == parent:
                pids.append(int(entry))
    return sorted(pids)


def cpu_seconds(pids: Iterable[int]) -> float:
    """user + system CPU seconds of these processes so far (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        fields = _proc_stat(pid)
        if fields is not None:
            total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


def server_cpu_seconds(server: Server) -> float:
    """CPU seconds of the master and its workers so far."""
    return cpu_seconds([server.process.pid, *server.worker_pids()])


def rss_kib(pid: int) -> int | None:
    """VmRSS of ``pid`` in KiB (None if unknown)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


# -- databases ------------------------------------------------------------------------------------


def schema_url(base_url: str, schema_name: str) -> str:
    """``base_url`` with ``search_path`` set to ``schema_name`` through libpq's ``options``."""
    separator = "&" if "?" in base_url else "?"
    return f"{base_url}{separator}options={quote(f'-csearch_path={schema_name}', safe='')}"


@contextmanager
def postgres_schema(base_url: str, *, label: str = "bench", keep: bool = False,
                    lock_timeout: str = "60s") -> Iterator[str]:
    """A fresh schema (created with a plain connection): yields its URL; dropped afterwards."""
    from sqlalchemy import create_engine, text

    for spelling in ("postgresql://", "postgres://"):  # psycopg 3 is the driver, as in the app
        if base_url.startswith(spelling):
            base_url = "postgresql+psycopg://" + base_url.removeprefix(spelling)
    name = f"sensei_{label}_{os.getpid()}_{secrets.token_hex(3)}"
    admin = create_engine(base_url, pool_pre_ping=True)
    try:
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{name}"'))
    except Exception as error:
        admin.dispose()
        raise BenchError(f"cannot create a schema on {base_url}: {type(error).__name__}: {error}") from None
    say(f"created schema {name}")
    try:
        yield schema_url(base_url, name)
    finally:
        if keep:
            say(f'kept schema {name} (drop it with: DROP SCHEMA "{name}" CASCADE)')
        else:
            started = time.monotonic()
            try:
                with admin.begin() as conn:
                    conn.execute(text(f"SET LOCAL lock_timeout = '{lock_timeout}'"))
                    conn.execute(text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
                say(f"dropped schema {name} ({time.monotonic() - started:.1f}s)")
            except Exception as error:  # report, do not hide the original error
                print(f"warning: could not drop schema {name}: {type(error).__name__}: {error}\n"
                      f'         drop it by hand: DROP SCHEMA "{name}" CASCADE', file=sys.stderr)
        admin.dispose()


@contextmanager
def fresh_database(postgres_url: str | None, directory: Path, *, label: str = "bench") -> Iterator[str]:
    """A SQLite file in ``directory``, or (with ``postgres_url``) a PostgreSQL schema of its own."""
    if not postgres_url:
        yield f"sqlite:///{directory / 'sensei.db'}"
        return
    with postgres_schema(postgres_url, label=label) as url:
        yield url


def sensei_settings(database_url: str, keys_dir: Path, issuer: str, **extra: object) -> dict:
    """The settings a benchmark's Sensei Auth runs with (a fresh secret key each time)."""
    return {"DATABASE_URL": database_url, "KEYS_DIR": str(keys_dir), "ISSUER": issuer,
            "SECRET_KEY": secrets.token_urlsafe(32), **extra}


@contextmanager
def app_context(settings: Mapping[str, object]):
    """The app built on ``settings``, in an app context; afterwards nothing of ours holds the
    database (the session is removed and the pool disposed of)."""
    from app import create_app
    from app.extensions import db

    application = create_app(dict(settings))
    with application.app_context():
        try:
            yield application
        finally:
            db.session.remove()
            db.engine.dispose()


def prepare_schema(settings: Mapping[str, object]) -> None:
    """What `sensei init` does: the migrations and a signing key (call inside :func:`app_context`)."""
    from app.services import schema, signing_keys

    schema.upgrade_schema()
    signing_keys.ensure_signing_key(keys_dir=str(settings["KEYS_DIR"]))


# -- wrk -----------------------------------------------------------------------------------------


def lua_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def write_lua(path: Path, method: str = "GET", headers: Mapping[str, str] | None = None, body: str = "") -> Path:
    """A wrk script setting the method, body and headers of every request."""
    lines = [f"wrk.method = {lua_string(method)}"]
    if body:
        lines.append(f"wrk.body = {lua_string(body)}")
    lines += [f"wrk.headers[{lua_string(k)}] = {lua_string(v)}" for k, v in (headers or {}).items()]
    path.write_text("\n".join(lines) + "\n")
    return path


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0, "h": 3600000.0}


def parse_wrk(output: str) -> dict:
    """req/s, requests, non-2xx/3xx responses, socket errors and average latency of a wrk run."""
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.M)
    if not rps:
        raise BenchError(f"could not find 'Requests/sec' in wrk's output:\n{output}")
    total = re.search(r"^\s*(\d+) requests in ([\d.]+)(\w+),", output, re.M)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    latency = re.search(r"^\s*Latency\s+([\d.]+)(us|ms|s|m|h)", output, re.M)
    return {
        "rps": float(rps.group(1)),
        "requests": int(total.group(1)) if total else 0,
        "non_2xx_3xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": sum(int(n) for n in errors.groups()) if errors else 0,
        "socket_error_detail": dict(zip(("connect", "read", "write", "timeout"),
                                        (int(n) for n in errors.groups()), strict=True)) if errors else {},
        "latency_avg_ms": round(float(latency.group(1)) * _UNITS_MS[latency.group(2)], 3) if latency else None,
    }


def run_wrk(url: str, script: Path, seconds: float, *, threads: int = 1, connections: int = 16,
            wrk: str = "wrk", timeout: str = "10s") -> dict:
    argv = [wrk, f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", timeout,
            "-s", str(script), url]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise BenchError(f"wrk did not finish within {seconds + 60:.0f}s: {' '.join(argv)}") from None
    if done.returncode != 0:
        raise BenchError(f"wrk exited with {done.returncode}: {done.stderr.strip() or done.stdout}")
    return parse_wrk(done.stdout)


# -- the machine and the code measured ------------------------------------------------------------


def git_revision() -> str | None:
    """The commit measured, with ``-dirty`` when tracked files have changes (None outside git)."""
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


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"
