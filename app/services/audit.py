"""The audit log (SPEC §10): append-only, hash-chained per organization.

An entry of a change is one INSERT in the same transaction as the change, so it is never
lost and never recorded for a change that rolled back; such appends take no lock, so
concurrent requests of one organization do not queue behind each other. An entry that
stands alone (a read, a refusal, a token issued) goes to the process's ``AuditWriter``,
which writes batches off the request path, already chained.

Sealing chains the unchained entries shortly after (a background thread in every server
process runs ``seal_pending`` each second; ``sensei audit verify`` seals first): under the
organization's chain-head row lock it gives each unsealed entry the next sequence number,
``prev_hash`` and ``hash = SHA-256(prev_hash || canonical JSON of the entry)``.
``verify_chain`` then finds an edited, inserted or deleted entry. No code path updates or
deletes an entry except sealing, which fills in only those three empty columns once.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from flask import current_app, has_app_context
from sqlalchemy import func, insert, select, tuple_, update
from sqlalchemy.exc import IntegrityError, OperationalError

from app.errors import ApiError
from app.extensions import db
from app.metrics import AUDIT_BACKLOG
from app.models import AuditChainHead, AuditEvent
from app.models.audit import GENESIS_HASH as GENESIS
from app.models.base import new_id, sane_id, utcnow
from app.services.pagination import Page

RESULTS = ("success", "failure")
LINGER = 0.1  # seconds an audit batch gathers entries before it is written
log = logging.getLogger("sensei.audit")


@dataclass
class AuditContext:
    """Who acts, from where. Views build it from the request; the CLI uses OPERATOR."""

    actor_type: str
    actor_id: str | None
    actor_name: str
    ip_address: str | None = None
    user_agent: str | None = None
    recorded: bool = False


def operator_context() -> AuditContext:
    return AuditContext(actor_type="operator", actor_id=None, actor_name="sensei CLI")


def _clip(value: str | None, length: int) -> str | None:
    if value is None:
        return None
    return value.replace("\x00", "")[:length]


def _timestamp(value: datetime) -> str:
    return value.isoformat(timespec="microseconds").replace("+00:00", "Z")


def _payload(event: Any) -> dict[str, Any]:
    return {
        "id": event.id,
        "org_id": event.org_id,
        "seq": event.seq,
        "timestamp": _timestamp(event.created_at),
        "actor": [event.actor_type, event.actor_id, event.actor_name],
        "action": event.action,
        "resource": event.resource,
        "ip_address": event.ip_address,
        "user_agent": event.user_agent,
        "result": event.result,
    }


# The canonical form every entry is hashed in; one encoder, made once (json.dumps with
# options would build one per entry).
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def chain_hash(prev_hash: str, event: Any) -> str:
    """SHA-256 over the previous hash and the entry (an ``AuditEvent`` or its columns)."""
    canonical = _CANONICAL.encode(_payload(event))
    return hashlib.sha256(f"{prev_hash}:{canonical}".encode()).hexdigest()


def _row(context: AuditContext, *, org_id: str, action: str, resource: str | None = None,
         result: str = "success") -> dict[str, Any]:
    """The columns of one new (unsealed) entry."""
    return {
        "id": new_id("log"),
        "org_id": org_id,
        "created_at": utcnow(),
        "actor_type": context.actor_type,
        "actor_id": _clip(context.actor_id, 64),
        "actor_name": _clip(context.actor_name, 254) or "",
        "action": action,
        "resource": _clip(resource, 128),
        "ip_address": _clip(context.ip_address, 45),
        "user_agent": _clip(context.user_agent, 512),
        "result": result,
    }


def record(
    context: AuditContext | None,
    *,
    org_id: str,
    action: str,
    resource: str | None = None,
    result: str = "success",
) -> AuditEvent | None:
    """Append one entry in the caller's transaction (the caller commits)."""
    if context is None:
        return None
    event = AuditEvent(**_row(context, org_id=org_id, action=action, resource=resource, result=result))
    db.session.add(event)
    context.recorded = True
    return event


def record_now(context: AuditContext | None, *, app: Any = None, **fields: Any) -> None:
    """Record an event that stands alone (a read, a refusal, a token issued): no change of
    the request's rolls back with it. In a server process it goes to the writer thread, off
    the request path; without one, or while the writer's queue is full (back-pressure), it is
    written here in a transaction of its own. ``app``: for a caller outside an app context
    (the hot paths)."""
    if context is None:
        return
    row = _row(context, **fields)
    context.recorded = True
    if app is None:
        app = current_app._get_current_object()  # type: ignore[attr-defined]
    writer: AuditWriter | None = app.extensions.get("sensei.audit_writer")
    if writer is not None and writer.submit(row):
        return
    if has_app_context():
        _write_now(row)
    else:
        with app.app_context():
            _write_now(row)


