"""The structural validator on its own: known answers and a property over arbitrary JSON."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings, strategies as st

from fhir_server.spec import load_spec
from fhir_server.validation import StructuralValidator
from tests.conftest import notebook_entry, notebook_patient

validator = StructuralValidator(load_spec())


def expressions(resource: Any, resource_type: str) -> list[str]:
    return [i.expression or "" for i in validator.validate(resource, resource_type)]


def test_notebook_resources_are_valid() -> None:
    assert validator.validate(notebook_patient(), "Patient") == []
    assert validator.validate(notebook_entry("p1"), "Communication") == []


def test_primitive_extensions_and_contained() -> None:
    patient = notebook_patient(
        birthDate="1948",
        _birthDate={"extension": [{"url": "http://example.org/precision", "valueCode": "year"}]},
        contained=[{"resourceType": "Practitioner", "id": "gp", "name": [{"family": "Martin"}]}],
        generalPractitioner=[{"reference": "#gp"}],
    )
    patient["name"] = [{"given": ["Hélène", None], "_given": [None, {"extension": [{"url": "http://x.org/e", "valueString": "Lulu"}]}]}]
    assert validator.validate(patient, "Patient") == []


def test_contained_resource_is_checked_too() -> None:
    patient = notebook_patient(contained=[{"resourceType": "Practitioner", "active": "oui"}])
    assert expressions(patient, "Patient") == ["Patient.contained[0].active"]


def test_one_choice_type_at_a_time() -> None:
    patient = notebook_patient(deceasedBoolean=False, deceasedDateTime="2026-01-01")
    assert expressions(patient, "Patient") == ["Patient.deceasedDateTime"]


def test_required_elements_of_backbones() -> None:
    entry = notebook_entry("p1")
    del entry["status"]
    assert expressions(entry, "Communication") == ["Communication.status"]


def test_numbers_keep_their_json_kind() -> None:
    observation = {"resourceType": "Observation", "status": "final", "code": {"text": "poids"},
                   "valueQuantity": {"value": 72.5, "unit": "kg"}}
    assert validator.validate(observation, "Observation") == []
    observation["valueQuantity"]["value"] = True
    assert expressions(observation, "Observation") == ["Observation.valueQuantity.value"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=12,
)
patient_keys = st.sampled_from(["name", "active", "birthDate", "gender", "contact", "_birthDate", "telecom", "deceasedBoolean", "x"])


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(patient_keys, json_values, max_size=4))
def test_any_json_gives_issues_never_an_exception(members: dict[str, Any]) -> None:
    issues = validator.validate({"resourceType": "Patient", **members}, "Patient")
    assert all(i.expression and i.expression.startswith("Patient") for i in issues)


@settings(max_examples=100, deadline=None)
@given(json_values)
def test_any_body_shape_is_handled(body: Any) -> None:
    assert isinstance(validator.validate(body, "Patient"), list)


def test_codes_of_required_enumerated_bindings() -> None:
    note = notebook_entry("p1") | {"status": "finished-ish", "priority": "asap"}
    issues = validator.validate(note, "Communication")
    assert [(i.code, i.expression) for i in issues] == [("code-invalid", "Communication.status")]
    contact = notebook_patient(contact=[{"gender": "femme"}], link=[{"other": {"reference": "Patient/x"}, "type": "seealso"}])
    assert expressions(contact, "Patient") == ["Patient.contact[0].gender"]


def test_ids_are_r4_ids_everywhere() -> None:
    """Resource.id: 1 to 64 of A-Z a-z 0-9 - ., for contained resources too."""
    assert expressions(notebook_patient(id="x" * 65), "Patient") == ["Patient.id"]
    patient = notebook_patient(id="x" * 64, contained=[{"resourceType": "Practitioner", "id": "gp 1"}],
                               generalPractitioner=[{"reference": "#gp 1"}])
    assert expressions(patient, "Patient") == ["Patient.contained[0].id"]


def test_attachment_size_must_match_its_data() -> None:
    media = {"resourceType": "Media", "status": "completed",
             "content": {"contentType": "text/plain", "data": "UGFuc2VtZW50IHJlZmFpdA==", "size": 100}}
    assert expressions(media, "Media") == ["Media.content.size"]
    media["content"]["size"] = 16
    assert expressions(media, "Media") == []


def test_bundle_full_urls_are_absolute_and_link_relations_unique() -> None:
    bundle = {"resourceType": "Bundle", "type": "collection",
              "link": [{"relation": "self", "url": "https://a.example/x"}, {"relation": "self", "url": "https://a.example/y"}],
              "entry": [{"fullUrl": "Patient/1", "resource": {"resourceType": "Patient"}},
                        {"fullUrl": "urn:uuid:0a1b2c3d-0000-4000-8000-000000000000", "resource": {"resourceType": "Patient"}},
                        {"fullUrl": "https://a.example/fhir/Patient/2", "resource": {"resourceType": "Patient"}}]}
    assert sorted(expressions(bundle, "Bundle")) == ["Bundle.entry[0].fullUrl", "Bundle.link[1]"]


def test_coding_systems_are_absolute_and_composites_have_components() -> None:
    entry = notebook_entry("p1")
    entry["category"] = [{"coding": [{"system": "Location1", "code": "x"}]}]
    assert expressions(entry, "Communication") == ["Communication.category[0].coding[0].system"]
    parameter = {"resourceType": "SearchParameter", "url": "https://calipso.example/sp", "name": "x", "status": "active",
                 "description": "x", "code": "x", "base": ["DocumentReference"], "type": "composite",
                 "expression": "DocumentReference.relatesTo"}
    assert expressions(parameter, "SearchParameter") == ["SearchParameter.component"]


def test_r4_evidence_is_r4_not_r4b() -> None:
    """R4B redesigned Evidence: an R4 one (with R4's exposureBackground) is valid R4, and an
    R4B-only element is not."""
    evidence = {"resourceType": "Evidence", "status": "active",
                "exposureBackground": {"reference": "EvidenceVariable/population"},
                "outcome": [{"reference": "EvidenceVariable/outcome"}]}
    assert validator.validate(evidence, "Evidence") == []
    assert expressions({**evidence, "variableDefinition": [{"variableRole": {"text": "x"}}]}, "Evidence") == ["Evidence.variableDefinition"]


def test_r4_evidence_variable_is_r4() -> None:
    """The republished R4 definitions carry a later EvidenceVariable snapshot beside R4's
    differential: the digest follows the differential (spec/build.py), so R4's characteristic
    (definition[x], usageContext, participantEffective[x]) is valid and the later one is not."""
    variable = {"resourceType": "EvidenceVariable", "status": "active", "characteristic": [{
        "definitionCodeableConcept": {"text": "Patients de plus de 75 ans"}, "exclude": False,
        "usageContext": [{"code": {"system": "http://terminology.hl7.org/CodeSystem/usage-context-type", "code": "age"},
                          "valueRange": {"low": {"value": 75, "unit": "a", "system": "http://unitsofmeasure.org", "code": "a"}}}],
        "participantEffectivePeriod": {"start": "2026-01-01"}, "groupMeasure": "mean"}]}
    assert validator.validate(variable, "EvidenceVariable") == []
    later = {"resourceType": "EvidenceVariable", "status": "active", "characteristic": [{
        "definitionByTypeAndValue": {"type": {"text": "age"}, "valueQuantity": {"value": 75}}}]}
    assert sorted(expressions(later, "EvidenceVariable")) == ["EvidenceVariable.characteristic[0].definition",  # R4 requires one
                                                              "EvidenceVariable.characteristic[0].definitionByTypeAndValue"]
