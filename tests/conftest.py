"""Shared fixtures: one embedded database per test session, one database name per test.

Every HTTP client here checks each FHIR body it receives against the official R4 JSON Schema:
a non-conformant response fails whichever test received it.
"""

from __future__ import annotations

import os
import uuid
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Iterator

import httpx
import orjson
import pytest
from fastapi import FastAPI

from conformance.server import Served
from fhir_server.app import create_app
from fhir_server.settings import Settings
from fhir_server.spec import load_spec
from fhir_server.xml_format import XmlFormat
from fhir_server.storage.embedded import EmbeddedDatabase
from tests.fhir_schema import assert_conforms

FHIR_JSON = "application/fhir+json"
FHIR_XML = "application/fhir+xml"
FHIR_NDJSON = "application/fhir+ndjson"
pytest_plugins = ["tests.bridge_fixtures", "tests.webapp_fixtures"]  # `bridged` (an app with its MLLP listener), `demo_server`


@pytest.fixture(scope="session")
def database_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real SecantusDB over a real socket (or CALIPSO_TEST_MONGODB_URI, e.g. a replica set)."""
    configured = os.environ.get("CALIPSO_TEST_MONGODB_URI")
    if configured:
        yield configured
        return
    database = EmbeddedDatabase(tmp_path_factory.mktemp("embedded-db"))
    yield database.start()
    database.stop()


@pytest.fixture
def settings(database_uri: str, tmp_path: Path) -> Settings:
    """Settings for one test: its own database name isolates it from every other test.

    The guide's artifacts are not installed, so a test starts from an empty database; the
    tests of served conformance resources turn `serve_guide` on.
    """
    return Settings(
        mongodb_uri=database_uri, database=f"test_{uuid.uuid4().hex[:16]}", max_body_bytes=64 * 1024, serve_guide=False, auth=False, audit=False,
        mllp_port=None, data_dir=tmp_path / "data"
    )


async def check_fhir_body(response: httpx.Response) -> None:
    """Response hook: every FHIR JSON body (and every line of an NDJSON export file) must
    conform to the R4 JSON Schema; a Bulk Data manifest is the only plain JSON served."""
    await response.aread()
    content_type = response.headers.get("content-type", "")
    if content_type.startswith(FHIR_JSON):
        assert_conforms(orjson.loads(response.content))
    elif content_type.startswith(FHIR_NDJSON):
        for line in response.content.splitlines():
            assert_conforms(orjson.loads(line))
    elif content_type.startswith("application/json") and "/$export-status/" in response.request.url.path:
        assert set(orjson.loads(response.content)) >= {"transactionTime", "request", "requiresAccessToken", "output", "error"}
    elif response.headers.get("content-type", "").startswith(FHIR_XML):
        assert_conforms(XmlFormat(load_spec()).from_xml(response.content))
    elif response.content:
        raise AssertionError(f"non-FHIR body from {response.request.url}: {response.content[:120]!r}")


@asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[FastAPI]:
    """Run an app's lifespan (database connection, indexes) around a block."""
    async with app.router.lifespan_context(app):
        yield app


def fhir_client(app: FastAPI) -> httpx.AsyncClient:
    """An HTTP client on the ASGI app whose every response is schema-checked."""
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://calipso.test",
        headers={"Content-Type": FHIR_JSON, "Accept": FHIR_JSON},
        event_hooks={"response": [check_fhir_body]},
    )


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    async with running(create_app(settings)) as started:
        yield started


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with fhir_client(app) as http:
        yield http


@pytest.fixture
def store(app: FastAPI) -> Any:
    """The app's own store, to check what the database really holds."""
    return app.state.engine.store


def notebook_patient(**extra: Any) -> dict[str, Any]:
    """A patient as the hospital feed would create it (fictitious identity)."""
    patient: dict[str, Any] = {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:oid:1.2.250.1.71.4.2.7", "value": "IPP0001"}],
        "name": [{"family": "Lefèvre", "given": ["Hélène"]}],
        "gender": "female",
        "birthDate": "1948-03-12",
    }
    patient.update(extra)
    return patient


def notebook_entry(patient_id: str, text: str = "Pansement refait, plaie propre.") -> dict[str, Any]:
    """A liaison-notebook entry (Communication) about a patient."""
    return {
        "resourceType": "Communication",
        "status": "completed",
        "category": [{"coding": [{"system": "https://calipso.example.org/fhir/CodeSystem/entry-kind", "code": "transmission"}]}],
        "priority": "routine",
        "subject": {"reference": f"Patient/{patient_id}"},
        "sender": {"reference": "Practitioner/nurse-1"},
        "sent": "2026-11-20T09:30:00+01:00",
        "payload": [{"contentString": text}],
    }


def project_root() -> Path:
    return Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One real `calipso serve` (auth off, a data dir of its own) shared by a test module."""
    server = Served(tmp_path_factory.mktemp("served") / "data", log_level="warning")
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()

