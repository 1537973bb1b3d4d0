"""A database outage is a 503 in the right envelope, and the server recovers by itself.

The server reaches PostgreSQL through a TCP relay on loopback that the test starts and
stops, so the outage is real (connections refused) and touches nothing else.
"""

from __future__ import annotations

import socket
import threading
import time
from urllib.parse import urlsplit, urlunsplit

import pytest
import requests

from tests.conftest import PG_URL, build_app, free_port, fresh_database, start_server, stop_server
from tests.factories import bearer, make_api_key, make_client, make_org

pytestmark = pytest.mark.skipif(not PG_URL, reason="needs PostgreSQL: set SENSEI_TEST_DATABASE_URL")


class Relay:
    """Forwards loopback TCP connections to a target until stopped."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self.sockets: list[socket.socket] = []
        self.listener: socket.socket | None = None
        self.lock = threading.Lock()

    def start(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, args=(self.listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target, timeout=10)
            upstream.settimeout(None)
            with self.lock:
                self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def stop(self) -> None:
        assert self.listener is not None
        try:
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
        except OSError:
            pass
        self.listener.close()
        with self.lock:
            for s in self.sockets:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
            self.sockets.clear()


def test_database_outage_is_503_and_recovers(tmp_path):
    with fresh_database("postgresql", tmp_path) as direct_url:
        parts = urlsplit(direct_url)
        relay = Relay((parts.hostname or "127.0.0.1", parts.port or 5432))
        relay.start()
        netloc = f"{parts.username}@127.0.0.1:{relay.port}" if parts.username else f"127.0.0.1:{relay.port}"
        relayed_url = urlunsplit(parts._replace(netloc=netloc))
        port = free_port()
        settings = {"DATABASE_URL": relayed_url, "KEYS_DIR": str(tmp_path / "keys"),
                    "ISSUER": f"http://127.0.0.1:{port}"}
        app = build_app(settings | {"DATABASE_URL": direct_url})
        with app.app_context():
            org = make_org()
            _, key = make_api_key(org)
            client = make_client(org, redirect_uris=())
        server = start_server(settings, port, tmp_path / "gunicorn.log")
        try:
            assert requests.get(f"{server.url}/v1/me", headers=bearer(key)).status_code == 200
            relay.stop()
            down = requests.get(f"{server.url}/v1/me", headers=bearer(key), timeout=30)
            assert down.status_code == 503, down.text
            assert down.json()["error"]["code"] == "service_unavailable"
            assert "psycopg" not in down.text and "Traceback" not in down.text
            token = requests.post(f"{server.url}/oauth/token", auth=(client.client_id, client.client_secret),
                                  data={"grant_type": "client_credentials"}, timeout=30)
            assert token.status_code == 503 and token.json()["error"] == "temporarily_unavailable"
            relay.start()
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                if requests.get(f"{server.url}/v1/me", headers=bearer(key), timeout=30).status_code == 200:
                    break
                time.sleep(0.2)
            else:
                pytest.fail("the server did not recover after the database came back")
        finally:
            stop_server(server)
            relay.stop()
            with app.app_context():
                from app.extensions import db

                db.engine.dispose()
