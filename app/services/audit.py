"""The audit log (SPEC §10): append-only, hash-chained per organization.

Recording is one INSERT in the same transaction as the change it records, so an event is
never lost and never recorded for a change that rolled back — and appends take no lock,
so concurrent requests of one organization do not queue behind each other.

Sealing chains the entries shortly after (a background thread in every server process
runs ``seal_pending`` each second; ``sensei audit verify`` seals first): under the
organization's chain-head row lock it gives each unsealed entry the next sequence number,
``prev_hash`` and ``hash = SHA-256(prev_hash || canonical JSON of the entry)``.
``verify_chain`` then finds an edited, inserted or deleted entry. No code path updates or
deletes an entry except sealing, which fills in only those three empty columns once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, tuple_, update

from app.errors import ApiError
from app.extensions import db
from app.models import AuditChainHead, AuditEvent
from app.models.audit import GENESIS_HASH as GENESIS
from app.models.base import new_id, sane_id, utcnow
from app.services.pagination import Page

RESULTS = ("success", "failure")
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


def _payload(event: AuditEvent) -> dict[str, Any]:
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


def chain_hash(prev_hash: str, event: AuditEvent) -> str:
    canonical = json.dumps(_payload(event), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(f"{prev_hash}:{canonical}".encode()).hexdigest()


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
    event = AuditEvent(
        id=new_id("log"),
        org_id=org_id,
        created_at=utcnow(),
        actor_type=context.actor_type,
        actor_id=_clip(context.actor_id, 64),
        actor_name=_clip(context.actor_name, 254) or "",
        action=action,
        resource=_clip(resource, 128),
        ip_address=_clip(context.ip_address, 45),
        user_agent=_clip(context.user_agent, 512),
        result=result,
    )
    db.session.add(event)
    context.recorded = True
    return event


def record_now(context: AuditContext | None, **fields: Any) -> None:
    """Record an event that stands alone (a read, a refusal) in its own transaction."""
    record(context, **fields)
    db.session.commit()


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
    # Take the chain head first (a write): concurrent sealers of this org wait here, and
    # on SQLite the write lock is held before anything is read.
    take = (
        update(AuditChainHead)
        .where(AuditChainHead.org_id == org_id)
        .values(seq=AuditChainHead.seq)
        .returning(AuditChainHead.seq, AuditChainHead.hash)
    )
    row = db.session.execute(take).one_or_none()
    if row is None:  # every organization gets its head when created; this one is gone
        db.session.rollback()
        return 0
    seq, prev_hash = row
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
            with self.app.app_context():
                try:
                    seal_pending()
                except Exception:  # the next round retries; entries are safe in the table
                    log.exception("audit sealing failed")
                    db.session.rollback()
                finally:
                    db.session.remove()


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
    """Seal what is pending, then walk every chain; report the first break of each organization."""
    seal_pending()
    heads = db.session.scalars(
        select(AuditChainHead).where(AuditChainHead.org_id == org_id) if org_id else select(AuditChainHead)
    ).all()
    report: dict[str, Any] = {"organizations": 0, "entries": 0, "problems": []}
    for head in heads:
        report["organizations"] += 1
        prev_hash, expected_seq, last_seq = GENESIS, 1, 0
        problem = None
        after = 0
        while problem is None:
            rows = db.session.scalars(
                select(AuditEvent)
                .where(AuditEvent.org_id == head.org_id, AuditEvent.seq > after)  # sealed entries
                .order_by(AuditEvent.seq)
                .limit(batch)
            ).all()
            if not rows:
                break
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
            after = rows[-1].seq or after
            db.session.expunge_all()
        if problem is None and (head.seq != last_seq or head.hash != prev_hash):
            problem = f"entries after {last_seq} are missing (the chain head is at {head.seq})"
        if problem:
            report["problems"].append({"org_id": head.org_id, "problem": problem})
    return report
