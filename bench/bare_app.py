"""The baseline for bench/token_endpoint.py: the smallest Flask app that answers JSON.

Served by the same gunicorn settings as Sensei Auth (``gunicorn --chdir bench bare_app:app``),
so the ratio token/bare measures what our request path costs beyond Flask and gunicorn.
"""

from flask import Flask

app = Flask(__name__)


@app.get("/")
def hello():
    return {"hello": "world"}
