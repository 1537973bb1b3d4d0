"""What the API returns, as typed objects with attributes (``key.id``, ``key.scopes``, ...).

Fields the server adds later are kept in ``extra`` rather than refused, so an older SDK keeps
working against a newer server.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, TypeVar

T = TypeVar("T", bound="SenseiObject")


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@dataclass(frozen=True, kw_only=True)
class SenseiObject:
    extra: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    _times: ClassVar[tuple[str, ...]] = ()  # fields holding ISO 8601 times

    @classmethod
    def from_dict(cls: type[T], data: dict[str, Any]) -> T:
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        times = cls._times
        known = {k: (parse_time(v) if k in times else v) for k, v in data.items() if k in names}
        return cls(**known, extra={k: v for k, v in data.items() if k not in names})

    def to_dict(self) -> dict[str, Any]:
        body = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        return {**body, **self.extra}


@dataclass(frozen=True, kw_only=True)
class ApiKey(SenseiObject):
    id: str = ""
    object: str = "api_key"
    name: str = ""
    scopes: list[str] = field(default_factory=list)
    environment: str = "live"
    redacted_key: str = ""
    expires_at: datetime | None = None
    ip_whitelist: list[str] = field(default_factory=list)
    service_account_id: str | None = None
    created_at: datetime | None = None
    last_used_at: datetime | None = None
    key: str | None = field(default=None, repr=False)  # the secret: only on the object `create` returns
    _times: ClassVar[tuple[str, ...]] = ("expires_at", "created_at", "last_used_at")


@dataclass(frozen=True, kw_only=True)
class ServiceAccount(SenseiObject):
    id: str = ""
    object: str = "service_account"
    name: str = ""
    description: str | None = None
    scopes: list[str] = field(default_factory=list)
    ip_whitelist: list[str] = field(default_factory=list)
    client_id: str = ""
    created_at: datetime | None = None
    client_secret: str | None = field(default=None, repr=False)  # only on the object `create` returns
    _times: ClassVar[tuple[str, ...]] = ("created_at",)


@dataclass(frozen=True, kw_only=True)
class AuditEvent(SenseiObject):
    id: str = ""
    timestamp: datetime | None = None
    actor: dict[str, Any] = field(default_factory=dict)
    action: str = ""
    resource: str | None = None
    ip_address: str | None = None
    user_agent: str | None = None
    result: str = "success"
    _times: ClassVar[tuple[str, ...]] = ("timestamp",)


@dataclass(frozen=True, kw_only=True)
class Deleted(SenseiObject):
    id: str = ""
    object: str = ""
    deleted: bool = True


@dataclass(frozen=True, kw_only=True)
class Introspection(SenseiObject):
    """RFC 7662's answer; ``active`` False means unknown, expired, revoked or not yours."""

    active: bool = False
    token_type: str | None = None
    scope: str | None = None
    client_id: str | None = None
    sub: str | None = None
    iss: str | None = None
    aud: str | None = None
    exp: int | None = None
    iat: int | None = None
    jti: str | None = None
    org: str | None = None
    environment: str | None = None

    @property
    def scopes(self) -> list[str]:
        return (self.scope or "").split()
