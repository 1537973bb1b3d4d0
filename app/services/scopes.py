"""The scope catalogue, its wildcards and the role bounds of SPEC §2 — the one place for them.

Scopes are written as given (``migrations:*`` stays ``migrations:*`` on an API key) and
compared after :func:`expand`, which turns wildcards into the concrete catalogue scopes.
Access tokens always carry concrete scopes, so a resource server only tests membership.
"""

from __future__ import annotations

from collections.abc import Iterable

CATALOGUE: dict[str, str] = {
    "migrations:read": "View migrations and their status",
    "migrations:write": "Create, start, pause, cancel migrations",
    "connections:read": "View database connections",
    "connections:write": "Create and modify connections",
    "validation:read": "View validation results and certificates",
    "validation:write": "Run validations, configure rules",
    "webhooks:read": "View webhook configurations",
    "webhooks:write": "Create and modify webhooks",
    "admin:read": "View organization settings",
    "admin:write": "Modify organization settings",
    "billing:read": "View usage and invoices",
    "billing:write": "Modify billing settings",
}
# OpenID Connect's protocol scopes (SPEC §12): an OAuth client may be allowed them, a person
# approves them on the consent page, an API key never holds them, and /v1 ignores them.
PROTOCOL: dict[str, str] = {
    "openid": "Sign you in and know which account is yours",
    "profile": "See your name",
    "email": "See your email address",
}
RESOURCES: tuple[str, ...] = tuple(dict.fromkeys(s.split(":")[0] for s in CATALOGUE))
ACTIONS: tuple[str, ...] = ("read", "write")
ALL: frozenset[str] = frozenset(CATALOGUE)
_DESCRIPTIONS: dict[str, str] = {**PROTOCOL, **CATALOGUE}
_ORDER: tuple[str, ...] = tuple(_DESCRIPTIONS)  # how tokens and pages list scopes
WILDCARDS: dict[str, str] = {
    **{f"{r}:*": f"All {r} permissions" for r in RESOURCES},
    **{f"*:{a}": f"{a.capitalize()} access to all resources" for a in ACTIONS},
    "*": "Full access",
}
MAX_SCOPES = 50


class ScopeError(ValueError):
    """A scope that is not in the catalogue, or a grant beyond what the granter holds."""

    def __init__(self, message: str, scope: str | None = None) -> None:
        super().__init__(message)
        self.scope = scope


def _of_resource(resource: str) -> frozenset[str]:
    return frozenset(s for s in ALL if s.startswith(f"{resource}:"))


def _of_action(action: str) -> frozenset[str]:
    return frozenset(s for s in ALL if s.endswith(f":{action}"))


ROLE_SCOPES: dict[str, frozenset[str]] = {
    "owner": ALL,
    "admin": ALL,
    "developer": (
        _of_resource("migrations")
        | _of_resource("connections")
        | _of_resource("validation")
        | _of_resource("webhooks")
        | _of_action("read")
    )
    - _of_resource("billing"),
    "viewer": _of_action("read") - {"billing:read"},
}


def parse(scope: str | Iterable[str] | None, *, protocol: bool = False) -> list[str]:
    """Split a space-delimited scope string (RFC 6749 §3.3) or list; de-duplicate, keep order.

    Raises ScopeError naming the first value that is neither a catalogue scope nor a wildcard
    (nor, with ``protocol``, for OAuth clients and their requests, an OpenID Connect scope).
    """
    if scope is None:
        return []
    items = scope.split() if isinstance(scope, str) else list(scope)
    if len(items) > MAX_SCOPES:
        raise ScopeError(f"At most {MAX_SCOPES} scopes may be requested")
    result: list[str] = []
    for item in items:
        if isinstance(item, str) and item in PROTOCOL and not protocol:
            raise ScopeError(f"{item} is a sign-in scope of OAuth apps: API keys never hold it", scope=item)
        if not isinstance(item, str) or (item not in CATALOGUE and item not in WILDCARDS and item not in PROTOCOL):
            shown = item if isinstance(item, str) and len(item) <= 64 else "a value"
            raise ScopeError(f"Unknown scope: {shown}", scope=shown)
        if item not in result:
            result.append(item)
    return result


def expand(scopes: Iterable[str]) -> frozenset[str]:
    """Concrete scopes covered by ``scopes`` (which must already be valid). OpenID Connect's
    are kept as they are: no wildcard names one."""
    concrete: set[str] = set()
    for item in scopes:
        if item == "*":
            concrete |= ALL
            continue
        resource, _, action = item.partition(":")
        if resource == "*":
            concrete |= _of_action(action)
        elif action == "*":
            concrete |= _of_resource(resource)
        else:
            concrete.add(item)
    return frozenset(concrete)


def to_string(scopes: Iterable[str]) -> str:
    """Concrete scopes in catalogue order (OpenID Connect's first), space-delimited, as tokens
    carry them."""
    wanted = set(scopes)
    return " ".join(s for s in _ORDER if s in wanted)


def for_role(role: str) -> frozenset[str]:
    return ROLE_SCOPES[role]


def check_grantable(requested: Iterable[str], held: frozenset[str], *, granter_role: str | None = None) -> None:
    """Nobody grants more than they hold; only an owner or admin grants the ``*`` wildcard."""
    requested = list(requested)
    if "*" in requested and granter_role not in (None, "owner", "admin"):
        raise ScopeError("Only an owner or admin may grant the '*' scope", scope="*")
    beyond = expand(requested) - held
    if beyond:
        first = to_string(beyond).split()[0]
        raise ScopeError(f"Cannot grant {first}: the granting credential does not hold it", scope=first)


def describe(scopes: Iterable[str]) -> list[tuple[str, str]]:
    """(scope, description) pairs for a consent page, in catalogue order."""
    wanted = set(scopes)
    return [(s, _DESCRIPTIONS[s]) for s in _ORDER if s in wanted]


def bound_for_role(scope: str, role: str) -> str:
    """What a user of ``role`` can actually delegate of a (concrete) scope string; OpenID
    Connect's scopes are about the user themself and bound by no role."""
    concrete = expand(scope.split())
    return to_string((concrete & ROLE_SCOPES[role]) | (concrete & PROTOCOL.keys()))


def is_openid(scope: str | None) -> bool:
    return "openid" in (scope or "").split()
