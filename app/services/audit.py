"""The audit log (SPEC §10): append-only, hash-chained per organization.

Each entry is written in the same transaction as the change it records, so an event is
never lost and never recorded for a change that rolled back. Entries of one organization
form a chain: ``hash = SHA-256(prev_hash || canonical JSON of the entry)``, with a per-org
sequence number. The chain head row is updated first, which serializes appends within an
organization (the lock lasts until the caller commits, so record right before commit)
and makes ``created_at`` follow ``seq``. ``verify_chain`` finds an edited, inserted or
deleted entry. No code path updates or deletes entries.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from app.errors import ApiError
from app.extensions import db
from app.models import AuditChainHead, AuditEvent
from app.models.audit import GENESIS_HASH as GENESIS
from app.models.base import new_id, sane_id, utcnow
from app.services.pagination import Page

RESULTS = ("success", "failure")


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


def ensure_chain_head(org_id: str) -> None:
    """Create the org's chain head if it has none (idempotent, safe under concurrency)."""
    insert = postgresql_insert if db.session.get_bind().dialect.name == "postgresql" else sqlite_insert
    db.session.execute(
        insert(AuditChainHead).values(org_id=org_id, seq=0, hash=GENESIS).on_conflict_do_nothing(
            index_elements=["org_id"]
        )
    )


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
    bump = (
        update(AuditChainHead)
        .where(AuditChainHead.org_id == org_id)
        .values(seq=AuditChainHead.seq + 1)
        .returning(AuditChainHead.seq, AuditChainHead.hash)
    )
    row = db.session.execute(bump).one_or_none()
    if row is None:
        ensure_chain_head(org_id)
        row = db.session.execute(bump).one()
    seq, prev_hash = row
    event = AuditEvent(
        id=new_id("log"),
        org_id=org_id,
        seq=seq,
        created_at=utcnow(),
        actor_type=context.actor_type,
        actor_id=_clip(context.actor_id, 64),
        actor_name=_clip(context.actor_name, 254) or "",
        action=action,
        resource=_clip(resource, 128),
        ip_address=_clip(context.ip_address, 45),
        user_agent=_clip(context.user_agent, 512),
        result=result,
        prev_hash=prev_hash,
    )
    event.hash = chain_hash(prev_hash, event)
    db.session.execute(update(AuditChainHead).where(AuditChainHead.org_id == org_id).values(hash=event.hash))
    db.session.add(event)
    context.recorded = True
    return event


def record_now(context: AuditContext | None, **fields: Any) -> None:
    """Record an event that stands alone (a read, a refusal) in its own transaction."""
    record(context, **fields)
    db.session.commit()


# -- reading -----------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditFilter:
    action: str | None = None
    actor_id: str | None = None
    result: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def list_events(*, org_id: str, limit: int, starting_after: str | None, filters: AuditFilter) -> Page:
    """Newest first. Time bounds become sequence bounds (``created_at`` follows ``seq``), so
    every query walks one (org, filter, seq) index from the newest entry."""
    stmt = select(AuditEvent).where(AuditEvent.org_id == org_id)
    if filters.action:
        stmt = stmt.where(AuditEvent.action == filters.action)
    if filters.actor_id:
        stmt = stmt.where(AuditEvent.actor_id == filters.actor_id)
    if filters.result:
        stmt = stmt.where(AuditEvent.result == filters.result)
    if filters.since:
        low = db.session.scalar(
            select(func.min(AuditEvent.seq)).where(AuditEvent.org_id == org_id, AuditEvent.created_at >= filters.since)
        )
        if low is None:
            return Page(items=[], has_more=False)
        stmt = stmt.where(AuditEvent.seq >= low)
    if filters.until:
        high = db.session.scalar(
            select(func.max(AuditEvent.seq)).where(AuditEvent.org_id == org_id, AuditEvent.created_at <= filters.until)
        )
        if high is None:
            return Page(items=[], has_more=False)
        stmt = stmt.where(AuditEvent.seq <= high)
    if starting_after is not None:
        cursor = None
        if sane_id(starting_after):
            cursor = db.session.scalar(
                select(AuditEvent.seq).where(AuditEvent.org_id == org_id, AuditEvent.id == starting_after)
            )
        if cursor is None:
            raise ApiError("invalid_request", "starting_after is not an entry of this log", param="starting_after")
        stmt = stmt.where(AuditEvent.seq < cursor)
    rows = list(db.session.scalars(stmt.order_by(AuditEvent.seq.desc()).limit(limit + 1)))
    return Page(items=rows[:limit], has_more=len(rows) > limit)


# -- verification ------------------------------------------------------------------------


def verify_chain(*, org_id: str | None = None, batch: int = 5000) -> dict[str, Any]:
    """Walk every chain; report the first break of each organization."""
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
                .where(AuditEvent.org_id == head.org_id, AuditEvent.seq > after)
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
                prev_hash, expected_seq, last_seq = event.hash, event.seq + 1, event.seq
            after = rows[-1].seq
            db.session.expunge_all()
        if problem is None and (head.seq != last_seq or head.hash != prev_hash):
            problem = f"entries after {last_seq} are missing (the chain head is at {head.seq})"
        if problem:
            report["problems"].append({"org_id": head.org_id, "problem": problem})
    return report
