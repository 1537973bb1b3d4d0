"""Client authentication (RFC 6749 §2.3), stricter than Authlib's defaults.

Registered with Authlib for the token, revocation and introspection endpoints; they look
clients up through ``clients.authenticate`` (cached, the request counted) rather than the
``query_client`` Authlib passes in, which reads the database for the authorization pages.

* ``client_secret_basic`` decodes both halves as form-urlencoded (§2.3.1), so secrets
  containing ``+``, ``%`` or ``:`` work, and garbage headers fail cleanly.
* One method per request (§2.3): credentials in the body are ignored when an
  ``Authorization`` header is present, and a Basic header never falls back to the body.
"""

from __future__ import annotations

import base64
import binascii
from urllib.parse import unquote_plus

from app.oauth import clients

MAX_CREDENTIAL_LENGTH = 512


def parse_basic_authorization(header: str | None) -> tuple[str, str] | None:
    if not header or len(header) > 4 * MAX_CREDENTIAL_LENGTH:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        return None
    return unquote_plus(client_id), unquote_plus(secret)


def _has_authorization_header(request) -> bool:
    return bool(request.headers.get("Authorization"))


def _usable(value: str | None) -> bool:
    return value is not None and 0 < len(value) <= MAX_CREDENTIAL_LENGTH and "\x00" not in value


def basic_credentials(header: str | None) -> tuple[str, str] | None:
    """The client id and secret of a Basic header, if both are usable."""
    credentials = parse_basic_authorization(header)
    if credentials is None or not all(_usable(v) for v in credentials):
        return None
    return credentials


def authenticate_client_secret_basic(query_client, request):
    credentials = basic_credentials(request.headers.get("Authorization"))
    return clients.authenticate(*credentials) if credentials else None


def authenticate_client_secret_post(query_client, request):
    if _has_authorization_header(request):
        return None
    client_id = request.form.get("client_id")
    secret = request.form.get("client_secret")
    if not (_usable(client_id) and _usable(secret)):
        return None
    return clients.authenticate(client_id, secret)


def authenticate_none(query_client, request):
    if _has_authorization_header(request) or request.form.get("client_secret"):
        return None
    client_id = request.form.get("client_id")
    if not _usable(client_id):
        return None
    return clients.authenticate(client_id, None)
