"""The OpenAPI 3.1 document of /v1, made from the routes and the shapes in ``app/api/schemas.py``.

Each /v1 view carries its description (``@operation``); the document walks Flask's URL map,
so a route without one fails the build (and its test) instead of going undocumented.
Served without credentials at ``GET /v1/openapi.json``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Literal

from flask import Flask, current_app
from pydantic import BaseModel, TypeAdapter

from app.api import schemas

REF = "#/components/schemas/{model}"
METHODS = ("get", "post", "put", "patch", "delete")


@dataclass(frozen=True)
class Operation:
    summary: str
    response: Any  # a TypedDict (or model) of the success body
    status: int = 200
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    yaml: bool = False  # the body may also be YAML
    description: str = ""
    public: bool = False  # no credentials


def operation(summary: str, *, response: Any, status: int = 200, body: type[BaseModel] | None = None,
              query: type[BaseModel] | None = None, yaml: bool = False, description: str = "",
              public: bool = False):
    """Describe a /v1 view for the OpenAPI document (put it right under the route decorator)."""

    def describe(view):
        view.openapi = Operation(summary, response, status, body, query, yaml, description, public)
        return view

    return describe


def _package_version() -> str:
    try:
        return version("sensei-auth")
    except PackageNotFoundError:  # pragma: no cover - run from a checkout that was never installed
        return "0.0.0"


_RATE_HEADERS = {
    "X-RateLimit-Limit": ("The request limit of the window nearest to running out.", "integer"),
    "X-RateLimit-Remaining": ("Requests left in that window.", "integer"),
    "X-RateLimit-Reset": ("When that window resets (Unix time, seconds).", "integer"),
}

_ERRORS = {
    "InvalidRequest": (400, "invalid_request", "scopes must be a list", "scopes"),
    "Unauthorized": (401, "unauthorized", "Invalid API key provided", None),
    "Forbidden": (403, "forbidden", "This credential lacks the scope admin:write", None),
    "NotFound": (404, "not_found", "No such API key", None),
    "RateLimited": (429, "rate_limited", "Rate limit exceeded for this credential; retry after the number of "
                                         "seconds in Retry-After", None),
}


def _error_response(name: str, docs_url: str) -> dict[str, Any]:
    status, code, message, param = _ERRORS[name]
    example: dict[str, Any] = {"code": code, "message": message, "documentation_url": f"{docs_url}/errors#{code}"}
    if param:
        example["param"] = param
    response: dict[str, Any] = {
        "description": f"`{code}` in the error envelope.",
        "headers": {"X-Request-Id": {"$ref": "#/components/headers/X-Request-Id"}},
        "content": {"application/json": {"schema": {"$ref": REF.format(model="Error")},
                                         "example": {"error": example}}},
    }
    if status == 429:
        response["headers"]["Retry-After"] = {"$ref": "#/components/headers/Retry-After"}
    if status in (403, 429):
        response["headers"].update({name: {"$ref": f"#/components/headers/{name}"} for name in _RATE_HEADERS})
    return response


def _parameters(rule, op: Operation, query_schemas: dict[str, dict]) -> list[dict[str, Any]]:
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string", "maxLength": 128}}
        for name in sorted(rule.arguments)
    ]
    if op.query is not None:
        schema = query_schemas[op.query.__name__]
        for name, field in op.query.model_fields.items():
            parameter = {"name": name, "in": "query", "required": field.is_required(),
                         "schema": _query_value(schema["properties"][name])}
            if field.description:
                parameter["description"] = field.description
            parameters.append(parameter)
    return parameters


def _query_value(schema: dict[str, Any]) -> dict[str, Any]:
    """A query parameter's schema: a query string cannot say null, so the null branch goes."""
    schema = {key: value for key, value in schema.items() if key not in ("title", "description")}
    branches = [branch for branch in schema.pop("anyOf", []) if branch.get("type") != "null"]
    if branches:
        schema.pop("default", None)
        schema.update(branches[0] if len(branches) == 1 else {"anyOf": branches})
    return schema


