"""Sensei Auth: an OAuth 2.0 authorization server and API-credential service."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from flask import Flask
from sqlalchemy import event
from sqlalchemy.exc import DBAPIError
from werkzeug.middleware.proxy_fix import ProxyFix

from app.config import PROJECT_ROOT, Settings, load_settings
from app.extensions import csrf, db


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the app. ``config`` overrides settings by name, e.g. ``{"DATABASE_URL": ...}``."""
    settings = load_settings(config)
    app = Flask(
        __name__,
        template_folder=str(PROJECT_ROOT / "templates"),
        static_folder=str(PROJECT_ROOT / "static"),
    )
    configure(app, settings)
    register_extensions(app)
    register_blueprints(app)
    register_errorhandlers(app)
    register_request_hooks(app)
    register_cli(app)
    return app


def readiness_problem(app: Flask) -> str | None:
    """Why this app cannot serve yet (schema not applied, signing key missing), in one line."""
    from sqlalchemy.exc import SQLAlchemyError

    from app.services import schema
    from app.services.signing_keys import SigningKeyMissing, current_key_record, private_pem

    with app.app_context():
        try:
            if not schema.schema_is_current():
                return "the database schema is missing or out of date: run `sensei init`"
            current = current_key_record()
            if current is None:
                return "no signing key: run `sensei init`"
            private_pem(current)
        except SigningKeyMissing as error:
            return str(error)
        except SQLAlchemyError as error:
            return f"the database is unreachable ({type(error).__name__}): check SENSEI_DATABASE_URL"
    return None


def configure(app: Flask, settings: Settings) -> None:
    app.config.update(
        SETTINGS=settings,
        SECRET_KEY=settings.SECRET_KEY,
        SQLALCHEMY_DATABASE_URI=database_uri(settings.DATABASE_URL),
        # No pre-ping (a round trip per request on PostgreSQL): a connection found dead
        # invalidates the pool, that request gets 503 and the next reconnects.
        SQLALCHEMY_ENGINE_OPTIONS={"pool_recycle": 1800},
        MAX_CONTENT_LENGTH=1024 * 1024,
        SESSION_COOKIE_NAME="sensei_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.production,
        PERMANENT_SESSION_LIFETIME=settings.SESSION_TTL,
        WTF_CSRF_TIME_LIMIT=None,  # the token lives as long as the session
        WTF_CSRF_SSL_STRICT=False,  # SameSite=Lax cookies + token; Referer is stripped by our policy
        JSON_SORT_KEYS=False,
    )
    from app.json_provider import OrjsonProvider

    app.json = OrjsonProvider(app)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    from app.web.session import PageSessionInterface

    app.session_interface = PageSessionInterface()


def database_uri(url: str) -> str:
    """psycopg 3 is the PostgreSQL driver; accept the plain ``postgresql://`` spelling too."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def register_extensions(app: Flask) -> None:
    from app.oauth.server import init_oauth
    from app.security.rate_limits import Quota, RateLimiter
    from app.services.freshness import register_invalidation
    from app.services.signing_keys import KeyRing

    settings: Settings = app.config["SETTINGS"]
    if settings.DATABASE_URL.startswith("sqlite:"):
        path = settings.DATABASE_URL.removeprefix("sqlite:///")
        if path and path != ":memory:":
            from pathlib import Path

            Path(path).parent.mkdir(parents=True, exist_ok=True)
    db.init_app(app)
    app.teardown_appcontext(_end_session)  # teardowns run last-registered first: before Flask-SQLAlchemy's
    if settings.DATABASE_URL.startswith("sqlite:"):
        with app.app_context():
            event.listen(db.engine, "connect", _sqlite_pragmas)
    csrf.init_app(app)
    app.extensions["sensei.limiter"] = RateLimiter(
        settings.REDIS_URL,
        prefix=settings.REDIS_PREFIX,
        anonymous=Quota(settings.ANONYMOUS_PER_SECOND, settings.ANONYMOUS_PER_DAY),
        login_per_address=settings.LOGIN_PER_MINUTE_PER_ADDRESS,
        login_per_account=settings.LOGIN_PER_MINUTE_PER_ACCOUNT,
    )
    app.extensions["sensei.keyring"] = KeyRing(
        secret_key=settings.SECRET_KEY, access_token_ttl=settings.ACCESS_TOKEN_TTL
    )
    init_oauth(app)
    register_invalidation()


def _end_session(_error: BaseException | None) -> None:
    """End the context's session even when its connection died under it (the database stopped
    mid-request): the rollback that closing sends fails, the answer already made stands, and the
    pool has discarded the dead connection."""
    try:
        db.session.remove()
    except DBAPIError as error:
        logging.getLogger("sensei").error("database connection lost while ending a session: %s",
                                          type(error.orig or error).__name__)
        db.session.registry.clear()


def register_blueprints(app: Flask) -> None:
    from app.api import bp as api_bp
    from app.api.gateway import bp as gateway_bp
    from app.oauth.views import bp as oauth_bp
    from app.web.auth import bp as auth_bp
    from app.web.consent import bp as consent_bp
    from app.web.dashboard import bp as dashboard_bp
    from app.web.device import bp as device_bp
    from app.web.health import bp as health_bp

    csrf.exempt(api_bp)
    csrf.exempt(oauth_bp)
    csrf.exempt(gateway_bp)
    for blueprint in (api_bp, gateway_bp, oauth_bp, auth_bp, consent_bp, device_bp, dashboard_bp, health_bp):
        app.register_blueprint(blueprint)


def register_errorhandlers(app: Flask) -> None:
    from app.errors import register_errorhandlers as register

    register(app)


def register_request_hooks(app: Flask) -> None:
    from app.early_count import register_early_count
    from app.hot_paths import register_hot_paths
    from app.observability import register_request_edge, register_round_trip_counting
    from app.security.body_limit import register_body_limit
    from app.security.headers import register_security_headers
    from app.security.https import register_https_enforcement

    register_hot_paths(app)  # innermost: below the edge, the headers and the early count it relies on
    register_body_limit(app)
    register_https_enforcement(app)
    register_security_headers(app)
    register_early_count(app)
    register_round_trip_counting(app)
    register_request_edge(app)  # its id and access line cover every response
    settings: Settings = app.config["SETTINGS"]
    if settings.TRUSTED_PROXIES:  # outermost: every layer, the hot paths' too, sees the client's address
        n = settings.TRUSTED_PROXIES
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=0)  # type: ignore[method-assign]


def register_cli(app: Flask) -> None:
    from app.cli import COMMANDS

    for command in COMMANDS:
        app.cli.add_command(command)
