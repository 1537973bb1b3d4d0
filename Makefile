# Sensei Auth — the two commands of the README's quick start: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test install bench fuzz clean

$(STAMP): pyproject.toml sdk/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]' -e './sdk[resource]'
	touch $(STAMP)

install: $(STAMP)

## make run: install, create the SQLite database and signing key, print demo credentials once, serve on :8000
run: $(STAMP)
	$(BIN)/sensei init --demo
	$(BIN)/sensei serve

## make test: the whole suite (PostgreSQL/Redis runs too when SENSEI_TEST_DATABASE_URL/REDIS_URL are set)
test: $(STAMP)
	$(BIN)/python -m pytest

## make fuzz: the long fuzzing runs — schemathesis over /v1/openapi.json (more than 10,000 cases)
## and hypothesis on the token, revoke, introspect, authorize and sign-in parameters
fuzz: $(STAMP)
	SENSEI_FUZZ=full $(BIN)/python -m pytest -s -p no:cacheprovider tests/test_schemathesis.py tests/test_fuzz_oauth.py

## make bench: Sensei's hot endpoints against bare Flask and node-oidc-provider (bench/README.md);
## installs wrk (apt) and oidc-provider@9 (npm, outside the repo) if missing
bench: $(STAMP)
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
