"""The ``sensei`` command group (SPEC §1): thin wrappers over the services.

Every command takes ``--json`` and then prints exactly one JSON object. Bad input exits
with status 1 and one line on stderr, never a traceback.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import tempfile
from datetime import UTC, datetime
from functools import wraps

import click
from flask import current_app
from flask.cli import FlaskGroup, with_appcontext
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError, ProgrammingError

from app.config import PROJECT_ROOT, ConfigError, load_settings
from app.errors import ApiError
from app.extensions import db
from app.models import Organization
from app.services import api_keys as key_service
from app.services import audit as audit_log
from app.services import clients as client_service
from app.services import orgs as org_service
from app.services import schema, signing_keys
from app.services import tokens as token_service
from app.services.audit import operator_context

json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


def command(name: str):
    """A CLI command that runs in the app context and turns domain errors into one line."""

    def decorator(fn):
        @click.command(name)
        @json_option
        @with_appcontext
        @wraps(fn)
        def wrapper(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except ApiError as error:
                _fail(error.message)
            except signing_keys.SigningKeyMissing as error:
                _fail(str(error))
            except (OperationalError, ProgrammingError) as error:
                _fail(f"database error ({type(error.orig).__name__}); did you run `sensei init`?")

        return wrapper

    return decorator


def _emit(as_json: bool, payload: dict, lines: list[str]) -> None:
    if as_json:
        click.echo(json.dumps(payload))
    else:
        for line in lines:
            click.echo(line)


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value else None


def _parse_time(value: str | None, param: str) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ApiError("invalid_request", f"{param} must be an ISO 8601 date-time", param=param) from None
    if parsed.tzinfo is None:
        raise ApiError("invalid_request", f"{param} must include a timezone (e.g. Z)", param=param)
    return parsed


@command("init")
@click.option("--demo", is_flag=True, help="On the first run, create a demo org, owner and admin key.")
def init_command(as_json: bool, demo: bool) -> None:
    """Create or upgrade the schema; create the signing keys (current and next) if missing,
    sealing PEMs of earlier versions from SENSEI_KEYS_DIR into the database."""
    settings = current_app.config["SETTINGS"]
    before, after = schema.upgrade_schema()
    key, created = signing_keys.ensure_signing_key(keys_dir=settings.KEYS_DIR)
    states = signing_keys.key_states(access_token_ttl=settings.ACCESS_TOKEN_TTL)
    payload: dict = {"schema_revision": after, "previous_revision": before, "signing_key": key.kid,
                     "signing_key_created": created, "next_signing_key": states["next"][0] if states["next"] else None}
    lines = [f"Schema at revision {after}.", f"Signing key {key.kid}{' created' if created else ''}."]
    if demo and not db.session.scalar(select(func.count()).select_from(Organization)):
        payload["demo"] = _create_demo()
        d = payload["demo"]
        lines += [
            "",
            "Demo organization created. These credentials are shown only this once:",
            f"  Organization:  {d['org_id']} ({d['org_name']})",
            f"  Sign in at:    {settings.ISSUER}/login",
            f"  Email:         {d['email']}",
            f"  Password:      {d['password']}",
            f"  Admin API key: {d['api_key']}",
            "",
        ]
    _emit(as_json, payload, lines)


def _create_demo() -> dict:
    org = org_service.create_org(name="Demo Org", tier="free")
    password = secrets.token_urlsafe(12)
    user = org_service.create_user(org_id=org.id, email="owner@example.com", password=password, role="owner",
                                   audit=operator_context())
    key, plaintext = key_service.create_api_key(
        org_id=org.id, name="Bootstrap admin key", scopes=["*"], created_by=user.id, audit=operator_context()
    )
    return {"org_id": org.id, "org_name": org.name, "user_id": user.id, "email": user.email,
            "password": password, "api_key_id": key.id, "api_key": plaintext}


@command("create-org")
@click.argument("name")
@click.option("--tier", default="free", type=click.Choice(["free", "starter", "professional", "enterprise"]))
def create_org_command(as_json: bool, name: str, tier: str) -> None:
    """Create an organization."""
    org = org_service.create_org(name=name, tier=tier)
    _emit(as_json, {"id": org.id, "object": "organization", "name": org.name, "tier": org.tier,
                    "created_at": _iso(org.created_at)}, [org.id])


@command("create-user")
@click.argument("email")
@click.option("--org", "org_id", required=True, help="Organization id (org_...).")
@click.option("--role", required=True, help="owner, admin, developer or viewer.")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@click.option("--name", default=None, help="Display name (the `name` an app reads with the profile scope).")
def create_user_command(as_json: bool, email: str, org_id: str, role: str, password_stdin: bool,
                        name: str | None) -> None:
    """Create a user in an organization (the password is read from stdin or prompted)."""
    org_service.get_org(org_id)
    if role not in ("owner", "admin", "developer", "viewer"):
        raise ApiError("invalid_request", "role must be one of: owner, admin, developer, viewer")
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    user = org_service.create_user(org_id=org_id, email=email, password=password, role=role, name=name,
                                   audit=operator_context())
    _emit(as_json, {"id": user.id, "object": "user", "email": user.email, "name": user.name, "org_id": user.org_id,
                    "role": user.role, "created_at": _iso(user.created_at)}, [user.id])


@command("create-api-key")
@click.option("--org", "org_id", required=True, help="Organization id (org_...).")
@click.option("--name", required=True)
@click.option("--scopes", required=True, help='Space-separated, e.g. "migrations:read migrations:write".')
@click.option("--test", "test_key", is_flag=True, help="Create an sk_test_ key instead of sk_live_.")
@click.option("--expires-at", default=None, help="ISO 8601 date-time with timezone.")
def create_api_key_command(as_json: bool, org_id: str, name: str, scopes: str, test_key: bool,
                           expires_at: str | None) -> None:
    """Create an API key and print it (the only time it is shown)."""
    org_service.get_org(org_id)
    key, plaintext = key_service.create_api_key(
        org_id=org_id, name=name, scopes=scopes.split(), environment="test" if test_key else "live",
        expires_at=_parse_time(expires_at, "expires_at"), audit=operator_context(),
    )
    _emit(as_json, {"id": key.id, "object": "api_key", "key": plaintext, "name": key.name,
                    "scopes": key.scope.split(), "environment": key.environment,
                    "expires_at": _iso(key.expires_at), "created_at": _iso(key.created_at)}, [plaintext])


@command("create-client")
@click.option("--org", "org_id", required=True, help="Organization id (org_...).")
@click.option("--name", required=True)
@click.option("--redirect-uri", "redirect_uris", multiple=True, help="Exact redirect URI; repeat for more.")
@click.option("--scopes", required=True, help="Space-separated scopes the client may request.")
@click.option("--public", is_flag=True, help="A public client (no secret; PKCE required).")
@click.option("--grant-type", "grant_types", multiple=True, type=click.Choice(list(client_service.GRANT_TYPES)),
              help="A grant the client may use; repeat for more. Default: authorization_code and "
                   "refresh_token with redirect URIs, plus client_credentials unless --public.")
@click.option("--post-logout-redirect-uri", "post_logout_redirect_uris", multiple=True,
              help="Where OpenID Connect logout may return the browser (besides the redirect URIs).")
def create_client_command(as_json: bool, org_id: str, name: str, redirect_uris: tuple[str, ...], scopes: str,
                          public: bool, grant_types: tuple[str, ...], post_logout_redirect_uris: tuple[str, ...]) -> None:
    """Register an OAuth client and print its client_id and client_secret."""
    client, secret = client_service.create_client(
        org_id=org_id, name=name, redirect_uris=list(redirect_uris), scopes=scopes.split(), public=public,
        grant_types=list(grant_types) or None, post_logout_redirect_uris=list(post_logout_redirect_uris),
        audit=operator_context(),
    )
    payload = {"client_id": client.client_id, "client_secret": secret, "object": "oauth_client",
               "name": client.name, "org_id": client.org_id, "public": client.is_public,
               "redirect_uris": client.redirect_uris, "post_logout_redirect_uris": client.post_logout_redirect_uris,
               "grant_types": client.grant_types.split(), "scopes": client.scope.split()}
    lines = [f"client_id:     {client.client_id}"]
    if secret:
        lines.append(f"client_secret: {secret}")
    _emit(as_json, payload, lines)


@command("set-limits")
@click.argument("org_id")
@click.option("--per-second", required=True, type=int)
@click.option("--per-day", required=True, type=int)
def set_limits_command(as_json: bool, org_id: str, per_second: int, per_day: int) -> None:
    """Set an enterprise organization's rate limits (other tiers use the tier's table)."""
    org = org_service.set_limits(org_id=org_id, per_second=per_second, per_day=per_day)
    _emit(as_json, {"id": org.id, "tier": org.tier, "per_second": per_second, "per_day": per_day},
          [f"{org.id}: {per_second}/s, {per_day}/day (every process applies it within 30 s)"])


@command("rotate-signing-key")
def rotate_signing_key_command(as_json: bool) -> None:
    """Promote the published next key to signing, publish a new next key, retire the old one."""
    settings = current_app.config["SETTINGS"]
    current, retired, upcoming = signing_keys.rotate_signing_key()
    states = signing_keys.key_states(access_token_ttl=settings.ACCESS_TOKEN_TTL)
    _emit(as_json, {"signing_key": current.kid, "retired": retired, **states},
          [f"Signing key {current.kid} signs from now on (every process within "
           f"{signing_keys.REFRESH_SECONDS} s); next key {upcoming.kid} published; retired "
           f"{', '.join(retired) or 'none'} (published until their tokens expire)."])


@command("prune")
def prune_command(as_json: bool) -> None:
    """Delete expired codes, refresh tokens, revocations, sessions and signing keys."""
    settings = current_app.config["SETTINGS"]
    counts = token_service.prune()
    counts["user_sessions"] = org_service.prune_sessions(datetime.now(UTC))
    removed = signing_keys.prune_signing_keys(access_token_ttl=settings.ACCESS_TOKEN_TTL)
    counts["signing_keys"] = len(removed)
    _emit(as_json, {"deleted": counts}, [f"{name}: {n} deleted" for name, n in counts.items()])


@click.group("audit")
def audit_group() -> None:
    """The audit log."""


@audit_group.command("verify")
@json_option
@click.option("--org", "org_id", default=None, help="Only this organization's chain.")
@with_appcontext
def audit_verify_command(as_json: bool, org_id: str | None) -> None:
    """Check every organization's hash chain; exit 1 if an entry was edited, inserted or deleted."""
    report = audit_log.verify_chain(org_id=org_id)
    lines = [f"{report['organizations']} chain(s), {report['entries']} entries checked."]
    lines += [f"BROKEN {p['org_id']}: {p['problem']}" for p in report["problems"]] or ["All chains intact."]
    _emit(as_json, report, lines)
    if report["problems"]:
        sys.exit(1)


