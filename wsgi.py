"""WSGI entry point: ``gunicorn wsgi:app`` (``sensei serve`` does this for you).

Refuses to start, with one line naming the problem, when a setting is wrong, the schema
is not applied or the signing key is missing.
"""

import sys

from app import create_app, readiness_problem
from app.config import ConfigError
from app.services.audit import AuditWriter, Sealer

try:
    app = create_app()
except ConfigError as error:
    print(f"sensei: {error}", file=sys.stderr)
    sys.exit(1)
problem = readiness_problem(app)
if problem:
    print(f"sensei: {problem}", file=sys.stderr)
    sys.exit(1)
app.extensions["sensei.audit_writer"] = AuditWriter(app)  # standalone entries, off the request path
sealer = Sealer(app).start()  # chains the entries of changes every second
