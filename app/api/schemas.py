"""Every /v1 request and response shape, written once: pydantic models validate what comes in
(bodies and query strings) and, with the TypedDicts of what goes out, make the OpenAPI
document (``app/api/openapi.py``) — there is no second copy to keep in sync.

Bodies are JSON objects. Unknown fields are refused (400 naming the field) rather than
ignored, so a typo such as ``scope`` for ``scopes`` never silently does nothing; a value of
the wrong type is a 400 naming its field (``{"scopes": "a b"}`` is not a list). A JSON object
sent form-urlencoded (``curl -d '{...}'`` without a Content-Type) is read as JSON. Service
accounts also accept YAML (``application/yaml``, ``application/x-yaml``, ``text/yaml``),
parsed by ``app.documents``. What a value means (a scope that exists, a CIDR, a name's length)
is judged by the services, which every surface shares.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal, NotRequired, TypeVar

from flask import request
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, WithJsonSchema
from pydantic.json_schema import SkipJsonSchema
from typing_extensions import TypedDict

from app.documents import load_json, load_yaml
from app.errors import ApiError
from app.models import ApiKey, AuditEvent, ServiceAccount
from app.services import scopes as scope_rules
from app.services.api_keys import redacted
from app.services.pagination import MAX_LIMIT, Page

JSON_TYPES = {"application/json", "application/x-www-form-urlencoded", ""}
YAML_TYPES = {"application/yaml", "application/x-yaml", "text/yaml"}
DEFAULT_LIMIT = 10
TIME_EXAMPLE = "2027-01-01T00:00:00Z"

M = TypeVar("M", bound=BaseModel)


def _invalid(message: str, param: str | None = None) -> ApiError:
    return ApiError("invalid_request", message, param=param)


# -- field types ---------------------------------------------------------------------------


def parse_time(value: Any, field: str = "value") -> datetime | None:
    """An ISO 8601 date-time with a timezone (``2027-01-01T00:00:00Z``), or None."""
    if value is None:
        return None
    if isinstance(value, datetime):  # YAML parses timestamps itself
        parsed = value
    elif isinstance(value, str) and len(value) <= 40:
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise ValueError(f"must be an ISO 8601 date-time such as {TIME_EXAMPLE}") from None
    else:
        raise ValueError(f"must be an ISO 8601 date-time such as {TIME_EXAMPLE}")
    if parsed.tzinfo is None:
        raise ValueError("must include a timezone, e.g. Z")
    return parsed.astimezone(UTC)


DateTime = Annotated[datetime, BeforeValidator(parse_time), Field(examples=[TIME_EXAMPLE])]
Text = Annotated[str, Field(max_length=10_000)]
# Documented as the catalogue's names; judged by the services (which name an unknown one).
Scopes = Annotated[list[str], Field(max_length=200), WithJsonSchema({
    "type": "array", "maxItems": 200, "examples": [["migrations:read", "migrations:write"]],
    "description": "Scope names: the catalogue's (`migrations:read`, ...) or its wildcards (`migrations:*`, `*:read`, "
                   "`*`).",
    "items": {"type": "string", "enum": [*scope_rules.CATALOGUE, *scope_rules.WILDCARDS]}})]
Whitelist = Annotated[list[str], Field(description="Addresses or CIDR ranges the credential may be used from; "
                                                   "empty: anywhere.", examples=[["203.0.113.0/24"]], max_length=1000)]
# A PATCH field that may be left out but not set to null (documented without a null
# default): null still reaches the service, which refuses it like any other wrong value.
Unset = SkipJsonSchema[None]


def _no_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)


def leave_out(description: str | None = None) -> Any:
    return Field(None, description=description, json_schema_extra=_no_default)


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ApiKeyCreate(Body):
    name: Text = Field(description="Shown in the dashboard and the audit log (1-200 characters).")
    scopes: Scopes
    expires_at: DateTime | None = Field(None, description="When the key stops working; null: never.")
    ip_whitelist: Whitelist | None = None
    service_account_id: str | None = Field(None, description="Issue the key to this service account (`sa_...`).")
    environment: Literal["live", "test"] | None = Field(
        None, description="`live` (`sk_live_`, the default) or `test` (`sk_test_`).")


class ApiKeyUpdate(Body):
    name: Text | Unset = leave_out()
    scopes: Scopes | Unset = leave_out("Can only be narrowed.")
    expires_at: DateTime | None = Field(None, description="null: never expires.")
    ip_whitelist: Whitelist | None = None


class ServiceAccountCreate(Body):
    name: Text
    description: Text | None = None
    scopes: Scopes
    ip_whitelist: Whitelist | None = None


class ServiceAccountUpdate(Body):
    name: Text | Unset = leave_out()
    description: Text | None = None
    scopes: Scopes | Unset = leave_out("Can only be narrowed.")
    ip_whitelist: Whitelist | None = None


class Query(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ListQuery(Query):
    limit: int = Field(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT, description="Page size.")
    starting_after: str | None = Field(None, max_length=128,
                                       description="The `id` of the last object of the previous page.")


class AuditLogQuery(ListQuery):
    model_config = ConfigDict(extra="forbid")
    limit: int = Field(50, ge=1, le=MAX_LIMIT, description="Page size.")
    action: str | None = Field(None, min_length=1, max_length=128, examples=["api_keys.create"])
    actor_id: str | None = Field(None, min_length=1, max_length=128)
    result: Literal["success", "failure"] | None = None
    since: DateTime | None = Field(None, description="Entries at or after this time.")
    until: DateTime | None = Field(None, description="Entries before this time.")


# -- reading -------------------------------------------------------------------------------


def read_body(model: type[M], *, yaml_ok: bool = False) -> M:
    """The request body, parsed by content type and validated by ``model``."""
    return validated(model, _document(yaml_ok))


def read_query(model: type[M]) -> M:
    """The query string validated by ``model`` (a repeated parameter is refused)."""
    values: dict[str, Any] = {}
    for name in request.args:
        items = request.args.getlist(name)
        if len(items) > 1:
            raise _invalid(f"Query parameter {name[:60]!r} must not be repeated", param=name[:60])
        values[name] = items[0]
    return validated(model, values, where="query parameter")


def present(body: BaseModel) -> dict[str, Any]:
    """The fields a PATCH body sets (null included), for the service's ``changes``."""
    return {name: getattr(body, name) for name in body.model_fields_set}