def _write_now(row: dict[str, Any]) -> None:
    db.session.execute(insert(AuditEvent), [row])
    db.session.commit()


# -- the writer ----------------------------------------------------------------------------


_COLUMNS = [column.name for column in AuditEvent.__table__.columns]


def append_sealed(by_org: dict[str, list[dict[str, Any]]]) -> None:
    """Insert entries already chained: per organization, under its chain-head lock, the next
    sequence numbers and hashes, the rows in one COPY (PostgreSQL) or ``executemany``
    (SQLite) and the head moved — one transaction each. An organization's entries leave
    ``by_org`` once committed, so a retry after a failure writes only the rest."""
    with db.engine.connect() as conn:
        for org_id in sorted(by_org):  # one lock order for every writer
            rows = [dict(row) for row in by_org[org_id]]
            try:
                with conn.begin():
                    head = conn.execute(_take_head(org_id)).one_or_none()
                    if head is None:  # every organization has a head from its creation: gone
                        log.error("%d audit entries of deleted organization %s dropped", len(rows), org_id)
                    else:
                        seq, prev_hash = head
                        for row in rows:
                            seq += 1
                            row["seq"], row["prev_hash"] = seq, prev_hash
                            row["hash"] = prev_hash = chain_hash(prev_hash, SimpleNamespace(**row))
                        _insert_rows(conn, rows)
                        conn.execute(update(AuditChainHead).where(AuditChainHead.org_id == org_id)
                                     .values(seq=seq, hash=prev_hash))
            except IntegrityError:
                # Their ids exist already (a commit whose reply was lost, then retried) or
                # their organization is gone: either way these rows can never be written.
                log.warning("%d audit entries of %s were already written or have no organization",
                            len(rows), org_id)
            del by_org[org_id]


