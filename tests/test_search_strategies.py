"""Both search strategies give the same answers: the embedded database's (newest-first windows,
candidates matched in memory) and MongoDB's (the whole filter, sort and limit in one query). The
suite runs on the embedded database, so here the MongoDB strategy is run on it too, query by
query and page by page, and compared. services.py picks the strategy from the server's
buildInfo (storage/versions.py `is_embedded`)."""

from __future__ import annotations

import os
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from fhir_server.storage.versions import is_embedded
from tests.conftest import notebook_entry
from tests.test_masking import masked  # noqa: F401 - the fixture
from tests.test_security_writes import circle  # noqa: F401 - the fixture

KIND = "https://calipso.example.org/fhir/CodeSystem/entry-kind"
QUERIES = [
    {"subject": "Patient/helene", "_sort": "-sent", "_count": "3"},
    {"subject": "Patient/helene", "_sort": "-sent", "_count": "4", "_include": "Communication:subject"},
    {"subject": "Patient/helene", "category": f"{KIND}|observation", "_sort": "sent", "_count": "2"},
    {"subject:Patient.name": "lefevre", "_count": "5", "_total": "accurate"},
    {"sent": "ge2026-11-03", "_sort": "-sent", "_count": "3"},
    {"_revinclude": "Communication:in-response-to", "subject": "Patient/helene", "_count": "3", "_sort": "-sent"},
]


async def pages(client: httpx.AsyncClient, headers: dict[str, str], params: dict[str, str]) -> list[tuple[list[str], Any]]:
    """Every page of a search: its entries (id and mode) in order, and its total."""
    found = []
    url: str | None = "/fhir/Communication"
    query: dict[str, str] | None = params
    while url and len(found) < 20:
        bundle = (await client.get(url, params=query, headers=headers)).json()
        found.append(([f"{e['search']['mode']}:{e['resource']['resourceType']}/{e['resource']['id']}" for e in bundle.get("entry", [])],
                      bundle.get("total")))
        url = next((link["url"].replace("http://calipso.test", "") for link in bundle.get("link", []) if link["relation"] == "next"), None)
        query = None
    return found


@pytest.fixture
async def notebook(masked: Any) -> Any:  # noqa: F811
    client, tokens = masked
    for day in range(1, 13):
        entry = {**notebook_entry("helene", f"Passage {day}"), "id": f"day-{day}", "sent": f"2026-11-{day:02d}T09:30:00+01:00",
                 "sender": {"reference": "Practitioner/nurse" if day % 2 else "Practitioner/gp"}}
        if day % 3 == 0:
            entry["category"] = [{"coding": [{"system": KIND, "code": "observation"}]}]
        if day % 4 == 0:
            entry["inResponseTo"] = [{"reference": f"Communication/day-{day - 1}"}]
        assert (await client.put(f"/fhir/Communication/day-{day}", json=entry, headers=tokens["system"])).status_code == 201
    return client, tokens


async def test_both_strategies_answer_alike_for_every_token(notebook: Any, circle: Any) -> None:  # noqa: F811
    client, tokens = notebook
    app: FastAPI = circle[0]
    searcher = app.state.engine.searcher
    differences = []
    for reader in ("system", "gp", "nurse", "patient", "caregiver"):
        for params in QUERIES:
            searcher.embedded_strategy = True
            embedded = await pages(client, tokens[reader], params)
            searcher.embedded_strategy = False
            plain = await pages(client, tokens[reader], params)
            if embedded != plain:
                differences.append(f"{reader} {params}: embedded {embedded} != plain {plain}")
    searcher.embedded_strategy = True
    assert differences == []
    assert any(len(p) > 1 for p in [await pages(client, tokens["system"], QUERIES[0])])  # the queries do page


def test_the_embedded_database_is_told_from_mongodb_by_its_build_info() -> None:
    assert is_embedded({"version": "8.2.11", "secantusVersion": "0.7.0b3", "versionArray": [8, 2, 11, 0]})
    assert not is_embedded({"version": "8.0.4", "versionArray": [8, 0, 4, 0], "gitVersion": "bc35ab4305d9920d9d4f35f2fd8c9e4a5b3f9bd7"})


async def test_the_app_uses_the_strategy_of_its_database(app: FastAPI) -> None:
    on_mongodb = bool(os.environ.get("CALIPSO_TEST_MONGODB_URI"))  # `make test MONGODB_URI=...`
    assert app.state.engine.searcher.embedded_strategy is not on_mongodb
