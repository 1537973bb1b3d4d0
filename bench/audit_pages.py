#!/usr/bin/env python3
"""Latency of filtered pages of GET /v1/audit-logs on a 10-million-row audit log (PostgreSQL).

A benchmark, not a test: it asserts nothing and pytest does not collect it.

1. Creates a fresh PostgreSQL schema, applies the app's migrations into it (as `sensei init`
   does), creates one enterprise organization (the one measured) and three smaller ones.
2. Seeds ``--rows`` audit_events rows (default 10,000,000) for the measured organization, plus
   2 %, 0.5 % and 0.1 % of that for the others, with server-side SQL
   (``INSERT ... SELECT ... FROM generate_series``, one transaction per ``--batch`` rows).
   Distributions: 20 actions and 50 actors, both skewed (index = floor(n * random()^2), so the
   commonest action is ~22 % of rows and the rarest ~2.5 %; actors ~14 % .. ~1 %); ~3 %
   failures, except that the last four actors never fail; ``created_at`` increases with
   ``seq`` evenly over the past 365 days. ``prev_hash``/``hash`` are dummy 64-character
   strings (this measures queries, not the chain); each organization's ``audit_chain_heads``
   row is set to its last ``seq``. To load fast, the table's constraints and indexes are
   dropped first and re-created afterwards from their own definitions (checked to be identical
   to what the migrations made), then ``VACUUM (ANALYZE)`` leaves the table as autovacuum would.
3. Starts a real gunicorn (2 workers, gthread, 4 threads: the settings of `sensei serve`),
   creates an API key with scope ``*`` and measures, with ``requests`` over one keep-alive
   connection, the latency of each case (warm-up, then ``--requests`` samples; median, p95,
   min, max). Every call also writes its own audit entry (that is part of the request path);
   ``GET /v1/me`` is measured as the floor (authentication + audit write, no list query).
4. Prints ``EXPLAIN (ANALYZE, BUFFERS)`` of the page query of ``--explain`` cases (default:
   ``action`` and ``deep_cursor``) and of every case slower than ``--slow-ms``. The SQL is
   captured from ``app.services.audit.list_events`` itself (SQLAlchemy ``before_cursor_execute``),
   so it is exactly what the server runs.
5. For each slow case, EXPLAIN ANALYZEs the proposed fix on the same data (``--no-proposals``
   skips this; the app code is not changed): for a cursor page, the cursor predicate rewritten
   as a row-value comparison and as a redundant ``created_at <=`` bound; for a combination of
   filters, (1) an index for exactly that combination and (2) the walked filter index with the
   other filter columns INCLUDEd plus the page read as ids first. Index changes are made in a
   transaction that is rolled back (each costs one index build: ~25 s at 10M rows).
6. Stops the server (by PID) and drops the schema (also on Ctrl-C, SIGTERM or failure).

    .venv/bin/python bench/audit_pages.py                     # 10M rows: ~10-15 min on 2 cores
    .venv/bin/python bench/audit_pages.py --rows 200000       # a quick run (~1 min)

Exit status: 0 on success, 1 if set-up, a request or the server fails.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import string
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from statistics import median

import requests
from harness import (
    ROOT,
    SENSEI_READY_PATH,
    BenchError,
    Server,
    app_context,
    free_port,
    guarded_main,
    gunicorn_argv,
    loadavg,
    pct,
    postgres_schema,
    prepare_schema,
    running_servers,
    say,
    sensei_settings,
    server_env,
    start_server,
)

DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
REQUEST_TIMEOUT = 120.0

# -- the data -------------------------------------------------------------------------------

# Commonest first: the seeding picks index floor(20 * random()^2), so me.read is ~22 % of the
# rows and oauth.refresh_token.reuse_detected ~2.5 %. The second field is the resource prefix
# ('' = no resource, as for list calls).
ACTIONS = [
    ("me.read", ""), ("api_keys.read", "key_"), ("api_keys.list", ""), ("service_accounts.read", "sa_"),
    ("audit_logs.list", ""), ("service_accounts.list", ""), ("oauth.consent.grant", "cns_"),
    ("api_keys.create", "key_"), ("users.update", "usr_"), ("api_keys.update", "key_"),
    ("service_accounts.update", "sa_"), ("oauth_clients.rotate_secret", "cli_"), ("users.create", "usr_"),
    ("api_keys.delete", "key_"), ("oauth.consent.revoke", "cns_"), ("service_accounts.create", "sa_"),
    ("oauth_clients.create", "cli_"), ("users.delete", "usr_"), ("service_accounts.delete", "sa_"),
    ("oauth.refresh_token.reuse_detected", "fam_"),
]
N_ACTORS = 50
NEVER_FAILING_ACTORS = 4  # the last four actors (the rarest ones) never fail
FAILURE_RATE = 0.031  # for the other actors: ~3 % of all rows overall
OTHER_ORGS = (0.02, 0.005, 0.001)  # rows of the other organizations, as fractions of --rows
BASE62 = string.digits + string.ascii_letters


@dataclass(frozen=True)
class Actor:
    type: str
    id: str
    name: str
    ip: str
    user_agent: str


def make_actors(n: int = N_ACTORS) -> list[Actor]:
    """50 deterministic actors: API keys, users, service accounts and OAuth clients."""
    rng = random.Random(20240601)

    def rid(prefix: str) -> str:
        return prefix + "".join(rng.choice(BASE62) for _ in range(20))

    agents = ["python-requests/2.32.3", "curl/8.5.0", "sensei-sdk-go/1.4.2", "terraform-provider-sensei/0.9.1",
              "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) "
              "Version/17.5 Safari/605.1.15",
              "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
              "Chrome/126.0.0.0 Safari/537.36"]
    actors = []
    for i in range(n):
        if i % 4 == 0:
            kind, ident, name = "api_key", rid("key_"), f"Deploy key {i}"
        elif i % 4 == 1:
            kind, ident, name = "user", rid("usr_"), f"user{i}@example.com"
        elif i % 4 == 2:
            kind, ident, name = "service_account", rid("sa_"), f"ci-bot-{i}"
        else:
            kind, ident, name = "client", rid("cli_"), f"Partner app {i}"
        ip = f"203.0.113.{10 + i}" if i % 3 else f"2001:db8::{i:x}"
        actors.append(Actor(kind, ident, name, ip, agents[i % len(agents)]))
    return actors


def action_index_share(k: int, n: int) -> float:
    """The share of rows with index k of n under floor(n * random()^2)."""
    return ((k + 1) / n) ** 0.5 - (k / n) ** 0.5


# -- seeding ----------------------------------------------------------------------------------

INSERT_SQL = """
INSERT INTO audit_events (id, org_id, seq, created_at, actor_type, actor_id, actor_name, action, resource,
                          ip_address, user_agent, result, prev_hash, hash)
