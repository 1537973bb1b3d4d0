#!/usr/bin/env python3
"""Seed a Sensei Auth database with many API keys and sealed audit entries, in minutes.

A benchmark helper, not a test: pytest does not collect it.

    from bench.seed import seed          # from the repository root
    seed(url, api_keys=1_000_000, audit_rows=10_000_000, org_id=org.id)

    .venv/bin/python bench/seed.py --database-url URL --org-id ORG [--api-keys N] [--audit-rows N]
    .venv/bin/python bench/seed.py --create-schema --drop --api-keys 100000 --audit-rows 1000000 --verify

What it writes (one transaction; on failure nothing is left behind):

* ``--other-orgs`` (default 1,000) organizations, each with its ``audit_chain_heads`` row as
  ``app.services.orgs.create_org`` makes it; tiers by size (the largest are enterprise).
* API keys and audit entries, ``--org-share`` (default 10 %) of each in ``org_id`` and the rest
  spread over the other organizations with a power law (weight ``rank ** -0.8``: the largest
  other organization gets ~6 % of the rows, the smallest ~0.03 %). Rows of all organizations
  are interleaved in time order, as a live table's are.
* API keys: ``key_`` + 20 base62 ids, ``sk_live_``/``sk_test_`` keys of the real format (with
  checksum) whose SHA-256 is ``key_digest`` (the plaintexts are not kept), realistic names,
  scopes and allow-lists, created over a year; ~8 % revoked, ~20 % with an expiry (some past),
  ~70 % used. ``created_by`` names users that exist only in the audit log (no ``users`` rows),
  and no key belongs to a service account (no ``service_accounts`` rows are made).
* Audit entries over the last 30 days from each organization's own actors (its seeded keys,
  users, service accounts, OAuth clients, sometimes the CLI operator) with the actions the app
  records, ~3 % failures. They are **sealed**: ``seq``/``prev_hash``/``hash`` per organization
  in order with ``app.services.audit.chain_hash`` semantics, continuing ``org_id``'s existing
  chain head, and every chain head is moved to its last entry, so the sealer has nothing to do
  and ``verify_chain`` passes. (The first rows are checked against ``chain_hash`` itself.)

PostgreSQL: ``COPY ... FROM STDIN`` (psycopg 3). When the load is large compared with what the
tables hold, their indexes and constraints are dropped first and re-created afterwards from their
own definitions (checked identical), which holds an ACCESS EXCLUSIVE lock on ``api_keys`` and
``audit_events`` until the commit. Then ``VACUUM (ANALYZE)`` (``--no-vacuum``: ``ANALYZE`` only) and a ``CHECKPOINT``.
SQLite: ``executemany`` in the same single transaction (secondary indexes rebuilt the same way).
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import random
import secrets
import shutil
import signal
import string
import sys
import tempfile
import time
import zlib
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python bench/seed.py` puts bench/ first, not the repository
    sys.path.insert(0, str(ROOT))

DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
GENESIS = "0" * 64
BASE62 = string.digits + string.ascii_letters
URLSAFE = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"
_TO_BASE62 = bytes.maketrans(bytes(range(256)), bytes(ord(BASE62[i % 62]) for i in range(256)))
_TO_URLSAFE = bytes.maketrans(bytes(range(256)), bytes(ord(URLSAFE[i % 64]) for i in range(256)))
EPOCH = datetime(1970, 1, 1)  # naive: timestamps are handled as integer microseconds since it (UTC)
DAY_US = 86_400_000_000
SIZE_EXPONENT = 0.8  # the other organizations' weights: rank ** -0.8
SLOTS = 1000  # resolution of the weighted action tables

# -- vocabulary ---------------------------------------------------------------------------------

COMPANIES = ["Acme", "Globex", "Initech", "Umbrella", "Hooli", "Stark", "Wayne", "Tyrell", "Cyberdyne",
             "Soylent", "Vandelay", "Wonka", "Pied Piper", "Aperture", "Massive Dynamic", "Oscorp",
             "Gringotts", "Monarch", "Nakatomi", "Prestige", "Sirius", "Virtucon", "Wernham", "Zorg"]
SUFFIXES = ["Labs", "Inc", "Systems", "Analytics", "Cloud", "Data", "GmbH", "Ltd", "Group", "Health",
            "Logistics", "Bank", "Studios", "Energy"]
FIRST = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory",
         "niaj", "olivia", "peggy", "rupert", "sybil", "trent", "victor", "walter", "yuki", "zoe", "omar"]
LAST = ["smith", "jones", "garcia", "martin", "kim", "nguyen", "müller", "rossi", "tanaka", "silva",
        "dubois", "cohen", "okafor", "larsen", "novak", "singh"]
KEY_NAMES = ["Production", "Staging", "CI/CD pipeline", "Terraform", "Data warehouse sync", "Nightly backup",
             "Local development", "Monitoring", "Migration runner", "Webhook relay", "Analytics export",
             "Support tooling", "Load test", "Billing integration", "Partner integration", "Airflow",
             "GitHub Actions", "Jenkins", "Ops laptop", "Disaster recovery"]
SA_NAMES = ["ci-bot", "etl-worker", "deploy-bot", "nightly-sync", "reporting", "scheduler", "backup-agent",
            "terraform-runner", "webhook-relay", "data-mover"]
CLIENT_NAMES = ["Partner portal", "Mobile app", "Internal dashboard", "CLI login", "Zapier connector",
                "Slack integration", "BI tool", "Customer SSO bridge"]
# (scope string, weight): valid API-key scopes as create_api_key stores them
SCOPES = [("*", 15), ("migrations:*", 10), ("migrations:read migrations:write connections:read", 10),
          ("migrations:read", 8), ("*:read", 10), ("connections:*", 5), ("validation:read validation:write", 6),
          ("webhooks:*", 5), ("admin:read", 4), ("admin:read admin:write", 3), ("billing:read", 3),
          ("migrations:* connections:* validation:*", 6), ("connections:read webhooks:read", 4)]
# (ip_whitelist as SQLAlchemy's JSON type writes it, weight)
WHITELISTS = [("[]", 85), ('["10.0.0.0/8"]', 4), ('["203.0.113.0/24"]', 3),
              ('["198.51.100.7/32", "198.51.100.8/32"]', 3), ('["2001:db8::/32"]', 2),
              ('["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]', 3)]
BROWSERS = ["Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) "
            "Version/17.5 Safari/605.1.15",
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/126.0.0.0 Safari/537.36",
            "Mozilla/5.0 (X11; Linux x86_64; rv:127.0) Gecko/20100101 Firefox/127.0"]
TOOLS = ["python-requests/2.32.3", "curl/8.5.0", "sensei-sdk-go/1.4.2", "sensei-sdk-python/2.1.0",
         "terraform-provider-sensei/0.9.1", "node-fetch/3.3.2", "okhttp/4.12.0"]

# Actions the app records, per kind of actor: (action, resource kind, failure rate, weight).
# Resource kinds: None (a list or /v1/me), "key"/"sa"/"usr"/"client" (one of the organization's),
# "self" (the actor), "jti" (a token id), "fam"/"code" (a refresh-token family / code id).
API_ACTIONS = [
    ("me.read", None, 0.02, 30), ("api_keys.list", None, 0.03, 10), ("api_keys.read", "key", 0.04, 8),
    ("api_keys.create", "key", 0.04, 3), ("api_keys.update", "key", 0.03, 2), ("api_keys.delete", "key", 0.03, 1.5),
    ("service_accounts.list", None, 0.03, 4), ("service_accounts.read", "sa", 0.03, 3),
    ("service_accounts.create", "sa", 0.05, 0.5), ("service_accounts.update", "sa", 0.03, 0.5),
    ("service_accounts.delete", "sa", 0.03, 0.2), ("audit_logs.list", None, 0.02, 5),
]
PROFILES = {
    "api_key": API_ACTIONS,
    "service_account": API_ACTIONS + [("oauth.token.issue", "jti", 0.0, 40), ("oauth.token.revoke", "jti", 0.0, 2)],
    "client": [("oauth.token.issue", "jti", 0.0, 70), ("oauth.token.refresh", "jti", 0.0, 25),
               ("oauth.token.revoke", "jti", 0.0, 4), ("oauth.refresh_token.reuse_detected", "fam", 1.0, 0.3),
               ("oauth.code.replay_detected", "code", 1.0, 0.1)],
    "user": API_ACTIONS + [
        ("auth.login.success", "self", 0.0, 15), ("auth.login.failure", "self", 1.0, 2), ("auth.logout", "self", 0.0, 6),
        ("oauth.consent.grant", "client", 0.0, 4), ("oauth.consent.deny", "client", 0.0, 0.5),
        ("oauth.consent.revoke", "client", 0.0, 0.5), ("users.create", "usr", 0.02, 0.6),
        ("users.update", "usr", 0.02, 0.6), ("users.delete", "usr", 0.02, 0.2),
        ("oauth_clients.create", "client", 0.02, 0.4), ("oauth_clients.rotate_secret", "client", 0.02, 0.3),
        ("oauth_clients.delete", "client", 0.02, 0.1)],
    "operator": [("oauth_clients.create", "client", 0.0, 3), ("users.create", "usr", 0.0, 3),
                 ("api_keys.create", "key", 0.0, 2), ("oauth_clients.rotate_secret", "client", 0.0, 1)],
}
RANDOM_RESOURCES = {"jti": "", "fam": "fam_", "code": "code_"}

KEY_COLUMNS = ("id", "org_id", "name", "key_digest", "environment", "last4", "scope", "ip_whitelist",
               "created_by", "service_account_id", "created_at", "expires_at", "last_used_at", "revoked_at")
AUDIT_COLUMNS = ("id", "org_id", "seq", "created_at", "action", "resource", "result", "actor_type", "actor_id",
                 "actor_name", "ip_address", "user_agent", "prev_hash", "hash")


def say(message: str) -> None:
    print(message, flush=True)


def _strings(rng: random.Random, count: int, length: int, table: bytes = _TO_BASE62) -> list[str]:
    """``count`` random strings of ``length`` characters (base62 by default), in one C call."""
    blob = rng.randbytes(count * length).translate(table).decode("ascii")
    return [blob[i:i + length] for i in range(0, count * length, length)]


def _weighted_table(items: list[tuple[Any, float]], slots: int = SLOTS) -> list[Any]:
    """A list of ``slots`` entries in which each item appears in proportion to its weight."""
    total = sum(w for _, w in items)
    table: list[Any] = []
    acc = 0.0
    for item, weight in items:
        acc += weight
        table.extend([item] * (round(acc / total * slots) - len(table)))
    return table


def _split(total: int, weights: list[float]) -> list[int]:
    """``total`` split in proportion to ``weights`` (largest remainder: the parts add up exactly)."""
    if not weights:
        return []
    s = sum(weights)
    exact = [total * w / s for w in weights]
    parts = [int(x) for x in exact]
    for i in sorted(range(len(weights)), key=lambda i: exact[i] - parts[i], reverse=True)[:total - sum(parts)]:
        parts[i] += 1
    return parts


def _iso(us: int) -> str:
    """``chain_hash``'s timestamp format: ``2025-01-31T12:00:00.123456Z``."""
    return (EPOCH + timedelta(microseconds=us)).isoformat(timespec="microseconds") + "Z"