def validated(model: type[M], values: dict[str, Any], *, where: str = "field") -> M:
    try:
        return model.model_validate(values)
    except ValidationError as error:
        raise _refusal(error, where) from None


def _refusal(error: ValidationError, where: str) -> ApiError:
    """The first problem, in the order a person fixes them: unknown, missing, then wrong values."""
    problems = error.errors(include_url=False, include_input=False)
    order = {"extra_forbidden": 0, "missing": 1}
    problem = min(problems, key=lambda p: (order.get(p["type"], 2), [str(part) for part in p["loc"]]))
    field = str(problem["loc"][0])[:60] if problem["loc"] else None
    if problem["type"] == "extra_forbidden":
        return _invalid(f"Unknown {where}: {field!r}", param=field)
    if problem["type"] == "missing":
        return _invalid(f"Missing required {where}: {field}", param=field)
    path = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in problem["loc"])[1:] or "body"
    return _invalid(f"{path} {_phrase(problem)}", param=field)


_PHRASES = {
    "string_type": "must be a string",
    "list_type": "must be a list",
    "int_parsing": "must be an integer",
    "int_type": "must be an integer",
    "int_from_float": "must be an integer",
}


def _phrase(problem: Any) -> str:
    kind = problem["type"]
    if kind in _PHRASES:
        return _PHRASES[kind]
    if kind == "value_error":  # our own validators' messages: "must ..."
        return str(problem["ctx"]["error"])
    if kind == "literal_error":
        return f"must be one of {problem['ctx']['expected']}"
    if kind in ("greater_than_equal", "less_than_equal"):
        return f"must be an integer from 1 to {MAX_LIMIT}" if problem["loc"] == ("limit",) else problem["msg"].lower()
    if kind in ("string_too_short", "string_too_long", "too_long", "too_short"):
        return problem["msg"].replace("String should", "must").replace("List should", "must").replace(
            "Value should", "must")
    return problem["msg"][:1].lower() + problem["msg"][1:]


def _document(yaml_ok: bool) -> dict[str, Any]:
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
    return {str(name): value for name, value in body.items()}


def _yaml_sent_as_json(raw: bytes) -> Any:
    """YAML with a JSON Content-Type (``--data-binary @file.yaml``). ``curl -d @file`` strips
    newlines, which turns YAML into one line; say so instead of a confusing parse error."""
    text = raw.decode("utf-8", "replace")
    if "\n" not in text.strip() and ": " in text:
        raise _invalid(
            "Body is neither JSON nor multi-line YAML. `curl -d @file` strips newlines: send YAML with "
            "`--data-binary @file.yaml -H 'Content-Type: application/yaml'`"
        )
    body = load_yaml(raw)
    if not isinstance(body, dict):
        raise _invalid("Request body is not valid JSON")
    return body


# -- resources out -------------------------------------------------------------------------
# What the views return, typed so that mypy holds the builders to the documented shapes.

Timestamp = Annotated[str, WithJsonSchema({"type": "string", "format": "date-time", "examples": [TIME_EXAMPLE]})]


def one_of(*values: str) -> Any:
    """A string documented as one of ``values``."""
    return WithJsonSchema({"type": "string", "enum": list(values)})