@click.command("serve")
@json_option
@with_appcontext
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--workers", default=lambda: int(os.environ.get("SENSEI_WORKERS", "2")), type=click.IntRange(1, 64))
def serve_command(as_json: bool, host: str, port: int, workers: int) -> None:
    """Serve under gunicorn."""
    from app import readiness_problem

    problem = readiness_problem(current_app._get_current_object())  # type: ignore[attr-defined]
    if problem:
        _fail(problem)
    _prepare_metrics_dir()
    argv = [sys.executable, "-m", "gunicorn", "--chdir", str(PROJECT_ROOT), "--bind", f"{host}:{port}",
            "--config", "python:app.gunicorn_conf",
            "--workers", str(workers), "--worker-class", "gthread", "--threads", "4",
            "--graceful-timeout", "20", "--timeout", "30",
            # Forwarded headers are trusted by ProxyFix per SENSEI_TRUSTED_PROXIES, not by gunicorn.
            "--forwarded-allow-ips=",
            "--no-control-socket",  # a fixed path under $HOME: several servers on one host would clash
            "wsgi:app"]
    if as_json:
        click.echo(json.dumps({"serving": f"http://{host}:{port}", "workers": workers}))
    else:
        click.echo(f"Serving Sensei Auth on http://{host}:{port} ({workers} workers)")
    sys.stdout.flush()
    os.execv(sys.executable, argv)


def _prepare_metrics_dir() -> None:
    """Prometheus multiprocess mode for the workers: $PROMETHEUS_MULTIPROC_DIR (emptied of the
    previous run's files) or a new private directory."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        for name in os.listdir(directory):
            if name.endswith(".db"):
                os.unlink(os.path.join(directory, name))
    else:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="sensei-metrics-")


COMMANDS = [
    init_command,
    create_org_command,
    create_user_command,
    create_api_key_command,
    create_client_command,
    set_limits_command,
    rotate_signing_key_command,
    prune_command,
    audit_group,
    serve_command,
]


def main() -> None:
    """Entry point of the ``sensei`` console script."""
    try:
        load_settings()
    except ConfigError as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(1)
    from app import create_app

    FlaskGroup(create_app=create_app, add_default_commands=False, add_version_option=False,
               load_dotenv=False, set_debug_flag=False)(prog_name="sensei")