SELECT 'log_' || substr(h, 1, 20),
       CAST(:org AS text),
       g,
       CAST(:t0 AS timestamptz) + make_interval(secs => (g - 1) * CAST(:step AS double precision)),
       (CAST(:actor_types AS text[]))[a],
       (CAST(:actor_ids AS text[]))[a],
       (CAST(:actor_names AS text[]))[a],
       (CAST(:actions AS text[]))[c],
       NULLIF((CAST(:prefixes AS text[]))[c], '') || substr(md5(CAST(g % 4999 AS text)), 1, 20),
       (CAST(:ips AS text[]))[a],
       (CAST(:agents AS text[]))[a],
       CASE WHEN a <= CAST(:failing AS int) AND r < CAST(:fail_rate AS double precision)
            THEN 'failure' ELSE 'success' END,
       md5(h) || h,
       h || md5(h)
FROM (SELECT g,
             md5(CAST(:org AS text) || ':' || g) AS h,
             1 + floor(CAST(:n_actors AS int) * random() ^ 2)::int AS a,
             1 + floor(CAST(:n_actions AS int) * random() ^ 2)::int AS c,
             random() AS r
      FROM generate_series(CAST(:lo AS bigint), CAST(:hi AS bigint)) AS g
      OFFSET 0) AS s
