"""GET /v1/openapi.json: the API's OpenAPI 3.1 document, without credentials."""

from __future__ import annotations

from flask import current_app

from app.api import bp
from app.api.openapi import document, operation
from app.api.schemas import OpenApiDocument


@bp.get("/openapi.json")
@operation("This OpenAPI document", response=OpenApiDocument, public=True)
def openapi_json():
    response = current_app.json.response(document())
    response.headers["Cache-Control"] = "public, max-age=300"
    return response
