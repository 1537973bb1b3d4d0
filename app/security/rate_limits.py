"""Rate limiting (SPEC §8): fixed windows per second and per day, one round trip a request.

Counters live in Redis when ``SENSEI_REDIS_URL`` is set — exact across workers and hosts —
and in process memory otherwise (then each process counts on its own). Every credential
has its own bucket (API key, OAuth client, service account, user; the client address for
anonymous calls), sized by its organization's tier.

In Redis one registered script counts every window of a request and, in the same round
trip, reads the *generation* of the caller's organization: a random token replaced after
every committed change to that organization's credentials (``app.services.freshness``).
Per-process credential caches are trusted only while the generation they were read under
is still current, so a deletion or revocation made on any host is seen by the next request
on every host.

When Redis is unreachable the API fails *open* (requests pass, the error is logged and
``/readyz`` answers 503 naming Redis; no generation is known, so caches are bypassed) so an
outage of the cache does not take the API down; login throttling fails *closed*
(``LimiterUnavailable``), because there the limit is the only thing between an attacker
and password guessing.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import math
import os
import secrets
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, NamedTuple, NoReturn

import hiredis
import redis
from flask import current_app, g, request

from app.observability import count_redis, set_response_headers

log = logging.getLogger("sensei.rate_limits")

SECOND, MINUTE, DAY = 1, 60, 86400


@dataclass(frozen=True)
class Quota:
    per_second: int
    per_day: int

    def windows(self) -> tuple[Window, ...]:
        return self._windows

    @cached_property
    def _windows(self) -> tuple[Window, ...]:
        return (Window(self.per_second, SECOND), Window(self.per_day, DAY))


@dataclass(frozen=True)
class Window:
    amount: int
    seconds: int

    def key(self, bucket: str) -> str:
        return f"{bucket}/{self.seconds}"


TIER_QUOTAS = {
    "free": Quota(10, 1_000),
    "starter": Quota(50, 50_000),
    "professional": Quota(200, 500_000),
}
LOGIN_PER_ACCOUNT_PER_DAY = 100


class Decision(NamedTuple):  # NamedTuples: made on every request, cheaper than frozen dataclasses
    allowed: bool
    limit: int | None = None
    remaining: int | None = None
    reset: int | None = None  # Unix seconds
    retry_after: int | None = None

    def headers(self) -> dict[str, str]:
        if self.limit is None:
            return {}
        headers = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset),
        }
        if self.retry_after is not None:
            headers["Retry-After"] = str(self.retry_after)
        return headers


UNLIMITED = Decision(allowed=True)


class Hit(NamedTuple):
    """One request counted: the decision, and the organization's generation read with it
    (None when unknown: no Redis, Redis down, or no organization asked for)."""

    decision: Decision
    generation: str | None = None
    counts: tuple[tuple[int, float], ...] = ()  # (hits, seconds to reset) per window counted

    def redecide(self, quota: Quota | None) -> Decision:
        """The decision these counts give under another quota (a credential re-read fresh)."""
        if quota is None:
            return UNLIMITED
        if not self.counts:
            return self.decision
        return decide(quota.windows(), self.counts, time.time())


def decide(windows: Sequence[Window], counts: Sequence[tuple[int, float]], now: float) -> Decision:
    """Refused by the first window whose count is over; else the window with least left."""
    nearest: tuple[int, int, float] | None = None  # remaining, amount, seconds to reset
    for window, (hits, ttl) in zip(windows, counts, strict=False):
        if hits > window.amount:
            return Decision(False, window.amount, 0, math.ceil(now + ttl), max(1, math.ceil(ttl)))
        remaining = window.amount - hits
        if nearest is None or remaining < nearest[0]:
            nearest = (remaining, window.amount, ttl)
    if nearest is None:
        return UNLIMITED
    return Decision(True, nearest[1], nearest[0], math.ceil(now + nearest[2]))


def counted(windows: Sequence[Window], generation: str | None, counts: Sequence[tuple[int, float]]) -> Hit:
    """The ``Hit`` of one request's counts under ``windows``."""
    decision = decide(windows, counts, time.time()) if windows else UNLIMITED
    return Hit(decision, generation, tuple(counts))


