"""Definition resources checked against the core R4 search parameters they build on, as the
HL7 Java validator does (test cases sp-diff-type, sp-diff-base, capstmt):

- a SearchParameter `derivedFrom` a core one keeps its type, and each of its bases is one of
  the parent's bases;
- each path of a SearchParameter's `expression` (the parts of a `|` union) starts with one of
  its bases, when it starts with a resource type at all;
- a CapabilityStatement's `rest.resource.searchParam` whose `definition` is a core search
  parameter declares that parameter's type;
- each `path` of a StructureDefinition's differential is an element of its R4 type: a member
  name, a choice as `value[x]` or named by one of its types (`valueQuantity`), through data
  types and backbone elements (test case obs-mz: `Observation.valueBla`). Logical models and
  types R4 does not define are left alone.

Checked on the resource, its contained resources and a Bundle's entries. Search parameters of
our guide or of others are not known here and are left alone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterator

from fhir_server.outcome import Issue
from fhir_server.spec import Spec
from fhir_server.validation.invariants import top_level_split

ANY_RESOURCE = frozenset({"Resource", "DomainResource"})
LEADING_NAME = re.compile(r"\(*\s*([A-Z][A-Za-z]*)\b")
MAX_NESTING = 8  # Bundles in Bundles: deeper ones are not looked into
PRIMITIVE_MEMBERS = {"id": {"type": "string"}, "extension": {"type": "Extension"}}  # a primitive's element children


@dataclass(frozen=True)
class CoreParameter:
    type: str
    bases: frozenset[str]


class DefinitionChecker:
    """Checks SearchParameters and CapabilityStatements against the core search parameters, and
    StructureDefinitions' differential paths against the core types."""

    def __init__(self, spec: Spec):
        self._spec = spec
        found: dict[str, tuple[str, set[str]]] = {}
        for base, parameters in spec.search_parameters.items():
            for info in parameters.values():
                kind, bases = found.setdefault(info["url"], (info["type"], set()))
                bases.add(base)
        self._core = {url: CoreParameter(kind, frozenset(bases)) for url, (kind, bases) in found.items()}

    def check(self, resource: dict[str, Any], resource_type: str) -> list[Issue]:
        issues: list[Issue] = []
        for inner, location in _resources(resource, resource_type):
            kind = inner.get("resourceType")
            if kind == "SearchParameter":
                issues.extend(self._search_parameter(inner, location))
            elif kind == "CapabilityStatement":
                issues.extend(self._capability_statement(inner, location))
            elif kind == "StructureDefinition":
                issues.extend(self._structure_definition(inner, location))
        return issues

    def _core_parameter(self, canonical: Any) -> CoreParameter | None:
        return self._core.get(canonical.split("|", 1)[0]) if isinstance(canonical, str) else None

    def _search_parameter(self, parameter: dict[str, Any], location: str) -> list[Issue]:
        issues = []
        bases = [b for b in parameter.get("base") or [] if isinstance(b, str)]
        parent_url = parameter.get("derivedFrom")
        parent = self._core_parameter(parent_url)
        if parent is not None:
            if isinstance(parameter.get("type"), str) and parameter["type"] != parent.type:
                issues.append(Issue("business-rule", f"The type {parameter['type']} is not the type {parent.type} of "
                                    f"{parent_url} it is derived from", expression=f"{location}.type"))
            for base in bases:
                if base not in parent.bases and not parent.bases & ANY_RESOURCE:
                    issues.append(Issue("business-rule", f"{base} is not a base of {parent_url}, which this "
                                        "SearchParameter is derived from", expression=f"{location}.base"))
        expression = parameter.get("expression")
        if isinstance(expression, str) and bases and not set(bases) & ANY_RESOURCE:
            for part in top_level_split(expression, "|"):
                named = LEADING_NAME.match(part)
                if named and self._spec.is_resource_type(named.group(1)) and named.group(1) not in bases:
                    issues.append(Issue("invalid", f"The expression path '{part[:80]}' starts with {named.group(1)}, "
                                        f"which is not a base of this SearchParameter ({', '.join(bases)[:80]})",
                                        expression=f"{location}.expression"))
        return issues

    def _capability_statement(self, statement: dict[str, Any], location: str) -> list[Issue]:
        issues = []
        for r, rest in enumerate(_objects(statement.get("rest"))):
            for s, declared in enumerate(_objects(rest.get("resource"))):
                for p, search in enumerate(_objects(declared.get("searchParam"))):
                    core = self._core_parameter(search.get("definition"))
                    if core is not None and isinstance(search.get("type"), str) and search["type"] != core.type:
                        issues.append(Issue("invalid", f"Search parameter {search['definition'][:100]} is of type "
                                            f"{core.type}, not {search['type']}",
                                            expression=f"{location}.rest[{r}].resource[{s}].searchParam[{p}].type"))
        return issues

    def _structure_definition(self, definition: dict[str, Any], location: str) -> list[Issue]:
        differential = definition.get("differential")
        elements = _objects(differential.get("element")) if isinstance(differential, dict) else []
        if definition.get("kind") == "logical" or definition.get("type") not in self._spec.structures:
            return []
        issues = []
        for index, element in enumerate(elements):
            path = element.get("path")
            if isinstance(path, str) and not self._is_element(path, definition["type"]):
                issues.append(Issue("invalid", f"The differential names {path[:120]}, which is not an element of {definition['type']}",
                                    expression=f"{location}.differential.element[{index}].path"))
        return issues

    def _is_element(self, path: str, type_name: str) -> bool:
        """Does `path` (`Observation.component.valueQuantity.code`) name an element of `type_name`?"""
        steps = path.split(".")
        if steps[0] != type_name:
            return False
        current = {type_name}
        for step in steps[1:]:
            found: set[str] = set()
            for structure in current:
                if structure == "Resource":
                    return True  # a resource inside (contained, Bundle.entry.resource): not followed
                members = self._spec.structures.get(structure)
                if members is None:
                    if structure not in self._spec.primitives:
                        return True  # a type the digest does not describe: not followed
                    members = PRIMITIVE_MEMBERS
                if step.endswith("[x]"):
                    found.update(info["type"] for info in members.values() if info.get("choice") == step[:-3])
                elif step in members:
                    found.add(members[step]["type"])
            if not found:
                return False
            current = found
        return True


def _objects(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _resources(resource: dict[str, Any], location: str, depth: int = 0) -> Iterator[tuple[dict[str, Any], str]]:
    """The resource, its contained resources and (in a Bundle) its entries' resources."""
    yield resource, location
    if depth >= MAX_NESTING:
        return
    for index, contained in enumerate(_objects(resource.get("contained"))):
        yield from _resources(contained, f"{location}.contained[{index}]", depth + 1)
    if resource.get("resourceType") == "Bundle":
        for index, entry in enumerate(_objects(resource.get("entry"))):
            inner = entry.get("resource")
            if isinstance(inner, dict):
                yield from _resources(inner, f"{location}.entry[{index}].resource", depth + 1)


__all__ = ["DefinitionChecker"]