def _checksum(body: str) -> str:
    """The API key checksum of app.services.api_keys (base62 CRC32, 6 characters)."""
    value = zlib.crc32(body.encode("ascii"))
    chars = []
    for _ in range(6):
        value, rem = divmod(value, 62)
        chars.append(BASE62[rem])
    return "".join(reversed(chars))


def _safe(value: str | None) -> str | None:
    """Vocabulary goes into COPY text and hand-built JSON unescaped: keep it plain."""
    if value is not None and any(c in value for c in '\\\t\n\r"'):
        raise ValueError(f"unsafe seed value {value!r}")
    return value


# -- the plan: organizations, their people and their shares ---------------------------------------


class Org:
    __slots__ = ("id", "keys", "rows", "users", "sas", "clients", "key_sample", "actors", "pools", "seq", "head_hash")

    def __init__(self, org_id: str, keys: int, rows: int) -> None:
        self.id, self.keys, self.rows = org_id, keys, rows
        self.users: list[tuple[str, str]] = []  # (id, email)
        self.sas: list[tuple[str, str]] = []
        self.clients: list[tuple[str, str]] = []
        self.key_sample: list[tuple[str, str]] = []  # (key id, name) of some of its seeded keys
        self.actors: list[tuple] = []
        self.pools: dict[str, list[str]] = {}
        self.seq = 0  # the chain head: last sequence number and hash
        self.head_hash = GENESIS


