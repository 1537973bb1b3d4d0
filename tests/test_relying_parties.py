"""Relying parties written by others, against a real gunicorn: panva's openid-client (v6, the
certified Node client) and Authlib's Flask client, each configured from discovery alone.

openid-client runs as tests/rp/openid_client_flow.mjs. Its pinned package (tests/rp/package.json
and its lock) is installed by ``npm ci`` into ~/.cache/sensei-tests/openid-client-6 (or under
$XDG_CACHE_HOME), outside the repository, on the first run; without node or npm, or when the
install fails, the test fails and says why — it is never skipped.
"""

from __future__ import annotations

import fcntl
import json
import os
import queue
import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO
from urllib.parse import parse_qs, urlsplit

import pytest
from authlib.integrations.flask_client import OAuth
from flask import Flask, jsonify, session

from tests.conftest import stop_process
from tests.factories import REDIRECT_URI, Browser, make_client, make_org, make_user

RP_DIR = Path(__file__).resolve().parent / "rp"
RP_SCRIPT = RP_DIR / "openid_client_flow.mjs"
MANIFESTS = ("package.json", "package-lock.json")
CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sensei-tests"
OPENID_CLIENT_DIR = CACHE_DIR / "openid-client-6"
INSTALL_S = 300  # npm ci, once per machine (or per change of tests/rp/package-lock.json)
STEP_S = 30  # each answer the node relying party owes us
HTTP_S = 5
OIDC_SCOPES = "openid profile email migrations:read"
LOGGED_OUT = "https://app.example.com/logged-out"


def pinned_version() -> str:
    return json.loads((RP_DIR / "package.json").read_text())["dependencies"]["openid-client"]


def installed_version() -> str | None:
    try:
        manifest = OPENID_CLIENT_DIR / "node_modules" / "openid-client" / "package.json"
        return json.loads(manifest.read_text()).get("version")
    except (OSError, ValueError):
        return None


def install_is_current() -> bool:
    """The cache holds exactly tests/rp's manifests, and the pinned openid-client under them."""
    try:
        same = all((OPENID_CLIENT_DIR / name).read_bytes() == (RP_DIR / name).read_bytes() for name in MANIFESTS)
    except OSError:
        return False
    return same and installed_version() == pinned_version()


