"""IP allow-lists (SPEC §7): IPv4/IPv6 CIDRs; a bare address means /32 or /128.

An empty list allows every address. The address tested is the socket peer, or the
X-Forwarded-For hop that ``SENSEI_TRUSTED_PROXIES`` trusts (Werkzeug's ProxyFix sets
``request.remote_addr``), so a forged header from a direct client changes nothing.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from functools import lru_cache

from app.errors import ApiError

MAX_ENTRIES = 100
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def normalize_whitelist(entries: object, *, param: str = "ip_whitelist") -> list[str]:
    """Validate a list of CIDRs; return them in canonical form. Invalid → 400 naming the entry."""
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise ApiError("invalid_request", f"{param} must be a list of IP addresses or CIDR ranges", param=param)
    if len(entries) > MAX_ENTRIES:
        raise ApiError("invalid_request", f"{param} may hold at most {MAX_ENTRIES} entries", param=param)
    normalized: list[str] = []
    for entry in entries:
        network = _parse(entry)
        if network is None:
            shown = entry[:60] if isinstance(entry, str) else type(entry).__name__
            raise ApiError("invalid_request", f"Invalid IP address or CIDR range in {param}: {shown!r}", param=param)
        if str(network) not in normalized:
            normalized.append(str(network))
    return normalized


def _parse(entry: object) -> Network | None:
    if not isinstance(entry, str) or not entry or len(entry) > 64:
        return None
    try:
        return ipaddress.ip_network(entry.strip(), strict=False)
    except ValueError:
        return None


@lru_cache(maxsize=4096)
def _networks(entries: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(e, strict=False) for e in entries)


def allows(whitelist: Sequence[str] | None, address: str | None) -> bool:
    if not whitelist:
        return True
    if not address:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return any(ip.version == net.version and ip in net for net in _networks(tuple(whitelist)))


def allowed_by_all(whitelists: Iterable[Sequence[str]], address: str | None) -> bool:
    """Every list that applies (a key's and its service account's) must allow the address."""
    return all(allows(whitelist, address) for whitelist in whitelists)