"""


@dataclass
class Dataset:
    main_org: str
    rows: int
    t0: datetime
    t_end: datetime
    actors: list[Actor]
    other_orgs: dict[str, int] = field(default_factory=dict)


def table_ddl(conn) -> tuple[list[tuple[str, str, str]], list[tuple[str, str]]]:
    """(constraints: name, type, definition) and (indexes not behind a constraint: name, CREATE ...)."""
    from sqlalchemy import text

    constraints = [tuple(r) for r in conn.execute(text(
        "SELECT conname, contype, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE conrelid = 'audit_events'::regclass AND contype IN ('p', 'u', 'f') ORDER BY conname"))]
    names = {c[0] for c in constraints}
    indexes = [tuple(r) for r in conn.execute(text(
        "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema() "
        "AND tablename = 'audit_events' ORDER BY indexname")) if r[0] not in names]
    return constraints, indexes


def all_index_defs(conn) -> list[tuple[str, str]]:
    from sqlalchemy import text

    return [tuple(r) for r in conn.execute(text(
        "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema() "
        "AND tablename = 'audit_events' ORDER BY indexname"))]


def seed(engine, data: Dataset, batch: int) -> None:
    from sqlalchemy import text

    actors = data.actors
    common = {
        "actor_types": [a.type for a in actors], "actor_ids": [a.id for a in actors],
        "actor_names": [a.name for a in actors], "ips": [a.ip for a in actors],
        "agents": [a.user_agent for a in actors], "actions": [a for a, _ in ACTIONS],
        "prefixes": [p for _, p in ACTIONS], "n_actors": len(actors), "n_actions": len(ACTIONS),
        "failing": len(actors) - NEVER_FAILING_ACTORS, "fail_rate": FAILURE_RATE,
        "t0": data.t0,
    }
    span = (data.t_end - data.t0).total_seconds()

    with engine.connect() as conn:
        conn.execute(text("SET lock_timeout = '60s'"))  # fail, do not hang, if something holds a lock
        conn.execute(text("SET maintenance_work_mem = '1GB'"))
        before_indexes = all_index_defs(conn)
        constraints, indexes = table_ddl(conn)
        conn.commit()

        say(f"dropping {len(constraints)} constraints and {len(indexes)} indexes of audit_events for the load")
        for name, _kind, _ in sorted(constraints, key=lambda c: c[1] != "f"):  # foreign keys first
            conn.execute(text(f'ALTER TABLE audit_events DROP CONSTRAINT "{name}"'))
        for name, _ in indexes:
            conn.execute(text(f'DROP INDEX "{name}"'))
        conn.commit()

        plan = [(data.main_org, data.rows)] + list(data.other_orgs.items())
        total = sum(n for _, n in plan)
        done = 0
        started = time.monotonic()
        for org_id, n in plan:
            step = span / n
            for lo in range(1, n + 1, batch):  # bounded: ceil(n / batch) iterations
                hi = min(n, lo + batch - 1)
                t = time.monotonic()
                conn.execute(text(INSERT_SQL), {**common, "org": org_id, "step": step, "lo": lo, "hi": hi})
                conn.commit()
                done += hi - lo + 1
                elapsed = time.monotonic() - started
                rate = done / elapsed if elapsed else 0
                eta = (total - done) / rate if rate else 0
                say(f"  seeded {done:>11,}/{total:,} rows  (org {org_id[:12]}…, batch {hi - lo + 1:,} in "
                    f"{time.monotonic() - t:5.1f}s, {rate:,.0f} rows/s, ETA {eta:4.0f}s, load {loadavg()})")

        say("re-creating constraints and indexes (maintenance_work_mem 1GB)")
        order = {"p": 0, "u": 1, "f": 3}
        steps = [(order[kind], f"constraint {name}", f'ALTER TABLE audit_events ADD CONSTRAINT "{name}" {definition}')
                 for name, kind, definition in constraints]
        steps += [(2, f"index {name}", definition) for name, definition in indexes]
        for _, label, sql in sorted(steps, key=lambda s: s[0]):
            t = time.monotonic()
            conn.execute(text(sql))
            conn.commit()
            say(f"  {label:<45} {time.monotonic() - t:6.1f}s  (load {loadavg()})")
        after_indexes = all_index_defs(conn)
        if after_indexes != before_indexes:
            raise BenchError(f"indexes differ after the load:\nbefore {before_indexes}\nafter  {after_indexes}")
        say(f"  indexes identical to the migrations' ({len(after_indexes)})")

        for org_id, n in plan:
            conn.execute(text(
                "UPDATE audit_chain_heads SET seq = :n, "
                "hash = (SELECT hash FROM audit_events WHERE org_id = :org AND seq = :n) WHERE org_id = :org"),
                {"org": org_id, "n": n})
        conn.commit()

    t = time.monotonic()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("SET maintenance_work_mem = '1GB'"))
        # (Seeding with synchronous_commit = off left no page all-visible here: keep it on.)
        conn.execute(text("VACUUM (ANALYZE) audit_events"))
        conn.execute(text("ANALYZE"))
        size = conn.execute(text(
            "SELECT pg_size_pretty(pg_relation_size('audit_events')), "
            "pg_size_pretty(pg_indexes_size('audit_events')), relpages, relallvisible "
            "FROM pg_class WHERE oid = 'audit_events'::regclass")).one()
    say(f"VACUUM (ANALYZE) in {time.monotonic() - t:.1f}s; audit_events heap {size[0]}, indexes {size[1]}, "
        f"{size[3]:,} of {size[2]:,} pages all-visible")
    if size[3] < 0.9 * size[2]:
        print("warning: VACUUM could not mark most pages all-visible (a long transaction elsewhere holds the "
              "xmin horizon?): index-only scans will fetch heap pages", file=sys.stderr)


# -- set-up through the app's services ----------------------------------------------------------


def set_up(settings: dict, rows: int, batch: int, now: datetime) -> tuple[Dataset, str]:
    from app.extensions import db
    from app.services import api_keys, orgs

    with app_context(settings):
        t = time.monotonic()
        prepare_schema(settings)
        say(f"migrations applied in {time.monotonic() - t:.1f}s")
        main_id = orgs.create_org(name="Bench audit org", tier="enterprise").id
        others = {}
        for i, share in enumerate(OTHER_ORGS):
            others[orgs.create_org(name=f"Other org {i}", tier="enterprise").id] = max(1, int(rows * share))
        db.session.remove()  # end the session's transaction: it would block the constraint changes
        t_end = now.replace(microsecond=0) - timedelta(minutes=5)
        data = Dataset(main_org=main_id, rows=rows, t0=t_end - timedelta(days=365), t_end=t_end,
                       actors=make_actors(), other_orgs=others)
        say(f"main org {main_id}: {rows:,} rows; others: "
            + ", ".join(f"{k} {v:,}" for k, v in others.items()))
        t = time.monotonic()
        seed(db.engine, data, batch)
        say(f"seeding done in {time.monotonic() - t:.1f}s")
        _key, plaintext = api_keys.create_api_key(org_id=main_id, name="Bench audit reader", scopes=["*"])
    return data, plaintext


# -- the server ----------------------------------------------------------------------------------


def start_sensei(settings: dict, port: int, log_path: Path, started: list[Server]) -> Server:
    """gunicorn with the settings of `sensei serve` (2 workers, gthread, 4 threads)."""
    argv = gunicorn_argv("wsgi:app", chdir=ROOT, port=port, workers=2, worker_class="gthread", threads=4,
                         timeout=120)
    return start_server("gunicorn", argv, port=port, env=server_env(settings), ready_path=SENSEI_READY_PATH,
                        log_path=log_path, started=started)


# -- the cases -----------------------------------------------------------------------------------


@dataclass
class Case:
    name: str
    label: str
    path: str
    params: dict = field(default_factory=dict)


def iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def build_cases(data: Dataset, deep_id: str, deep_depth: int) -> list[Case]:
    a = data.actors
    n_act = len(ACTIONS)
    mid = data.t0 + (data.t_end - data.t0) / 2
    day = mid.replace(hour=0, minute=0, second=0, microsecond=0)
    common_action, rare_action = ACTIONS[0][0], ACTIONS[-1][0]
    mid_actor, rare_actor = a[10], a[-1]  # ~2.2 % and ~1.0 % of the rows; the last one never fails
    share = lambda k, n: action_index_share(k, n) * 100  # noqa: E731
    return [
        Case("me", "GET /v1/me (floor: auth + audit write, no list query)", "/v1/me"),
        Case("default", "default page (limit=50)", "/v1/audit-logs"),
        Case("limit100", "default page, limit=100", "/v1/audit-logs", {"limit": 100}),
        Case("action", f"action={common_action} (~{share(0, n_act):.0f}%)", "/v1/audit-logs",
             {"action": common_action}),
        Case("action_rare", f"action={rare_action} (~{share(n_act - 1, n_act):.1f}%)", "/v1/audit-logs",
             {"action": rare_action}),
        Case("actor", f"actor_id=<actor #10> (~{share(10, N_ACTORS):.1f}%)", "/v1/audit-logs",
             {"actor_id": mid_actor.id}),
        Case("failure", "result=failure (~3%)", "/v1/audit-logs", {"result": "failure"}),
        Case("window", "since/until: one day mid-year", "/v1/audit-logs",
             {"since": iso(day), "until": iso(day + timedelta(days=1))}),
        Case("window_failure", "since/until one day + result=failure", "/v1/audit-logs",
             {"since": iso(day), "until": iso(day + timedelta(days=1)), "result": "failure"}),
        Case("combined", "action + actor_id + result=failure", "/v1/audit-logs",
             {"action": common_action, "actor_id": mid_actor.id, "result": "failure"}),
        Case("combined_window", "action + actor_id + since/until (30 days)", "/v1/audit-logs",
             {"action": ACTIONS[1][0], "actor_id": mid_actor.id, "since": iso(day - timedelta(days=15)),
              "until": iso(day + timedelta(days=15))}),
        Case("deep_cursor", f"starting_after a row ~{deep_depth:,} deep", "/v1/audit-logs",
             {"starting_after": deep_id}),
        Case("deep_cursor_action", f"starting_after ~{deep_depth:,} deep + action={ACTIONS[1][0]}",
             "/v1/audit-logs", {"starting_after": deep_id, "action": ACTIONS[1][0]}),
        Case("nothing", "action=no.such.action (matches nothing)", "/v1/audit-logs",
             {"action": "no.such.action"}),
        Case("nothing_combo", "actor_id=<an actor that never fails> + result=failure (matches nothing)",
             "/v1/audit-logs", {"actor_id": rare_actor.id, "result": "failure"}),
        Case("nothing_window", "since/until in a year with no entries (matches nothing)", "/v1/audit-logs",
             {"since": "2001-01-01T00:00:00Z", "until": "2001-12-31T00:00:00Z"}),
    ]


def measure(session: requests.Session, base: str, case: Case, n: int, warmup: int, budget: float) -> dict:
    url = base + case.path
    body: dict = {}
    timings: list[float] = []
    started = time.monotonic()
    for i in range(warmup + n):  # bounded by n + warmup and by the time budget
        t = time.perf_counter()
        response = session.get(url, params=case.params, timeout=REQUEST_TIMEOUT)
        elapsed = (time.perf_counter() - t) * 1000
        if response.status_code != 200:
            raise BenchError(f"{case.name}: {response.status_code} {response.text[:300]}")
        if i == 0:
            body = response.json()
            first = elapsed
        if i >= warmup:
            timings.append(elapsed)
        if time.monotonic() - started > budget and len(timings) >= 5:
            break
    timings.sort()
    p95 = pct(timings, 0.95)
    items = len(body.get("data", [])) if case.name != "me" else None
    return {"name": case.name, "label": case.label, "n": len(timings), "median_ms": median(timings),
            "p95_ms": p95, "min_ms": timings[0], "max_ms": timings[-1], "first_ms": first,
            "items": items, "has_more": body.get("has_more")}


# -- EXPLAIN -------------------------------------------------------------------------------------


def filters_of(case: Case):
    from app.services.audit import AuditFilter

    parse = lambda v: datetime.fromisoformat(v.replace("Z", "+00:00")) if v else None  # noqa: E731
    p = case.params
    return AuditFilter(action=p.get("action"), actor_id=p.get("actor_id"), result=p.get("result"),
                       since=parse(p.get("since")), until=parse(p.get("until")))


def captured_page_sql(application, org_id: str, case: Case) -> tuple[str, dict]:
    """The page query list_events sends for ``case`` (the last statement it executes)."""
    from sqlalchemy import event

    from app.extensions import db
    from app.services import audit

    seen: list[tuple[str, dict]] = []

    def capture(_conn, _cursor, statement, parameters, _context, _many):
        seen.append((statement, dict(parameters or {})))

    with application.app_context():
        event.listen(db.engine, "before_cursor_execute", capture)
        try:
            audit.list_events(org_id=org_id, limit=int(case.params.get("limit", 50)),
                              starting_after=case.params.get("starting_after"), filters=filters_of(case))
        finally:
            event.remove(db.engine, "before_cursor_execute", capture)
            db.session.remove()
    return seen[-1]


def explain(application, statement: str, parameters: dict) -> list[str]:
    from app.extensions import db

    with application.app_context():
        with db.engine.connect() as conn:
            rows = conn.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters).all()
            conn.rollback()
    return [r[0] for r in rows]


def print_explain(application, org_id: str, case: Case) -> list[str]:
    statement, parameters = captured_page_sql(application, org_id, case)
    say(f"\n--- EXPLAIN (ANALYZE, BUFFERS): {case.name} — {case.label}")
    say("SQL: " + " ".join(statement.split()))
    say("params: " + json.dumps({k: str(v) for k, v in parameters.items()}))
    plan = explain(application, statement, parameters)
    for line in plan:
        say("  " + line)
    return plan


# -- proposed fixes (run against the same data; the app is not changed) -------------------------

# The cursor predicate of list_events is
#     created_at < :c OR (created_at = :c AND id < :i)
# which PostgreSQL cannot use as a bound of the (org_id, created_at, id) index: it walks the index
# from the newest entry and filters out every row newer than the cursor. Either of these gives it
# an index bound and keeps the meaning (and the order) of the query unchanged:
#   (a) a row-value comparison:   (created_at, id) < (:c, :i)        -- sqlalchemy.tuple_(...) < (...)
#   (b) a redundant bound:        created_at <= :c AND (created_at < :c OR (created_at = :c AND id < :i))
# (b) works on every backend; SQLite supports (a) too (row values, 3.15+).
def cursor_fix_sql(statement: str, variant: str) -> str:
    marker = "(audit_events.created_at < %(created_at_"
    start = statement.find(marker)
    if start < 0:
        raise BenchError("could not find the cursor predicate in the captured SQL")
    depth, end = 0, start
    for end in range(start, len(statement)):  # the balanced parenthesised OR group
        depth += {"(": 1, ")": -1}.get(statement[end], 0)
        if depth == 0:
            break
    group = statement[start:end + 1]
    names = [p.split(")s")[0] for p in group.split("%(")[1:]]  # created_at_N, created_at_M, id_K
    created, ident = names[0], names[-1]
    if variant == "row":
        replacement = f"((audit_events.created_at, audit_events.id) < (%({created})s, %({ident})s))"
    else:
        replacement = f"(audit_events.created_at <= %({created})s AND {group})"
    return statement[:start] + replacement + statement[end + 1:]


EQUALITY_FILTERS = ("actor_id", "action", "result")
INDEX_COLUMN = {"action": "action", "actor": "actor_id", "result": "result"}  # ix_audit_events_org_<x>_time


def explain_with(application, ddl: list[str], statement: str, parameters: dict) -> None:
    """Run ``ddl`` (e.g. swap an index), EXPLAIN ANALYZE ``statement``, then ROLLBACK it all.

    PostgreSQL DDL is transactional: the benchmark's schema is left as the migrations made it."""
    from sqlalchemy import text

    from app.extensions import db

    with application.app_context():
        with db.engine.connect() as conn:
            conn.execute(text("SET LOCAL maintenance_work_mem = '1GB'"))
            conn.execute(text("SET LOCAL lock_timeout = '60s'"))
            for sql in ddl:
                t = time.monotonic()
                conn.execute(text(sql))
                say(f"  ({time.monotonic() - t:.1f}s: {sql})")
            for line in conn.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters).all():
                say("  " + line[0])
            conn.rollback()
            say("  (rolled back: the index change is not kept)")


