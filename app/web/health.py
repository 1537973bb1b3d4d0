"""Operations endpoints (SPEC §13): liveness, readiness and Prometheus metrics.

``GET /healthz``: the process answers (nothing else is checked, so a load balancer never
restarts a healthy process because the database blinked). ``GET /readyz``: 200 when the
database and, if configured, Redis answer; 503 naming which does not. ``GET /metrics``: see
``app/metrics.py`` for who may read it.
"""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify, request
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from app import metrics
from app.extensions import db
from app.security.rate_limits import limiter

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz():
    try:
        db.session.execute(text("SELECT 1"))
        database = "ok"
    except SQLAlchemyError:
        db.session.rollback()
        database = "unavailable"
    limits = limiter()
    redis = ("ok" if limits.storage_reachable() else "unavailable") if limits.shared else "not configured"
    down = [name for name, state in (("database", database), ("redis", redis)) if state == "unavailable"]
    body = {"status": "unavailable" if down else "ready", "database": database, "redis": redis}
    if down:
        body["reason"] = " and ".join(down) + (" is" if len(down) == 1 else " are") + " not answering"
    response = jsonify(body)
    response.status_code = 503 if down else 200
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/metrics")
def metrics_text():
    if not metrics.may_scrape(request.environ, current_app.config["SETTINGS"].METRICS_TOKEN):
        return Response("Not Found\n", status=404, mimetype="text/plain")
    body, content_type = metrics.exposition()
    return Response(body, content_type=content_type, headers={"Cache-Control": "no-store"})