def _people(rng: random.Random, org: Org, slug: str) -> None:
    size = org.rows + 10 * org.keys
    n_users = max(2, min(40, int(size ** 0.3)))
    ids = _strings(rng, n_users + 20, 20)
    org.users = [(f"usr_{ids[i]}", f"{rng.choice(FIRST)}.{rng.choice(LAST)}{i}@{slug}.example")
                 for i in range(n_users)]
    org.sas = [(f"sa_{ids[n_users + i]}", f"{rng.choice(SA_NAMES)}-{i}") for i in range(rng.randint(1, 8))]
    org.clients = [(f"cl_{s}", f"{rng.choice(CLIENT_NAMES)} {i}")
                   for i, s in enumerate(_strings(rng, rng.randint(1, 6), 24))]


def _actors(rng: random.Random, org: Org, fake_key_ids: list[str]) -> None:
    """The organization's audit actors (most active first) and its resource pools."""
    n = max(5, min(60, int(max(org.rows, 1) ** 0.4)))
    keys = org.key_sample or [(f"key_{k}", rng.choice(KEY_NAMES)) for k in fake_key_ids[:8]]
    kinds = ["api_key", "user", "api_key", "service_account", "client", "user", "api_key", "client",
             "service_account", "api_key"]
    actors = []
    for i in range(n):
        kind = kinds[i % len(kinds)]
        if i == n - 1 and rng.random() < 0.3:
            kind = "operator"
        if kind == "api_key":
            ident, name = keys[i % len(keys)]
            ip, agent = f"203.0.113.{rng.randint(1, 254)}", rng.choice(TOOLS)
        elif kind == "user":
            ident, name = org.users[i % len(org.users)]
            ip = (f"198.51.100.{rng.randint(1, 254)}" if rng.random() < 0.8
                  else f"2001:db8:{rng.randint(1, 0xffff):x}::{rng.randint(1, 0xffff):x}")
            agent = rng.choice(BROWSERS)
        elif kind == "service_account":
            ident, name = org.sas[i % len(org.sas)]
            ip, agent = f"192.0.2.{rng.randint(1, 254)}", rng.choice(TOOLS)
        elif kind == "client":
            ident, name = org.clients[i % len(org.clients)]
            ip, agent = f"203.0.113.{rng.randint(1, 254)}", rng.choice(TOOLS)
        else:
            ident, name, ip, agent = None, "sensei CLI", None, None
        for value in (ident, name, ip, agent):
            _safe(value)
        copy_part = "\t".join("\\N" if v is None else v for v in (kind, ident, name, ip, agent))
        actor_json = json.dumps([kind, ident, name], separators=(",", ":"), ensure_ascii=True)
        # Fragments of chain_hash's canonical JSON (keys sorted) and of the COPY line for this actor.
        actors.append((kind, ident, name, ip, agent, PROFILE_TABLES[kind],
                       f',"actor":{actor_json},"id":"',
                       f'","ip_address":{json.dumps(ip, ensure_ascii=True)},"org_id":"{org.id}","resource":',
                       f',"user_agent":{json.dumps(agent, ensure_ascii=True)}}}',
                       f"\t{copy_part}\t"))
    org.actors = actors
    org.pools = {"key": [k for k, _ in keys][:200], "sa": [s for s, _ in org.sas], "usr": [u for u, _ in org.users],
                 "client": [c for c, _ in org.clients]}


PROFILE_TABLES = {kind: _weighted_table([((a, k, f, f':{{"action":"{_safe(a)}"'), w) for a, k, f, w in items])
                  for kind, items in PROFILES.items()}
SCOPE_TABLE = _weighted_table(SCOPES)
WHITELIST_TABLE = _weighted_table(WHITELISTS)


# -- database access -------------------------------------------------------------------------------


