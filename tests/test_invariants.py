"""Core FHIRPath invariants: fhirpathpy is the judge; the shortcuts never disagree with it."""

from __future__ import annotations

from typing import Any

import httpx

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fhir_server.spec import load_spec
from fhirpathpy.engine.nodes import ResourceNode

from fhir_server.validation.invariants import SHORTCUTS, CoreInvariants, Invariant, _compiled, _vacuous_without

spec = load_spec()


class _Judge:
    """An invariant evaluated by fhirpathpy alone: no guard, no shortcut."""

    def __init__(self, expression: str):
        self._expression = expression

    def verdict(self, value: Any, type_name: str, resource: dict[str, Any]) -> bool | None:
        try:
            result = _compiled(self._expression)(ResourceNode.create_node(value, type_name), {"resource": resource, "rootResource": resource})
        except Exception:  # noqa: BLE001 - as Invariant.verdict: what fhirpathpy cannot evaluate
            return None
        return result != [False]


def _core(type_name: str, key: str) -> tuple[Invariant, _Judge]:
    """The invariant with its guard and shortcut, and the same evaluated by fhirpathpy alone."""
    entry = next(e for e in spec.invariants[type_name] if e[0] == key)
    return Invariant(*entry), _Judge(entry[3])


references = st.fixed_dictionaries(
    {},
    optional={
        "reference": st.one_of(st.sampled_from(["#p", "#missing", "Patient/1", "#"]), st.text(max_size=8)),
        "display": st.text(min_size=1, max_size=5),
    },
)
extensions = st.fixed_dictionaries(
    {"url": st.just("http://example.org/x")},
    optional={"valueString": st.just("v"), "valueBoolean": st.booleans(), "extension": st.just([{"url": "y", "valueString": "z"}])},
)
periods = st.fixed_dictionaries({}, optional={"start": st.sampled_from(["2026-01-01", "2026-06-01T10:00:00Z"]), "end": st.sampled_from(["2025-12-31", "2026-03-01"])})
ROOT = {"resourceType": "Communication", "status": "completed", "contained": [{"resourceType": "Patient", "id": "p"}]}


def _agree(type_name: str, key: str, value: Any) -> None:
    fast, judge = _core(type_name, key)
    assert fast.verdict(value, type_name, ROOT) == judge.verdict(value, type_name, ROOT)


@settings(max_examples=60, deadline=None)
@given(references)
def test_ref1_shortcut_agrees_with_fhirpathpy(value: dict[str, Any]) -> None:
    _agree("Reference", "ref-1", value)


@settings(max_examples=40, deadline=None)
@given(extensions)
def test_ext1_shortcut_agrees_with_fhirpathpy(value: dict[str, Any]) -> None:
    _agree("Extension", "ext-1", value)


@settings(max_examples=30, deadline=None)
@given(periods)
def test_per1_shortcut_agrees_with_fhirpathpy(value: dict[str, Any]) -> None:
    _agree("Period", "per-1", value)


def test_per1_at_mixed_precisions_fails_when_fhirpath_cannot_order_them() -> None:
    """FHIRPath gives empty for a date start and a dateTime end on the same day; the HL7 Java
    validator fails per-1 there (validator test case `encounter-period`), and so do we."""
    per1, _ = _core("Period", "per-1")
    assert per1.verdict({"start": "2023-06-21", "end": "2023-06-21T06:20:00Z"}, "Period", ROOT) is False
    assert per1.verdict({"start": "2023-06", "end": "2023-06-21"}, "Period", ROOT) is False
    assert per1.verdict({"start": "2023-06-20", "end": "2023-06-21T06:20:00Z"}, "Period", ROOT) is True
    assert per1.verdict({"start": "2023-06-21T08:00:00+02:00", "end": "2023-06-21T06:20:00Z"}, "Period", ROOT) is True
    assert per1.verdict({"start": "2023-06-21T09:00:00+02:00", "end": "2023-06-21T06:20:00Z"}, "Period", ROOT) is False


