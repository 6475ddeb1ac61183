"""The Implementation Guide in profiles/: its examples, its invalid examples, its snapshots."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from fhir_server.ig import load_guide, read_json_folder
from fhir_server.spec import load_spec
from fhir_server.validation import Validator
from tests.conftest import project_root
from tests.fhir_schema import schema_errors

PROFILES = project_root() / "profiles"
INVALID = PROFILES / "invalid"
EXPECTED = json.loads((INVALID / "expected.json").read_text(encoding="utf-8"))
guide = load_guide()
validator = Validator(load_spec(), guide)


def _example_ids() -> list[str]:
    return [path.name for path in sorted((PROFILES / "examples").glob("*.json"))]


@pytest.mark.parametrize("name", _example_ids())
def test_every_example_is_valid_against_its_profile(name: str) -> None:
    example = json.loads((PROFILES / "examples" / name).read_text(encoding="utf-8"))
    issues = validator.validate_all(example, example["resourceType"])
    assert issues == []
    assert schema_errors(example) == []
    assert validator.claimed_profiles(example), "each example names one of our profiles"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_invalid_example_fails_for_its_reason(name: str) -> None:
    resource = json.loads((INVALID / name).read_text(encoding="utf-8"))
    expected = EXPECTED[name]
    issues = validator.validate_all(resource, resource["resourceType"])
    errors = [i for i in issues if i.severity == "error"]
    assert [i.expression for i in errors] == [expected["expression"]], (expected["reason"], errors)
    assert validator.validate_write(resource, resource["resourceType"]), "a write would be refused too"
    assert schema_errors(resource) == [], "broken only by our profile, not by base R4"


def _with_reference_ids(value: Any, new_id: str) -> Any:
    """The value with every `Type/id` reference pointing at `Type/<new_id>` instead."""
    if isinstance(value, dict):
        return {k: (f"{v.split('/')[0]}/{new_id}" if k == "reference" and isinstance(v, str) and "/" in v else _with_reference_ids(v, new_id))
                for k, v in value.items()}
    if isinstance(value, list):
        return [_with_reference_ids(item, new_id) for item in value]
    return value


def _referencing() -> list[tuple[str, str]]:
    found = [("examples", n) for n in _example_ids()] + [("invalid", n) for n in sorted(EXPECTED)]
    return [(folder, name) for folder, name in found if '"reference"' in (PROFILES / folder / name).read_text(encoding="utf-8")]


@pytest.mark.parametrize("folder,name", _referencing())
def test_validation_sees_a_reference_by_its_target_type_only(folder: str, name: str) -> None:
    """What a transaction relies on to validate while its lookups run: a resource whose
    references stand in for their targets (`Type/stand-in`) gets the verdict of the resource
    whose references were resolved."""
    resource = json.loads((PROFILES / folder / name).read_text(encoding="utf-8"))
    for other in ("stand-in", "7c9e6679-7425-40de-944b-e07fc1f90ae7"):
        moved = _with_reference_ids(resource, other)
        assert moved != resource
        assert validator.validate_write(moved, resource["resourceType"]) == validator.validate_write(resource, resource["resourceType"])


def test_invalid_folder_and_expectations_match() -> None:
    on_disk = {p.name for p in INVALID.glob("*.json") if p.name != "expected.json"}
    assert on_disk == set(EXPECTED)


def test_every_profile_has_one_example_and_the_guide_lists_everything() -> None:
    examples = guide.examples
    claimed = [e["meta"]["profile"][0] for e in examples]
    assert sorted(claimed) == sorted(guide.profiles)
    listed = {r["reference"]["reference"] for r in guide.guide["definition"]["resource"]}
    artifacts = {f"{a['resourceType']}/{a['id']}" for a in guide.artifacts if a["resourceType"] != "ImplementationGuide"}
    assert listed == artifacts | {f"{e['resourceType']}/{e['id']}" for e in examples}


def test_the_canonical_is_stated_once_and_every_url_follows_it() -> None:
    canonical = guide.canonical
    for artifact in guide.artifacts:
        assert artifact["url"] == f"{canonical}/{artifact['resourceType']}/{artifact['id']}"
        assert artifact["version"] == guide.version
    for path in PROFILES.glob("*.json"):
        resource = json.loads(path.read_text(encoding="utf-8"))
        assert path.name == f"{resource['resourceType']}-{resource['id']}.json"


@pytest.mark.parametrize("url", sorted(guide.profiles))
def test_snapshots_are_complete_and_carry_the_differential(url: str) -> None:
    profile = guide.profiles[url]
    elements = profile["snapshot"]["element"]
    ids = [e["id"] for e in elements]
    assert len(ids) == len(set(ids))
    assert ids[0] == profile["type"]
    by_id = {e["id"]: e for e in elements}
    for differential in profile["differential"]["element"]:
        merged = by_id[differential["id"]]
        for key, value in differential.items():
            if key == "constraint":
                assert all(c in merged["constraint"] for c in value)
            else:
                assert merged[key] == value
    for element in elements:  # every element sits under its parent, slices under the sliced element
        if "." in element["id"] or ":" in element["id"]:
            parent = element["id"][: max(element["id"].rfind("."), element["id"].rfind(":"))]
            assert parent in by_id, element["id"]
    assert schema_errors(profile) == []


def test_slice_children_come_from_the_data_type() -> None:
    patient = {e["id"]: e for e in guide.profiles[f"{guide.canonical}/StructureDefinition/notebook-patient"]["snapshot"]["element"]}
    system = patient["Patient.identifier:INS-NIR.system"]
    assert system["path"] == "Patient.identifier.system"
    assert system["type"] == [{"code": "uri"}]
    assert system["binding"]["valueSet"].endswith("/ValueSet/ins-nir-system")
    assert patient["Patient.identifier:INS-NIR"]["sliceName"] == "INS-NIR"
    assert patient["Patient.identifier"]["slicing"]["discriminator"] == [{"type": "pattern", "path": "type"}]


def test_our_search_parameters_extend_r4() -> None:
    codes = {sp["code"] for sp in guide.search_parameters()}
    assert codes == {"priority", "in-response-to"}
    assert not {"priority", "in-response-to"} & set(load_spec().search_parameters["Communication"])


def _calipso(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "fhir_server.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=project_root())


def test_calipso_validate_reports_each_file() -> None:
    good = _calipso("validate", str(PROFILES / "examples" / "Communication-example-entry.json"))
    assert good.returncode == 0, good.stdout + good.stderr
    assert ": OK" in good.stdout
    bad = _calipso("validate", str(PROFILES / "examples" / "Patient-example-patient.json"), str(INVALID / "Patient-ins-wrong-system.json"))
    assert bad.returncode == 1
    assert "Patient-example-patient.json: OK" in bad.stdout
    assert "INVALID" in bad.stdout and "Patient.identifier[1].system" in bad.stdout


def test_calipso_validate_with_an_explicit_profile_and_unreadable_files(tmp_path: Path) -> None:
    plain = tmp_path / "plain.json"
    entry = json.loads((PROFILES / "examples" / "Communication-example-entry.json").read_text(encoding="utf-8"))
    del entry["meta"], entry["sender"]
    plain.write_text(json.dumps(entry))
    assert _calipso("validate", str(plain)).returncode == 0  # base R4 alone: sender is optional
    checked = _calipso("validate", "--profile", f"{guide.canonical}/StructureDefinition/notebook-entry", str(plain))
    assert checked.returncode == 1 and "Communication.sender" in checked.stdout
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    assert _calipso("validate", str(broken)).returncode == 2


def test_guide_folder_is_read_from_disk_not_from_shared() -> None:
    assert all("shared" not in str(p) for p in PROFILES.parents)
    assert len(read_json_folder(PROFILES)) == len(guide.artifacts)