@pytest.fixture(scope="session")
def openid_client_dir() -> Path:
    """OPENID_CLIENT_DIR with tests/rp's pinned packages, installed by `npm ci` if missing."""
    for tool in ("node", "npm"):
        if not shutil.which(tool):
            pytest.fail(f"{tool} is not installed: the openid-client relying party needs Node 20+ and npm")
    OPENID_CLIENT_DIR.mkdir(parents=True, exist_ok=True)
    # One install at a time, even across concurrent test runs on this machine.
    with (CACHE_DIR / "openid-client-6.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if install_is_current():
            return OPENID_CLIENT_DIR
        for name in MANIFESTS:
            shutil.copyfile(RP_DIR / name, OPENID_CLIENT_DIR / name)
        command = ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"]
        try:
            done = subprocess.run(command, cwd=OPENID_CLIENT_DIR, capture_output=True, text=True,
                                  timeout=INSTALL_S, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            pytest.fail(f"`{' '.join(command)}` in {OPENID_CLIENT_DIR} took over {INSTALL_S} s (is the npm "
                        f"registry reachable?)")
        if done.returncode != 0 or not install_is_current():
            pytest.fail(f"could not install openid-client {pinned_version()} into {OPENID_CLIENT_DIR}: "
                        f"`{' '.join(command)}` exited {done.returncode}: {done.stderr.strip()[-2000:]}")
    return OPENID_CLIENT_DIR


class NodeRelyingParty:
    """tests/rp/openid_client_flow.mjs as a child process: JSON lines out, one line in, each
    answer awaited for STEP_S at most."""

    def __init__(self, env: dict[str, str], stderr: IO[bytes]) -> None:
        self.stderr = stderr
        self.process = subprocess.Popen(["node", str(RP_SCRIPT)], env=env, stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=stderr, text=True)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)
        self.lines.put(None)  # end of output: the process exited or closed stdout

    def _errors(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read().decode(errors="replace").strip()[-3000:]

    def receive(self) -> dict:
        try:
            line = self.lines.get(timeout=STEP_S)
        except queue.Empty:
            pytest.fail(f"the openid-client relying party said nothing in {STEP_S} s; stderr: {self._errors()}")
        if line is None:
            pytest.fail(f"the openid-client relying party exited ({self.process.wait(timeout=STEP_S)}): "
                        f"{self._errors()}")
        return json.loads(line)

    def send(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def close(self) -> None:
        if self.process.poll() is None:
            stop_process(self.process, timeout=5)
        self.reader.join(timeout=5)
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                pipe.close()


@contextmanager
def openid_client_rp(live, client, directory: Path, tmp_path: Path) -> Iterator[NodeRelyingParty]:
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", ""),
           "OPENID_CLIENT_DIR": str(directory), "ISSUER": live.url, "CLIENT_ID": client.client_id,
           "CLIENT_SECRET": client.client_secret, "REDIRECT_URI": REDIRECT_URI,
           "POST_LOGOUT_URI": LOGGED_OUT, "SCOPE": OIDC_SCOPES}
    with (tmp_path / "openid-client.stderr").open("w+b") as stderr:
        rp = NodeRelyingParty(env, stderr)
        try:
            yield rp
        finally:
            rp.close()


def approve(live, user, authorization_url: str) -> tuple[Browser, str]:
    """The person: signs in, opens the app's authorization URL, allows; (browser, callback URL)."""
    browser = Browser(live.url)
    assert browser.login(user.email).status_code == 303
    consent = browser.authorize(authorization_url)
    assert consent.status_code == 200, consent.text[:500]
    assert "Test App" in consent.text
    sent_back = browser.decide(consent, "allow")
    assert sent_back.status_code in (302, 303), sent_back.text[:500]
    assert sent_back.headers["Location"].startswith(REDIRECT_URI + "?")
    return browser, sent_back.headers["Location"]


def test_openid_client_signs_in_with_pkce_and_validates_the_id_token(live, openid_client_dir, tmp_path):
    org = make_org()
    user = make_user(org, name="Ada Lovelace")
    client = make_client(org, scopes=OIDC_SCOPES, post_logout_redirect_uris=(LOGGED_OUT,))
    with openid_client_rp(live, client, openid_client_dir, tmp_path) as rp:
        started = rp.receive()
        assert started["openid_client"] == pinned_version()
        asked = urlsplit(started["authorization_url"])
        query = {k: v[0] for k, v in parse_qs(asked.query).items()}
        assert f"{asked.scheme}://{asked.netloc}{asked.path}" == f"{live.url}/oauth/authorize"  # from discovery
        assert query["code_challenge_method"] == "S256" and len(query["code_challenge"]) == 43
        assert query["nonce"] == started["nonce"] and query["state"] == started["state"]
        assert query["scope"] == OIDC_SCOPES and query["client_id"] == client.client_id

        browser, callback = approve(live, user, started["authorization_url"])
        rp.send(callback)  # openid-client checks state and RFC 9207's iss, then redeems the code
        done = rp.receive()

    claims = done["claims"]  # validated by the library: JWKS signature, iss, aud, exp, iat, nonce
    assert claims["sub"] == user.id and claims["iss"] == live.url and claims["aud"] == client.client_id
    assert claims["nonce"] == started["nonce"] and done["at_hash_matches"] is True
    assert claims["email"] == user.email and claims["email_verified"] is False and claims["name"] == "Ada Lovelace"
    assert claims["exp"] > claims["iat"] >= claims["auth_time"]
    assert done["userinfo"] == {"sub": user.id, "email": user.email, "email_verified": False,
                                "name": "Ada Lovelace"}
    assert done["token_type"] == "bearer" and done["expires_in"] > 0
    assert done["scope"].split() == OIDC_SCOPES.split()
    # A refresh (rotated) returns an ID token of the same sign-in, without the nonce (OIDC Core §12.2).
    refreshed = done["refreshed_claims"]
    assert done["refresh_rotated"] is True
    assert refreshed["sub"] == user.id and refreshed["aud"] == client.client_id and refreshed["iss"] == live.url
    assert refreshed["auth_time"] == claims["auth_time"] and refreshed["sid"] == claims["sid"]
    assert "nonce" not in refreshed
    # RP-initiated logout with the URL the library built from end_session_endpoint.
    out = browser.http.get(done["end_session_url"], allow_redirects=False, timeout=HTTP_S)
    assert out.status_code == 302 and out.headers["Location"] == f"{LOGGED_OUT}?state=signed-out"
    assert browser.http.get(f"{live.url}/", allow_redirects=False, timeout=HTTP_S).status_code == 302


def authlib_rp(live, client) -> Flask:
    """A Flask app signing in with Sensei through Authlib's client, configured by discovery."""
    rp = Flask("authlib_rp")
    rp.config["SECRET_KEY"] = "rp-session-key"
    oauth = OAuth(rp)
    oauth.register("sensei", client_id=client.client_id, client_secret=client.client_secret,
                   server_metadata_url=f"{live.url}/.well-known/openid-configuration",
                   client_kwargs={"scope": OIDC_SCOPES, "code_challenge_method": "S256", "timeout": HTTP_S})

    @rp.get("/login")
    def login():
        return oauth.sensei.authorize_redirect(REDIRECT_URI)

    @rp.get("/callback")
    def callback():
        token = oauth.sensei.authorize_access_token()  # validates the ID token (nonce from the session)
        session["id_token"] = token["id_token"]
        return jsonify(id_token_claims=dict(token["userinfo"]), userinfo=dict(oauth.sensei.userinfo(token=token)))

    @rp.get("/logout")
    def logout():
        return oauth.sensei.logout_redirect(LOGGED_OUT, id_token_hint=session["id_token"])

    @rp.get("/logged-out")
    def logged_out():
        return jsonify(oauth.sensei.validate_logout_response())

    return rp


def test_authlibs_flask_client_signs_in_and_out_from_discovery_alone(live):
    org = make_org()
    user = make_user(org, name="Grace Hopper")
    client = make_client(org, scopes=OIDC_SCOPES, post_logout_redirect_uris=(LOGGED_OUT,))
    app_browser = authlib_rp(live, client).test_client()
    to_sensei = app_browser.get("/login", base_url="https://app.example.com")
    assert to_sensei.status_code == 302
    query = parse_qs(urlsplit(to_sensei.location).query)
    assert query["code_challenge_method"] == ["S256"] and query["nonce"]
    browser, callback = approve(live, user, to_sensei.location)
    back = urlsplit(callback)
    signed_in = app_browser.get(f"{back.path}?{back.query}", base_url="https://app.example.com")
    assert signed_in.status_code == 200, signed_in.text
    claims = signed_in.json["id_token_claims"]
    assert claims["sub"] == user.id and claims["iss"] == live.url and claims["aud"] == client.client_id
    assert claims["nonce"] == query["nonce"][0] and claims["name"] == "Grace Hopper"
    assert signed_in.json["userinfo"] == {"sub": user.id, "email": user.email, "email_verified": False,
                                          "name": "Grace Hopper"}
    to_logout = app_browser.get("/logout", base_url="https://app.example.com")
    out = browser.http.get(to_logout.location, allow_redirects=False, timeout=HTTP_S)
    assert out.status_code == 302 and out.headers["Location"].startswith(f"{LOGGED_OUT}?state=")
    returned = urlsplit(out.headers["Location"])
    done = app_browser.get(f"{returned.path}?{returned.query}", base_url="https://app.example.com")
    assert done.status_code == 200 and done.json == {"post_logout_redirect_uri": LOGGED_OUT}
    assert browser.http.get(f"{live.url}/", allow_redirects=False, timeout=HTTP_S).status_code == 302