def test_dom6_shortcut_agrees_with_fhirpathpy() -> None:
    with_text = dict(ROOT, text={"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">x</div>'})
    for value in (ROOT, with_text):
        _agree("Communication", "dom-6", value)
    assert set(SHORTCUTS) >= {"ref-1", "ext-1", "per-1", "dom-6", "dom-2", "dom-3", "dom-4", "dom-5"}


def test_contained_shortcuts_agree_with_fhirpathpy() -> None:
    """dom-2 to dom-5 hold without contained resources; with some, fhirpathpy still judges."""
    bare = {"resourceType": "Communication", "status": "completed", "payload": [{"contentString": "x"}]}
    nested = dict(ROOT, contained=[{"resourceType": "Patient", "id": "p", "meta": {"versionId": "2", "security": [{"code": "R"}]},
                                    "contained": [{"resourceType": "Patient", "id": "q"}]}])
    unreferenced = dict(ROOT, contained=[{"resourceType": "Patient", "id": "p"}], subject={"reference": "Patient/1"})
    for key in ("dom-2", "dom-3", "dom-4", "dom-5"):
        for value in (bare, ROOT, nested, unreferenced):
            _agree("Communication", key, value)
        fast, judge = _core("Communication", key)
        assert fast.verdict(bare, "Communication", bare) is True
        assert judge.verdict(nested, "Communication", nested) is not True or key == "dom-3"  # the judge still sees failures


def test_known_failures_are_reported_where_they_are() -> None:
    checker = CoreInvariants(spec)
    resource = {
        "resourceType": "Encounter",
        "status": "finished",
        "class": {"code": "IMP"},
        "period": {"start": "2026-11-12", "end": "2026-11-02"},
        "subject": {"reference": "#nobody"},
        "contained": [{"resourceType": "Patient", "id": "p", "contained": [{"resourceType": "Patient", "id": "q"}]}],
    }
    found = {(i.diagnostics.split(" ")[1], i.expression) for i in checker.check(resource, "Encounter")}
    assert ("per-1", "Encounter.period") in found
    assert ("ref-1", "Encounter.subject") in found
    assert ("dom-2", "Encounter") in found
    assert ("dom-3", "Encounter") in found  # the contained Patient is referred to by nothing


def test_participant_resolve_is_by_type() -> None:
    checker = CoreInvariants(spec)
    team = {"resourceType": "CareTeam", "participant": [
        {"member": {"reference": "Practitioner/1"}, "onBehalfOf": {"reference": "Organization/o"}},
        {"member": {"reference": "Patient/1"}, "onBehalfOf": {"reference": "Organization/o"}}]}
    found = [(i.diagnostics.split(" ")[1], i.expression) for i in checker.check(team, "CareTeam") if i.severity == "error"]
    assert found == [("ctm-1", "CareTeam.participant[1]")]


def test_vacuous_guard_only_for_single_path_emptiness() -> None:
    assert _vacuous_without("contained.contained.empty()") == "contained"
    assert _vacuous_without("contained.meta.versionId.empty() and contained.meta.lastUpdated.empty()") == "contained"
    assert _vacuous_without("a.empty() and b.empty()") is None
    assert _vacuous_without("a.where(x = 'y and z').empty()") == "a"
    assert _vacuous_without("text.`div`.exists()") is None


def test_vacuous_guard_for_a_disjunct_or_a_premise() -> None:
    assert _vacuous_without("contained.empty() or text.exists()") == "contained"
    assert _vacuous_without("received.empty() or sent.empty() or received >= sent") == "received"
    assert _vacuous_without("onBehalfOf.exists() implies (member.resolve().iif(empty(), true, ofType(Practitioner).exists()))") == "onBehalfOf"
    assert _vacuous_without("a.empty() or b implies c") is None  # (a.empty() or b) implies c: not true without a
    assert _vacuous_without("a.empty() xor b.exists()") is None
    assert _vacuous_without("a.exists() and b.exists() implies c") is None
    assert _vacuous_without("x and a.empty() or y") is None
    assert _vacuous_without("a.exists() implies b implies c") is None


GUARDED = {  # type as the walker names it, the invariant, values with and without the guarding member
    "ctm-1": ("CareTeam.participant", spec.structures["CareTeam"]["participant"]["invariants"][0],
              [{"member": {"reference": "Practitioner/1"}}, {"member": {"reference": "Patient/1"}, "onBehalfOf": {"reference": "Organization/1"}},
               {"member": {"reference": "Practitioner/1"}, "onBehalfOf": {"reference": "Organization/1"}}]),
    "cpt-2": ("ContactPoint", spec.invariants["ContactPoint"][0], [{"value": "0325000001"}, {"system": "phone", "value": "1"}, {"system": "phone"}]),
    "obs-7": ("Observation", next(e for e in spec.invariants["Observation"] if e[0] == "obs-7"),
              [{"resourceType": "Observation", "status": "final", "code": {"coding": [{"system": "s", "code": "c"}]}, "valueQuantity": {"value": 1},
                "component": [{"code": {"coding": [{"system": "s", "code": "c"}]}}]},
               {"resourceType": "Observation", "status": "final", "code": {"text": "x"}}]),
    "received": ("Communication", ["received", "error", "received after sent", "received.empty() or sent.empty() or received >= sent"],
                 [{"resourceType": "Communication", "status": "completed", "sent": "2026-11-20"},
                  {"resourceType": "Communication", "status": "completed", "sent": "2026-11-20", "received": "2026-11-19"}]),
}


@pytest.mark.parametrize("name", sorted(GUARDED))
def test_guarded_invariants_agree_with_fhirpathpy(name: str) -> None:
    """With and without the guarding member, and with a choice-type member (`valueQuantity`
    is a `value` to FHIRPath), the guard never changes fhirpathpy's verdict."""
    type_name, entry, values = GUARDED[name]
    fast, judge = Invariant(*entry), _Judge(entry[3])
    assert fast.guard is not None
    verdicts = set()
    for value in values:
        resource = value if "resourceType" in value else ROOT
        verdicts.add(judge.verdict(value, type_name, resource))
        assert fast.verdict(value, type_name, resource) == judge.verdict(value, type_name, resource), (name, value)
    assert verdicts == {True, False}, (name, verdicts)  # the samples hold and break it


def test_a_contained_resource_may_refer_to_a_sibling() -> None:
    """ref-1 inside a contained resource: `#p1` names a resource contained by the container
    (%rootResource), as R4 allows (validator test case `document-manifest`)."""
    checker = CoreInvariants(spec)
    role = {
        "resourceType": "PractitionerRole",
        "contained": [
            {"resourceType": "Practitioner", "id": "p1", "name": [{"family": "Martin"}]},
            {"resourceType": "Organization", "id": "o1", "name": "Cabinet", "endpoint": [{"reference": "#p1"}]},
        ],
        "practitioner": {"reference": "#p1"},
        "organization": {"reference": "#o1"},
    }
    assert [i for i in checker.check(role, "PractitionerRole") if i.severity == "error"] == []
    role["contained"][1]["endpoint"] = [{"reference": "#nobody"}]
    failed = [i for i in checker.check(role, "PractitionerRole") if i.severity == "error"]
    assert [(i.diagnostics.split(" ")[1], i.expression) for i in failed] == [("ref-1", "PractitionerRole.contained[1].endpoint[0]")]


async def test_every_write_is_held_to_the_core_invariants(client: httpx.AsyncClient) -> None:
    """Not only resources claiming one of our profiles: a plain Encounter whose period ends
    before it starts, or a RiskAssessment over 100 %, is refused on create and in a Bundle."""
    encounter = {"resourceType": "Encounter", "status": "finished", "class": {"code": "IMP"},
                 "period": {"start": "2026-11-12", "end": "2026-11-02"}}
    refused = await client.post("/fhir/Encounter", json=encounter)
    assert refused.status_code == 422
    assert [(i["diagnostics"].split(" ")[1], i["expression"]) for i in refused.json()["issue"]] == [("per-1", ["Encounter.period"])]
    risk = {"resourceType": "RiskAssessment", "status": "final", "subject": {"reference": "Patient/x"},
            "prediction": [{"probabilityDecimal": 120}]}
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [{"resource": risk, "request": {"method": "POST", "url": "RiskAssessment"}}]}
    refused = await client.post("/fhir", json=bundle)
    assert refused.status_code == 422 and "ras-2" in refused.json()["issue"][0]["diagnostics"]
    encounter["period"]["end"] = "2026-11-20"
    assert (await client.post("/fhir/Encounter", json=encounter)).status_code == 201


def test_que12_is_applied_as_its_text_says() -> None:
    """R4 published `enableWhen.count() > 2`; its text (and R4B, R5, the Java validator) say
    'more than one' (validation/invariant-corrections.json)."""
    checker = CoreInvariants(spec)
    question = {"linkId": "2", "type": "string", "enableWhen": [  # answers of `exists` are booleans (que-7)
        {"question": "1", "operator": "exists", "answerBoolean": True}, {"question": "0", "operator": "exists", "answerBoolean": True}]}
    questionnaire = {"resourceType": "Questionnaire", "status": "active", "item": [question]}
    assert [i.diagnostics.split(" ")[1] for i in checker.check(questionnaire, "Questionnaire") if i.severity == "error"] == ["que-12"]
    question["enableBehavior"] = "all"
    assert [i for i in checker.check(questionnaire, "Questionnaire") if i.severity == "error"] == []