class LimiterUnavailable(RuntimeError):
    """The shared counters cannot be reached (Redis down)."""


# Counts every window in order and stops at the first one over its amount (a refused
# burst costs no daily quota). KEYS[1] is the generation key ('' for none); ARGV[1] is a
# fresh random generation to install if the organization has none yet (after a Redis
# restart every cache is thereby invalidated), then amount and milliseconds per window.
_HIT_SCRIPT = """
local out = {false}
if KEYS[1] ~= '' then
  local generation = redis.call('GET', KEYS[1])
  if not generation then
    generation = ARGV[1]
    redis.call('SET', KEYS[1], generation)
  end
  out[1] = generation
end
for i = 2, #KEYS do
  local amount = tonumber(ARGV[2 * i - 2])
  local window = tonumber(ARGV[2 * i - 1])
  local hits = redis.call('INCR', KEYS[i])
  local ttl = redis.call('PTTL', KEYS[i])
  if hits == 1 or ttl < 0 then
    redis.call('PEXPIRE', KEYS[i], window)
    ttl = window
  end
  out[#out + 1] = hits
  out[#out + 1] = ttl
  if hits > amount then break end
end
return out
"""


TIMEOUT = 0.5  # seconds: connecting to Redis, and each read or write of a command


class Reply:
    """The reply of a command written to a ``Wire``, once it has been read."""

    __slots__ = ("value", "done")

    def __init__(self) -> None:
        self.value: Any = None
        self.done = False


@dataclass(frozen=True)
class Started:
    """A count whose script has been sent and whose reply is read later (``finish``)."""

    bucket: str
    org_id: str | None
    windows: tuple[Window, ...]
    wire: Wire
    reply: Reply
    keys: tuple[str, ...]
    args: tuple[str | int, ...]


class Wire:
    """One thread's connection to Redis for the limiter's script, spoken directly.

    redis-py opens it (TCP, TLS or a Unix socket, AUTH, SELECT); then each command is packed
    by hiredis, written to the socket and its reply parsed by a ``hiredis.Reader`` of our own:
    the client's command and response layers cost the hot path more CPU than the round trip
    itself (about 52k against 19k instructions a call, measured with callgrind). A reply that
    is a Redis error is raised as ``redis.ResponseError`` (``NoScriptError`` for NOSCRIPT).
    """

    def __init__(self, connection: Any, timeout: float) -> None:
        connection.connect()
        self.connection = connection
        self.sock: socket.socket = connection._sock  # redis-py's socket, idle once its handshake is read
        if type(self.sock) is socket.socket:
            # The kernel keeps the timeout (SO_RCVTIMEO/SO_SNDTIMEO): a socket with a Python
            # timeout polls before every send and receive, two more system calls a request.
            # A read or write that times out raises OSError (EAGAIN), as a timeout would.
            seconds = int(timeout)
            timeval = struct.pack("ll", seconds, int((timeout - seconds) * 1_000_000))
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)
            self.sock.settimeout(None)
        self.reader = hiredis.Reader()
        self.buffer = bytearray(4096)
        self.outstanding: deque[Reply] = deque()  # sent, reply not read yet (oldest first)

    def send(self, *args: str | int) -> Reply:
        """Write a command; its reply is read by ``receive`` (replies come in order)."""
        count_redis()
        self.sock.sendall(hiredis.pack_command(args))  # type: ignore[arg-type]  # the stub's tuple is too narrow
        reply = Reply()
        self.outstanding.append(reply)
        return reply

    def receive(self, reply: Reply) -> Any:
        while not reply.done:
            self._read_one()
        if isinstance(reply.value, hiredis.ReplyError):
            message = str(reply.value)
            raise (redis.exceptions.NoScriptError if message.startswith("NOSCRIPT") else redis.ResponseError)(message)
        return reply.value

    def call(self, *args: str | int) -> Any:
        return self.receive(self.send(*args))

    def _read_one(self) -> None:
        value = self.reader.gets()
        while value is False:  # a reply ends in at most a few reads; each read times out (TIMEOUT)
            received = self.sock.recv_into(self.buffer)
            if not received:
                raise redis.ConnectionError("Redis closed the connection")
            self.reader.feed(self.buffer, 0, received)  # type: ignore[arg-type]  # any buffer
            value = self.reader.gets()
        first = self.outstanding.popleft()
        first.value, first.done = value, True

    def close(self) -> None:
        self.connection.disconnect()


