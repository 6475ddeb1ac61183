"""Checks across the parts of a resource, through the API: definition resources against the
core search parameters (validation/definitions.py), narrative links and references inside a
Bundle (validation/cross_references.py), a Bundle entry's fullUrl against its resource
(validation/element_rules.py)."""

from __future__ import annotations

from typing import Any

import httpx

from fhir_server.ig import load_guide
from fhir_server.spec import load_spec
from fhir_server.validation import Validator

CORE_NAME = "http://hl7.org/fhir/SearchParameter/Organization-name"
NARRATIVE = '<div xmlns="http://www.w3.org/1999/xhtml">{}</div>'


def search_parameter(**changes: Any) -> dict[str, Any]:
    parameter = {"resourceType": "SearchParameter", "url": "https://calipso.example/SearchParameter/org-name",
                 "name": "OrgName", "status": "active", "description": "Organizations by name", "code": "name",
                 "base": ["Organization"], "type": "string", "expression": "Organization.name", "derivedFrom": CORE_NAME}
    parameter.update(changes)
    return parameter


async def errors(client: httpx.AsyncClient, resource: dict[str, Any]) -> list[tuple[str, str]]:
    said = (await client.post(f"/fhir/{resource['resourceType']}/$validate", json=resource)).json()
    return [((i.get("expression") or ["-"])[0], i["diagnostics"]) for i in said["issue"] if i["severity"] == "error"]


async def test_a_search_parameter_keeps_the_type_and_bases_of_the_one_it_derives_from(client: httpx.AsyncClient) -> None:
    assert await errors(client, search_parameter()) == []
    assert (await client.post("/fhir/SearchParameter", json=search_parameter())).status_code == 201
    retyped = search_parameter(type="token")
    assert [where for where, _ in await errors(client, retyped)] == ["SearchParameter.type"]
    refused = await client.post("/fhir/SearchParameter", json=retyped)
    assert refused.status_code == 422 and "string" in refused.json()["issue"][0]["diagnostics"]
    rebased = search_parameter(base=["Patient"])
    assert sorted(where for where, _ in await errors(client, rebased)) == ["SearchParameter.base", "SearchParameter.expression"]


async def test_a_search_parameter_expression_starts_with_its_bases(client: httpx.AsyncClient) -> None:
    union = search_parameter(derivedFrom=None, base=["Organization", "Location"],
                             expression="Organization.name | (Location.name) | Patient.name.family")
    del union["derivedFrom"]
    said = await errors(client, union)
    assert [where for where, _ in said] == ["SearchParameter.expression"]
    assert "Patient.name.family" in said[0][1]
    union["base"].append("Patient")
    assert await errors(client, union) == []
    anywhere = search_parameter(base=["Resource"], expression="Resource.meta.source")
    del anywhere["derivedFrom"]
    assert await errors(client, anywhere) == []


async def test_a_capability_statement_declares_core_search_parameters_with_their_types(client: httpx.AsyncClient) -> None:
    statement = {"resourceType": "CapabilityStatement", "status": "draft", "date": "2026-12-01", "kind": "requirements",
                 "description": "What a directory of home care practices serves", "fhirVersion": "4.0.1", "format": ["json"],
                 "rest": [{"mode": "server", "resource": [{"type": "Organization", "searchParam": [
                     {"name": "name", "definition": f"{CORE_NAME}|4.0.1", "type": "string"},
                     {"name": "local", "definition": "https://calipso.example/SearchParameter/x", "type": "date"}]}]}]}
    assert await errors(client, statement) == []
    statement["rest"][0]["resource"][0]["searchParam"][0]["type"] = "date"
    assert [where for where, _ in await errors(client, statement)] == ["CapabilityStatement.rest[0].resource[0].searchParam[0].type"]
    assert (await client.post("/fhir/CapabilityStatement", json=statement)).status_code == 422


async def test_the_servers_own_capability_statement_passes(client: httpx.AsyncClient) -> None:
    served = (await client.get("/fhir/metadata")).json()  # larger than the test server's body limit: checked here
    said = Validator(load_spec(), load_guide()).validate_all(served, "CapabilityStatement")
    assert [i for i in said if i.severity == "error"] == []


async def test_a_narrative_link_leads_somewhere_in_the_resource(client: httpx.AsyncClient) -> None:
    organization = {"resourceType": "Organization", "name": "Cabinet infirmier", "partOf": {"reference": "#parent"},
                    "contained": [{"resourceType": "Organization", "id": "parent", "name": "SSIAD"}],
                    "text": {"status": "generated", "div": NARRATIVE.format(
                        '<p id="top">Cabinet</p><a href="#parent">SSIAD</a> <a href="#top">up</a> <a href="#gone">?</a>')}}
    said = await errors(client, organization)
    assert [(where, "#gone" in text) for where, text in said] == [("Organization.text.div", True)]
    assert (await client.post("/fhir/Organization", json=organization)).status_code == 422
    organization["text"]["div"] = NARRATIVE.format('<a href="#parent">SSIAD</a> <a name="here"/><a href="#here">here</a>')
    assert await errors(client, organization) == []


async def test_a_narrative_link_may_lead_to_another_entry_of_a_bundle(client: httpx.AsyncClient) -> None:
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [
        {"fullUrl": "urn:uuid:8d4c2b1e-0c5a-4f57-9d4c-3c2f2b6e7a01", "resource": {
            "resourceType": "Organization", "name": "A", "text": {"status": "generated", "div": NARRATIVE.format('<a href="#b-anchor">B</a>')}}},
        {"fullUrl": "urn:uuid:8d4c2b1e-0c5a-4f57-9d4c-3c2f2b6e7a02", "resource": {
            "resourceType": "Organization", "name": "B", "text": {"status": "generated", "div": NARRATIVE.format('<p id="b-anchor">B</p>')}}}]}
    assert await errors(client, bundle) == []
    bundle["entry"][1]["resource"]["text"]["div"] = NARRATIVE.format("<p>B</p>")
    assert [where for where, _ in await errors(client, bundle)] == ["Bundle.entry[0].resource.text.div"]


