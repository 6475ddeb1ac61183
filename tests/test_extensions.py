"""Core extensions checked against their R4 definitions; unknown extensions accepted with a
warning (fhir_server/validation/extensions.py)."""

from __future__ import annotations

import httpx

from tests.conftest import notebook_patient

MOTHERS_FAMILY = "http://hl7.org/fhir/StructureDefinition/humanname-mothers-family"
BIRTH_TIME = "http://hl7.org/fhir/StructureDefinition/patient-birthTime"


async def test_a_core_extension_in_its_context_with_its_type_is_accepted(client: httpx.AsyncClient) -> None:
    patient = notebook_patient(birthDate="1945-03-12",
                               _birthDate={"extension": [{"url": BIRTH_TIME, "valueDateTime": "1945-03-12T06:30:00+01:00"}]})
    patient["name"] = [{"family": "Martin", "_family": {"extension": [{"url": MOTHERS_FAMILY, "valueString": "Dupont"}]}}]
    created = await client.post("/fhir/Patient", json=patient)
    assert created.status_code == 201, created.text


async def test_a_core_extension_of_another_type_or_out_of_context_is_refused(client: httpx.AsyncClient) -> None:
    misplaced = notebook_patient()  # the mother's family name belongs on HumanName.family, not on the HumanName
    misplaced["name"] = [{"family": "Martin", "extension": [{"url": MOTHERS_FAMILY, "valueString": "Dupont"}]}]
    said = (await client.post("/fhir/Patient/$validate", json=misplaced)).json()
    assert [(i["severity"], i["expression"]) for i in said["issue"] if "contexts" in i["diagnostics"]] == [
        ("error", ["Patient.name[0].extension[0]"])]
    refused = await client.post("/fhir/Patient", json=misplaced)
    assert refused.status_code == 422
    assert "HumanName.family" in refused.json()["issue"][0]["diagnostics"]
    mistyped = notebook_patient(birthDate="1945-03-12", _birthDate={"extension": [{"url": BIRTH_TIME, "valueString": "06:30"}]})
    refused = await client.post("/fhir/Patient", json=mistyped)
    assert refused.status_code == 422
    assert refused.json()["issue"][0]["expression"] == ["Patient.birthDate.extension[0].valueString"]


async def test_an_unknown_extension_is_stored_and_validate_warns(client: httpx.AsyncClient) -> None:
    national = notebook_patient(extension=[{"url": "https://interop.esante.gouv.fr/ig/fhir/core/StructureDefinition/fr-core-patient-birth-order",
                                            "valueInteger": 2}])
    assert (await client.post("/fhir/Patient", json=national)).status_code == 201
    said = (await client.post("/fhir/Patient/$validate", json=national)).json()
    warnings = [i for i in said["issue"] if i["severity"] == "warning" and "no definition" in i["diagnostics"]]
    assert [w["expression"] for w in warnings] == [["Patient.extension[0]"]]


async def test_r4s_own_uses_of_core_extensions_beyond_their_contexts_stay_valid(client: httpx.AsyncClient) -> None:
    """R4's snapshots put structuredefinition-fhir-type on ElementDefinition.type (its context
    says .type.code) and normative-version on ValueSets (its context says StructureDefinition):
    the places R4's own files use are accepted (extension-contexts.json), the next one is not."""
    fhir_type = "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type"
    normative = "http://hl7.org/fhir/StructureDefinition/structuredefinition-normative-version"
    value_set = {"resourceType": "ValueSet", "status": "active", "url": "https://calipso.example/ValueSet/x",
                 "extension": [{"url": normative, "valueCode": "4.0.0"}]}
    said = (await client.post("/fhir/ValueSet/$validate", json=value_set)).json()
    assert not any(i["severity"] == "error" for i in said["issue"]), said
    parameters = {"resourceType": "Parameters", "parameter": [{"name": "x", "valueString": "y",
                                                               "extension": [{"url": normative, "valueCode": "4.0.0"}]}]}
    said = (await client.post("/fhir/Parameters/$validate", json=parameters)).json()
    assert any(i["severity"] == "error" and normative in i["diagnostics"] for i in said["issue"])
    structure = {"resourceType": "StructureDefinition", "url": "https://calipso.example/StructureDefinition/x", "name": "X",
                 "status": "draft", "kind": "logical", "abstract": True, "type": "X",
                 "differential": {"element": [{"id": "X", "path": "X"}, {"id": "X.a", "path": "X.a", "type": [
                     {"code": "http://hl7.org/fhirpath/System.String", "extension": [{"url": fhir_type, "valueUrl": "string"}]}]}]}}
    said = (await client.post("/fhir/StructureDefinition/$validate", json=structure)).json()
    assert not any(i["severity"] == "error" for i in said["issue"]), said
    element = structure["differential"]["element"][1]
    element["binding"] = {"strength": "example", "extension": element["type"][0].pop("extension")}
    said = (await client.post("/fhir/StructureDefinition/$validate", json=structure)).json()
    assert [i["expression"] for i in said["issue"] if i["severity"] == "error"] == [
        ["StructureDefinition.differential.element[1].binding.extension[0]"]]
