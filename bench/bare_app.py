"""The baseline of bench/run.py: the smallest Flask app that answers JSON.

Served with the same gunicorn settings as Sensei Auth (``gunicorn --chdir bench bare_app:app``),
so a ratio Sensei/bare measures what Sensei's request path costs beyond Flask and gunicorn:
``GET /`` for the GET endpoints, ``POST /`` (reads a form body, as the token and introspection
endpoints do) for the POST ones.
"""

from flask import Flask, request

app = Flask(__name__)


@app.get("/")
def hello():
    return {"hello": "world"}


@app.post("/")
def hello_form():
    return {"hello": "world", "fields": len(request.form)}