def build(app: Flask) -> dict[str, Any]:
    """The document for ``app``'s /v1 routes."""
    settings = app.config["SETTINGS"]
    documented: list[tuple[str, str, Any, Operation, Any]] = []
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/v1/"):
            continue
        view = app.view_functions[rule.endpoint]
        op = getattr(view, "openapi", None)
        if op is None:
            raise LookupError(f"/v1 route {rule.rule} ({rule.endpoint}) has no @operation")
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            documented.append((rule.rule, method.lower(), rule, op, view))

    shapes: dict[str, Any] = {"Error": schemas.Error}
    for *_, op, _view in documented:
        for shape in (op.response, op.body):
            if shape is not None:
                shapes[shape.__name__] = shape
    adapters: list[tuple[tuple[str, str], Literal["validation"], TypeAdapter[Any]]] = [
        ((name, "validation"), "validation", TypeAdapter(shape)) for name, shape in sorted(shapes.items())]
    _refs, definitions = TypeAdapter.json_schemas(adapters, ref_template=REF)
    components = definitions.get("$defs", {})
    query_schemas = {op.query.__name__: op.query.model_json_schema() for *_, op, _view in documented if op.query}

    paths: dict[str, dict[str, Any]] = {}
    for path, method, rule, op, view in documented:
        openapi_path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", path)
        paths.setdefault(openapi_path, {})[method] = _operation(rule, op, getattr(view, "required_scope", None),
                                                                query_schemas)

    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Sensei Auth API",
            "version": _package_version(),
            "description": "API keys, service accounts, the audit log and the caller's identity. Authenticate "
                           "with `Authorization: Bearer <API key or OAuth access token>`. Every error is the "
                           "envelope `Error`; every response carries `X-Request-Id`.",
        },
        "servers": [{"url": settings.ISSUER}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key (`sk_live_...`, `sk_test_...`) or an OAuth 2.0 access token "
                                   "(a JWT from `POST /oauth/token`).",
                },
            },
            "headers": {
                "X-Request-Id": {"description": "This request's id (also in the server's log line).",
                                 "schema": {"type": "string"}},
                "Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}},
                **{name: {"description": text, "schema": {"type": kind}}
                   for name, (text, kind) in _RATE_HEADERS.items()},
            },
            "responses": {name: _error_response(name, settings.DOCS_URL) for name in _ERRORS},
        },
    }


def _operation(rule, op: Operation, scope: str | None, query_schemas: dict[str, dict]) -> dict[str, Any]:
    description = op.description
    if scope:
        description = f"Needs the scope `{scope}`. {description}".strip()
    success_headers: dict[str, Any] = {"X-Request-Id": {"$ref": "#/components/headers/X-Request-Id"}}
    if not op.public:
        success_headers.update({name: {"$ref": f"#/components/headers/{name}"} for name in _RATE_HEADERS})
    body: dict[str, Any] = {
        "operationId": rule.endpoint.replace(".", "_"),
        "summary": op.summary,
        "parameters": _parameters(rule, op, query_schemas),
        "responses": {
            str(op.status): {
                "description": op.summary,
                "headers": success_headers,
                "content": {"application/json": {"schema": {"$ref": REF.format(model=op.response.__name__)}}},
            },
        },
    }
    if description:
        body["description"] = description
    if op.public:
        body["security"] = []
    if op.body is not None:
        content = {"application/json": {"schema": {"$ref": REF.format(model=op.body.__name__)}}}
        if op.yaml:
            content["application/yaml"] = {"schema": {"$ref": REF.format(model=op.body.__name__)}}
        body["requestBody"] = {"required": True, "content": content}
    responses = body["responses"]
    if op.body is not None or op.query is not None:
        responses["400"] = {"$ref": "#/components/responses/InvalidRequest"}
    if op.query is not None:
        responses["414"] = {
            "description": "A request line over 4094 bytes, refused by the HTTP server (gunicorn) before the "
                           "application sees it.",
            "content": {"text/html": {"schema": {"type": "string"}}},
        }
    if not op.public:
        responses["401"] = {"$ref": "#/components/responses/Unauthorized"}
        responses["403"] = {"$ref": "#/components/responses/Forbidden"}
        responses["429"] = {"$ref": "#/components/responses/RateLimited"}
    if rule.arguments:
        responses["404"] = {"$ref": "#/components/responses/NotFound"}
    responses["default"] = {
        "description": "Any other failure (413, 415, 500, 503, ...), in the error envelope.",
        "headers": {"X-Request-Id": {"$ref": "#/components/headers/X-Request-Id"}},
        "content": {"application/json": {"schema": {"$ref": REF.format(model="Error")}}},
    }
    return body


def document() -> dict[str, Any]:
    """The current app's document, built once."""
    cached = current_app.extensions.get("sensei.openapi")
    if cached is None:
        cached = current_app.extensions["sensei.openapi"] = build(current_app)
    return cached
