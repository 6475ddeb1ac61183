"""The ANS Cahier de liaison base (`/cdl`): notebook entries served as CdLDocumentReference,
searched with the GestionnaireCdL parameters, written by the guide's creation and update
Bundles; every answer checked against the CdL definitions (fhir_server/national/cdl) and the
R4 JSON Schema (the client's response hook)."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import orjson
import pytest

from fhir_server.national.cdl_view import to_communication, to_document_reference, translate_search, view_table
from fhir_server.rest.cdl import cdl_validator
from tests.conftest import project_root
from tests.test_security_writes import circle  # noqa: F401 - the fixture

NOTE_TYPE = "https://mos.esante.gouv.fr/NOS/TRE_R234-TypeNote/FHIR/TRE-R234-TypeNote"
ENTRY_KIND = "https://fhir.hopitauxchampagnesud.fr/calipso/CodeSystem/entry-kind"
LABELS = "https://mos.esante.gouv.fr/NOS/TRE_A07-StatutVisibiliteDocument/FHIR/TRE-A07-StatutVisibiliteDocument"
EXAMPLE = project_root() / "tests" / "data" / "cdl" / "cdl-bundle-creation-note.json"
PROFILES = view_table()["profiles"]


def conforms(resource: dict[str, Any], profile: str) -> None:
    issues = cdl_validator().validate(resource, PROFILES[profile])
    assert issues == [], issues


def entry(**extra: Any) -> dict[str, Any]:
    return {"resourceType": "Communication", "id": "e1", "meta": {"versionId": "2", "lastUpdated": "2026-11-24T08:00:00Z"},
            "identifier": [{"system": "urn:ietf:rfc:3986", "value": "urn:uuid:4f1c7f9e-5a55-4a3c-9f1e-0d1c2b3a4f5e"}],
            "status": "completed", "priority": "urgent",
            "category": [{"coding": [{"system": ENTRY_KIND, "code": "observation"}, {"system": NOTE_TYPE, "code": "OBS"}]}],
            "subject": {"reference": "Patient/helene"}, "sender": {"reference": "Practitioner/nurse"},
            "sent": "2026-11-24T09:00:00+01:00", "inResponseTo": [{"reference": "Communication/e0"}],
            "encounter": {"reference": "Encounter/stay"},
            "payload": [{"contentString": "Plaie propre, pansement refait."}], **extra}


def test_an_entry_seen_as_a_cdl_note_conforms_and_comes_back() -> None:
    note = to_document_reference({**entry(), "meta": {"security": [{"system": LABELS, "code": "MASQUE_PT"}]}})
    conforms(note, "document")
    assert note["type"]["coding"] == [{"system": NOTE_TYPE, "code": "OBS"}]
    assert note["relatesTo"] == [{"code": "appends", "target": {"reference": "DocumentReference/e0"}}]
    assert note["extension"][0]["valueBoolean"] is True and note["securityLabel"][0]["coding"][0]["code"] == "MASQUE_PT"
    assert base64.b64decode(note["content"][0]["attachment"]["data"]).decode() == "Plaie propre, pansement refait."
    back = to_communication(note, "https://example.org/notebook-entry")
    for field in ("identifier", "status", "priority", "subject", "sender", "sent", "inResponseTo", "encounter", "payload"):
        assert back[field] == entry()[field], field
    assert {c["code"] for c in back["category"][0]["coding"]} == {"observation", "OBS"}


def test_entries_without_a_note_type_take_their_kinds() -> None:
    kinds = {"question": "DEM-AVIS", "instruction": "INST", "alert": "GEN", "discharge-info": "GEN"}
    for kind, note_type in kinds.items():
        note = to_document_reference(entry(category=[{"coding": [{"system": ENTRY_KIND, "code": kind}]}]))
        assert note["type"]["coding"][0]["code"] == note_type, kind
        conforms(note, "document")


def test_search_parameters_translate_with_chains_and_modifiers() -> None:
    translated, unsupported = translate_search([
        ("patient.identifier", "urn:oid:1.2.250.1.213.1.4.8|123"), ("author:Practitioner.identifier", "https://rpps.esante.gouv.fr|1"),
        ("date", "ge2026-11-01"), ("type", f"{NOTE_TYPE}|OBS"), ("security-label", f"{LABELS}|MASQUE_PS"), ("_sort", "-date"),
        ("_include", "DocumentReference:author"), ("status", "current"), ("_elements", "type"), ("_revinclude", "Provenance:target")])
    assert ("subject:Patient.identifier", "urn:oid:1.2.250.1.213.1.4.8|123") in translated
    assert ("sender:Practitioner.identifier", "https://rpps.esante.gouv.fr|1") in translated
    assert ("sent", "ge2026-11-01") in translated and ("category", f"{NOTE_TYPE}|OBS") in translated
    assert ("_security", f"{LABELS}|MASQUE_PS") in translated and ("_sort", "-sent") in translated
    assert ("_include", "Communication:sender") in translated and ("status:not", "entered-in-error") in translated
    assert translated[0][0] == "category:not"  # read receipts are not notes
    assert unsupported == ["_elements", "_revinclude=Provenance:target"]


@pytest.fixture
async def cdl(circle: Any) -> tuple[httpx.AsyncClient, dict[str, dict[str, str]]]:  # noqa: F811
    app, client, tokens = circle
    patient = {"resourceType": "Patient", "id": "helene", "name": [{"family": "Lefèvre"}],
               "identifier": [{"system": "urn:oid:1.2.250.1.213.1.4.8", "value": "248031234567890"}]}
    assert (await client.put("/fhir/Patient/helene", json=patient, headers=tokens["system"])).status_code == 200
    nurse = {"resourceType": "Practitioner", "id": "nurse", "name": [{"family": "Dubois"}],
             "identifier": [{"system": "https://rpps.esante.gouv.fr", "value": "10000000102"}]}
    assert (await client.put("/fhir/Practitioner/nurse", json=nurse, headers=tokens["system"])).status_code == 200
    written = {k: v for k, v in entry().items() if k not in ("id", "meta", "inResponseTo", "encounter")}
    created = await client.post("/fhir/Communication", json=written, headers=tokens["nurse"])
    assert created.status_code == 201, created.text
    return client, {**tokens, "note": {"id": created.json()["id"]}}


async def test_read_a_note_through_the_cdl_base(cdl: Any) -> None:
    client, tokens = cdl
    note_id = tokens["note"]["id"]
    read = await client.get(f"/cdl/DocumentReference/{note_id}", headers=tokens["gp"])
    assert read.status_code == 200 and read.headers["etag"] == 'W/"1"'
    conforms(read.json(), "document")
    assert read.json()["author"] == [{"reference": "Practitioner/nurse"}]
    assert (await client.get(f"/cdl/DocumentReference/{note_id}", headers=tokens["outsider"])).status_code == 404
    receipt = {"resourceType": "Communication", "status": "completed", "category": [{"coding": [{"system": ENTRY_KIND, "code": "ack"}]}],
               "subject": {"reference": "Patient/helene"}, "sender": {"reference": "Practitioner/gp"}, "sent": "2026-11-24T10:00:00Z",
               "inResponseTo": [{"reference": f"Communication/{note_id}"}]}
    acked = await client.post("/fhir/Communication", json=receipt, headers=tokens["gp"])
    assert (await client.get(f"/cdl/DocumentReference/{acked.json()['id']}", headers=tokens["gp"])).status_code == 404  # not a note


async def test_search_the_cdl_way_with_identifier_chains_and_includes(cdl: Any) -> None:
    client, tokens = cdl
    params = {"patient.identifier": "urn:oid:1.2.250.1.213.1.4.8|248031234567890", "type": f"{NOTE_TYPE}|OBS",
              "date": "ge2026-11-01", "author:Practitioner.identifier": "https://rpps.esante.gouv.fr|10000000102",
              "_include": ["DocumentReference:subject", "DocumentReference:author"], "_total": "accurate"}
    found = await client.get("/cdl/DocumentReference", params=params, headers=tokens["gp"])
    assert found.status_code == 200, found.text
    bundle = found.json()
    conforms(bundle, "searchset")
    matches = [e for e in bundle["entry"] if e["search"]["mode"] == "match"]
    assert [e["resource"]["id"] for e in matches] == [tokens["note"]["id"]] and bundle["total"] == 1
    assert matches[0]["fullUrl"].endswith(f"/cdl/DocumentReference/{tokens['note']['id']}")
    assert {e["resource"]["resourceType"] for e in bundle["entry"] if e["search"]["mode"] == "include"} == {"Patient", "Practitioner"}
    assert bundle["link"][0]["url"].split("?")[0].endswith("/cdl/DocumentReference")
    other_type = await client.get("/cdl/DocumentReference", params={**params, "type": f"{NOTE_TYPE}|INST"}, headers=tokens["gp"])
    assert other_type.json()["total"] == 0
    outsider = await client.get("/cdl/DocumentReference", params={"patient": "Patient/helene", "_total": "accurate"}, headers=tokens["outsider"])
    assert outsider.json()["total"] == 0


async def test_unsupported_cdl_parameters_are_said_not_ignored(cdl: Any) -> None:
    client, tokens = cdl
    lenient = await client.get("/cdl/DocumentReference", params={"patient": "Patient/helene", "_elements": "type"}, headers=tokens["gp"])
    outcome = [e for e in lenient.json()["entry"] if e["search"]["mode"] == "outcome"]
    assert "_elements" in outcome[0]["resource"]["issue"][0]["diagnostics"]
    strict = await client.get("/cdl/DocumentReference", params={"patient": "Patient/helene", "_elements": "type"},
                              headers={**tokens["gp"], "Prefer": "handling=strict"})
    assert strict.status_code == 400


async def test_the_guides_creation_bundle_makes_one_notebook_entry(cdl: Any) -> None:
    client, tokens = cdl
    example = orjson.loads(EXAMPLE.read_bytes())
    conforms(example, "creation")
    posted = await client.post("/cdl", json=example, headers=tokens["system"])
    assert posted.status_code == 200, posted.text
    answer = posted.json()
    assert answer["type"] == "transaction-response"
    assert answer["entry"][0]["response"]["location"].startswith("DocumentReference/")
    patient = next(e["response"]["location"].split("/")[1] for e in answer["entry"] if e["response"]["location"].startswith("Patient/"))
    notes = await client.get("/fhir/Communication", params={"subject": f"Patient/{patient}"}, headers=tokens["system"])
    found = [e["resource"] for e in notes.json()["entry"] if e["search"]["mode"] == "match"]
    assert len(found) == 1  # calipso's own search finds the one notebook entry
    assert found[0]["payload"] == [{"contentString": "Maman est fatiguée. Elle n'a pas voulu sortir ce matin."}]
    assert {c["code"] for c in found[0]["category"][0]["coding"]} == {"question", "DEM-AVIS"}
    assert found[0]["sender"]["reference"].startswith("Practitioner/")
    again = await client.get(f"/cdl/DocumentReference/{found[0]['id']}", headers=tokens["system"])
    conforms(again.json(), "document")


async def test_a_bundle_that_breaks_the_cdl_profile_writes_nothing(cdl: Any) -> None:
    client, tokens = cdl
    example = orjson.loads(EXAMPLE.read_bytes())
    del example["entry"][0]["resource"]["type"]
    refused = await client.post("/cdl", json=example, headers=tokens["system"])
    assert refused.status_code == 422 and "type" in refused.text
    assert (await client.get("/fhir/Patient", params={"identifier": "urn:oid:1.2.250.1.213.1.4.8|123456789012244"},
                             headers=tokens["system"])).json().get("total", 0) == 0


async def test_only_the_author_updates_and_delete_means_entered_in_error(cdl: Any) -> None:
    client, tokens = cdl
    note_id = tokens["note"]["id"]
    note = (await client.get(f"/cdl/DocumentReference/{note_id}", headers=tokens["nurse"])).json()
    text = base64.b64encode("Plaie propre, revue le soir.".encode()).decode()
    changed = {**note, "content": [{"attachment": {"contentType": "text/plain", "data": text}}]}
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": f"http://calipso.test/cdl/DocumentReference/{note_id}", "resource": changed,
         "request": {"method": "PUT", "url": f"DocumentReference/{note_id}"}}]}
    conforms(bundle, "update")
    assert (await client.post("/cdl", json=bundle, headers=tokens["gp"])).status_code == 403  # the GP did not write it
    updated = await client.post("/cdl", json=bundle, headers=tokens["nurse"])
    assert updated.status_code == 200, updated.text
    stored = (await client.get(f"/fhir/Communication/{note_id}", headers=tokens["nurse"])).json()
    assert stored["payload"] == [{"contentString": "Plaie propre, revue le soir."}] and stored["meta"]["versionId"] == "2"

    assert (await client.delete(f"/cdl/DocumentReference/{note_id}", headers=tokens["gp"])).status_code == 403
    deleted = await client.delete(f"/cdl/DocumentReference/{note_id}", headers=tokens["nurse"])
    assert deleted.status_code == 200 and deleted.json()["status"] == "entered-in-error"
    history = (await client.get(f"/fhir/Communication/{note_id}/_history", headers=tokens["nurse"])).json()
    assert history["total"] == 3  # nothing is lost
    put = await client.put(f"/cdl/DocumentReference/{note_id}", json={**note, "status": "current"}, headers=tokens["gp"])
    assert put.status_code == 403


async def test_the_cdl_base_needs_scopes_on_both_types(circle: Any) -> None:  # noqa: F811
    app, client, tokens = circle
    issuer = app.state.dev_issuer
    only_notes = {"Authorization": f"Bearer {issuer.token('gp', 'user/Communication.rs', 'calipso', fhir_user='Practitioner/gp')}"}
    assert (await client.get("/cdl/DocumentReference", params={"patient": "Patient/helene"}, headers=only_notes)).status_code == 403
    assert (await client.get("/cdl/DocumentReference", params={"patient": "Patient/helene"})).status_code == 401


async def test_the_cdl_capability_statement_instantiates_gestionnaire_cdl(cdl: Any) -> None:
    client, tokens = cdl
    statement = (await client.get("/cdl/metadata")).json()
    assert statement["instantiates"] == [view_table()["capability"]]
    assert "Not supported here: application/fhir+xml" in statement["rest"][0]["documentation"]
    resource = statement["rest"][0]["resource"][0]
    assert resource["type"] == "DocumentReference" and resource["profile"] == PROFILES["document"]
    assert {p["name"] for p in resource["searchParam"]} >= {"date", "type", "security-label", "subject", "patient", "author"}
    checked = await client.post("/fhir/CapabilityStatement/$validate", json=statement, headers=tokens["system"])
    assert all(i["severity"] not in ("error", "fatal") for i in checked.json()["issue"]), checked.text
