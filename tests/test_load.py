"""`calipso load` as a user runs it: a real server process, real HTTP, official R4 payloads."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Iterator

import httpx
import orjson
import pytest

from tests.conftest import notebook_entry, notebook_patient, project_root
from conformance.server import CALIPSO, Served

OFFICIAL = project_root() / "tests" / "data" / "r4-official"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    served = Served(tmp_path_factory.mktemp("load") / "data")
    served.wait_ready()
    yield served
    served.stop()


def calipso_load(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CALIPSO_MONGODB_URI"}
    return subprocess.run(CALIPSO + ["load", *args], capture_output=True, text=True, timeout=300, env=env)


def total(server: Served, search: str) -> int:
    separator = "&" if "?" in search else "?"
    return httpx.get(f"{server.base}/{search}{separator}_summary=count&_total=accurate").json()["total"]


def test_official_r4_bundles_load_without_error(server: Served) -> None:
    served_before = total(server, "ConceptMap")  # the server's own guide has one
    done = calipso_load("--server", server.base, str(OFFICIAL))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "loaded 83 resources: created 83, updated 0, deleted 0, failed 0" in done.stdout
    assert total(server, "ConceptMap") == served_before + 19
    assert total(server, "StructureDefinition?type=HumanName") == 1
    codes = httpx.get(f"{server.base}/CodeSystem/v2-0291").json()
    assert codes["concept"][0]["code"]
    again = calipso_load("--server", server.base, "--chunk", "7", str(OFFICIAL / "conceptmaps.json.gz"))
    assert again.returncode == 0 and "updated 19" in again.stdout  # PUT by id: a reload updates


def test_ndjson_and_transactions_and_failures(server: Served, tmp_path: Path) -> None:
    good = notebook_patient(id="load-ok")
    bad = notebook_patient(id="load-bad", birthDate="yesterday")
    (tmp_path / "patients.ndjson").write_bytes(b"\n".join(orjson.dumps(p) for p in (good, bad, notebook_patient())) + b"\n")
    transaction = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:0b7a54f1-5ad4-4f28-a3e8-1d4a2b6b0a11", "resource": notebook_patient(),
         "request": {"method": "POST", "url": "Patient"}},
        {"resource": notebook_entry("x") | {"subject": {"reference": "urn:uuid:0b7a54f1-5ad4-4f28-a3e8-1d4a2b6b0a11"}},
         "request": {"method": "POST", "url": "Communication"}},
    ]}
    (tmp_path / "stay.json").write_bytes(orjson.dumps(transaction))
    (tmp_path / "broken.json").write_text("{not json")
    done = calipso_load("--server", server.base, str(tmp_path))
    assert done.returncode == 1
    assert "created 4" in done.stdout and "failed 2" in done.stdout
    assert "FAILED patients.ndjson:2: 422" in done.stdout and "birthDate" in done.stdout
    assert "FAILED broken.json: 400" in done.stdout
    assert httpx.get(f"{server.base}/Patient/load-ok").status_code == 200  # its chunk-mate failed alone
    assert httpx.get(f"{server.base}/Patient/load-bad").status_code == 404


def test_usage_errors(server: Served, tmp_path: Path) -> None:
    assert calipso_load("--server", server.base, str(tmp_path / "missing.json")).returncode != 0
    (tmp_path / "one.json").write_bytes(orjson.dumps(notebook_patient()))
    unreachable = calipso_load("--server", "http://127.0.0.1:9/fhir", str(tmp_path / "one.json"))
    assert unreachable.returncode == 2 and "cannot reach" in unreachable.stderr


def test_local_engine(tmp_path: Path) -> None:
    (tmp_path / "one.json").write_bytes(orjson.dumps(notebook_patient(id="local-1")))
    done = calipso_load("--data-dir", str(tmp_path / "data"), str(tmp_path / "one.json"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "created 1" in done.stdout
    again = calipso_load("--data-dir", str(tmp_path / "data"), str(tmp_path / "one.json"))
    assert "updated 1" in again.stdout  # the data stayed in the data dir