class RedisCounters:
    """Counters shared by every process and host, one ``EVALSHA`` per request.

    Each thread keeps one ``Wire`` of its own. A connection that fails is dropped; the next
    call reconnects (0.5 s timeouts), and until then the caller fails open.
    """

    shared = True

    def __init__(self, url: str, prefix: str) -> None:
        self.prefix = prefix
        self.client = redis.Redis.from_url(url, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT)
        self.pool = self.client.connection_pool
        self.sha = hashlib.sha1(_HIT_SCRIPT.encode()).hexdigest()
        self._local = threading.local()
        self._process_token = secrets.token_hex(8)
        self._serial = itertools.count()
        # A forked child starts with no wire (never its parent's socket) and a token of its own.
        os.register_at_fork(after_in_child=self._after_fork)

    def _after_fork(self) -> None:
        self._local = threading.local()
        self._process_token = secrets.token_hex(8)
        self._serial = itertools.count()

    def _candidate(self) -> str:
        """A generation no one has used: this process's random prefix and a counter."""
        return f"{self._process_token}{next(self._serial):x}"

    def generation_key(self, org_id: str) -> str:
        return f"{self.prefix}:generation:{org_id}"

    def _wire(self) -> Wire:
        wire: Wire | None = getattr(self._local, "wire", None)
        if wire is None:
            try:
                wire = self._local.wire = Wire(self.pool.make_connection(), TIMEOUT)
            except (OSError, redis.RedisError) as error:
                self._unavailable(None, error)
        return wire

    def _unavailable(self, wire: Wire | None, error: Exception) -> NoReturn:
        """Drop the thread's wire (a failed one is never reused) and fail the count."""
        if wire is not None:
            if getattr(self._local, "wire", None) is wire:
                self._local.wire = None
            wire.close()
        log.error("rate-limit storage unavailable: %s", type(error).__name__)
        raise LimiterUnavailable from None

    def start(self, bucket: str, windows: Sequence[Window], org_id: str | None) -> Started:
        """Send the count of one request; ``finish`` reads it. Raises LimiterUnavailable."""
        keys = [self.generation_key(org_id) if org_id else ""]
        args: list[str | int] = [self._candidate()]
        for window in windows:
            keys.append(f"{self.prefix}:rl:{window.key(bucket)}")
            args += [window.amount, window.seconds * 1000]
        wire = self._wire()
        try:
            reply = wire.send("EVALSHA", self.sha, len(keys), *keys, *args)
        except (OSError, redis.RedisError) as error:
            self._unavailable(wire, error)
        return Started(bucket, org_id, tuple(windows), wire, reply, tuple(keys), tuple(args))

    def finish(self, started: Started) -> tuple[str | None, list[tuple[int, float]]]:
        """The generation and the (hits, seconds to reset) of each window counted."""
        wire = started.wire
        try:
            try:
                reply = wire.receive(started.reply)
            except redis.exceptions.NoScriptError:  # a new or restarted Redis: load it once
                wire.call("SCRIPT", "LOAD", _HIT_SCRIPT)
                reply = wire.call("EVALSHA", self.sha, len(started.keys), *started.keys, *started.args)
        except redis.ResponseError as error:  # the connection is still in step
            log.error("rate-limit storage unavailable: %s", type(error).__name__)
            raise LimiterUnavailable from None
        except (OSError, redis.RedisError, hiredis.ProtocolError) as error:
            self._unavailable(wire, error)
        generation = reply[0].decode() if reply[0] else None
        counts = [(int(reply[i]), int(reply[i + 1]) / 1000) for i in range(1, len(reply), 2)]
        return generation, counts

    def hit(self, bucket: str, windows: Sequence[Window], org_id: str | None
            ) -> tuple[str | None, list[tuple[int, float]]]:
        return self.finish(self.start(bucket, windows, org_id))

    def bump(self, org_ids: Sequence[str]) -> None:
        """Give each organization a new generation: every cache read under the old one is stale."""
        count_redis()
        pipe = self.client.pipeline(transaction=False)
        for org_id in org_ids:
            pipe.set(self.generation_key(org_id), secrets.token_hex(8))
        pipe.execute()

    def reachable(self) -> bool:
        try:
            return bool(self.client.ping())
        except redis.RedisError:
            return False


