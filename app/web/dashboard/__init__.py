"""The dashboard (issue 5): people manage keys, apps, service accounts and audit in the browser.

Every page runs on the same services as the /v1 API, with the signed-in user as the
principal (their role's scopes) and the user as the audit actor. What a role may not do,
it does not see: links and buttons are shown only with the scope the action needs.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from functools import wraps

from flask import Blueprint, abort, g, redirect, render_template, request, url_for

from app.errors import ApiError
from app.models import User
from app.oauth.events import user_context
from app.services.audit import AuditContext
from app.services.principals import user_principal
from app.web.session import current_user

bp = Blueprint("dashboard", __name__, url_prefix="/dashboard")

NAV = [
    ("dashboard.api_keys", "API Keys", "admin:read"),
    ("dashboard.apps", "OAuth apps", "admin:read"),
    ("dashboard.service_accounts", "Service accounts", "admin:read"),
    ("dashboard.audit", "Audit log", "admin:read"),
    ("dashboard.authorized_apps", "Authorized apps", None),
    ("dashboard.profile", "Your profile", None),
    ("dashboard.organization", "Organization", "admin:read"),
    ("dashboard.members", "Members", "admin:write"),
]


def page(scope: str | None = None):
    """A dashboard page: signed in (else to /login and back), holding ``scope`` (else 403)."""

    def decorator(view):
        @wraps(view)
        def wrapper(*args, **kwargs):
            user = current_user()
            if user is None:
                return redirect(url_for("auth.login", next=request.full_path))
            g.principal = user_principal(user)
            if scope is not None and not g.principal.has_scope(scope):
                abort(403)
            return view(*args, **kwargs)

        return wrapper

    return decorator


def actor() -> User:
    """The signed-in user of a dashboard page (``page`` has made sure there is one)."""
    user = current_user()
    assert user is not None
    return user


def audit() -> AuditContext:
    return user_context(actor())


def can(scope: str | None) -> bool:
    return scope is None or g.principal.has_scope(scope)


@bp.context_processor
def dashboard_helpers() -> dict:
    if "principal" not in g:  # an error page before the view ran (e.g. a refused CSRF token)
        return {}
    return {"can": can, "nav": [(endpoint, label) for endpoint, label, scope in NAV if can(scope)],
            "user": current_user()}


def show_error(form, error: ApiError, field: str | None = None) -> None:
    """Put a service's error next to the field it names (or ``field``), else above the form."""
    name = field or error.param or ""
    field = getattr(form, name, None) if name else None
    if field is not None and hasattr(field, "errors"):
        field.errors = [*field.errors, error.message]
    else:
        form.form_errors.append(error.message)


def end_of_day(day: date | None) -> datetime | None:
    return datetime.combine(day, time(23, 59, 59), UTC) if day else None


def start_of_day(day: date | None) -> datetime | None:
    return datetime.combine(day, time(0, 0, 0), UTC) if day else None


def render(template: str, status: int = 200, **context):
    return render_template(f"dashboard/{template}", **context), status


from app.web.dashboard import account, apps, audit_log, keys, service_accounts  # noqa: E402,F401
