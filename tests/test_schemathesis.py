"""Schemathesis against a live server, driven by /v1/openapi.json: no 5xx, and every response
(status, content type, headers, body) as the document says. Bounded: a few hundred cases."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from app.services import scopes as scope_rules
from tests.factories import make_client, make_org

CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,"
          "response_headers_conformance,response_schema_conformance,negative_data_rejection")


@pytest.mark.server
def test_the_api_keeps_the_promises_of_its_openapi_document(live, tmp_path):
    org = make_org(tier="enterprise")  # no limits set: the run is not cut short by 429s
    # An OAuth client's access token, not an API key: the fuzzer lists, narrows and deletes
    # every API key and service account it finds, and would otherwise take its own access away.
    client = make_client(org, scopes=" ".join(sorted(scope_rules.CATALOGUE)))
    admin = requests.post(f"{live.url}/oauth/token", auth=(client.client_id, client.client_secret),
                          data={"grant_type": "client_credentials"}).json()["access_token"]
    argv = [str(Path(sys.executable).parent / "st"), "--config-file", str(Path(__file__).parent / "schemathesis.toml"),
            "run", f"{live.url}/v1/openapi.json", "--header", f"Authorization: Bearer {admin}", "--checks", CHECKS,
            "--phases", "examples,coverage,fuzzing", "--max-examples", "25", "--seed", "20261202",
            "--request-timeout", "10", "--workers", "1", "--generation-database", "none", "--no-color",
            "--report-dir", str(tmp_path / "report")]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          stdin=subprocess.DEVNULL)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-8000:]
    generated = re.search(r"(\d+) generated, \1 passed", output)
    assert generated and int(generated.group(1)) >= 300, output[-3000:]  # a few hundred cases, all passed
    print(generated.group(0))
    assert "Tested: 12" in output or "Tested: 13" in output, output[-3000:]
