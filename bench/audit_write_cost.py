#!/usr/bin/env python3
"""The cost of the audit write on the API-key GET path, on SQLite and PostgreSQL.

A benchmark, not a test: it asserts nothing and pytest does not collect it.

Every authenticated /v1 read ends with ``audit.record_now(...)`` (one INSERT into audit_events
and a COMMIT, app/api/auth.py ``require_principal``). This measures what that costs:

1. In-process: for each backend, ``--calls`` calls of ``app.services.audit.record_now`` in an
   app context (no server running, so no sealer competes): per-call median / mean / p95 in ms,
   its CPU time in this process, and the same work split into ``record()`` (build + add the ORM
   object) and ``db.session.commit()`` (flush the INSERT + COMMIT); then one ``seal_pending()``
   over those entries: the background sealer's later work, per entry.
2. Over HTTP, real gunicorn servers with the settings of `sensei serve` (2 workers, gthread,
   4 threads) on free loopback ports:
     - ``bare``: bench/bare_app.py (one Flask route returning {"hello": "world"});
     - per backend, ``wsgi:app`` (the real server) and ``bench/wsgi_no_audit.py`` (the same app
       with ``record_now`` replaced by a no-op: everything but the audit write), both on the same
       database (a SQLite file in a temporary directory; a fresh PostgreSQL schema, dropped after).
   Targets: GET /v1/api-keys/{id} and GET /v1/me with an API key of an enterprise organization
   (no rate limit applies).
   a. sequential latency: ``--latency-requests`` requests per target over one keep-alive
      connection, in 5 interleaved passes (median, p95): audited minus not audited is the audit
      write as a caller sees it on an idle server;
   b. throughput with wrk (``-t2 -c16``, warm-up then ``--duration`` s; order: bare, targets
      (each audited one next to its no-audit twin), bare again; ratio = req/s / mean of the two
      bare runs), and the gunicorn processes' CPU time per response (/proc). Without
      /usr/bin/wrk (or with ``--no-wrk``) a bounded Python thread-pool load generator is used
      instead (http.client,
      ``--connections`` threads, same durations; it shares the CPUs and the GIL, so its numbers
      are lower and only comparable with each other).
3. Checks that the audited server wrote one audit row per request it answered.

    .venv/bin/python bench/audit_write_cost.py                 # SQLite + PostgreSQL, ~4 min
    .venv/bin/python bench/audit_write_cost.py --rounds 3      # medians of 3 (busy machines)
    .venv/bin/python bench/audit_write_cost.py --no-postgres   # SQLite only

Exit status: 0 on success, 1 if set-up, a sample request or the load generator fails.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from statistics import mean, median

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
    free_port,
    guarded_main,
    gunicorn_argv,
    http_request,
    loadavg,
    pct,
    postgres_schema,
    prepare_schema,
    running_servers,
    say,
    sensei_settings,
    server_cpu_seconds,
    server_env,
    write_lua,
)
from harness import run_wrk as harness_run_wrk
from harness import start_server as harness_start_server

DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
WRK = "/usr/bin/wrk"


# -- databases ----------------------------------------------------------------------------------


@dataclass
class Backend:
    name: str  # "sqlite" | "postgresql"
    settings: dict
    org_id: str = ""
    key_id: str = ""
    api_key: str = ""
    record_now: dict = field(default_factory=dict)


def set_up(backend: Backend) -> None:
    """What `sensei init` does, plus an enterprise organization and an API key with scope *."""
    from app.services import api_keys, orgs

    with app_context(backend.settings):
        prepare_schema(backend.settings)
        org_id = orgs.create_org(name="Bench write-cost org", tier="enterprise").id
        key, plaintext = api_keys.create_api_key(org_id=org_id, name="Bench key", scopes=["*"])
        backend.org_id, backend.key_id, backend.api_key = org_id, key.id, plaintext


def audit_rows(backend: Backend) -> int:
    from sqlalchemy import func, select

    from app.extensions import db
    from app.models import AuditEvent

    with app_context(backend.settings):
        count = db.session.scalar(select(func.count()).select_from(AuditEvent)
                                  .where(AuditEvent.org_id == backend.org_id))
    return int(count or 0)


def time_record_now(backend: Backend, calls: int) -> dict:
    """Per-call time of record_now (record + commit) in an app context, and its two parts."""
    from app.extensions import db
    from app.services import audit
    from app.services.audit import AuditContext

    fields = {"org_id": backend.org_id, "action": "api_keys.read", "resource": backend.key_id}

    def context() -> AuditContext:
        return AuditContext(actor_type="api_key", actor_id=backend.key_id, actor_name="Bench key",
                            ip_address="127.0.0.1", user_agent="wrk/4.1.0")

    with app_context(backend.settings):
        audit.seal_pending()  # the set-up's own entries
        for _ in range(min(100, calls)):  # warm-up: connection, statement caches
            audit.record_now(context(), **fields)
        audit.seal_pending()
        whole: list[float] = []
        cpu = time.process_time()
        for _ in range(calls):  # bounded
            ctx = context()
            t = time.perf_counter()
            audit.record_now(ctx, **fields)
            whole.append((time.perf_counter() - t) * 1000)
        cpu = (time.process_time() - cpu) * 1000 / calls
        # What the server's background sealer then does for each of these entries (SELECT them,
        # hash-chain them, UPDATE each one and the chain head), in batches of 1000.
        t = time.perf_counter()
        seal_cpu = time.process_time()
        sealed = audit.seal_pending()
        seal_ms = (time.perf_counter() - t) * 1000 / max(sealed, 1)
        seal_cpu = (time.process_time() - seal_cpu) * 1000 / max(sealed, 1)
        build: list[float] = []
        commit: list[float] = []
        for _ in range(calls):  # the same work in its two halves
            ctx = context()
            t0 = time.perf_counter()
            audit.record(ctx, **fields)
            t1 = time.perf_counter()
            db.session.commit()
            t2 = time.perf_counter()
            build.append((t1 - t0) * 1000)
            commit.append((t2 - t1) * 1000)
    return {
        "calls": calls,
        "median_ms": median(whole), "mean_ms": mean(whole), "p95_ms": pct(whole, 0.95),
        "python_cpu_ms": cpu,
        "record_median_ms": median(build), "commit_median_ms": median(commit),
        "commit_p95_ms": pct(commit, 0.95),
        "seal_per_entry_ms": seal_ms, "seal_python_cpu_per_entry_ms": seal_cpu, "sealed": sealed,
    }


# -- servers -------------------------------------------------------------------------------------


def start_server(name: str, app_spec: str, chdir: Path, env: dict, ready_path: str, log_path: Path,
                 started: list[Server], pythonpath: Path | None = None) -> Server:
    """gunicorn with the settings of `sensei serve` (2 workers, gthread, 4 threads) on a free port."""
    port = free_port()
    argv = gunicorn_argv(app_spec, chdir=chdir, port=port, workers=2, worker_class="gthread", threads=4,
                         timeout=60, pythonpath=pythonpath)
    return harness_start_server(name, argv, port=port, env=env, ready_path=ready_path, log_path=log_path,
                                started=started)


# -- requests ------------------------------------------------------------------------------------


def get(server: Server, path: str, headers: dict, conn: http.client.HTTPConnection | None = None
        ) -> tuple[int, bytes]:
    status, _, body = http_request(server.host, server.port, "GET", path, headers, conn=conn)
    return status, body


@dataclass
class Target:
    name: str
    label: str
    server: Server
    path: str
    headers: dict
    expect: str
    backend: Backend | None = None
    audited: bool = False


def check_sample(target: Target) -> None:
    status, body = get(target.server, target.path, target.headers)
    if status != 200:
        raise BenchError(f"{target.label}: sample request answered {status}: {body[:300]!r}")
    if target.expect not in json.loads(body or b"{}"):
        raise BenchError(f"{target.label}: sample response lacks {target.expect!r}: {body[:300]!r}")


def latency(targets: list[Target], n: int, passes: int = 5) -> dict[str, dict]:
    """``n`` sequential requests per target over one keep-alive connection each, taken in
    ``passes`` interleaved passes (so a change of machine load hits every target alike)."""
    conns = {t.name: http.client.HTTPConnection(t.server.host, t.server.port, timeout=30) for t in targets}
    times: dict[str, list[float]] = {t.name: [] for t in targets}
    try:
        for p in range(passes):
            for target in targets:
                conn = conns[target.name]
                warm = 20 if p == 0 else 0
                for i in range(warm + max(1, n // passes)):  # bounded
                    t = time.perf_counter()
                    status, _ = get(target.server, target.path, target.headers, conn)
                    if status != 200:
                        raise BenchError(f"{target.label}: {status}")
                    if i >= warm:
                        times[target.name].append((time.perf_counter() - t) * 1000)
    finally:
        for conn in conns.values():
            conn.close()
    return {name: {"median_ms": median(v), "p95_ms": pct(v, 0.95), "n": len(v)} for name, v in times.items()}


# -- load generators -----------------------------------------------------------------------------

def run_wrk(target: Target, script: Path, seconds: float, threads: int, connections: int) -> dict:
    result = harness_run_wrk(target.server.url + target.path, script, seconds, threads=threads,
                             connections=connections, wrk=WRK)
    result["errors"] = result["non_2xx_3xx"] + result["socket_errors"]
    return result


def run_python_load(target: Target, seconds: float, connections: int) -> dict:
    """``connections`` threads, each with one keep-alive connection, for ``seconds``."""
    deadline = time.monotonic() + seconds
    counts = [0] * connections
    errors = [0] * connections
    busy = [0.0] * connections

    def worker(i: int) -> None:
        conn = http.client.HTTPConnection(target.server.host, target.server.port, timeout=10)
        try:
            while time.monotonic() < deadline:  # bounded by the deadline
                t = time.perf_counter()
                try:
                    status, _ = get(target.server, target.path, target.headers, conn)
                except (OSError, http.client.HTTPException):
                    errors[i] += 1
                    conn.close()
                    conn = http.client.HTTPConnection(target.server.host, target.server.port, timeout=10)
                    continue
                busy[i] += time.perf_counter() - t
                if status == 200:
                    counts[i] += 1
                else:
                    errors[i] += 1
        finally:
            conn.close()

    started = time.monotonic()
    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=seconds + 30)
    elapsed = time.monotonic() - started
    done = sum(counts)
    return {"rps": done / elapsed, "requests": done + sum(errors), "errors": sum(errors),
            "latency_avg_ms": sum(busy) / done * 1000 if done else None}


# -- main ------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_load_options(parser, duration=10.0, rounds=1, threads=2)
    parser.add_argument("--calls", type=int, default=2000, help="in-process record_now calls per backend (2000)")
    parser.add_argument("--latency-requests", type=int, default=500,
                        help="sequential requests per target for latency, in 5 interleaved passes (default 500)")
    parser.add_argument("--postgres", default=DEFAULT_PG, metavar="URL", help=f"default {DEFAULT_PG}")
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    parser.add_argument("--no-wrk", action="store_true", help="use the Python load generator even if wrk exists")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    args = parser.parse_args(argv)
    check_load_options(parser, args, max_connections=1000)
    if not (10 <= args.calls <= 100_000 and 10 <= args.latency_requests <= 100_000):
        parser.error("--calls and --latency-requests must be 10-100000")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    use_wrk = not args.no_wrk and os.access(WRK, os.X_OK)
    say(f"audit_write_cost: {os.cpu_count()} CPUs, load {loadavg()}, load generator "
        + ("wrk" if use_wrk else "Python threads (no /usr/bin/wrk)" if not args.no_wrk else "Python threads"))

    def body(tmp: Path) -> int:
        with ExitStack() as stack:
            urls = {"sqlite": f"sqlite:///{tmp / 'sensei.db'}"}
            if not args.no_postgres:
                urls["postgresql"] = stack.enter_context(postgres_schema(args.postgres, label="bench_write"))
            with running_servers() as started:  # stopped before the schema goes away
                return run(args, tmp, urls, started, use_wrk)

    return guarded_main(body, prefix="sensei-bench-write-")


def run(args: argparse.Namespace, tmp: Path, urls: dict, started: list[Server], use_wrk: bool) -> int:
    backends = []
    for name, url in urls.items():
        backend = Backend(name, sensei_settings(url, tmp / f"keys-{name}", "http://127.0.0.1"))
        set_up(backend)
        say(f"{name}: org {backend.org_id}, key {backend.key_id}; timing {args.calls} record_now calls "
            f"(load {loadavg()}) ...")
        backend.record_now = time_record_now(backend, args.calls)
        r = backend.record_now
        say(f"  record_now: median {r['median_ms']:.3f} ms, mean {r['mean_ms']:.3f} ms, p95 {r['p95_ms']:.3f} ms"
            f"  (record() {r['record_median_ms']:.3f} ms + commit {r['commit_median_ms']:.3f} ms, medians); "
            f"sealing {r['seal_per_entry_ms']:.3f} ms per entry")
        backends.append(backend)

    bare = start_server("bare", "bare_app:app", BENCH_DIR, server_env({}), "/", tmp / "bare.log", started)
    targets: list[Target] = []
    for backend in backends:
        env = server_env(backend.settings)
        real = start_server(f"sensei-{backend.name}", "wsgi:app", ROOT, env,
                            SENSEI_READY_PATH, tmp / f"{backend.name}.log", started)
        plain = start_server(f"sensei-{backend.name}-no-audit", "wsgi_no_audit:app", ROOT, env,
                             SENSEI_READY_PATH, tmp / f"{backend.name}-no-audit.log",
                             started, pythonpath=BENCH_DIR)
        auth = {"Authorization": f"Bearer {backend.api_key}", "User-Agent": "wrk/4.1.0"}
        # Each endpoint audited, then not audited: the two of a pair are measured back to back.
        for kind, label, path, expect in (("key", "GET /v1/api-keys/{id}", f"/v1/api-keys/{backend.key_id}", "id"),
                                          ("me", "GET /v1/me", "/v1/me", "principal")):
            for server, audited in ((real, True), (plain, False)):
                targets.append(Target(f"{backend.name}_{kind}" + ("" if audited else "_noaudit"),
                                      f"{backend.name}: {label}" + ("" if audited else " [no audit]"),
                                      server, path, auth, expect, backend, audited))
    bare_target = Target("bare", "bare Flask: GET /", bare, "/", {"User-Agent": "wrk/4.1.0"}, "hello")
    for target in [bare_target, *targets]:
        check_sample(target)

    # a. sequential latency
    say(f"\nsequential latency, {args.latency_requests} requests per target, one keep-alive connection "
        f"(load {loadavg()})")
    lat = latency([bare_target, *targets], args.latency_requests)
    for target in [bare_target, *targets]:
        say(f"  {target.label:<48} median {lat[target.name]['median_ms']:6.3f} ms  "
            f"p95 {lat[target.name]['p95_ms']:6.3f} ms")

    # b. throughput
    rows_before = {b.name: audit_rows(b) for b in backends}
    audited_requests = {b.name: 0 for b in backends}
    scripts = ({t.name: write_lua(tmp / f"{t.name}.lua", "GET", t.headers) for t in [bare_target, *targets]}
               if use_wrk else {})

    def load(target: Target, seconds: float) -> dict:
        if use_wrk:
            return run_wrk(target, scripts[target.name], seconds, args.threads, args.connections)
        return run_python_load(target, seconds, args.connections)

    runs: dict[str, list[dict]] = {t.name: [] for t in [bare_target, *targets]}
    ratios: dict[str, list[float]] = {t.name: [] for t in targets}
    generator = f"wrk -t{args.threads}" if use_wrk else "Python threads"
    say(f"\nthroughput: {generator} -c{args.connections}, "
        f"{args.warmup:g}s warm-up + {args.duration:g}s per target, {args.rounds} round(s) (load {loadavg()})")
    load_before = loadavg()
    for round_number in range(1, args.rounds + 1):
        measured: dict[str, dict] = {}
        for index, target in enumerate([bare_target, *targets, bare_target]):
            if args.warmup:
                warm = load(target, args.warmup)
                if target.audited:
                    audited_requests[target.backend.name] += warm["requests"]
            cpu = server_cpu_seconds(target.server)
            result = load(target, args.duration)
            cpu = server_cpu_seconds(target.server) - cpu
            result["server_cpu_ms_per_request"] = cpu * 1000 / result["requests"] if result["requests"] else None
            if target.audited:
                audited_requests[target.backend.name] += result["requests"]
            key = "bare_after" if index > 0 and target is bare_target else target.name
            measured[key] = result
            say(f"  [{round_number}] {target.label:<48} {result['rps']:8.1f} req/s  avg lat "
                f"{result['latency_avg_ms'] or 0:6.2f} ms  server CPU {result['server_cpu_ms_per_request'] or 0:.3f} "
                f"ms/req  errors {result['errors']}  (load {loadavg()})")
            check_alive(started)
        bare_rps = (measured["bare"]["rps"] + measured["bare_after"]["rps"]) / 2
        runs["bare"] += [measured["bare"], measured["bare_after"]]
        for target in targets:
            runs[target.name].append(measured[target.name])
            ratios[target.name].append(measured[target.name]["rps"] / bare_rps if bare_rps else 0.0)
    load_after = loadavg()
    time.sleep(2.5)  # let the sealers finish (they do not change the row count, only seal)
    rows_after = {b.name: audit_rows(b) for b in backends}

    # -- report --------------------------------------------------------------------------------
    say(f"\n== audit write cost (load average before {load_before}, after {load_after}; {os.cpu_count()} CPUs)")
    say("\nin-process app.services.audit.record_now (INSERT + COMMIT), per call; then seal_pending() "
        "(the background sealer's work), per entry:")
    say(f"  {'backend':<11} {'median':>9} {'mean':>9} {'p95':>9} {'py CPU':>9} {'record()':>9} {'commit':>9}"
        f" {'seal/entry':>11} {'seal CPU':>9}")
    for b in backends:
        r = b.record_now
        say(f"  {b.name:<11} {r['median_ms']:7.3f}ms {r['mean_ms']:7.3f}ms {r['p95_ms']:7.3f}ms "
            f"{r['python_cpu_ms']:7.3f}ms {r['record_median_ms']:7.3f}ms {r['commit_median_ms']:7.3f}ms "
            f"{r['seal_per_entry_ms']:9.3f}ms {r['seal_python_cpu_per_entry_ms']:7.3f}ms   "
            f"({r['calls']} calls, {r['sealed']} sealed)")
    say("  (py CPU = this Python process's CPU time per call; the database server's CPU is not in it)")

    bare_median = median(r["rps"] for r in runs["bare"])
    say(f"\nthroughput (median of {args.rounds} round(s)); ratio = req/s / bare Flask of the same round")
    def cpu_of(name: str) -> float:
        return median(r["server_cpu_ms_per_request"] or 0.0 for r in runs[name])

    header = (f"  {'target':<48} {'req/s':>8} {'ratio':>7} {'Δ vs no-audit':>14} {'CPU/req':>9} "
              f"{'lat p50':>9} {'lat p95':>9} {'errors':>7}")
    say(header)
    say(f"  {'bare Flask: GET / (first and last)':<48} {bare_median:8.1f} {'1':>7} {'':>14} "
        f"{cpu_of('bare'):7.3f}ms {lat['bare']['median_ms']:7.3f}ms {lat['bare']['p95_ms']:7.3f}ms "
        f"{sum(r['errors'] for r in runs['bare']):>7}")
    summary: dict = {"bench": "audit_write_cost", "cpus": os.cpu_count(), "load_before": load_before,
                     "load_after": load_after, "generator": "wrk" if use_wrk else "python",
                     "bare_rps": round(bare_median, 1), "bare_latency_ms": round(lat["bare"]["median_ms"], 3),
                     "record_now": {b.name: {k: round(v, 4) for k, v in b.record_now.items()} for b in backends},
                     "targets": {}}
    for target in targets:
        rps = median(r["rps"] for r in runs[target.name])
        ratio = median(ratios[target.name])
        delta = ""
        if target.audited:
            twin = target.name + "_noaudit"
            twin_rps = median(r["rps"] for r in runs[twin])
            delta = f"{(rps / twin_rps - 1) * 100:+.1f}% rps"
            lat_delta = lat[target.name]["median_ms"] - lat[twin]["median_ms"]
            delta_lat = round(lat_delta, 3)
        else:
            delta_lat = None
        errors = sum(r["errors"] for r in runs[target.name])
        say(f"  {target.label:<48} {rps:8.1f} {ratio:7.3f} {delta:>14} {cpu_of(target.name):7.3f}ms "
            f"{lat[target.name]['median_ms']:7.3f}ms {lat[target.name]['p95_ms']:7.3f}ms {errors:>7}")
        summary["targets"][target.name] = {
            "rps": round(rps, 1), "ratio": round(ratio, 4), "rps_runs": [round(r["rps"], 1) for r in runs[target.name]],
            "server_cpu_ms_per_request": round(cpu_of(target.name), 4),
            "latency_median_ms": round(lat[target.name]["median_ms"], 3),
            "latency_p95_ms": round(lat[target.name]["p95_ms"], 3),
            "latency_minus_no_audit_ms": delta_lat, "errors": errors}

    say("  CPU/req = user+system CPU of that server's gunicorn processes during the run / responses "
        "(the database server's and wrk's CPU are not in it)")
    summary["bare_server_cpu_ms_per_request"] = round(cpu_of("bare"), 4)
    say("\nattribution per backend and endpoint: audited minus not audited")
    for b in backends:
        for kind in ("key", "me"):
            name = f"{b.name}_{kind}"
            say(f"  {b.name:<11} {kind:<4} server CPU {cpu_of(name):.3f} - {cpu_of(name + '_noaudit'):.3f} = "
                f"{cpu_of(name) - cpu_of(name + '_noaudit'):+.3f} ms/req; req/s "
                f"{median(r['rps'] for r in runs[name]):.0f} vs {median(r['rps'] for r in runs[name + '_noaudit']):.0f}")
    say("\nattribution (sequential latency, audited minus not audited, vs in-process record_now median):")
    for b in backends:
        for kind in ("key", "me"):
            name = f"{b.name}_{kind}"
            d = lat[name]["median_ms"] - lat[f"{name}_noaudit"]["median_ms"]
            share = d / lat[name]["median_ms"] * 100 if lat[name]["median_ms"] else 0
            say(f"  {b.name:<11} {kind:<4} request {lat[name]['median_ms']:6.3f} ms, of which audit write "
                f"≈ {d:6.3f} ms ({share:4.1f}%); record_now alone {b.record_now['median_ms']:.3f} ms")
    say("\naudit rows written during the throughput runs (one per audited request answered):")
    for b in backends:
        written = rows_after[b.name] - rows_before[b.name]
        say(f"  {b.name:<11} {written:,} rows for {audited_requests[b.name]:,} responses counted by the load generator"
            " (requests still in flight when a run ends are answered and audited but not counted)")
        summary.setdefault("audit_rows", {})[b.name] = {"written": written, "requests": audited_requests[b.name]}
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))
    say(json.dumps(summary, separators=(",", ":"), ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
