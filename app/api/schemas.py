"""Request bodies and query parameters in, resource objects out — for every /v1 route.

Bodies are JSON objects. Unknown fields are refused (400 naming the field) rather than
ignored, so a typo such as ``scope`` for ``scopes`` never silently does nothing. A JSON
object sent as form-urlencoded (``curl -d '{...}'`` without a Content-Type) is read as
JSON. Service accounts also accept YAML (``application/yaml``, ``application/x-yaml``,
``text/yaml``), parsed safely: no tags, no anchors or aliases, bounded size and depth.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import yaml
from flask import request

from app.errors import ApiError
from app.models import ApiKey, AuditEvent, ServiceAccount
from app.services.api_keys import redacted
from app.services.pagination import MAX_LIMIT, Page

JSON_TYPES = {"application/json", "application/x-www-form-urlencoded", ""}
YAML_TYPES = {"application/yaml", "application/x-yaml", "text/yaml"}
MAX_YAML_BYTES = 64 * 1024
MAX_DEPTH = 20
DEFAULT_LIMIT = 10


def _invalid(message: str, param: str | None = None) -> ApiError:
    return ApiError("invalid_request", message, param=param)


def _text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _invalid("Request body must be UTF-8") from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def load_json(raw: bytes) -> Any:
    text = _text(raw)
    if not text.strip():
        raise _invalid("Request body must be a JSON object")
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise _invalid("Request body is nested too deeply") from None
    except ValueError as error:
        message = getattr(error, "msg", "invalid JSON")
        raise _invalid(f"Request body is not valid JSON: {message}") from None


def load_yaml(raw: bytes) -> Any:
    if len(raw) > MAX_YAML_BYTES:
        raise ApiError("payload_too_large", f"YAML bodies are limited to {MAX_YAML_BYTES // 1024} KiB")
    text = _text(raw)
    depth = 0
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                raise _invalid("YAML anchors and aliases are not allowed")
            if isinstance(event, yaml.CollectionStartEvent):
                if event.tag and not event.implicit:
                    raise _invalid("YAML tags are not allowed")
                depth += 1
                if depth > MAX_DEPTH:
                    raise _invalid("Request body is nested too deeply")
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
            elif isinstance(event, yaml.ScalarEvent) and event.tag and not any(event.implicit):
                raise _invalid("YAML tags are not allowed")
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise _invalid(f"Request body is not valid YAML{where}") from None


def read_object(*, allowed: set[str], required: tuple[str, ...] = (), yaml_ok: bool = False) -> dict[str, Any]:
    """The request body as a dict with only ``allowed`` fields and every ``required`` one."""
    mimetype = request.mimetype or ""
    raw = request.get_data(cache=True)
    if mimetype in YAML_TYPES:
        if not yaml_ok:
            raise ApiError("unsupported_media_type", "This endpoint takes JSON (application/json)")
        body = load_yaml(raw)
    elif mimetype in JSON_TYPES or mimetype.endswith("+json"):
        try:
            body = load_json(raw)
        except ApiError:
            if not yaml_ok:
                raise
            body = _yaml_sent_as_json(raw)
    else:
        accepted = "JSON or YAML" if yaml_ok else "JSON (application/json)"
        raise ApiError("unsupported_media_type", f"Unsupported Content-Type {mimetype[:60]!r}: send {accepted}")
    if not isinstance(body, dict):
        raise _invalid("Request body must be a JSON object")
    for field in sorted(body, key=str):
        if not isinstance(field, str) or field not in allowed:
            raise _invalid(f"Unknown field: {str(field)[:60]!r}", param=str(field)[:60])
    for field in required:
        if field not in body:
            raise _invalid(f"Missing required field: {field}", param=field)
    return body


def _yaml_sent_as_json(raw: bytes) -> Any:
    """YAML with a JSON Content-Type (``--data-binary @file.yaml``). ``curl -d @file`` strips
    newlines, which turns YAML into one line; say so instead of a confusing parse error."""
    text = _text(raw)
    if "\n" not in text.strip() and ": " in text:
        raise _invalid(
            "Body is neither JSON nor multi-line YAML. `curl -d @file` strips newlines: send YAML with "
            "`--data-binary @file.yaml -H 'Content-Type: application/yaml'`"
        )
    body = load_yaml(raw)
    if not isinstance(body, dict):
        raise _invalid("Request body is not valid JSON")
    return body


# -- fields --------------------------------------------------------------------------------


def optional_time(body: dict[str, Any], field: str) -> datetime | None:
    """An ISO 8601 date-time with a timezone (``2027-01-01T00:00:00Z``), or null."""
    return parse_time(body.get(field), field)


def parse_time(value: Any, field: str) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):  # YAML parses timestamps itself
        parsed = value
    elif isinstance(value, str) and len(value) <= 40:
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise _invalid(f"{field} must be an ISO 8601 date-time such as 2027-01-01T00:00:00Z", param=field) from None
    else:
        raise _invalid(f"{field} must be an ISO 8601 date-time such as 2027-01-01T00:00:00Z", param=field)
    if parsed.tzinfo is None:
        raise _invalid(f"{field} must include a timezone, e.g. Z", param=field)
    return parsed.astimezone(UTC)


def optional_string(body: dict[str, Any], field: str) -> str | None:
    value = body.get(field)
    if value is not None and not isinstance(value, str):
        raise _invalid(f"{field} must be a string", param=field)
    return value


def string_filter(name: str, max_length: int = 128) -> str | None:
    value = request.args.get(name)
    if value is not None and (not value or len(value) > max_length or "\x00" in value):
        raise _invalid(f"{name} must be 1-{max_length} characters", param=name)
    return value


def list_params(default_limit: int = DEFAULT_LIMIT) -> tuple[int, str | None]:
    """``limit`` (1-100) and ``starting_after`` from the query string."""
    raw_limit = request.args.get("limit")
    limit = default_limit
    if raw_limit is not None:
        if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_LIMIT:
            raise _invalid(f"limit must be an integer from 1 to {MAX_LIMIT}", param="limit")
        limit = int(raw_limit)
    return limit, request.args.get("starting_after")


# -- resources out -------------------------------------------------------------------------


def iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value else None


def api_key_json(key: ApiKey, plaintext: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"id": key.id, "object": "api_key"}
    if plaintext is not None:
        body["key"] = plaintext
    body.update(
        redacted_key=redacted(key),
        name=key.name,
        scopes=key.scope.split(),
        environment=key.environment,
        expires_at=iso(key.expires_at),
        ip_whitelist=list(key.ip_whitelist or []),
        service_account_id=key.service_account_id,
        created_at=iso(key.created_at),
        last_used_at=iso(key.last_used_at),
    )
    return body


def service_account_json(account: ServiceAccount, client_secret: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": account.id,
        "object": "service_account",
        "name": account.name,
        "description": account.description,
        "scopes": account.scope.split(),
        "ip_whitelist": list(account.ip_whitelist or []),
        "client_id": account.client_id,
    }
    if client_secret is not None:
        body["client_secret"] = client_secret
    body["created_at"] = iso(account.created_at)
    return body


def audit_event_json(event: AuditEvent) -> dict[str, Any]:
    """The shape of the product documentation's example, field for field."""
    return {
        "id": event.id,
        "timestamp": iso(event.created_at),
        "actor": {"type": event.actor_type, "id": event.actor_id, "name": event.actor_name},
        "action": event.action,
        "resource": event.resource,
        "ip_address": event.ip_address,
        "user_agent": event.user_agent,
        "result": event.result,
    }


def list_json(page: Page, render) -> dict[str, Any]:
    return {"object": "list", "data": [render(item) for item in page.items], "has_more": page.has_more}


def deleted_json(object_id: str, kind: str) -> dict[str, Any]:
    return {"id": object_id, "object": kind, "deleted": True}
