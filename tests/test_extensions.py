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


async def test_a_core_extension_of_another_type_is_refused_and_one_out_of_context_warned(client: httpx.AsyncClient) -> None:
    misplaced = notebook_patient()
    misplaced["name"] = [{"family": "Martin", "extension": [{"url": MOTHERS_FAMILY, "valueString": "Dupont"}]}]
    said = (await client.post("/fhir/Patient/$validate", json=misplaced)).json()
    assert [(i["severity"], i["expression"]) for i in said["issue"] if "contexts" in i["diagnostics"]] == [
        ("warning", ["Patient.name[0].extension[0]"])]
    assert (await client.post("/fhir/Patient", json=misplaced)).status_code == 201
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
