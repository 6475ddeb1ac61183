"""What popular FHIR clients send that R4 leaves to the server: trailing slashes, a UTF-8 BOM,
`_count=0`, fhirVersion media type parameters, a query on a create."""

from __future__ import annotations

import httpx

from tests.conftest import notebook_patient


async def test_a_trailing_slash_routes_as_without_it(client: httpx.AsyncClient) -> None:
    """fhirclient, fhir-kit-client and fhirpy post transactions and batches to `[base]/`."""
    batch = {"resourceType": "Bundle", "type": "batch", "entry": [{"request": {"method": "GET", "url": "metadata"}}]}
    answered = await client.post("/fhir/", json=batch)
    assert answered.status_code == 200 and answered.json()["type"] == "batch-response"
    created = (await client.post("/fhir/Patient/", json=notebook_patient())).json()
    assert (await client.get(f"/fhir/Patient/{created['id']}/")).json()["id"] == created["id"]
    assert (await client.get("/fhir/Patient/")).json()["type"] == "searchset"
    assert (await client.get("/fhir/metadata/")).json()["resourceType"] == "CapabilityStatement"
    assert (await client.get("/fhir/Patient//")).status_code == 404  # only one slash is forgiven


async def test_a_utf8_byte_order_mark_before_the_json_is_ignored(client: httpx.AsyncClient) -> None:
    body = b"\xef\xbb\xbf" + httpx.Request("POST", "/", json=notebook_patient()).content
    created = await client.post("/fhir/Patient", content=body, headers={"Content-Type": "application/fhir+json"})
    assert created.status_code == 201, created.text
    assert (await client.post("/fhir/Patient", content=b"\xef\xbb\xbf",
                              headers={"Content-Type": "application/fhir+json"})).status_code == 400


async def test_count_zero_gives_the_total_and_no_entries(client: httpx.AsyncClient) -> None:
    """fhirpy's count() asks `_count=0` and reads `total`."""
    for _ in range(3):
        await client.post("/fhir/Patient", json=notebook_patient())
    counted = (await client.get("/fhir/Patient", params={"_count": "0"})).json()
    assert counted["total"] == 3 and "entry" not in counted


async def test_another_fhir_version_is_refused_not_served_as_r4(client: httpx.AsyncClient) -> None:
    asked = await client.get("/fhir/Patient", headers={"Accept": "application/fhir+json; fhirVersion=3.0"})
    assert asked.status_code == 406 and "R4" in asked.json()["issue"][0]["diagnostics"]
    sent = await client.post("/fhir/Patient", json=notebook_patient(),
                             headers={"Content-Type": "application/fhir+json; fhirVersion=5.0"})
    assert sent.status_code == 415
    for version in ("4.0", "4.0.1"):
        fine = await client.post("/fhir/Patient", json=notebook_patient(),
                                 headers={"Content-Type": f"application/fhir+json; fhirVersion={version}",
                                          "Accept": f"application/fhir+json; fhirVersion={version}"})
        assert fine.status_code == 201


async def test_a_create_with_search_parameters_is_refused_not_silently_unconditional(client: httpx.AsyncClient) -> None:
    refused = await client.post("/fhir/Patient", params={"identifier": "urn:oid:1.2.250.1.71.4.2.7|1"}, json=notebook_patient())
    assert refused.status_code == 400 and "If-None-Exist" in refused.json()["issue"][0]["diagnostics"]
    assert (await client.get("/fhir/Patient", params={"_count": "0"})).json()["total"] == 0
    assert (await client.post("/fhir/Patient", params={"_pretty": "true"}, json=notebook_patient())).status_code == 201
