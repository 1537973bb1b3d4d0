"""Column types and identifiers shared by every model."""

from __future__ import annotations

import math
import os
import secrets
import string
import threading
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import CursorResult, DateTime, TypeDecorator

BASE62 = string.digits + string.ascii_letters
_BASE62_PAIRS = [high + low for high in BASE62 for low in BASE62]  # 62**2 two-digit strings


def utcnow() -> datetime:
    return datetime.now(UTC)


def random_base62(length: int) -> str:
    """``length`` uniformly random base62 characters from one read of the OS's CSPRNG
    (64 spare bits keep the bias of the final reduction below 2**-64). For secrets."""
    return _base62(secrets.randbits(_bits(length)), length)


def _bits(length: int) -> int:
    return math.ceil(length * math.log2(62)) + 64


def _base62(value: int, length: int) -> str:
    chars = []
    for _ in range(length // 2):  # two digits at a time: ids are made on every audited request
        value, pair = divmod(value, 3844)
        chars.append(_BASE62_PAIRS[pair])
    if length % 2:
        chars.append(BASE62[value % 62])
    return "".join(chars)


class IdEntropy:
    """Random bytes for identifiers (object ids, request ids, token ids), read from the OS's
    CSPRNG 4 KiB at a time: a hot request makes two or three of them, and each read of the
    CSPRNG is a system call. The bytes are as random as ``os.urandom``'s; every process has
    a buffer of its own (a forked child starts with an empty one). Secrets do not come from
    here: they are read when they are made (``random_base62``, ``secrets``)."""

    SIZE = 4096

    def __init__(self) -> None:
        self.reset()
        os.register_at_fork(after_in_child=self.reset)

    def reset(self) -> None:
        self._lock = threading.Lock()
        self._buffer = b""
        self._offset = 0

    def take(self, count: int) -> bytes:
        with self._lock:
            if self._offset + count > len(self._buffer):
                self._buffer, self._offset = os.urandom(max(self.SIZE, count)), 0
            start = self._offset
            self._offset += count
            return self._buffer[start:self._offset]


id_entropy = IdEntropy()


def sane_id(value: str) -> bool:
    """Whether ``value`` can be looked up at all (bounded length, no NUL for PostgreSQL)."""
    return isinstance(value, str) and 0 < len(value) <= 64 and "\x00" not in value


def new_id(prefix: str) -> str:
    """A random, non-sequential public id such as ``org_4fK...`` (20 base62 chars, 119 bits)."""
    return f"{prefix}_{_base62(int.from_bytes(id_entropy.take(_ID_BYTES)), 20)}"


_ID_BYTES = math.ceil(_bits(20) / 8)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite keeps no offset)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect):  # type: ignore[override]
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect):  # type: ignore[override]
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def affected_rows(result: Any) -> int:
    """Rows matched by an UPDATE or DELETE (what decides a conditional claim)."""
    return cast(CursorResult, result).rowcount or 0