def document(*references: str) -> dict[str, Any]:
    """A document Bundle holding two versions of one Observation (allowed: bdl-7)."""
    observation = {"resourceType": "Observation", "id": "bp", "status": "final", "code": {"text": "Tension"}}
    return {"resourceType": "Bundle", "type": "document", "identifier": {"system": "urn:ietf:rfc:3986",
                                                                         "value": "urn:uuid:1c5e7a3e-6d1f-4c55-9a1b-0b6e4a2f9c10"},
            "timestamp": "2026-12-01T10:00:00+01:00", "entry": [
                {"fullUrl": "https://h.example/fhir/Composition/c", "resource": {
                    "resourceType": "Composition", "id": "c", "status": "final", "type": {"text": "Synthèse"},
                    "date": "2026-12-01", "author": [{"display": "Dr A"}], "title": "Synthèse",
                    "section": [{"title": "Constantes", "entry": [{"reference": r} for r in references]}]}},
                {"fullUrl": "https://h.example/fhir/Observation/bp", "resource": {**observation, "meta": {"versionId": "1"}}},
                {"fullUrl": "https://h.example/fhir/Observation/bp", "resource": {**observation, "meta": {"versionId": "2"}}}]}


async def test_a_reference_inside_a_bundle_matches_one_entry(client: httpx.AsyncClient) -> None:
    assert await errors(client, document("Observation/bp/_history/1", "https://h.example/fhir/Observation/bp/_history/2")) == []
    ambiguous = await errors(client, document("Observation/bp", "https://h.example/fhir/Observation/bp"))
    assert sorted(where for where, _ in ambiguous) == ["Bundle.entry[0].resource.section[0].entry[0].reference",
                                                  "Bundle.entry[0].resource.section[0].entry[1].reference"]
    assert all("2 entries" in text for _, text in ambiguous)
    history = document("Observation/bp")
    history.update(type="history")
    del history["identifier"], history["timestamp"]
    for entry in history["entry"]:
        entry["request"] = {"method": "PUT", "url": entry["fullUrl"].split("/fhir/")[1]}
        entry["response"] = {"status": "200"}
    assert not [text for _, text in await errors(client, history) if "matches" in text]


async def test_a_restful_full_url_agrees_with_its_resource(client: httpx.AsyncClient) -> None:
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [
        {"fullUrl": "https://h.example/fhir/Organization/a", "resource": {"resourceType": "Organization", "id": "a", "name": "A"}},
        {"fullUrl": "https://h.example/fhir/Organization/b", "resource": {"resourceType": "Organization", "id": "c", "name": "C"}},
        {"fullUrl": "https://h.example/fhir/Patient/d", "resource": {"resourceType": "Organization", "id": "d", "name": "D"}},
        {"fullUrl": "https://h.example/documents/e", "resource": {"resourceType": "Organization", "id": "f", "name": "F"}},
        {"fullUrl": "urn:uuid:8d4c2b1e-0c5a-4f57-9d4c-3c2f2b6e7a03", "resource": {"resourceType": "Organization", "id": "g", "name": "G"}}]}
    assert [where for where, _ in await errors(client, bundle)] == ["Bundle.entry[1].fullUrl", "Bundle.entry[2].fullUrl"]
    assert (await client.post("/fhir/Bundle", json=bundle)).status_code == 422


async def test_a_profiles_differential_names_elements_of_its_type(client: httpx.AsyncClient) -> None:
    profile = {"resourceType": "StructureDefinition", "url": "https://calipso.example/StructureDefinition/pulse", "name": "Pulse",
               "status": "draft", "kind": "resource", "abstract": False, "type": "Observation", "derivation": "constraint",
               "baseDefinition": "http://hl7.org/fhir/StructureDefinition/Observation",
               "differential": {"element": [
                   {"id": "Observation.value[x]", "path": "Observation.value[x]", "type": [{"code": "Quantity"}]},
                   {"id": "Observation.valueQuantity.code", "path": "Observation.valueQuantity.code", "fixedCode": "/min"},
                   {"id": "Observation.component.code.coding.system", "path": "Observation.component.code.coding.system", "min": 1},
                   {"id": "Observation.status.extension", "path": "Observation.status.extension", "max": "0"},
                   {"id": "Observation.contained.anything", "path": "Observation.contained.anything", "max": "0"}]}}
    assert await errors(client, profile) == []
    profile["differential"]["element"].append({"id": "Observation.valueBla", "path": "Observation.valueBla", "min": 1})
    profile["differential"]["element"].append({"id": "Observation.effective[x].start", "path": "Observation.effective[x].start", "min": 1})
    profile["differential"]["element"].append({"id": "Observation.status.coding", "path": "Observation.status.coding", "min": 1})
    said = await errors(client, profile)
    assert [where for where, _ in said] == [f"StructureDefinition.differential.element[{i}].path" for i in (5, 7)]
    assert "Observation.valueBla" in said[0][1]
    assert (await client.post("/fhir/StructureDefinition", json=profile)).status_code == 422
    logical = {**profile, "kind": "logical", "type": "https://calipso.example/Model", "derivation": "specialization",
               "baseDefinition": "http://hl7.org/fhir/StructureDefinition/Base", "abstract": True}
    logical["differential"] = {"element": [{"id": "Model", "path": "Model"}, {"id": "Model.anything", "path": "Model.anything"}]}
    assert not [text for _, text in await errors(client, logical) if "differential names" in text]
