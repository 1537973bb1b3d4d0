"""GET /healthz for load balancers and monitoring: database and rate-limit storage."""

from __future__ import annotations

from flask import Blueprint, jsonify
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from app.extensions import db
from app.security.rate_limits import limiter

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    try:
        db.session.execute(text("SELECT 1"))
        database = "ok"
    except SQLAlchemyError:
        database = "unavailable"
    limits = limiter()
    storage = ("ok" if limits.storage_reachable() else "unavailable") if limits.shared else "in-process"
    status = "ok" if database == "ok" and storage != "unavailable" else "degraded"
    response = jsonify({"status": status, "database": database, "rate_limit_storage": storage})
    response.status_code = 200 if database == "ok" else 503
    return response
