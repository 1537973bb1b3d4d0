"""A service of your own, protected by Sensei Auth: the product documentation's
`GET /v1/migrations` (and `POST`), accepting Sensei API keys and access tokens.

    pip install './sdk[resource]'
    SENSEI_ISSUER=http://127.0.0.1:8000 flask --app examples/migrations_service.py run --port 5000
    curl http://127.0.0.1:5000/v1/migrations -H "Authorization: Bearer $SENSEI_API_KEY"
"""

from __future__ import annotations

import os
import threading

from flask import Flask, g, request
from sensei.resource import require_scopes

app = Flask(__name__)
app.config["SENSEI_ISSUER"] = os.environ.get("SENSEI_ISSUER", "http://127.0.0.1:8000")

_migrations: dict[str, list[dict]] = {}  # per organization; a real service has a database
_lock = threading.Lock()


@app.get("/v1/migrations")
@require_scopes("migrations:read")
def list_migrations():
    principal = g.sensei_principal
    with _lock:
        data = list(_migrations.get(principal.org_id, []))
    return {"object": "list", "data": data, "has_more": False}


@app.post("/v1/migrations")
@require_scopes("migrations:write")
def create_migration():
    principal = g.sensei_principal
    body = request.get_json(silent=True) or {}
    name = body.get("name")
    if not isinstance(name, str) or not name:
        return {"error": {"code": "invalid_request", "message": "name is required", "param": "name"}}, 400
    with _lock:
        migrations = _migrations.setdefault(principal.org_id, [])
        migration = {"id": f"mig_{len(migrations) + 1}", "object": "migration", "name": name,
                     "created_by": principal.id}
        migrations.append(migration)
    return migration, 201


if __name__ == "__main__":
    app.run(port=int(os.environ.get("PORT", "5000")))
