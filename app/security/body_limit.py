"""The 1 MiB body limit, for chunked bodies too.

Werkzeug enforces ``MAX_CONTENT_LENGTH`` against ``Content-Length``; a chunked body has
none and would be cut silently at the limit and parsed truncated. This middleware reads
such a body (at most limit + 1 bytes), hands the app a sized copy, and marks anything
longer so that the app answers ``413`` in the error shape of the surface.
"""

from __future__ import annotations

import io

from flask import Flask, request
from werkzeug.exceptions import RequestEntityTooLarge

TOO_LARGE = "sensei.body_too_large"


class ChunkedBodyLimit:
    def __init__(self, wsgi_app, limit: int) -> None:
        self.wsgi_app = wsgi_app
        self.limit = limit

    def __call__(self, environ, start_response):
        if not environ.get("CONTENT_LENGTH") and "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
            body = environ["wsgi.input"].read(self.limit + 1)
            if len(body) > self.limit:
                environ[TOO_LARGE] = True
                body = b""
            environ["wsgi.input"] = io.BytesIO(body)
            environ["CONTENT_LENGTH"] = str(len(body))
            environ.pop("wsgi.input_terminated", None)
        return self.wsgi_app(environ, start_response)


def register_body_limit(app: Flask) -> None:
    app.wsgi_app = ChunkedBodyLimit(app.wsgi_app, app.config["MAX_CONTENT_LENGTH"])  # type: ignore[method-assign]

    @app.before_request
    def refuse_oversized_chunked_body() -> None:
        if request.environ.get(TOO_LARGE):
            raise RequestEntityTooLarge()
