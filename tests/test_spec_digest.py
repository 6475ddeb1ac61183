"""The committed R4 digest holds what the server relies on."""

from __future__ import annotations

from fhir_server.spec import load_spec
from fhir_server.spec.build import _split_expression

spec = load_spec()


def test_resource_types_are_the_concrete_r4_ones() -> None:
    assert spec.fhir_version == "4.0.1"
    assert len(spec.resource_types) == 146
    assert "SubscriptionStatus" not in spec.resource_types  # an R4B type in the republished definitions
    assert {"Communication", "CarePlan", "CareTeam", "Patient", "PractitionerRole", "RelatedPerson", "Encounter"} <= spec.resource_types
    assert not spec.is_resource_type("DomainResource") and not spec.is_resource_type("Resource")


def test_structures_expand_choices_and_backbones() -> None:
    payload = spec.structures["Communication.payload"]
    assert {"contentString", "contentAttachment", "contentReference"} <= set(payload)
    assert payload["contentString"] == {"min": 1, "type": "string", "choice": "content"}
    contact = spec.structures["Patient"]["contact"]
    assert contact["array"] is True and contact["type"] == "Patient.contact"
    assert [i[0] for i in contact["invariants"]] == ["pat-1"]  # the element's own constraint
    assert spec.structures["Questionnaire.item"]["item"]["type"] == "Questionnaire.item"


def test_search_parameters_are_split_per_base() -> None:
    patient_param = spec.search_parameters["CareTeam"]["patient"]
    assert patient_param["type"] == "reference"
    assert patient_param["expression"] == "CareTeam.subject.where(resolve() is Patient)"
    assert spec.search_parameters["Communication"]["sent"]["expression"] == "Communication.sent"
    assert spec.search_parameters["Resource"]["_lastUpdated"]["type"] == "date"


def test_invariants_of_types_and_resources() -> None:
    assert [i[0] for i in spec.invariants["Reference"]] == ["ref-1"]
    assert [i[0] for i in spec.invariants["Communication"]] == ["dom-2", "dom-3", "dom-4", "dom-5", "dom-6"]
    assert all(i[0] != "ele-1" for found in spec.invariants.values() for i in found)  # native, not FHIRPath


def test_patient_compartment() -> None:
    assert spec.compartments["Patient"]["Communication"] == ["subject", "sender", "recipient"]


def test_split_expression_respects_parentheses() -> None:
    expression = "(A.x as Quantity) | B.y | (A.z as Range)"
    assert _split_expression(expression, "A") == "(A.x as Quantity) | (A.z as Range)"
    assert _split_expression(expression, "C") is None