def _insert_rows(conn: Any, rows: list[dict[str, Any]]) -> None:
    """The batch through the driver itself: per row, SQLAlchemy's parameter handling would
    cost more than the database does."""
    driver = conn.connection.driver_connection
    if conn.dialect.name == "postgresql":
        with driver.cursor() as cursor, cursor.copy(f"COPY audit_events ({', '.join(_COLUMNS)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row([row.get(name) for name in _COLUMNS])
        return
    placeholders = ", ".join("?" for _ in _COLUMNS)
    stored = [[_sqlite_value(row.get(name)) for name in _COLUMNS] for row in rows]
    driver.cursor().executemany(f"INSERT INTO audit_events ({', '.join(_COLUMNS)}) VALUES ({placeholders})",
                                stored)


def _sqlite_value(value: Any) -> Any:
    """What UTCDateTime stores on SQLite: naive UTC in SQLAlchemy's DATETIME format."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    return value


class AuditWriter:
    """Writes standalone entries of one server process in batches, off the request path.

    Requests append to a bounded list (``max_pending``): when it is full ``submit`` refuses
    and the request writes its own entry, so a slow database slows requests rather than
    growing memory. Every ``LINGER`` seconds the thread writes what has gathered as one
    batch; it is never woken per entry, so a request's own database and Redis calls do not
    wait for this thread to hand the GIL back. A failed write is retried, never dropped;
    ``stop`` (at process exit: a graceful reload or stop) writes what is left first. A
    process killed outright (SIGKILL, power loss) loses what was pending: the entries of its
    last ``LINGER`` seconds, plus any held back by a database that was not answering.
    """

    def __init__(self, app: Any, *, max_pending: int = 10_000, batch: int = 1000, linger: float = LINGER,
                 exit_timeout: float = 15.0) -> None:
        self.app = app
        self.max_pending = max_pending
        self.batch = batch
        self.linger = linger
        self.exit_timeout = exit_timeout
        self._pending: deque[dict[str, Any]] = deque()
        self._writing = 0  # entries taken from _pending and not yet committed
        self._thread: threading.Thread | None = None
        self._running = False  # the thread has started and not returned (a flag: cheaper than is_alive)
        self._start_lock = threading.Lock()
        self._stop = threading.Event()

    def submit(self, row: dict[str, Any]) -> bool:
        if len(self._pending) >= self.max_pending or self._stop.is_set():
            return False
        if not self._running:
            self._start()
        self._pending.append(row)
        return True

    def _start(self) -> None:
        with self._start_lock:
            if not self._running:
                self._running = True
                self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
                self._thread.start()
                atexit.register(self.stop)

    @property
    def unwritten(self) -> int:
        return len(self._pending) + self._writing

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every entry submitted so far is written; False on timeout."""
        deadline = time.monotonic() + timeout
        while self.unwritten > 0:
            if time.monotonic() > deadline or self._thread is None or not self._thread.is_alive():
                return False
            time.sleep(0.01)
        return True

    def stop(self) -> None:
        """Write what is pending, then end the thread (bounded by ``exit_timeout``)."""
        if self._stop.is_set():
            return
        self._stop.set()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(self.exit_timeout)
        if self.unwritten > 0:
            log.error("audit writer stopped with %d entries unwritten", self.unwritten)

    def _run(self) -> None:
        try:
            self._drain()
        finally:
            self._running = False

    def _drain(self) -> None:
        while True:
            stopping = self._stop.wait(self.linger)
            AUDIT_BACKLOG.set(self.unwritten)
            while self._pending:
                rows: list[dict[str, Any]] = []
                while self._pending and len(rows) < self.batch:
                    rows.append(self._pending.popleft())
                self._writing = len(rows)
                self._write(rows)
                self._writing = 0
                AUDIT_BACKLOG.set(len(self._pending))
                if len(rows) < self.batch and not stopping:
                    break  # linger again: what arrived meanwhile joins the next batch
            if stopping:
                return

    def _write(self, rows: list[dict[str, Any]]) -> None:
        by_org: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            by_org.setdefault(row["org_id"], []).append(row)
        delay, deadline = 0.05, None
        while True:
            with self.app.app_context():
                try:
                    append_sealed(by_org)
                    return
                except Exception as error:  # the database is down or busy: retry, never drop
                    log.error("audit write of %d entries failed (%s); retrying", len(rows), type(error).__name__)
            if self._stop.is_set():
                deadline = deadline or time.monotonic() + self.exit_timeout
                if time.monotonic() > deadline:
                    log.error("audit writer exits with %d entries unwritten (the database is not answering)",
                              sum(len(batch) for batch in by_org.values()))
                    return
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


def _take_head(org_id: str):
    """Take an organization's chain head (a write: concurrent sealers and writers wait here,
    and on SQLite the write lock is held before anything is read)."""
    return (
        update(AuditChainHead)
        .where(AuditChainHead.org_id == org_id)
        .values(seq=AuditChainHead.seq)
        .returning(AuditChainHead.seq, AuditChainHead.hash)
    )


def _lock_head(org_id: str) -> tuple[int, str] | None:
    row = db.session.execute(_take_head(org_id)).one_or_none()
    return (row[0], row[1]) if row is not None else None


# -- sealing -----------------------------------------------------------------------------


def seal_pending(*, batch: int = 1000) -> int:
    """Chain every unsealed entry; returns how many were sealed."""
    org_ids = db.session.scalars(select(AuditEvent.org_id).where(AuditEvent.seq.is_(None)).distinct()).all()
    db.session.rollback()  # end the read before taking each chain's lock
    sealed = 0
    for org_id in org_ids:
        while (count := _seal_org(org_id, batch)) > 0:
            sealed += count
            if count < batch:
                break
    return sealed


def _seal_org(org_id: str, batch: int) -> int:
    head = _lock_head(org_id)
    if head is None:  # every organization gets its head when created; this one is gone
        db.session.rollback()
        return 0
    seq, prev_hash = head
    pending = db.session.scalars(
        select(AuditEvent)
        .where(AuditEvent.org_id == org_id, AuditEvent.seq.is_(None))
        .order_by(AuditEvent.created_at, AuditEvent.id)
        .limit(batch)
    ).all()
    for event in pending:
        seq += 1
        event.seq, event.prev_hash = seq, prev_hash
        event.hash = prev_hash = chain_hash(prev_hash, event)
    if pending:
        db.session.execute(
            update(AuditChainHead).where(AuditChainHead.org_id == org_id).values(seq=seq, hash=prev_hash)
        )
    db.session.commit()
    return len(pending)


class Sealer:
    """Seals the audit log every ``interval`` seconds on a daemon thread of a server process."""

    def __init__(self, app: Any, interval: float = 1.0) -> None:
        self.app = app
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="audit-sealer", daemon=True)

    def start(self) -> Sealer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            # The next round retries; entries are safe in the table. Leaving the context ends
            # the session, even on a connection that died (app._end_session).
            with self.app.app_context():
                try:
                    seal_pending()
                except OperationalError as error:  # the database is down or restarting
                    log.error("audit sealing failed (%s); retrying", type(error.orig or error).__name__)
                except Exception:
                    log.exception("audit sealing failed")