class MemoryCounters:
    """Counters of this process only (no Redis): exact per process, no generations."""

    shared = False

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._windows: dict[str, tuple[int, float]] = {}  # key -> (hits, expires at)
        self._next_sweep = 0.0

    def hit(self, bucket: str, windows: Sequence[Window], org_id: str | None
            ) -> tuple[str | None, list[tuple[int, float]]]:
        now = time.monotonic()
        counts: list[tuple[int, float]] = []
        with self._lock:
            if now >= self._next_sweep:  # forget ended windows, so memory follows the active buckets
                self._windows = {k: v for k, v in self._windows.items() if v[1] > now}
                self._next_sweep = now + 60
            for window in windows:
                key = window.key(bucket)
                hits, expires = self._windows.get(key, (0, 0.0))
                if expires <= now:
                    hits, expires = 0, now + window.seconds
                hits += 1
                self._windows[key] = (hits, expires)
                counts.append((hits, expires - now))
                if hits > window.amount:
                    break
        return None, counts

    def bump(self, org_ids: Sequence[str]) -> None:
        pass  # no shared caches without Redis

    def reachable(self) -> bool:
        return True


class RateLimiter:
    def __init__(self, redis_url: str | None, *, prefix: str = "sensei", anonymous: Quota = TIER_QUOTAS["free"],
                 login_per_address: int = 10, login_per_account: int = 5) -> None:
        self.anonymous = anonymous
        # Sign-in: each attempt costs an argon2 verification (~6 a second per core), so
        # attempts are counted before the password is checked.
        self.login_per_address = [Window(login_per_address, MINUTE)]
        self.login_per_account = [Window(login_per_account, MINUTE), Window(LOGIN_PER_ACCOUNT_PER_DAY, DAY)]
        self.counters: RedisCounters | MemoryCounters = (
            RedisCounters(redis_url, prefix) if redis_url else MemoryCounters()
        )
        self.shared = self.counters.shared

    def storage_reachable(self) -> bool:
        return self.counters.reachable()

    def hit(self, bucket: str, quota: Quota | None, *, org_id: str | None = None) -> Hit:
        """API limits, counted with the organization's generation in one round trip.
        Fails open (unlimited, generation unknown) when the storage is down."""
        windows = quota.windows() if quota is not None else []
        if not windows and not (org_id and self.shared):
            return Hit(UNLIMITED)
        try:
            generation, counts = self.counters.hit(bucket, windows, org_id)
        except LimiterUnavailable:
            return Hit(UNLIMITED)
        return counted(windows, generation, counts)

    def start(self, bucket: str, quota: Quota | None, *, org_id: str) -> Started | None:
        """Send a request's count now and read it later (``finish``), so the round trip
        overlaps the work in between. None without Redis or while it is down."""
        if not isinstance(self.counters, RedisCounters):
            return None
        try:
            return self.counters.start(bucket, quota.windows() if quota is not None else (), org_id)
        except LimiterUnavailable:
            return None

    def finish(self, started: Started) -> Hit:
        try:
            generation, counts = self.counters.finish(started)  # type: ignore[union-attr]
        except LimiterUnavailable:
            return Hit(UNLIMITED)
        return counted(started.windows, generation, counts)

    def bump(self, org_ids: Sequence[str]) -> None:
        self.counters.bump(org_ids)

    def _login_window(self, windows: list[Window], bucket: str) -> bool:
        _, counts = self.counters.hit(bucket, windows, None)
        return decide(windows, counts, time.time()).allowed

    def check_login(self, *, address: str | None, email: str) -> bool:
        """Sign-in attempts: fail closed (raises LimiterUnavailable) when the storage is down."""
        return self._attempt("login", address, email.strip().lower()[:254])

    def check_user_code(self, *, address: str | None, user_id: str) -> bool:
        """Device user codes typed at /device, limited as sign-in attempts are (a user code is
        guessable as a password is): fail closed."""
        return self._attempt("device", address, user_id)

    def _attempt(self, kind: str, address: str | None, account: str) -> bool:
        if not self._login_window(self.login_per_address, f"{kind}-ip:{address}"):
            return False
        return self._login_window(self.login_per_account, f"{kind}-account:{account}")


