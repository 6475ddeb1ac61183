"""R4's vital signs profiles (validation/vital_signs.py, spec/vital-signs/): an Observation
claiming one, or coded as one (LOINC, or a SNOMED CT concept naming the same observable), is
held to it and to the profiles it derives from; through the API, on writes and `$validate`."""

from __future__ import annotations

from typing import Any

import httpx
import orjson

from fhir_server.ig import load_package_folder, read_json_folder
from fhir_server.spec import VITAL_SIGNS_DIR
from fhir_server.spec.build_vital_signs import loinc_codes

BODY_TEMP = "http://hl7.org/fhir/StructureDefinition/bodytemp"
VITAL_SIGNS_CATEGORY = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}]}


def temperature(**changes: Any) -> dict[str, Any]:
    observation = {"resourceType": "Observation", "status": "final", "category": [VITAL_SIGNS_CATEGORY],
                   "code": {"coding": [{"system": "http://loinc.org", "code": "8310-5"},
                                       {"system": "http://snomed.info/sct", "code": "276885007"}]},
                   "subject": {"reference": "Patient/p1"}, "effectiveDateTime": "2026-11-30T08:10:00+01:00",
                   "valueQuantity": {"value": 37.8, "unit": "°C", "system": "http://unitsofmeasure.org", "code": "Cel"}}
    observation.update(changes)
    return {k: v for k, v in observation.items() if v is not None}


async def errors(client: httpx.AsyncClient, resource: dict[str, Any], profile: str | None = None) -> list[str]:
    url = "/fhir/Observation/$validate" + (f"?profile={profile}" if profile else "")
    said = (await client.post(url, json=resource)).json()
    return [i["diagnostics"] for i in said["issue"] if i["severity"] == "error"]


async def test_a_conforming_temperature_is_stored(client: httpx.AsyncClient) -> None:
    assert await errors(client, temperature()) == []
    assert (await client.post("/fhir/Observation", json=temperature())).status_code == 201


async def test_a_temperature_coded_in_snomed_ct_alone_lacks_the_loinc_code(client: httpx.AsyncClient) -> None:
    snomed_only = temperature(code={"coding": [{"system": "http://snomed.info/sct", "code": "276885007"}]})
    said = await errors(client, snomed_only)
    assert len(said) == 1 and "BodyTempCode" in said[0]
    refused = await client.post("/fhir/Observation", json=snomed_only)
    assert refused.status_code == 422


async def test_the_profile_and_the_one_it_derives_from_are_both_checked(client: httpx.AsyncClient) -> None:
    fahrenheit_in_kelvin = temperature(valueQuantity={"value": 310, "unit": "K", "system": "http://unitsofmeasure.org", "code": "K"})
    assert any("ucum-bodytemp" in e for e in await errors(client, fahrenheit_in_kelvin))  # bodytemp's units
    no_category = temperature(category=None)
    assert any("VSCat" in e for e in await errors(client, no_category))  # vitalsigns' category slice
    to_the_year = temperature(effectiveDateTime="2026")
    assert any("vs-1" in e for e in await errors(client, to_the_year))  # vitalsigns' invariant, on a choice element
    as_text = temperature(valueQuantity=None, valueString="37.8")
    assert any("valueString is not allowed" in e for e in await errors(client, as_text))


async def test_a_claimed_vital_signs_profile_is_checked_and_an_unrelated_observation_is_not(client: httpx.AsyncClient) -> None:
    claimed = temperature(code={"coding": [{"system": "http://loinc.org", "code": "8331-1"}]}, meta={"profile": [BODY_TEMP]})
    assert any("BodyTempCode" in e for e in await errors(client, claimed))
    unrelated = temperature(code={"coding": [{"system": "http://loinc.org", "code": "8331-1"}]}, category=None)
    assert await errors(client, unrelated) == []
    assert any("BodyTempCode" in e for e in await errors(client, unrelated, profile=BODY_TEMP))
    patient = {"resourceType": "Patient", "meta": {"profile": [BODY_TEMP]}}
    said = (await client.post("/fhir/Patient/$validate", json=patient)).json()
    assert [i["diagnostics"] for i in said["issue"] if i["severity"] == "error"] == [f"Profile {BODY_TEMP} is for Observation, not Patient"]


async def test_a_blood_pressure_is_held_to_its_components(client: httpx.AsyncClient) -> None:
    def component(code: str, value: int) -> dict[str, Any]:
        return {"code": {"coding": [{"system": "http://loinc.org", "code": code}]},
                "valueQuantity": {"value": value, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}}
    pressure = temperature(code={"coding": [{"system": "http://loinc.org", "code": "85354-9"}]}, valueQuantity=None,
                           component=[component("8480-6", 128), component("8462-4", 79)])
    assert await errors(client, pressure) == []
    pressure["component"].pop()
    assert any("DiastolicBP" in e for e in await errors(client, pressure))


def test_every_vital_signs_profile_compiles_and_names_its_loinc_code() -> None:
    guide = load_package_folder(VITAL_SIGNS_DIR)
    assert len(guide.profiles) == 11
    derived = [sd for sd in guide.profiles.values() if sd["baseDefinition"] != "http://hl7.org/fhir/StructureDefinition/Observation"]
    assert len(derived) == 10
    assert all(sd["snapshot"]["element"] for sd in guide.profiles.values())


def test_the_loinc_table_is_what_the_committed_profiles_fix() -> None:
    """loinc.json is derived from the profiles by spec/build_vital_signs.py: the committed copy
    agrees with the committed profiles, and the SNOMED CT table names only those profiles."""
    profiles = [r for r in read_json_folder(VITAL_SIGNS_DIR) if r["resourceType"] == "StructureDefinition"]
    assert orjson.loads((VITAL_SIGNS_DIR / "loinc.json").read_bytes()) == loinc_codes(profiles)
    urls = {sd["url"] for sd in profiles}
    snomed = orjson.loads((VITAL_SIGNS_DIR / "snomed-ct.json").read_bytes())
    assert {url for code, url in snomed.items() if not code.startswith("_")} <= urls
