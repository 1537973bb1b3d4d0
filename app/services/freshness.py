"""Per-process caches of credentials that never serve a deleted or revoked one.

Every organization has a *generation* in Redis: a random token replaced after every
committed change to the organization's keys, clients, service accounts, users, limits or
revoked tokens (``after_commit`` below, from the ORM's own flush, plus ``changed()`` for
bulk statements). A cached credential remembers the generation it was read under, and is
used only while the request's rate-limit round trip — which reads the generation in the
same script — returns that same token. The generation is always read *before* the
database read it labels, so a read that raced a change is labelled with the old token and
discarded at its next use. Hence a change made on any host is seen by the next request on
every worker of every host, and the steady state of a hot path reads nothing from the
database.

Without Redis (or while it is down) no generation is known and every request reads the
database. ``MAX_AGE`` bounds an entry's life as a last resort against changes made by
hand in SQL, which no hook sees.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from flask import current_app, has_app_context
from sqlalchemy import event
from sqlalchemy.orm import Session

from app.models import ApiKey, OAuthClient, Organization, ServiceAccount, User
from app.security.rate_limits import Hit, Quota

log = logging.getLogger("sensei.freshness")

MAX_ENTRIES = 20_000
MAX_AGE = 60.0  # seconds
_CHANGED = "sensei.changed_orgs"


class Countable(Protocol):
    @property
    def org_id(self) -> str: ...

    @property
    def bucket(self) -> str: ...

    @property
    def quota(self) -> Quota | None: ...


T = TypeVar("T")
C = TypeVar("C", bound=Countable)


@dataclass(frozen=True)
class Entry(Generic[T]):
    value: T
    generation: str | None
    stored_at: float


class CredentialCache(Generic[T]):
    """A bounded LRU of records, each labelled with its organization's generation (if any)."""

    def __init__(self, max_entries: int = MAX_ENTRIES, max_age: float = MAX_AGE) -> None:
        self.max_entries = max_entries
        self.max_age = max_age
        self._entries: OrderedDict[str, Entry[T]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> Entry[T] | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if time.monotonic() - entry.stored_at > self.max_age:
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return entry

    def store(self, key: str, value: T | None, generation: str | None) -> None:
        with self._lock:
            if value is None:
                self._entries.pop(key, None)
                return
            self._entries[key] = Entry(value, generation, time.monotonic())
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: str) -> bool:
        return key in self._entries


def cached(cache: CredentialCache[C], key: str, usable: Callable[[C], bool]) -> Entry[C] | None:
    """The entry of a usable record under ``key`` if this process has it; no database, no
    Redis (its freshness is judged where the request authenticates: ``resolve``, or
    ``confirmed`` on the hot paths)."""
    entry = cache.get(key)
    return entry if entry is not None and usable(entry.value) else None


def confirmed(entry: Entry[Any], hit: Hit) -> bool:
    """Whether a cached record may be used: the generation its request's count read is the
    one it was stored under (``resolve``'s rule for a cached record)."""
    return hit.generation is not None and hit.generation == entry.generation


Counter = Callable[[str, Quota | None, str], Hit]
_CACHES: list[CredentialCache[Any]] = []


def new_cache() -> CredentialCache[Any]:
    cache: CredentialCache[Any] = CredentialCache()
    _CACHES.append(cache)
    return cache


def resolve(cache: CredentialCache[C], key: str, *, load: Callable[[], C | None],
            usable: Callable[[C], bool], count: Counter) -> tuple[C | None, Hit | None]:
    """The credential under ``key`` and its request counted, in one Redis round trip when cached.

    Returns ``(None or unusable, None)`` when the database says the credential is unknown or
    unusable without counting; otherwise the record and its ``Hit``. A record is returned
    from the cache only when the generation read by the count is the one it was stored under.
    """
    entry = cache.get(key)
    if entry is not None and usable(entry.value):
        cached = entry.value
        hit = count(cached.bucket, cached.quota, cached.org_id)
        if confirmed(entry, hit):
            return cached, hit
        value = load()  # after the generation was read: safe to label with it
        cache.store(key, value, hit.generation)
        if value is None:
            return None, hit
        return value, hit._replace(decision=hit.redecide(value.quota))
    value = load()
    if value is None or not usable(value):
        cache.store(key, None, None)
        return value, None
    hit = count(value.bucket, value.quota, value.org_id)
    # The generation came after this read: the next use confirms it with one more read.
    cache.store(key, value, None)
    return value, hit


# -- invalidation --------------------------------------------------------------------------

_WATCHED = (ApiKey, OAuthClient, ServiceAccount, User, Organization)


def changed(session: Session, org_id: str) -> None:
    """Mark ``org_id``'s credentials changed by a statement the ORM does not track."""
    session.info.setdefault(_CHANGED, set()).add(org_id)


def _org_of(instance: object) -> str | None:
    if isinstance(instance, Organization):
        return instance.id
    return getattr(instance, "org_id", None)


def _collect(session: Session, _flush_context) -> None:
    for instance in (*session.new, *session.dirty, *session.deleted):
        if isinstance(instance, _WATCHED) and (org_id := _org_of(instance)):
            changed(session, org_id)


def _publish(session: Session) -> None:
    orgs = session.info.pop(_CHANGED, None)
    if not orgs or not has_app_context():
        return
    limiter = current_app.extensions.get("sensei.limiter")
    if limiter is None:
        return
    try:
        limiter.bump(sorted(orgs))
    except Exception as error:  # Redis down: readers cannot validate caches either (they read the DB)
        log.error("could not publish a credential change to Redis (%s); clearing this process's caches",
                  type(error).__name__)
        for cache in _CACHES:
            cache.clear()


def _discard(session: Session) -> None:
    session.info.pop(_CHANGED, None)


_registered = False


def register_invalidation() -> None:
    """Hook every ORM session once per process (several apps may share one in tests)."""
    global _registered
    if _registered:
        return
    event.listen(Session, "after_flush", _collect)
    event.listen(Session, "after_commit", _publish)
    event.listen(Session, "after_rollback", _discard)
    _registered = True
