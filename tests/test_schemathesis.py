"""Schemathesis against a live server, driven by /v1/openapi.json: no 5xx, and every response
(status, content type, headers, body) as the document says; then invalid data only, which must
leave the database as it was.

Bounded: about a thousand cases in `make test`; `make fuzz` (SENSEI_FUZZ=full) runs more than
ten thousand."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from app.services import scopes as scope_rules
from tests.conftest import FUZZ_FULL as FULL
from tests.factories import make_client, make_org, row_counts

CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,"
          "response_headers_conformance,response_schema_conformance,negative_data_rejection")
# (examples per operation, cases at least) of each run: `make test`'s share, or `make fuzz`.
ALL_DATA = (1_100, 10_000) if FULL else (25, 300)
INVALID_DATA = (300, 3_000) if FULL else (10, 100)


def admin_token(url: str, org) -> str:
    """An OAuth client's access token, not an API key: the fuzzer lists, narrows and deletes
    every API key and service account it finds, and would otherwise take its own access away."""
    client = make_client(org, scopes=" ".join(sorted(scope_rules.CATALOGUE)))
    return requests.post(f"{url}/oauth/token", auth=(client.client_id, client.client_secret),
                         data={"grant_type": "client_credentials"}).json()["access_token"]


def schemathesis(url: str, token: str, tmp_path: Path, *, mode: str, examples: int, at_least: int) -> str:
    """One `st run` (fixed seed) that must pass with ``at_least`` cases generated; its summary line."""
    argv = [str(Path(sys.executable).parent / "st"), "--config-file", str(Path(__file__).parent / "schemathesis.toml"),
            "run", f"{url}/v1/openapi.json", "--header", f"Authorization: Bearer {token}", "--checks", CHECKS,
            "--mode", mode, "--phases", "examples,coverage,fuzzing", "--max-examples", str(examples),
            "--seed", "20261202", "--request-timeout", "10", "--workers", "1", "--generation-database", "none",
            "--no-color", "--report-dir", str(tmp_path / f"report-{mode}")]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=3600 if FULL else 300, cwd=tmp_path,
                          stdin=subprocess.DEVNULL)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-8000:]
    generated = re.search(r"(\d+) generated, \1 passed", output)
    assert generated and int(generated.group(1)) >= at_least, output[-3000:]
    assert "Tested: 12" in output or "Tested: 13" in output, output[-3000:]
    return generated.group(0)


@pytest.mark.server
def test_the_api_keeps_the_promises_of_its_openapi_document(live, tmp_path):
    org = make_org(tier="enterprise")  # no limits set: the run is not cut short by 429s
    examples, at_least = ALL_DATA
    print(schemathesis(live.url, admin_token(live.url, org), tmp_path, mode="all", examples=examples,
                       at_least=at_least))


@pytest.mark.server
def test_invalid_data_is_refused_and_changes_nothing(live, tmp_path):
    org = make_org(tier="enterprise")
    token = admin_token(live.url, org)
    before = row_counts()
    examples, at_least = INVALID_DATA
    print(schemathesis(live.url, token, tmp_path, mode="negative", examples=examples, at_least=at_least))
    assert row_counts() == before  # refusals are audited; nothing else is written
