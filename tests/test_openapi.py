"""The /v1 schemas: validation a caller sees, and the OpenAPI document made from them."""

from __future__ import annotations

import pytest
import requests
from openapi_spec_validator import validate

from tests.factories import bearer, make_api_key, make_org


def test_document_is_public_valid_openapi_31_and_lists_every_v1_route(live, app):
    response = requests.get(f"{live.url}/v1/openapi.json")  # no credentials
    assert response.status_code == 200 and response.headers["Content-Type"] == "application/json"
    document = response.json()
    assert document["openapi"] == "3.1.0"
    validate(document)  # raises on anything OpenAPI 3.1 does not allow
    documented = {(path, method) for path, item in document["paths"].items() for method in item}
    registered = set()
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/v1/"):
            path = rule.rule.replace("<", "{").replace(">", "}")
            registered |= {(path, m.lower()) for m in rule.methods - {"HEAD", "OPTIONS"}}
    assert registered and registered == documented


def test_document_describes_bodies_errors_security_and_rate_headers(live):
    document = requests.get(f"{live.url}/v1/openapi.json").json()
    create = document["paths"]["/v1/api-keys"]["post"]
    body = document["components"]["schemas"]["ApiKeyCreate"]
    assert set(body["required"]) == {"name", "scopes"} and body["additionalProperties"] is False
    assert body["properties"]["scopes"]["type"] == "array"
    assert create["responses"]["201"]["content"]["application/json"]["schema"]["$ref"].endswith("/ApiKeyObject")
    assert set(create["responses"]["201"]["headers"]) >= {"X-RateLimit-Limit", "X-RateLimit-Remaining",
                                                          "X-RateLimit-Reset", "X-Request-Id"}
    assert "admin:write" in create["description"]
    unauthorized = document["components"]["responses"]["Unauthorized"]["content"]["application/json"]
    assert unauthorized["example"]["error"]["code"] == "unauthorized"
    assert unauthorized["schema"]["$ref"].endswith("/Error")
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert document["paths"]["/v1/openapi.json"]["get"]["security"] == []
    service_account = document["paths"]["/v1/service-accounts"]["post"]["requestBody"]["content"]
    assert set(service_account) == {"application/json", "application/yaml"}
    audit = {p["name"]: p for p in document["paths"]["/v1/audit-logs"]["get"]["parameters"]}
    assert audit["result"]["schema"]["enum"] == ["success", "failure"]
    assert audit["limit"]["schema"]["maximum"] == 100


def _refused(response, param: str, words: str) -> None:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_request" and error["param"] == param, error
    assert words in error["message"], error


@pytest.mark.parametrize(("body", "param", "words"), [
    ({"name": "k", "scopes": "migrations:read"}, "scopes", "scopes must be a list"),
    ({"name": 7, "scopes": ["migrations:read"]}, "name", "name must be a string"),
    ({"name": "k", "scopes": ["migrations:read", 3]}, "scopes", "scopes[1] must be a string"),
    ({"name": "k", "scopes": ["migrations:read"], "environment": "prod"}, "environment", "must be one of"),
    ({"name": "k", "scopes": ["migrations:read"], "expires_at": "tomorrow"}, "expires_at", "ISO 8601"),
    ({"name": "k", "scopes": ["migrations:read"], "expires_at": "2030-01-01T00:00:00"}, "expires_at", "timezone"),
    ({"name": "k", "scopes": ["migrations:read"], "ip_whitelist": "203.0.113.0/24"}, "ip_whitelist",
     "must be a list"),
    ({"name": "k", "scope": ["migrations:read"]}, "scope", "Unknown field"),
    ({"scopes": ["migrations:read"]}, "name", "Missing required field: name"),
])
def test_wrong_shapes_are_refused_naming_the_field(live, body, param, words):
    org = make_org()
    _, admin = make_api_key(org)
    _refused(requests.post(f"{live.url}/v1/api-keys", headers=bearer(admin), json=body), param, words)


def test_patch_refuses_wrong_types_and_null_where_null_means_nothing(live):
    org = make_org()
    key, admin = make_api_key(org)
    url = f"{live.url}/v1/api-keys/{key.id}"
    _refused(requests.patch(url, headers=bearer(admin), json={"scopes": "migrations:read"}), "scopes", "list")
    _refused(requests.patch(url, headers=bearer(admin), json={"name": None}), "name", "name must be a string")
    cleared = requests.patch(url, headers=bearer(admin), json={"expires_at": None, "ip_whitelist": []})
    assert cleared.status_code == 200 and cleared.json()["expires_at"] is None


def test_yaml_bodies_are_validated_by_the_same_schema(live):
    org = make_org()
    _, admin = make_api_key(org)
    headers = bearer(admin) | {"Content-Type": "application/yaml"}
    url = f"{live.url}/v1/service-accounts"
    _refused(requests.post(url, headers=headers, data="name: ci\nscopes: migrations:read\n"), "scopes", "list")
    _refused(requests.post(url, headers=headers, data="name: ci\nscopes: [migrations:read]\nowner: me\n"),
             "owner", "Unknown field")
    created = requests.post(url, headers=headers, data="name: ci\nscopes:\n  - migrations:read\n")
    assert created.status_code == 201 and created.json()["scopes"] == ["migrations:read"]


@pytest.mark.parametrize(("query", "param", "words"), [
    ("limit=0", "limit", "from 1 to 100"),
    ("limit=ten", "limit", "must be an integer"),
    ("result=maybe", "result", "must be one of"),
    ("since=yesterday", "since", "ISO 8601"),
    ("colour=blue", "colour", "Unknown query parameter"),
    ("limit=5&limit=6", "limit", "must not be repeated"),
])
def test_query_strings_are_validated(live, query, param, words):
    org = make_org()
    _, admin = make_api_key(org)
    _refused(requests.get(f"{live.url}/v1/audit-logs?{query}", headers=bearer(admin)), param, words)
