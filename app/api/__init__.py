"""The /v1 API. Every non-2xx answer is the envelope of SPEC §9 (see app/errors.py)."""

from flask import Blueprint

bp = Blueprint("api", __name__, url_prefix="/v1")

from app.api import api_keys, audit_logs, docs, me, service_accounts  # noqa: E402,F401  (routes register on import)
