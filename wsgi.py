"""WSGI entry point: ``gunicorn wsgi:app`` (``sensei serve`` does this for you)."""

import sys

from app import create_app
from app.config import ConfigError

try:
    app = create_app()
except ConfigError as error:
    print(f"sensei: {error}", file=sys.stderr)
    sys.exit(1)