# -- reading -----------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditFilter:
    action: str | None = None
    actor_id: str | None = None
    result: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def list_events(*, org_id: str, limit: int, starting_after: str | None, filters: AuditFilter) -> Page:
    """Newest first; each filter has an (org, filter, created_at, id) index to walk."""
    if any("\x00" in value for value in (filters.action, filters.actor_id) if value):
        # No entry holds a NUL, and PostgreSQL refuses one in a query: answer as SQLite does.
        return Page(items=[], has_more=False)
    stmt = select(AuditEvent).where(AuditEvent.org_id == org_id)
    if filters.action:
        stmt = stmt.where(AuditEvent.action == filters.action)
    if filters.actor_id:
        stmt = stmt.where(AuditEvent.actor_id == filters.actor_id)
    if filters.result:
        stmt = stmt.where(AuditEvent.result == filters.result)
    if filters.since:
        stmt = stmt.where(AuditEvent.created_at >= filters.since)
    if filters.until:
        stmt = stmt.where(AuditEvent.created_at <= filters.until)
    if starting_after is not None:
        cursor = None
        if sane_id(starting_after):
            cursor = db.session.execute(
                select(AuditEvent.created_at, AuditEvent.id).where(
                    AuditEvent.org_id == org_id, AuditEvent.id == starting_after
                )
            ).one_or_none()
        if cursor is None:
            raise ApiError("invalid_request", "starting_after is not an entry of this log", param="starting_after")
        # A row-value comparison is an index range bound; the equivalent OR is a scan.
        stmt = stmt.where(tuple_(AuditEvent.created_at, AuditEvent.id) < tuple_(cursor.created_at, cursor.id))
    ordered = stmt.order_by(AuditEvent.created_at.desc(), AuditEvent.id.desc()).limit(limit + 1)
    rows = list(db.session.scalars(ordered))
    return Page(items=rows[:limit], has_more=len(rows) > limit)


def get_event(*, org_id: str, event_id: str) -> AuditEvent:
    event = db.session.get(AuditEvent, event_id) if sane_id(event_id) else None
    if event is None or event.org_id != org_id:
        raise ApiError("not_found", "No such audit entry")
    return event


# -- verification ------------------------------------------------------------------------


def verify_chain(*, org_id: str | None = None, batch: int = 5000) -> dict[str, Any]:
    """Seal what is pending, then walk every chain; report the first break of each organization.

    Entries may be appended while the walk goes on (a live server): the walk ends where the
    chain head is when it is re-read after the last entry, following any that arrived."""
    seal_pending()
    org_ids = db.session.scalars(
        select(AuditChainHead.org_id).where(AuditChainHead.org_id == org_id) if org_id
        else select(AuditChainHead.org_id)
    ).all()
    report: dict[str, Any] = {"organizations": 0, "entries": 0, "problems": []}
    for chain in org_ids:
        report["organizations"] += 1
        prev_hash, expected_seq, last_seq = GENESIS, 1, 0
        problem = None
        while problem is None:
            rows = db.session.scalars(
                select(AuditEvent)
                .where(AuditEvent.org_id == chain, AuditEvent.seq > last_seq)  # sealed entries
                .order_by(AuditEvent.seq)
                .limit(batch)
            ).all()
            for event in rows:
                report["entries"] += 1
                if event.seq != expected_seq:
                    problem = f"entry {expected_seq} is missing (next is {event.seq})"
                elif event.prev_hash != prev_hash:
                    problem = f"entry {event.seq} ({event.id}) does not follow the previous entry"
                elif chain_hash(prev_hash, event) != event.hash:
                    problem = f"entry {event.seq} ({event.id}) was modified"
                if problem:
                    break
                assert event.seq is not None and event.hash is not None  # only sealed entries are read
                prev_hash, expected_seq, last_seq = event.hash, event.seq + 1, event.seq
            db.session.expunge_all()
            if rows or problem:
                continue
            head = db.session.execute(
                select(AuditChainHead.seq, AuditChainHead.hash).where(AuditChainHead.org_id == chain)
            ).one()
            if head.seq > last_seq and db.session.scalar(
                select(func.count()).select_from(AuditEvent).where(AuditEvent.org_id == chain,
                                                                   AuditEvent.seq > last_seq)
            ):
                continue  # appended meanwhile: follow them
            if head.seq != last_seq or head.hash != prev_hash:
                problem = f"entries after {last_seq} are missing (the chain head is at {head.seq})"
            break
        if problem:
            report["problems"].append({"org_id": chain, "problem": problem})
    return report
