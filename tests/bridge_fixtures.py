"""A calipso app with its MLLP listener on a free port, and helpers to read the notebook."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from fhir_server.app import create_app
from fhir_server.settings import Settings
from tests.conftest import fhir_client, project_root, running

SAMPLES = project_root() / "tests" / "data" / "hl7v2"
STORY = ["A01-admission-cardio.hl7", "A03-discharge-home.hl7", "A13-cancel-discharge.hl7", "A08-update-address.hl7",
         "A03-discharge-had-utf8.hl7", "A40-merge-duplicate.hl7"]


@pytest.fixture
async def bridged(settings: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient, int]]:
    """The app, a schema-checking FHIR client, and the MLLP port."""
    async with running(create_app(replace(settings, mllp_port=0))) as app, fhir_client(app) as client:
        yield app, client, app.state.mllp_port


def sample(name: str) -> bytes:
    """A French sample by file name."""
    return (SAMPLES / "fr" / name).read_bytes()


async def search(client: httpx.AsyncClient, resource_type: str, **params: str) -> list[dict[str, Any]]:
    bundle = (await client.get(f"/fhir/{resource_type}", params={"_count": "100", **params})).json()
    return [e["resource"] for e in bundle.get("entry", []) if e.get("search", {}).get("mode", "match") == "match"]


async def history_size(client: httpx.AsyncClient, path: str = "/fhir/_history") -> int:
    """Every version in a history, walked page by page (type and system history carry no total)."""
    size, url, params = 0, path, {"_count": "1000"}
    while url:
        bundle = (await client.get(url, params=params)).json()
        size += len(bundle.get("entry", []))
        url = next((link["url"] for link in bundle.get("link", []) if link["relation"] == "next"), "")
        params = {}
    return size


async def counts(client: httpx.AsyncClient) -> dict[str, int]:
    """How many current resources and history entries the notebook holds."""
    types = ["Patient", "Practitioner", "RelatedPerson", "Encounter", "CareTeam", "CarePlan", "Communication"]
    found = {t: len(await search(client, t)) for t in types}
    found["history"] = await history_size(client)
    return found