def two_step_sql(statement: str) -> str:
    """The same page as ids first (an index-only scan can filter on INCLUDEd columns), then rows."""
    select_list, rest = " ".join(statement.split()).split(" FROM audit_events ", 1)
    where, _order = rest.rsplit(" ORDER BY ", 1)
    order = "audit_events.created_at DESC, audit_events.id DESC"
    return (f"{select_list} FROM audit_events WHERE audit_events.id IN "
            f"(SELECT audit_events.id FROM audit_events {where} ORDER BY {_order}) ORDER BY {order}")


def run_proposals(application, org_id: str, slow: list[Case]) -> None:
    """EXPLAIN ANALYZE of proposed fixes for slow cases, on the same data (the app is not changed)."""
    for case in slow:
        statement, parameters = captured_page_sql(application, org_id, case)
        if "starting_after" in case.params:
            for variant in ("row", "bound"):
                fixed = cursor_fix_sql(statement, variant)
                say(f"\n--- proposal for {case.name}: cursor predicate as "
                    + ("a row-value comparison (created_at, id) < (:c, :i)" if variant == "row"
                       else "a redundant bound created_at <= :c AND (<the OR>)"))
                say("SQL: " + " ".join(fixed.split()))
                for line in explain(application, fixed, parameters):
                    say("  " + line)
            continue
        columns = [c for c in EQUALITY_FILTERS if c in case.params]
        if len(columns) < 2:
            say(f"\n(no proposal implemented for {case.name})")
            continue
        # (1) One index for exactly this combination of filters: the page is one index range.
        say(f"\n--- proposal for {case.name} (1): an index for exactly this combination of filters")
        explain_with(application, [f"CREATE INDEX bench_proposal_combo ON audit_events "
                                   f"(org_id, {', '.join(columns)}, created_at, id)"], statement, parameters)
        # (2) General: the filter index the planner walks covers the other filter columns
        # (INCLUDE) and the page is read as ids first, so rows that do not match are rejected in
        # the index (an index-only scan) instead of after one heap fetch each.
        plan = explain(application, statement, parameters)
        walked = next((k for k in INDEX_COLUMN if any(f" ix_audit_events_org_{k}_time" in line for line in plan)),
                      None)
        if walked is None:
            say(f"\n(no covering-index proposal for {case.name}: the plan walks no single filter index)")
            continue
        column = INDEX_COLUMN[walked]
        include = [c for c in EQUALITY_FILTERS if c != column]
        index = f"ix_audit_events_org_{walked}_time"
        fixed = two_step_sql(statement)
        say(f"\n--- proposal for {case.name} (2): {index} with INCLUDE ({', '.join(include)}), "
            "and the page read as ids first, then rows")
        say("SQL: " + fixed)
        explain_with(application, [f'DROP INDEX "{index}"',
                                   f'CREATE INDEX "{index}" ON audit_events (org_id, {column}, created_at, id) '
                                   f"INCLUDE ({', '.join(include)})"], fixed, parameters)