def quota_for(tier: str, per_second: int | None, per_day: int | None) -> Quota | None:
    """The tier's quota; Enterprise uses the organization's own limits, unlimited until set."""
    if tier == "enterprise":
        if per_second is None or per_day is None:
            return None
        return Quota(per_second, per_day)
    return TIER_QUOTAS.get(tier, TIER_QUOTAS["free"])


def limiter() -> RateLimiter:
    return current_app.extensions["sensei.limiter"]


def enforce_anonymous(address: str | None) -> Decision:
    """Count a call without valid credentials against its address."""
    return remember(limiter().hit(f"ip:{address}", limiter().anonymous)).decision


EARLY_COUNT = "sensei.early_count"  # the environ key of a count started before routing


class Counted(NamedTuple):
    """An early count already read: a hot path (``app.hot_paths``) that handed its request to
    the view leaves the count's result here, for the view to use rather than count again."""

    bucket: str
    org_id: str | None
    hit: Hit


def count(bucket: str, quota: Quota | None, org_id: str) -> Hit:
    """Count a request against ``bucket``, reading ``org_id``'s generation in the same trip
    (the caller ``remember``s the decision it settles on). A count this request started at
    its edge for the same credential (``app.early_count``) is finished instead."""
    early: Started | Counted | None = request.environ.pop(EARLY_COUNT, None)
    if early is not None and early.bucket == bucket and early.org_id == org_id:
        hit = early.hit if isinstance(early, Counted) else limiter().finish(early)
    else:
        if isinstance(early, Started):  # another credential after all: that count stands, unread
            limiter().finish(early)
        hit = limiter().hit(bucket, quota, org_id=org_id)
    note_generation(org_id, hit.generation)
    return hit


def note_generation(org_id: str, generation: str | None) -> None:
    """What ``known_generation`` answers for the rest of the request."""
    g.generation = (org_id, generation)


def known_generation(org_id: str) -> str | None:
    """The generation of ``org_id`` this request has already read, if any."""
    known = g.get("generation")
    return known[1] if known is not None and known[0] == org_id else None


def remember(hit: Hit, environ: dict | None = None) -> Hit:
    """The request's decision goes out in the response's headers (the last one remembered)."""
    set_response_headers(request.environ if environ is None else environ, "rate_limit", hit.decision.headers())
    return hit
