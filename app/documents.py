"""Request documents (JSON and YAML bodies, uploaded YAML files) parsed safely, for every
surface that takes them: the /v1 API and the dashboard.

YAML is parsed with the safe loader and refused with tags, anchors or aliases, beyond
``MAX_YAML_BYTES`` or nested deeper than ``MAX_DEPTH``; JSON refuses NaN/Infinity and
absurd nesting. Errors are ``ApiError`` (400, or 413 for an oversized YAML document).
"""

from __future__ import annotations

import json
from typing import Any

import yaml

from app.errors import ApiError

MAX_YAML_BYTES = 64 * 1024
MAX_DEPTH = 20


def _invalid(message: str) -> ApiError:
    return ApiError("invalid_request", message)


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
