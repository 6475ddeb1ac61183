"""Search over HTTP: exact result sets per parameter type and modifier, on notebook resources."""

from __future__ import annotations

import httpx
import pytest

from tests.search_fixtures import ENTRY_KIND, INS_NIR, IPP, RPPS, load_notebook


@pytest.fixture
async def book(client: httpx.AsyncClient):
    return await load_notebook(client)


async def ids(client: httpx.AsyncClient, url: str, params: dict | list | None = None, status: int = 200) -> list[str]:
    """The ids of the matches (in the server's order)."""
    response = await client.get(url, params=params)
    assert response.status_code == status, response.text
    bundle = response.json()
    assert bundle["type"] == "searchset"
    return [e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"]


async def test_reference_forms(client, book) -> None:
    for value in ("Patient/helene", "helene", "http://calipso.test/fhir/Patient/helene"):
        assert sorted(await ids(client, "/fhir/Communication", {"subject": value})) == ["e1", "e2", "e3", "e4"]
    assert sorted(await ids(client, "/fhir/Communication", {"subject:Patient": "jean"})) == ["e5"]
    assert await ids(client, "/fhir/Communication", {"subject": "Patient/nobody"}) == []
    assert sorted(await ids(client, "/fhir/CareTeam", {"participant": "Practitioner/nurse-dubois"})) == ["team-helene", "team-jean"]
    assert await ids(client, "/fhir/Communication", {"recipient": "CareTeam/team-helene"}) == ["e2"]
    assert await ids(client, "/fhir/Communication", {"based-on": "CarePlan/plan-helene"}) == ["e1"]


async def test_tokens(client, book) -> None:
    assert sorted(await ids(client, "/fhir/Communication", {"category": f"{ENTRY_KIND}|transmission"})) == ["e2", "e5"]
    assert sorted(await ids(client, "/fhir/Communication", {"category": "transmission"})) == ["e2", "e5"]
    assert await ids(client, "/fhir/Communication", {"category": "|transmission"}) == []  # no-system only
    assert sorted(await ids(client, "/fhir/Communication", {"category": f"{ENTRY_KIND}|"})) == ["e1", "e2", "e3", "e4", "e5"]
    assert sorted(await ids(client, "/fhir/Communication", {"category": "alert,observation"})) == ["e3", "e4"]
    assert sorted(await ids(client, "/fhir/Communication", {"category:not": "transmission"})) == ["e1", "e3", "e4"]
    assert await ids(client, "/fhir/Patient", {"identifier": f"{INS_NIR}|248037512345678"}) == ["helene"]
    assert await ids(client, "/fhir/Patient", {"identifier": f"{IPP}|IPP0002"}) == ["jean"]
    assert await ids(client, "/fhir/Practitioner", {"identifier": f"{RPPS}|10009876543"}) == ["nurse-dubois"]
    assert await ids(client, "/fhir/Patient", {"gender": "male"}) == ["jean"]
    assert await ids(client, "/fhir/CareTeam", {"status": "active"}) == ["team-helene"]


async def test_strings_fold_case_and_accents(client, book) -> None:
    assert await ids(client, "/fhir/Patient", {"family": "lefevre"}) == ["helene"]
    assert await ids(client, "/fhir/Patient", {"family": "LEFÈVRE"}) == ["helene"]
    assert sorted(await ids(client, "/fhir/Patient", {"family": "lef"})) == ["helene", "jean"]
    assert await ids(client, "/fhir/Patient", {"name": "helene"}) == ["helene"]
    assert await ids(client, "/fhir/Patient", {"family:exact": "Lefèvre"}) == ["helene"]
    assert await ids(client, "/fhir/Patient", {"family:exact": "lefèvre"}) == []
    assert await ids(client, "/fhir/Patient", {"family:contains": "ebv"}) == ["jean"]
    assert await ids(client, "/fhir/Patient", {"address-city": "sainte"}) == ["jean"]
    assert await ids(client, "/fhir/Practitioner", {"given": "eric"}) == ["nurse-dubois"]


async def test_dates_with_prefixes(client, book) -> None:
    url = "/fhir/Communication"
    assert sorted(await ids(client, url, {"sent": "2026-11-20"})) == ["e3", "e4"]
    assert sorted(await ids(client, url, {"sent": "ge2026-11-20"})) == ["e3", "e4", "e5"]
    assert sorted(await ids(client, url, {"sent": "gt2026-11-20"})) == ["e5"]
    assert sorted(await ids(client, url, {"sent": "lt2026-11-19"})) == ["e1"]
    assert sorted(await ids(client, url, {"sent": "le2026-11-19"})) == ["e1", "e2"]
    assert sorted(await ids(client, url, {"sent": "ne2026-11-20"})) == ["e1", "e2", "e5"]
    assert sorted(await ids(client, url, {"sent": "2026-11-20T17:45:00Z"})) == ["e3", "e4"]  # same instant, UTC
    both = [("sent", "ge2026-11-19"), ("sent", "lt2026-11-21")]  # repeated = AND
    assert sorted(await ids(client, url, both)) == ["e2", "e3", "e4"]
    assert await ids(client, "/fhir/Patient", {"birthdate": "1948"}) == ["helene"]
    assert await ids(client, "/fhir/Patient", {"birthdate": "sa1940"}) == ["helene"]
    assert await ids(client, "/fhir/Patient", {"birthdate": "eb1940"}) == ["jean"]
    assert await ids(client, "/fhir/Encounter", {"date": "2026-11-15"}) == []  # period not inside one day
    assert await ids(client, "/fhir/Encounter", {"date": "ge2026-11-15"}) == ["stay-1"]  # overlaps after
    assert await ids(client, "/fhir/Encounter", {"date": "2026-11"}) == ["stay-1"]  # period within the month


async def test_last_updated_and_id(client, book) -> None:
    everything = await ids(client, "/fhir/Communication", {"_lastUpdated": "ge2020-01-01"})
    assert sorted(everything) == ["e1", "e2", "e3", "e4", "e5"]
    assert await ids(client, "/fhir/Communication", {"_lastUpdated": "lt2020-01-01"}) == []
    assert sorted(await ids(client, "/fhir/Communication", {"_id": "e1,e5"})) == ["e1", "e5"]


async def test_missing_modifier(client, book) -> None:
    assert await ids(client, "/fhir/Communication", {"recipient:missing": "false"}) == ["e2"]
    assert sorted(await ids(client, "/fhir/Communication", {"recipient:missing": "true"})) == ["e1", "e3", "e4", "e5"]
    assert await ids(client, "/fhir/Patient", {"general-practitioner:missing": "true"}) == ["jean"]
    assert await ids(client, "/fhir/Patient", {"general-practitioner:missing": "false"}) == ["helene"]


async def test_chains_and_has(client, book) -> None:
    assert sorted(await ids(client, "/fhir/Communication", {"subject:Patient.name": "jean"})) == ["e5"]
    assert sorted(await ids(client, "/fhir/Communication", {"subject:Patient.identifier": f"{IPP}|IPP0001"})) == ["e1", "e2", "e3", "e4"]
    ambiguous = await client.get("/fhir/Communication", params={"subject.identifier": "IPP0001"})
    assert ambiguous.status_code == 400  # subject may be a Group, a Patient, ...: the type must be named
    assert sorted(await ids(client, "/fhir/CarePlan", {"care-team.participant": "Practitioner/gp-martin"})) == ["plan-helene"]
    deep = {"based-on:CarePlan.subject:Patient.family": "lefevre"}
    assert await ids(client, "/fhir/Communication", deep) == ["e1"]
    assert await ids(client, "/fhir/Patient", {"_has:Communication:subject:category": "alert"}) == ["helene"]
    assert sorted(await ids(client, "/fhir/Practitioner", {"_has:CareTeam:participant:status": "inactive"})) == ["nurse-dubois"]


async def test_sort_with_ties_and_count(client, book) -> None:
    newest = await ids(client, "/fhir/Communication", {"subject": "helene", "_sort": "-sent"})
    assert newest[:2] in (["e4", "e3"], ["e3", "e4"]) and newest[2:] == ["e2", "e1"]
    assert newest[:2] == sorted(newest[:2], reverse=True)  # a tie on `sent` is broken by id, in the sort direction
    oldest = await ids(client, "/fhir/Communication", {"subject": "helene", "_sort": "sent,_id"})
    assert oldest == ["e1", "e2", "e3", "e4"]
    assert await ids(client, "/fhir/Patient", {"_sort": "-birthdate"}) == ["helene", "jean"]
    assert await ids(client, "/fhir/Patient", {"_sort": "family"}) == ["jean", "helene"]  # lefebvre < lefevre
    page = await ids(client, "/fhir/Communication", {"_sort": "-sent", "_count": "2"})
    assert page == ["e5", "e4"]


async def test_total_summary_elements(client, book) -> None:
    counted = (await client.get("/fhir/Communication", params={"subject": "helene", "_summary": "count"})).json()
    assert counted["total"] == 4 and "entry" not in counted
    accurate = (await client.get("/fhir/Communication", params={"_total": "accurate", "_count": "1"})).json()
    assert accurate["total"] == 5 and len(accurate["entry"]) == 1
    assert "total" not in (await client.get("/fhir/Communication")).json()
    elements = (await client.get("/fhir/Patient", params={"_id": "helene", "_elements": "gender"})).json()
    patient = elements["entry"][0]["resource"]
    assert set(patient) == {"resourceType", "id", "meta", "gender"}
    assert {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"} in patient["meta"]["tag"]
    summary = (await client.get("/fhir/Patient", params={"_id": "helene", "_summary": "true"})).json()["entry"][0]["resource"]
    assert "name" in summary and "generalPractitioner" not in summary


async def test_include_and_revinclude(client, book) -> None:
    bundle = (await client.get("/fhir/Communication", params={"_id": "e2", "_include": "Communication:sender"})).json()
    modes = {(e["resource"]["resourceType"], e["resource"]["id"], e["search"]["mode"]) for e in bundle["entry"]}
    assert modes == {("Communication", "e2", "match"), ("Practitioner", "nurse-dubois", "include")}
    plans = (await client.get("/fhir/CarePlan", params={"subject": "helene", "status": "active", "_include": "CarePlan:care-team"})).json()
    assert [(e["resource"]["id"], e["search"]["mode"]) for e in plans["entry"]] == [("plan-helene", "match"), ("team-helene", "include")]
    reverse = (await client.get("/fhir/Patient", params={"_id": "jean", "_revinclude": "Communication:subject"})).json()
    assert sorted((e["resource"]["id"], e["search"]["mode"]) for e in reverse["entry"]) == [("e5", "include"), ("jean", "match")]
    iterate = (await client.get("/fhir/Communication", params={
        "_id": "e1", "_include": "Communication:based-on", "_include:iterate": "CarePlan:care-team"})).json()
    assert sorted(e["resource"]["id"] for e in iterate["entry"]) == ["e1", "plan-helene", "team-helene"]
    everything = (await client.get("/fhir/Communication", params={"_id": "e1", "_include": "*"})).json()
    assert {"gp-martin", "helene", "plan-helene", "stay-1"} <= {e["resource"]["id"] for e in everything["entry"]}


async def test_compartment_search(client, book) -> None:
    assert sorted(await ids(client, "/fhir/Patient/jean/Communication")) == ["e5"]
    assert sorted(await ids(client, "/fhir/Patient/helene/Communication", {"category": "alert"})) == ["e3"]
    assert await ids(client, "/fhir/Patient/helene/CareTeam") == ["team-helene"]
    assert (await client.get("/fhir/Patient/helene/Practitioner")).status_code == 404


async def test_post_search_equals_get(client, book) -> None:
    response = await client.post("/fhir/Communication/_search", content=b"subject=Patient%2Fhelene&category=alert",
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 200
    assert [e["resource"]["id"] for e in response.json()["entry"]] == ["e3"]


async def test_deleted_resources_are_not_found(client, book) -> None:
    await client.delete("/fhir/Communication/e5")
    assert await ids(client, "/fhir/Communication", {"subject": "jean"}) == []
    assert "e5" not in await ids(client, "/fhir/Communication")


async def test_unknown_parameters_strict_and_lenient(client, book) -> None:
    lenient = await client.get("/fhir/Communication", params={"subject": "jean", "colour": "blue"})
    bundle = lenient.json()
    assert [e["resource"]["id"] for e in bundle["entry"] if e["search"]["mode"] == "match"] == ["e5"]
    outcome = [e for e in bundle["entry"] if e["search"]["mode"] == "outcome"]
    assert outcome and "colour" in outcome[0]["resource"]["issue"][0]["diagnostics"]
    self_link = next(link["url"] for link in bundle["link"] if link["relation"] == "self")
    assert "colour" not in self_link and "subject=jean" in self_link
    strict = await client.get("/fhir/Communication", params={"colour": "blue"}, headers={"Prefer": "handling=strict"})
    assert strict.status_code == 400
    assert strict.json()["issue"][0]["code"] == "not-supported"
    bad_modifier = await client.get("/fhir/Communication", params={"sent:exact": "2026"}, headers={"Prefer": "handling=strict"})
    assert bad_modifier.status_code == 400


async def test_patient_everything(client, book) -> None:
    response = await client.get("/fhir/Patient/helene/$everything")
    assert response.status_code == 200
    bundle = response.json()
    found = {(e["resource"]["resourceType"], e["resource"]["id"]) for e in bundle["entry"]}
    assert found == {("Patient", "helene"), ("Communication", "e1"), ("Communication", "e2"), ("Communication", "e3"),
                     ("Communication", "e4"), ("CareTeam", "team-helene"), ("CarePlan", "plan-helene"), ("Encounter", "stay-1")}
    assert bundle["total"] == 8
    only_entries = (await client.get("/fhir/Patient/helene/$everything", params={"_type": "Communication"})).json()
    assert {e["resource"]["id"] for e in only_entries["entry"]} == {"e1", "e2", "e3", "e4"}
    seen, url = [], "/fhir/Patient/helene/$everything?_count=3"
    while url:
        page = (await client.get(url)).json()
        seen += [e["resource"]["id"] for e in page.get("entry", [])]
        url = next((link["url"] for link in page["link"] if link["relation"] == "next"), None)
    assert sorted(seen) == sorted(e[1] for e in found) and len(seen) == len(set(seen))
    assert (await client.get("/fhir/Patient/nobody/$everything")).status_code == 404
    assert (await client.get("/fhir/Patient/helene/$everything", params={"_type": "Nothing"})).status_code == 404


async def test_numbers_quantities_and_uris(client) -> None:
    from tests.search_fixtures import put

    weight = {"resourceType": "Observation", "status": "final", "code": {"text": "poids"}, "subject": {"reference": "Patient/helene"}}
    await put(client, {**weight, "id": "w72", "valueQuantity": {"value": 72.4, "unit": "kg", "system": "http://unitsofmeasure.org", "code": "kg"}})
    await put(client, {**weight, "id": "w100", "valueQuantity": {"value": 100, "unit": "kg", "system": "http://unitsofmeasure.org", "code": "kg"}})
    await put(client, {**weight, "id": "p100", "valueQuantity": {"value": 100, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}})
    url = "/fhir/Observation"
    assert sorted(await ids(client, url, {"value-quantity": "100"})) == ["p100", "w100"]
    assert await ids(client, url, {"value-quantity": "100|http://unitsofmeasure.org|kg"}) == ["w100"]
    assert await ids(client, url, {"value-quantity": "100||mm[Hg]"}) == ["p100"]
    assert await ids(client, url, {"value-quantity": "72.4"}) == ["w72"]
    assert await ids(client, url, {"value-quantity": "72"}) == ["w72"]  # 72 means [71.5, 72.5)
    assert await ids(client, url, {"value-quantity": "lt80|http://unitsofmeasure.org|kg"}) == ["w72"]
    assert sorted(await ids(client, url, {"value-quantity": "ge72.4"})) == ["p100", "w100", "w72"]
    assert sorted(await ids(client, url, {"value-quantity": "gt72.4"})) == ["p100", "w100"]
    assert await ids(client, url, {"value-quantity": "ap110|http://unitsofmeasure.org|kg"}) == ["w100"]
    risk = {"resourceType": "RiskAssessment", "status": "final", "subject": {"reference": "Patient/helene"}}
    await put(client, {**risk, "id": "fall", "prediction": [{"probabilityDecimal": 0.8}]})
    await put(client, {**risk, "id": "ulcer", "prediction": [{"probabilityDecimal": 0.25}]})
    assert await ids(client, "/fhir/RiskAssessment", {"probability": "gt0.5"}) == ["fall"]
    assert await ids(client, "/fhir/RiskAssessment", {"probability": "le0.25"}) == ["ulcer"]
    assert await ids(client, "/fhir/RiskAssessment", {"probability": "0.8"}) == ["fall"]
    assert (await client.get("/fhir/RiskAssessment", params={"probability": "high"})).status_code == 400
    for n, canonical in enumerate(("https://calipso.example.org/fhir/ValueSet/entry-kind", "https://calipso.example.org/fhir/ValueSet/roles")):
        await put(client, {"resourceType": "ValueSet", "id": f"vs{n}", "status": "active", "url": canonical})
    assert await ids(client, "/fhir/ValueSet", {"url": "https://calipso.example.org/fhir/ValueSet/roles"}) == ["vs1"]
    assert sorted(await ids(client, "/fhir/ValueSet", {"url:below": "https://calipso.example.org/fhir/"})) == ["vs0", "vs1"]
    assert await ids(client, "/fhir/ValueSet", {"url:above": "https://calipso.example.org/fhir/ValueSet/roles/v2"}) == ["vs1"]
    assert await ids(client, "/fhir/ValueSet", {"url": "https://calipso.example.org/fhir"}) == []


async def test_system_level_search(client, book) -> None:
    response = await client.get("/fhir", params={"_type": "CareTeam,CarePlan", "_lastUpdated": "ge2020-01-01"})
    assert response.status_code == 200
    found = sorted((e["resource"]["resourceType"], e["resource"]["id"]) for e in response.json()["entry"])
    assert found == [("CarePlan", "plan-helene"), ("CareTeam", "team-helene"), ("CareTeam", "team-jean")]
    by_id = await client.get("/fhir", params={"_id": "helene"})
    assert [e["resource"]["resourceType"] for e in by_id.json()["entry"]] == ["Patient"]
    total = (await client.get("/fhir", params={"_summary": "count"})).json()["total"]
    assert total == 13  # 2 practitioners, 2 patients, 1 stay, 2 teams, 1 plan, 5 entries, and no more
    walked, url = [], "/fhir?_count=4&_sort=-_lastUpdated"
    while url:
        page = (await client.get(url)).json()
        walked += [e["resource"]["id"] for e in page.get("entry", [])]
        url = next((link["url"] for link in page["link"] if link["relation"] == "next"), None)
    assert len(walked) == 13 == len(set(walked))
    posted = await client.post("/fhir/_search", content=b"_type=Patient&_id=jean", headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert [e["resource"]["id"] for e in posted.json()["entry"]] == ["jean"]
    assert (await client.get("/fhir", params={"_type": "Nothing"})).status_code == 404
    strict = await client.get("/fhir", params={"subject": "x"}, headers={"Prefer": "handling=strict"})
    assert strict.status_code == 400  # not a common parameter


async def test_common_parameters_on_meta(client) -> None:
    from tests.search_fixtures import put

    confidential = {"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}
    await put(client, {"resourceType": "Communication", "id": "m1", "status": "completed",
                       "meta": {"tag": [{"system": "https://calipso.example.org/tags", "code": "from-hl7v2"}],
                                "profile": ["https://calipso.example.org/fhir/StructureDefinition/NotebookEntry"],
                                "security": [confidential], "source": "urn:calipso:bridge"}})
    await put(client, {"resourceType": "Communication", "id": "m2", "status": "completed"})
    url = "/fhir/Communication"
    assert await ids(client, url, {"_tag": "https://calipso.example.org/tags|from-hl7v2"}) == ["m1"]
    assert await ids(client, url, {"_profile": "https://calipso.example.org/fhir/StructureDefinition/NotebookEntry"}) == ["m1"]
    assert await ids(client, url, {"_security": "R"}) == ["m1"]
    assert await ids(client, url, {"_security:not": "R"}) == ["m2"]
    assert await ids(client, url, {"_source": "urn:calipso:bridge"}) == ["m1"]
    assert await ids(client, url, {"_tag:missing": "true"}) == ["m2"]


async def test_identifier_of_type(client) -> None:
    from tests.search_fixtures import put

    v2 = "http://terminology.hl7.org/CodeSystem/v2-0203"
    await put(client, {"resourceType": "Patient", "id": "typed", "identifier": [
        {"type": {"coding": [{"system": v2, "code": "PI"}]}, "system": IPP, "value": "IPP0042"},
        {"type": {"coding": [{"system": "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-0203", "code": "INS-NIR"}]},
         "system": INS_NIR, "value": "248037512345678"}]})
    assert await ids(client, "/fhir/Patient", {"identifier:of-type": f"{v2}|PI|IPP0042"}) == ["typed"]
    assert await ids(client, "/fhir/Patient", {"identifier:of-type": f"{v2}|MR|IPP0042"}) == []
    assert (await client.get("/fhir/Patient", params={"identifier:of-type": "PI|IPP0042"})).status_code == 400


async def test_deleted_resources_are_not_found_by_id(client, book) -> None:
    await client.delete("/fhir/Communication/e5")
    for params in ({"_id": "e5"}, {"_id": "e5,e4"}, {"_id": "e5", "status": "completed"}, {"_id": "e5", "_total": "accurate"}):
        response = await client.get("/fhir/Communication", params=params)
        assert response.status_code == 200, (params, response.text)
        assert "e5" not in [e["resource"]["id"] for e in response.json().get("entry", [])], params
    assert (await client.get("/fhir", params={"_id": "e5"})).json().get("entry") is None
