# Two commands for a fresh machine with Python 3.11: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

HOST ?= 127.0.0.1
PORT ?= 8080
MLLP_PORT ?= 2575
DATA_DIR ?= ./data
# off: the local quick start (loopback only, with a loud warning); on: tokens from `calipso token` (dev issuer)
AUTH ?= off

.PHONY: run test lint bench digest clean demo browser webapp-vendor

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[embedded,test,bench]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/calipso serve --host $(HOST) --port $(PORT) --mllp-port $(MLLP_PORT) --data-dir $(DATA_DIR) \
		--auth $(AUTH) $(if $(filter on,$(AUTH)),--dev-issuer)

# `make test MONGODB_URI=mongodb://...`: the suite on an operator's MongoDB (8.0+, a replica set)
# instead of the embedded one; each test uses a database of its own there.
test: lint browser
	$(if $(MONGODB_URI),CALIPSO_TEST_MONGODB_URI='$(MONGODB_URI)') $(BIN)/python -m pytest -q

# The web app's browser tests drive Debian's chromium (package chromium): installed here when it
# is missing and this machine can (root with apt-get); otherwise those tests say why they skip.
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		{ apt-get install -y -q chromium >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }; }; } || \
		echo "chromium is not installed (apt-get install chromium): the browser tests will be skipped"

# A French example notebook in the server `make run` started (AUTH=on for the sign-in page).
demo: $(STAMP)
	$(BIN)/calipso demo --server http://$(HOST):$(PORT)/fhir --mllp-port $(MLLP_PORT) --data-dir $(DATA_DIR)

# Copy the web app's third-party files from npm (versions locked in fhir_server/webapp/package-lock.json).
webapp-vendor: $(STAMP)
	$(BIN)/python -m fhir_server.webapp.vendor

# ruff and mypy at the settings pyproject.toml states (test runs it first)
lint: $(STAMP)
	$(BIN)/ruff check fhir_server hl7v2_bridge conformance tests bench
	$(BIN)/mypy

bench: $(STAMP)
	command -v wrk >/dev/null || apt-get install -y wrk || { echo "bench needs wrk (Debian package wrk)"; exit 1; }
	$(BIN)/python bench/rest_crud.py

# Rebuild the committed R4 digest from the official definitions (default: ../shared/fhir-r4).
digest: $(STAMP)
	$(BIN)/python -m fhir_server.spec.build $(or $(DEFINITIONS),../shared/fhir-r4)

clean:
	rm -rf $(VENV) .pytest_cache