class ApiKeyObject(TypedDict):
    id: str
    object: Annotated[str, one_of("api_key")]
    key: NotRequired[Annotated[str, Field(description="The secret, shown once: in the response that creates it.")]]
    redacted_key: Annotated[str, Field(examples=["sk_live_...4f2a"])]
    name: str
    scopes: list[str]
    environment: Annotated[str, one_of("live", "test")]
    expires_at: Timestamp | None
    ip_whitelist: list[str]
    service_account_id: str | None
    created_at: Timestamp
    last_used_at: Timestamp | None


class ServiceAccountObject(TypedDict):
    id: str
    object: Annotated[str, one_of("service_account")]
    name: str
    description: str | None
    scopes: list[str]
    ip_whitelist: list[str]
    client_id: Annotated[str, Field(description="Its OAuth client, for the client-credentials grant.")]
    client_secret: NotRequired[Annotated[str, Field(description="Shown once: in the response that creates it.")]]
    created_at: Timestamp


class Actor(TypedDict):
    type: Annotated[str, one_of("user", "api_key", "service_account", "client", "operator")]
    id: str | None
    name: str


class AuditEventObject(TypedDict):
    id: str
    timestamp: Timestamp
    actor: Actor
    action: Annotated[str, Field(examples=["api_keys.create"])]
    resource: str | None
    ip_address: str | None
    user_agent: str | None
    result: Annotated[str, one_of("success", "failure")]


class ApiKeyList(TypedDict):
    object: Annotated[str, one_of("list")]
    data: list[ApiKeyObject]
    has_more: bool


class ServiceAccountList(TypedDict):
    object: Annotated[str, one_of("list")]
    data: list[ServiceAccountObject]
    has_more: bool


class AuditEventList(TypedDict):
    object: Annotated[str, one_of("list")]
    data: list[AuditEventObject]
    has_more: bool


class Deleted(TypedDict):
    id: str
    object: Annotated[str, one_of("api_key", "service_account")]
    deleted: bool


class Organization(TypedDict):
    id: str
    name: str
    tier: Annotated[str, one_of("free", "starter", "professional", "enterprise")]


class PrincipalRef(TypedDict):
    type: Annotated[str, one_of("api_key", "user", "client", "service_account")]
    id: str
    name: str


class Credential(TypedDict):
    type: Annotated[str, one_of("api_key", "access_token", "session")]
    id: str


class Me(TypedDict):
    object: Annotated[str, one_of("principal")]
    organization: Organization
    principal: PrincipalRef
    credential: Credential
    scopes: list[str]
    environment: NotRequired[Annotated[str, one_of("live", "test")]]
    client_id: NotRequired[str]


class ErrorDetail(TypedDict):
    code: Annotated[str, Field(examples=["unauthorized"])]
    message: Annotated[str, Field(examples=["Invalid API key provided"])]
    documentation_url: str
    param: NotRequired[Annotated[str, Field(description="The offending field or parameter (400 only).")]]


class Error(TypedDict):
    """The envelope of every non-2xx answer under /v1 (SPEC §9)."""

    error: ErrorDetail


def iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value else None


def timestamp(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def api_key_json(key: ApiKey, plaintext: str | None = None) -> ApiKeyObject:
    body: ApiKeyObject = {
        "id": key.id,
        "object": "api_key",
        "redacted_key": redacted(key),
        "name": key.name,
        "scopes": key.scope.split(),
        "environment": key.environment,
        "expires_at": iso(key.expires_at),
        "ip_whitelist": list(key.ip_whitelist or []),
        "service_account_id": key.service_account_id,
        "created_at": timestamp(key.created_at),
        "last_used_at": iso(key.last_used_at),
    }
    if plaintext is not None:
        body["key"] = plaintext
    return body


def service_account_json(account: ServiceAccount, client_secret: str | None = None) -> ServiceAccountObject:
    body: ServiceAccountObject = {
        "id": account.id,
        "object": "service_account",
        "name": account.name,
        "description": account.description,
        "scopes": account.scope.split(),
        "ip_whitelist": list(account.ip_whitelist or []),
        "client_id": account.client_id,
        "created_at": timestamp(account.created_at),
    }
    if client_secret is not None:
        body["client_secret"] = client_secret
    return body


def audit_event_json(event: AuditEvent) -> AuditEventObject:
    """The shape of the product documentation's example, field for field."""
    return {
        "id": event.id,
        "timestamp": timestamp(event.created_at),
        "actor": {"type": event.actor_type, "id": event.actor_id, "name": event.actor_name},
        "action": event.action,
        "resource": event.resource,
        "ip_address": event.ip_address,
        "user_agent": event.user_agent,
        "result": event.result,
    }


def list_json(page: Page, render) -> dict[str, Any]:
    return {"object": "list", "data": [render(item) for item in page.items], "has_more": page.has_more}


def deleted_json(object_id: str, kind: str) -> Deleted:
    return {"id": object_id, "object": kind, "deleted": True}


class OpenApiDocument(TypedDict):
    """An OpenAPI 3.1 document."""

    openapi: str
    info: dict[str, Any]
    paths: dict[str, Any]
    components: dict[str, Any]
