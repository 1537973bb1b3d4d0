"""Sensei Auth with the per-request audit write switched off — for bench/audit_write_cost.py only.

``require_principal`` (app/api/auth.py) calls ``audit_log.record_now(...)`` through the module at
call time, so replacing ``app.services.audit.record_now`` with a no-op before the app is built
removes exactly the audit INSERT + COMMIT of each read, and nothing else. The difference between
this server and ``wsgi:app`` on the same database is the cost of that write on the request path.

    gunicorn --chdir <repo> --pythonpath <repo>/bench ... wsgi_no_audit:app

Never serve this: reads would leave no audit trail.
"""

from app.services import audit as _audit


def _no_audit(context, **fields) -> None:
    return None


_audit.record_now = _no_audit

from wsgi import app  # noqa: E402  (after the patch; wsgi builds the app and starts the sealer)

__all__ = ["app"]