# -- main ------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000_000,
                        help="audit entries of the measured organization (default 10,000,000)")
    parser.add_argument("--batch", type=int, default=1_000_000, help="rows per INSERT ... SELECT (default 1M)")
    parser.add_argument("--requests", type=int, default=50, help="measured requests per case (default 50)")
    parser.add_argument("--warmup", type=int, default=3, help="unmeasured requests per case first (default 3)")
    parser.add_argument("--budget", type=float, default=60.0,
                        help="seconds per case at most (at least 5 samples are taken; default 60)")
    parser.add_argument("--slow-ms", type=float, default=50.0,
                        help="a case whose median is above this is called slow and EXPLAINed (default 50)")
    parser.add_argument("--explain", action="append", metavar="CASE",
                        help="EXPLAIN this case too (repeatable; default: action, deep_cursor)")
    parser.add_argument("--no-proposals", action="store_true", help="do not EXPLAIN the proposed fixes")
    parser.add_argument("--postgres", default=DEFAULT_PG, metavar="URL", help=f"default {DEFAULT_PG}")
    parser.add_argument("--keep-schema", action="store_true", help="do not drop the schema (debugging)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    args = parser.parse_args(argv)
    if not 1_000 <= args.rows <= 100_000_000:
        parser.error("--rows must be 1,000-100,000,000")
    if not 10_000 <= args.batch <= 5_000_000:
        parser.error("--batch must be 10,000-5,000,000")
    if not (5 <= args.requests <= 10_000 and 0 <= args.warmup <= 100 and 1 <= args.budget <= 3600):
        parser.error("--requests 5-10000, --warmup 0-100, --budget 1-3600")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    say(f"audit_pages: --rows {args.rows:,} on {args.postgres}; {os.cpu_count()} CPUs, load {loadavg()}")

    def body(tmp: Path) -> int:
        with postgres_schema(args.postgres, label="bench_audit", keep=args.keep_schema,
                             lock_timeout="120s") as database_url:
            with running_servers() as started:  # stopped before the schema goes away
                port = free_port()
                settings = sensei_settings(database_url, tmp / "keys", f"http://127.0.0.1:{port}")
                data, api_key = set_up(settings, args.rows, args.batch, datetime.now(UTC))
                server = start_sensei(settings, port, tmp / "gunicorn.log", started)
                return run(args, settings, data, api_key, server.url)

    return guarded_main(body, prefix="sensei-bench-audit-")


def run(args: argparse.Namespace, settings: dict, data: Dataset, api_key: str, base: str) -> int:
    from sqlalchemy import text

    from app import create_app
    from app.extensions import db

    application = create_app(settings)
    depth = data.rows // 2
    with application.app_context():
        deep_id = db.session.execute(text("SELECT id FROM audit_events WHERE org_id = :o AND seq = :s"),
                                     {"o": data.main_org, "s": data.rows - depth}).scalar_one()
        db.session.remove()
    cases = build_cases(data, deep_id, depth)

    session = requests.Session()
    session.headers.update({"Authorization": f"Bearer {api_key}", "User-Agent": "sensei-bench-audit/1"})
    results = []
    say(f"\nmeasuring {len(cases)} cases: {args.warmup} warm-up + {args.requests} requests each, sequential, "
        f"one keep-alive connection (load {loadavg()})")
    for case in cases:
        result = measure(session, base, case, args.requests, args.warmup, args.budget)
        result["load"] = loadavg()
        results.append(result)
        say(f"  {case.name:<20} median {result['median_ms']:8.2f} ms  p95 {result['p95_ms']:8.2f} ms  "
            f"(n={result['n']}, items {result['items']}, has_more {result['has_more']}, load {result['load']})")
    session.close()

    say(f"\nGET /v1/audit-logs on {data.rows:,} rows of one organization "
        f"({sum(data.other_orgs.values()):,} rows of 3 others), PostgreSQL; load {loadavg()}")
    header = f"{'case':<20} {'median':>9} {'p95':>9} {'min':>8} {'max':>9} {'first':>9} {'items':>6} {'more':>5}  description"
    say(header)
    say("-" * len(header))
    for r in results:
        say(f"{r['name']:<20} {r['median_ms']:7.2f}ms {r['p95_ms']:7.2f}ms {r['min_ms']:6.2f}ms "
            f"{r['max_ms']:7.2f}ms {r['first_ms']:7.2f}ms {str(r['items']):>6} {str(r['has_more']):>5}  {r['label']}")

    floor = next(r["median_ms"] for r in results if r["name"] == "me")
    slow = [r for r in results if r["name"] != "me" and r["median_ms"] > args.slow_ms]
    say(f"\nfloor (GET /v1/me) median {floor:.2f} ms; slow (median > {args.slow_ms:g} ms): "
        + (", ".join(f"{r['name']} ({r['median_ms']:.0f} ms)" for r in slow) or "none"))

    by_name = {c.name: c for c in cases}
    wanted = list(dict.fromkeys((args.explain or ["action", "deep_cursor"]) + [r["name"] for r in slow]))
    for name in wanted:
        if name not in by_name or name == "me":
            print(f"warning: no case {name!r} to EXPLAIN", file=sys.stderr)
            continue
        print_explain(application, data.main_org, by_name[name])
    if not args.no_proposals:
        run_proposals(application, data.main_org, [by_name[r["name"]] for r in slow])
    with application.app_context():
        db.engine.dispose()

    if args.json:
        Path(args.json).write_text(json.dumps({"rows": data.rows, "load": loadavg(), "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