class _Postgres:
    kind = "postgresql"

    def __init__(self, url) -> None:
        import psycopg

        self.conn = psycopg.connect(url.set(drivername="postgresql").render_as_string(hide_password=False))
        self.cur = self.conn.cursor()

    def q(self, sql: str, params: tuple = ()) -> list[tuple]:
        self.cur.execute(sql.replace("?", "%s"), params)
        return self.cur.fetchall() if self.cur.description else []

    def many(self, sql: str, rows: list[tuple]) -> None:
        self.cur.executemany(sql.replace("?", "%s"), rows)

    def begin(self) -> None:
        self.q("SET lock_timeout = '120s'")
        self.q("SET maintenance_work_mem = '1GB'")

    def ts(self, us: int) -> str:
        return _iso(us)

    @contextmanager
    def loader(self, table: str, columns: tuple[str, ...]):
        """One COPY for the whole table; a writer thread sends while the caller makes the next chunk."""
        from psycopg.copy import QueuedLibpqWriter

        sql = f"COPY {table} ({', '.join(columns)}) FROM STDIN"
        with self.cur.copy(sql, writer=QueuedLibpqWriter(self.cur)) as copy:
            yield copy.write

    def count_rows(self, table: str) -> int:
        return self.q(f"SELECT count(*) FROM {table}")[0][0]

    def ddl(self, table: str) -> tuple[list[tuple[str, str, str]], list[tuple[str, str]]]:
        """(constraints to drop: name, type, definition), (plain indexes: name, CREATE INDEX ...)."""
        referenced = {r[0] for r in self.q(
            "SELECT conindid FROM pg_constraint WHERE confrelid = to_regclass(?) AND contype = 'f'", (table,))}
        constraints = [(n, t, d) for n, t, d, index in self.q(
            "SELECT conname, contype, pg_get_constraintdef(oid), conindid FROM pg_constraint "
            "WHERE conrelid = to_regclass(?) AND contype IN ('p', 'u', 'f') ORDER BY conname", (table,))
            if index not in referenced or t == "f"]
        indexes = [(n, d) for n, d in self.q(
            "SELECT c.relname, pg_get_indexdef(i.indexrelid) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "WHERE i.indrelid = to_regclass(?) AND NOT EXISTS "
            "(SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid) ORDER BY c.relname", (table,))]
        return constraints, indexes

    def all_indexes(self, table: str) -> list[tuple]:
        return self.q("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema() "
                      "AND tablename = ? ORDER BY indexname", (table,))

    def drop(self, table: str, ddl) -> None:
        constraints, indexes = ddl
        for name, _kind, _ in sorted(constraints, key=lambda c: c[1] != "f"):  # foreign keys first
            self.q(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
        for name, _ in indexes:
            self.q(f'DROP INDEX "{name}"')

    def recreate(self, table: str, ddl, log) -> None:
        constraints, indexes = ddl
        order = {"p": 0, "u": 1, "f": 3}
        steps = [(order[k], f"constraint {n}", f'ALTER TABLE {table} ADD CONSTRAINT "{n}" {d}') for n, k, d in constraints]
        steps += [(2, f"index {n}", d) for n, d in indexes]
        for _, label, sql in sorted(steps, key=lambda s: s[0]):
            t = time.monotonic()
            self.q(sql)
            log(f"    {table}: {label:<45} {time.monotonic() - t:6.1f}s")

    def commit(self) -> None:
        self.conn.commit()

    def finish(self, vacuum: bool) -> dict[str, Any]:
        self.conn.autocommit = True
        self.q("SET maintenance_work_mem = '1GB'")
        for table in ("api_keys", "audit_events"):
            self.q(f"VACUUM (ANALYZE) {table}" if vacuum else f"ANALYZE {table}")
        self.q("ANALYZE organizations")
        self.q("ANALYZE audit_chain_heads")
        try:  # write the seed's gigabytes out now, not while the benchmark runs (needs superuser
            self.q("CHECKPOINT")  # or pg_checkpoint; skipped without)
        except Exception as error:  # noqa: BLE001 - a benchmark's nicety, never fatal
            say(f"seed: no CHECKPOINT ({type(error).__name__}); PostgreSQL flushes the seed during the runs")
        info = {}
        for table in ("api_keys", "audit_events"):
            heap, idx, pages, visible = self.q(
                "SELECT pg_relation_size(to_regclass(?)), pg_indexes_size(to_regclass(?)), relpages, relallvisible "
                "FROM pg_class WHERE oid = to_regclass(?)", (table, table, table))[0]
            info[table] = {"heap_mb": round(heap / 2**20), "indexes_mb": round(idx / 2**20),
                           "pages_all_visible": f"{visible}/{pages}"}
        return info

    def close(self) -> None:
        self.conn.close()


class _Sqlite(_Postgres):
    kind = "sqlite"

    def __init__(self, url) -> None:
        import sqlite3

        if not url.database or url.database == ":memory:":
            raise ValueError("seed needs a SQLite database file, not an in-memory database")
        if not Path(url.database).is_file():
            raise ValueError(f"no SQLite database {url.database} (create it with `sensei init` or --create-schema)")
        self.conn = sqlite3.connect(url.database, isolation_level=None)  # explicit BEGIN/COMMIT
        self.cur = self.conn.cursor()

    def q(self, sql: str, params: tuple = ()) -> list[tuple]:
        self.cur.execute(sql, params)
        return self.cur.fetchall()

    def many(self, sql: str, rows: list[tuple]) -> None:
        self.cur.executemany(sql, rows)

    def begin(self) -> None:
        self.q("PRAGMA busy_timeout = 60000")
        self.q("PRAGMA synchronous = OFF")  # this connection only: a crash mid-seed may lose the seed
        self.q("PRAGMA cache_size = -262144")  # 256 MB
        self.q("BEGIN IMMEDIATE")

    def ts(self, us: int) -> str:
        return (EPOCH + timedelta(microseconds=us)).isoformat(sep=" ", timespec="microseconds")

    @contextmanager
    def loader(self, table: str, columns: tuple[str, ...]):
        sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
        yield lambda rows: self.many(sql, rows)

    def ddl(self, table: str):
        # UNIQUE/PRIMARY KEY autoindexes have no SQL and cannot be dropped: they stay.
        return [], self.all_indexes(table)

    def all_indexes(self, table: str) -> list[tuple]:
        return self.q("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ? "
                      "AND sql IS NOT NULL ORDER BY name", (table,))

    def commit(self) -> None:
        self.q("COMMIT")

    def finish(self, vacuum: bool) -> dict[str, Any]:
        self.q("ANALYZE")
        return {}


def _connect(database_url: str):
    from sqlalchemy.engine import make_url

    from app import database_uri

    url = make_url(database_uri(database_url))
    if url.get_backend_name() == "postgresql":
        return _Postgres(url)
    if url.get_backend_name() == "sqlite":
        return _Sqlite(url)
    raise ValueError(f"unsupported database {url.get_backend_name()!r}")


# -- self-checks against the app's own code -----------------------------------------------------------


def _check_keys(samples: list[tuple[str, str, str]]) -> None:
    from app.security.digests import digest
    from app.services.api_keys import is_well_formed
    from app.services.validation import valid_scopes

    for plaintext, key_digest, scope in samples:
        if not is_well_formed(plaintext) or digest(plaintext) != key_digest:
            raise AssertionError(f"seeded key {plaintext[:12]}... does not match app.services.api_keys")
        if " ".join(valid_scopes(scope)) != scope:
            raise AssertionError(f"seeded scope {scope!r} is not what create_api_key stores")


def _check_audit(rows: list[tuple]) -> None:
    """Rows in AUDIT_COLUMNS order with an ISO 'Z' timestamp: hashes equal chain_hash's."""
    from app.services.audit import chain_hash

    for row in rows:
        event = SimpleNamespace(**dict(zip(AUDIT_COLUMNS, row, strict=False)))
        event.created_at = datetime.fromisoformat(event.created_at.replace("Z", "+00:00"))
        if chain_hash(event.prev_hash, event) != event.hash:
            raise AssertionError(f"seeded entry {event.id} does not hash as app.services.audit.chain_hash")


# -- seeding ---------------------------------------------------------------------------------------------


def seed(database_url: str, *, api_keys: int, audit_rows: int, org_id: str, other_orgs: int = 1000,
         org_share: float = 0.10, audit_days: float = 30, key_days: float = 365, random_seed: int | None = None,
         chunk_rows: int = 50_000, rebuild_indexes: bool | None = None, vacuum: bool = True,
         verbose: bool = True) -> dict[str, Any]:
    """Add ``api_keys`` keys and ``audit_rows`` sealed audit entries to the schema at ``database_url``.

    ``org_id`` (an existing organization) gets ``org_share`` of each; ``other_orgs`` new
    organizations get the rest. ``rebuild_indexes`` None: drop and re-create indexes when the
    load is at least 100k rows and as large as the table. Returns counts and seconds per phase.
    """
    if api_keys < 0 or audit_rows < 0 or other_orgs < 0 or not 0 < org_share <= 1 or chunk_rows < 1:
        raise ValueError("api_keys, audit_rows and other_orgs must be >= 0, org_share in (0, 1]")
    if other_orgs == 0:
        org_share = 1.0
    log = say if verbose else (lambda _m: None)
    import app.services.api_keys  # noqa: F401  (the self-checks' imports, before the clock starts)
    import app.services.audit  # noqa: F401

    seconds: dict[str, float] = {}
    started = t = time.monotonic()

    def lap(name: str) -> None:
        nonlocal t
        now = time.monotonic()
        seconds[name] = round(seconds.get(name, 0.0) + now - t, 2)
        t = now

    if random_seed is None:
        random_seed = int.from_bytes(os.urandom(8), "big")
    rng = random.Random(random_seed)
    now_us = (datetime.now(UTC).replace(tzinfo=None) - EPOCH) // timedelta(microseconds=1)

    db = _connect(database_url)
    gc_enabled = gc.isenabled()
    gc.disable()  # millions of short-lived rows, no cycles: the collector only costs time here
    try:
        db.begin()
        head = db.q("SELECT seq, hash FROM audit_chain_heads WHERE org_id = ?" +
                    (" FOR UPDATE" if db.kind == "postgresql" else ""), (org_id,))
        if not head:
            raise ValueError(f"no organization {org_id!r} with an audit chain head in this database")
        head_seq, head_hash = head[0]
        before = {"api_keys": db.count_rows("api_keys"), "audit_events": db.count_rows("audit_events")}

        # -- plan --------------------------------------------------------------------------------------
        mine_keys = api_keys if other_orgs == 0 else round(api_keys * org_share)
        mine_rows = audit_rows if other_orgs == 0 else round(audit_rows * org_share)
        weights = [(rank + 1) ** -SIZE_EXPONENT for rank in range(other_orgs)]
        orgs = [Org(org_id, mine_keys, mine_rows)]
        new_ids = _strings(rng, other_orgs, 20)
        for i, (keys, rows) in enumerate(zip(_split(api_keys - mine_keys, weights),
                                             _split(audit_rows - mine_rows, weights), strict=False)):
            orgs.append(Org(f"org_{new_ids[i]}", keys, rows))
        orgs[0].seq, orgs[0].head_hash = head_seq, head_hash
        for i, org in enumerate(orgs):
            _people(rng, org, "bench" if i == 0 else f"tenant{i}")
        lap("plan")

        # -- organizations (as create_org makes them: the org, then its chain head at genesis) ---------
        org_rows, head_rows = [], []
        for rank, org in enumerate(orgs[1:]):
            share = rank / max(other_orgs, 1)
            tier = ("enterprise" if share < 0.05 else "professional" if share < 0.2
                    else "starter" if share < 0.5 else "free")
            limits = (500, 20_000_000) if tier == "enterprise" and rng.random() < 0.5 else (None, None)
            name = f"{rng.choice(COMPANIES)} {rng.choice(SUFFIXES)} {rank + 1}"
            created = now_us - int((key_days + rng.random() * 365) * DAY_US)
            org_rows.append((org.id, name, tier, *limits, db.ts(created)))
            head_rows.append((org.id, 0, GENESIS))
        if org_rows:
            db.many("INSERT INTO organizations (id, name, tier, rate_limit_per_second, rate_limit_per_day, "
                    "created_at) VALUES (?, ?, ?, ?, ?, ?)", org_rows)
            db.many("INSERT INTO audit_chain_heads (org_id, seq, hash) VALUES (?, ?, ?)", head_rows)
        log(f"seed: {len(org_rows):,} organizations created; org {org_id}: {mine_keys:,} keys, {mine_rows:,} "
            f"entries (chain continues after seq {head_seq}); other orgs: largest {orgs[1].rows if other_orgs else 0:,} "
            f"entries / {orgs[1].keys if other_orgs else 0:,} keys, smallest {orgs[-1].rows:,} / {orgs[-1].keys:,}")
        lap("orgs")

        # -- drop indexes for the load ------------------------------------------------------------------
        rebuild = {}
        for table, n in (("api_keys", api_keys), ("audit_events", audit_rows)):
            wanted = rebuild_indexes if rebuild_indexes is not None else (n >= 100_000 and n >= before[table])
            if wanted and n:
                rebuild[table] = (db.all_indexes(table), db.ddl(table))
                db.drop(table, rebuild[table][1])
        if rebuild:
            log(f"seed: dropped the indexes and constraints of {', '.join(rebuild)} for the load")
        lap("drop_indexes")

        _seed_keys(db, rng, orgs, api_keys, now_us, key_days, chunk_rows, seconds, log)
        lap("api_keys")
        fake_key_ids = _strings(rng, 8, 20)
        for org in orgs:
            _actors(rng, org, fake_key_ids)
        _seed_audit(db, rng, orgs, audit_rows, now_us, audit_days, chunk_rows, seconds, log)
        lap("audit")

        if rebuild:
            log("seed: re-creating indexes and constraints")
            for table, (before_indexes, ddl) in rebuild.items():
                db.recreate(table, ddl, log)
                if db.all_indexes(table) != before_indexes:
                    raise AssertionError(f"indexes of {table} differ after the load")
        lap("indexes")

        db.many("UPDATE audit_chain_heads SET seq = ?, hash = ? WHERE org_id = ?",
                [(org.seq, org.head_hash, org.id) for org in orgs if org.rows])
        lap("chain_heads")
        db.commit()
        lap("commit")
        log("seed: committed; " + ("VACUUM (ANALYZE)" if vacuum and db.kind == "postgresql" else "ANALYZE"))
        tables = db.finish(vacuum)
        lap("vacuum_analyze" if vacuum and db.kind == "postgresql" else "analyze")
    finally:
        db.close()
        if gc_enabled:
            gc.enable()

    seconds["total"] = round(time.monotonic() - started, 2)
    others = sorted(o.rows for o in orgs[1:])
    result = {
        "database": db.kind,
        "org_id": org_id,
        "organizations_created": other_orgs,
        "api_keys": api_keys,
        "api_keys_in_org": mine_keys,
        "audit_rows": audit_rows,
        "audit_rows_in_org": mine_rows,
        "org_chain_head": {"seq": orgs[0].seq, "hash": orgs[0].head_hash},
        "other_org_audit_rows": ({"max": others[-1], "median": others[len(others) // 2], "min": others[0]}
                                 if others else None),
        "rows_before": before,
        "rebuilt_indexes": sorted(rebuild),
        "random_seed": random_seed,
        "tables": tables,
        "seconds": seconds,
    }
    log(f"seed: done in {seconds['total']:.1f}s")
    return result


def _seed_keys(db, rng, orgs: list[Org], total: int, now_us: int, days: float, chunk: int,
               seconds: dict[str, float], log) -> None:
    rand = rng.random
    assign = [i for i, org in enumerate(orgs) for _ in range(org.keys)]
    rng.shuffle(assign)
    end = now_us - 3_600_000_000
    start = end - int(days * DAY_US)
    step = (end - start) / max(total, 1)
    pg = db.kind == "postgresql"
    ts = db.ts
    sha256 = hashlib.sha256
    names, n_names = KEY_NAMES, len(KEY_NAMES)
    samples: list[tuple[str, str, str]] = []
    org_ids = [o.id for o in orgs]
    users = [[u for u, _ in o.users] for o in orgs]
    gen = copy = 0.0
    with db.loader("api_keys", KEY_COLUMNS) as load:
        for lo in range(0, total, chunk):
            t0 = time.monotonic()
            n = min(chunk, total - lo)
            ids, bodies = _strings(rng, n, 20), _strings(rng, n, 32)
            out: list = []
            for j in range(n):
                k = lo + j
                o = assign[k]
                created = start + int(k * step) + int(rand() * step)
                env = "live" if rand() < 0.75 else "test"
                body = f"sk_{env}_{bodies[j]}"
                plaintext = body + _checksum(body)
                key_digest = sha256(plaintext.encode()).hexdigest()
                name = names[int(rand() * n_names)]
                scope = SCOPE_TABLE[int(rand() * SLOTS)]
                whitelist = WHITELIST_TABLE[int(rand() * SLOTS)]
                org_users = users[o]
                created_by = org_users[int(rand() * len(org_users))] if rand() < 0.9 else None
                life = now_us - created
                r = rand()
                expires = created + (30, 90, 180, 365)[int(r * 20)] * DAY_US if r < 0.2 else None
                revoked = created + int(rand() * life) if rand() < 0.08 else None
                used = created + int(rand() * ((revoked or now_us) - created)) if rand() < 0.7 else None
                key_id = f"key_{ids[j]}"
                org = orgs[o]
                if len(org.key_sample) < 40:
                    org.key_sample.append((key_id, name))
                if k < 200:
                    samples.append((plaintext, key_digest, scope))
                row = (key_id, org_ids[o], name, key_digest, env, plaintext[-4:], scope, whitelist, created_by, None,
                       ts(created), expires and ts(expires), used and ts(used), revoked and ts(revoked))
                if pg:
                    out.append("\t".join(["\\N" if v is None else v for v in row]))
                else:
                    out.append(row)
            if lo == 0:
                _check_keys(samples)
            t1 = time.monotonic()
            load("\n".join(out) + "\n" if pg else out)
            t2 = time.monotonic()
            gen += t1 - t0
            copy += t2 - t1
            if (lo // chunk) % 10 == 9 or lo + n >= total:
                log(f"  api_keys {lo + n:>11,}/{total:,}  (generate {gen:6.1f}s, load {copy:6.1f}s)")
        t2 = time.monotonic()
    copy += time.monotonic() - t2  # the rest of the COPY, still in flight
    seconds["api_keys_generate"] = round(gen, 2)
    seconds["api_keys_load_wait"] = round(copy, 2)


def _seed_audit(db, rng, orgs: list[Org], total: int, now_us: int, days: float, chunk: int,
                seconds: dict[str, float], log) -> None:
    rand = rng.random
    t_plan = time.monotonic()
    assign = [i for i, org in enumerate(orgs) for _ in range(org.rows)]
    rng.shuffle(assign)  # organizations interleaved in time, as in a live table
    plan = time.monotonic() - t_plan
    end = now_us - 60_000_000
    start = end - int(days * DAY_US)
    step = (end - start) / max(total, 1)
    pg = db.kind == "postgresql"
    sha256 = hashlib.sha256
    state = [(o.actors, len(o.actors), o.pools, f"\t{o.id}\t", o.id) for o in orgs]
    seqs = [o.seq for o in orgs]
    prevs = [o.head_hash for o in orgs]
    minutes: dict[int, str] = {}
    ok, failed = ',"result":"success","seq":', ',"result":"failure","seq":'
    last_second, second_prefix = -1, ""
    gen = hashing = fmt = copy = 0.0
    with db.loader("audit_events", AUDIT_COLUMNS) as load:
        for lo in range(0, total, chunk):
            t0 = time.monotonic()
            n = min(chunk, total - lo)
            ids = _strings(rng, n, 20)
            tokens = _strings(rng, n, 22, _TO_URLSAFE)
            chunk_orgs = assign[lo:lo + n]
            canon: list[str] = []
            heads: list = []
            for j in range(n):
                o = chunk_orgs[j]
                actors, n_actors, pools, org_tab, org = state[o]
                us = start + int((lo + j) * step) + int(rand() * step)
                second, micro = divmod(us, 1_000_000)
                if second != last_second:  # timestamps only grow: one prefix per second
                    minute, sec = divmod(second, 60)
                    prefix = minutes.get(minute)
                    if prefix is None:
                        prefix = minutes[minute] = (EPOCH + timedelta(minutes=minute)).strftime("%Y-%m-%dT%H:%M:")
                    last_second, second_prefix = second, f"{prefix}{sec:02d}."
                stamp = f"{second_prefix}{micro:06d}Z"
                r = rand()
                actor = actors[int(n_actors * r * r)]
                action, kind, fail, action_json = actor[5][int(rand() * SLOTS)]
                if kind is None:
                    resource = None
                elif kind == "self":
                    resource = actor[1]
                elif kind == "jti":
                    resource = tokens[j]
                elif kind in RANDOM_RESOURCES:
                    resource = RANDOM_RESOURCES[kind] + tokens[j][:20]
                else:
                    pool = pools[kind]
                    resource = pool[int(rand() * len(pool))]
                success = not fail or rand() >= fail
                seq = seqs[o] = seqs[o] + 1
                event_id = "log_" + ids[j]
                # = the canonical JSON of chain_hash (sorted keys, no spaces), after "prev_hash"
                canon.append(f'{action_json}{actor[6]}{event_id}{actor[7]}'
                             f'{"null" if resource is None else chr(34) + resource + chr(34)}'
                             f'{ok if success else failed}{seq},"timestamp":"{stamp}"{actor[8]}')
                if pg:
                    heads.append(f"{event_id}{org_tab}{seq}\t{stamp}\t{action}\t{resource or chr(92) + 'N'}\t"
                                 f"{'success' if success else 'failure'}{actor[9]}")
                else:
                    heads.append((event_id, org, seq, stamp[:10] + " " + stamp[11:26], action, resource,
                                  "success" if success else "failure", actor[0], actor[1], actor[2], actor[3],
                                  actor[4]))
            t1 = time.monotonic()
            # The chain: hash = SHA-256(prev_hash ":" canonical JSON), per organization in seq order.
            links_prev: list[str] = []
            links: list[str] = []
            for o, c in zip(chunk_orgs, canon, strict=False):
                p = prevs[o]
                h = sha256((p + c).encode()).hexdigest()
                prevs[o] = h
                links_prev.append(p)
                links.append(h)
            t2 = time.monotonic()
            if pg:
                data: Any = "".join([f"{hd}{p}\t{h}\n" for hd, p, h in zip(heads, links_prev, links, strict=False)])
            else:
                data = [hd + (p, h) for hd, p, h in zip(heads, links_prev, links, strict=False)]
            if lo == 0:
                _check_audit(_sample_rows(data, pg, 300))
            t3 = time.monotonic()
            load(data)
            t4 = time.monotonic()
            gen += t1 - t0
            hashing += t2 - t1
            fmt += t3 - t2
            copy += t4 - t3
            if (lo // chunk) % 20 == 19 or lo + n >= total:
                log(f"  audit_events {lo + n:>11,}/{total:,}  (generate {gen:6.1f}s, sha256 chain {hashing:5.1f}s, "
                    f"format {fmt:5.1f}s, load {copy:6.1f}s)")
        t4 = time.monotonic()
    copy += time.monotonic() - t4  # the rest of the COPY, still in flight
    for org, seq, prev in zip(orgs, seqs, prevs, strict=False):
        org.seq, org.head_hash = seq, prev
    seconds["audit_plan"] = round(plan, 2)
    seconds["audit_generate"] = round(gen, 2)
    seconds["audit_sha256_chain"] = round(hashing, 2)
    seconds["audit_format"] = round(fmt, 2)
    seconds["audit_load_wait"] = round(copy, 2)


def _sample_rows(data: Any, pg: bool, n: int) -> list[tuple]:
    """The first ``n`` rows of a loaded chunk as AUDIT_COLUMNS tuples with ISO 'Z' timestamps."""
    rows = []
    if pg:
        for line in data.split("\n", n)[:n]:
            if line:
                row = [None if v == "\\N" else v for v in line.split("\t")]
                row[2] = int(row[2])
                rows.append(tuple(row))
    else:
        for row in data[:n]:
            row = list(row)
            row[3] = row[3].replace(" ", "T") + "Z"
            rows.append(tuple(row))
    return rows


# -- command line ------------------------------------------------------------------------------------


def schema_url(base_url: str, schema_name: str) -> str:
    separator = "&" if "?" in base_url else "?"
    return f"{base_url}{separator}options={quote(f'-csearch_path={schema_name}', safe='')}"


def _create_database(base_url: str) -> tuple[str, str | None, str]:
    """A fresh PostgreSQL schema (or SQLite file), migrated, with one organization: (url, schema, org id)."""
    from sqlalchemy import create_engine, text

    from app import create_app, database_uri
    from app.extensions import db
    from app.services import orgs, schema

    schema_name = None
    url = base_url
    if database_uri(base_url).startswith("postgresql"):
        schema_name = f"sensei_seed_{os.getpid()}_{secrets.token_hex(3)}"
        admin = create_engine(database_uri(base_url))
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema_name}"'))
        admin.dispose()
        url = schema_url(base_url, schema_name)
    keys_dir = tempfile.mkdtemp(prefix="sensei-seed-keys-")
    try:
        application = create_app({"DATABASE_URL": url, "KEYS_DIR": keys_dir, "SQLITE_SINGLE_HOST": True})
        with application.app_context():
            schema.upgrade_schema()
            org_id = orgs.create_org(name="Bench org", tier="enterprise").id
            db.session.remove()
            db.engine.dispose()
    except BaseException:
        _drop_database(base_url, url, schema_name)  # do not leave a half-made schema behind
        raise
    finally:
        shutil.rmtree(keys_dir, ignore_errors=True)
    return url, schema_name, org_id


def _drop_database(base_url: str, url: str, schema_name: str | None) -> None:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from app import database_uri

    if schema_name is None:
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path((make_url(url).database or "") + suffix).unlink(missing_ok=True)
        say(f"removed {make_url(url).database}")
        return
    admin = create_engine(database_uri(base_url))
    with admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema_name}" CASCADE'))
    admin.dispose()
    say(f"dropped schema {schema_name}")


def _verify(url: str, org_id: str) -> dict[str, Any]:
    from app import create_app
    from app.extensions import db
    from app.services.audit import verify_chain

    keys_dir = tempfile.mkdtemp(prefix="sensei-seed-keys-")
    try:
        application = create_app({"DATABASE_URL": url, "KEYS_DIR": keys_dir, "SQLITE_SINGLE_HOST": True})
        with application.app_context():
            started = time.monotonic()
            report = verify_chain(org_id=org_id)
            report["seconds"] = round(time.monotonic() - started, 2)
            db.session.remove()
            db.engine.dispose()
    finally:
        shutil.rmtree(keys_dir, ignore_errors=True)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", help=f"the database (with --create-schema: the base URL, default {DEFAULT_PG})")
    parser.add_argument("--org-id", help="the existing organization that gets --org-share of the rows")
    parser.add_argument("--api-keys", type=int, default=1_000_000, help="API keys to add (default 1,000,000)")
    parser.add_argument("--audit-rows", type=int, default=10_000_000, help="audit entries to add (default 10,000,000)")
    parser.add_argument("--other-orgs", type=int, default=1000, help="organizations to create (default 1,000)")
    parser.add_argument("--org-share", type=float, default=0.10, help="share of the rows in --org-id (default 0.10)")
    parser.add_argument("--seed", type=int, dest="random_seed", help="random seed (default: random)")
    parser.add_argument("--chunk", type=int, default=50_000, help="rows per COPY / executemany call (default 50,000)")
    parser.add_argument("--rebuild-indexes", choices=("auto", "yes", "no"), default="auto",
                        help="drop and re-create the tables' indexes around the load (default auto)")
    parser.add_argument("--no-vacuum", action="store_true", help="PostgreSQL: ANALYZE only, no VACUUM")
    parser.add_argument("--create-schema", action="store_true",
                        help="create a fresh PostgreSQL schema (or SQLite file), migrate it, create the org, seed it")
    parser.add_argument("--drop", action="store_true", help="with --create-schema: drop the schema at the end")
    parser.add_argument("--verify", action="store_true", help="run verify_chain(org_id=...) afterwards, timed")
    parser.add_argument("--json", metavar="PATH", help="also write the result as JSON to PATH")
    args = parser.parse_args(argv)
    if args.create_schema:
        if args.org_id:
            parser.error("--create-schema creates its own organization: leave out --org-id")
        base = args.database_url or DEFAULT_PG
    else:
        if not args.database_url or not args.org_id:
            parser.error("--database-url and --org-id are required (or use --create-schema)")
        if args.drop:
            parser.error("--drop goes with --create-schema")
        base = args.database_url

    def _terminate(signum, _frame):  # SIGTERM unwinds through the finally below (drops with --drop)
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _terminate)
    url, schema_name, org_id = base, None, args.org_id
    created = False
    try:
        if args.create_schema:
            if not database_uri_is_pg(base) and Path(sqlite_path(base)).exists():
                parser.error(f"{sqlite_path(base)} exists: --create-schema makes a new SQLite file")
            url, schema_name, org_id = _create_database(base)
            created = True
            say(f"created {'schema ' + schema_name if schema_name else sqlite_path(base)} with organization {org_id}")
            say(f"database URL: {url}")
        result = seed(url, api_keys=args.api_keys, audit_rows=args.audit_rows, org_id=org_id,
                      other_orgs=args.other_orgs, org_share=args.org_share, random_seed=args.random_seed,
                      chunk_rows=args.chunk, vacuum=not args.no_vacuum,
                      rebuild_indexes={"auto": None, "yes": True, "no": False}[args.rebuild_indexes])
        if schema_name:
            result["schema"] = schema_name
        result["database_url"] = url
        if args.verify:
            say(f"verify_chain(org_id={org_id}) ...")
            result["verify_chain"] = _verify(url, org_id)
        say(json.dumps(result, indent=2))
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2))
        if "verify_chain" in result and result["verify_chain"]["problems"]:
            return 1
        return 0
    except ValueError as error:  # a wrong argument: no such organization or database
        print(f"error: {error}", file=sys.stderr)
        return 2
    finally:
        if created and args.drop:
            _drop_database(base, url, schema_name)
        elif created:
            say(f"kept {'schema ' + schema_name if schema_name else sqlite_path(base)}"
                + (f' (drop it with: DROP SCHEMA "{schema_name}" CASCADE)' if schema_name else ""))


def database_uri_is_pg(url: str) -> bool:
    from app import database_uri

    return database_uri(url).startswith("postgresql")


def sqlite_path(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).database or ""


if __name__ == "__main__":
    sys.exit(main())
