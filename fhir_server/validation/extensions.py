"""Extensions checked against what defines them.

- A core R4 extension (spec/r4-extensions.json) must carry a value of a type its definition
  allows (none for a complex one): an error otherwise, as in the HL7 Java validator. It should
  sit where one of its contexts allows: on an element of that type (`HumanName`), at that path
  (`Patient.birthDate`), on that element of a type (`HumanName.family`: the `_family` of any
  HumanName), anywhere (`Element`), on a resource (`Resource`, `DomainResource`). Out of context
  is an error, as in the HL7 Java validator (test case maiden-name-extension), except where
  R4's own definition files use the extension (extension-contexts.json: the snapshots put
  `structuredefinition-fhir-type` on `ElementDefinition.type`, its context says `.type.code`).
- An extension nobody here defines (a national or a vendor one) is accepted: a warning in
  `$validate` says it was not checked. Refusing it would bounce a hospital's data for an
  extension calipso has not been told about.

Only top-level extensions are checked: the parts of a complex extension have relative urls
that their definition, not the context, gives meaning to.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

from fhir_server.outcome import Issue
from fhir_server.spec import Spec

DEFINITIONS_FILE = Path(__file__).resolve().parent.parent / "spec" / "r4-extensions.json"
R4_OWN_USES_FILE = Path(__file__).with_name("extension-contexts.json")
ANYWHERE = frozenset({"Element"})
ON_RESOURCES = frozenset({"Resource", "DomainResource"})
# R4 profiles of Quantity that are types of their own in the digest
QUANTITY_KINDS = frozenset({"Age", "Count", "Distance", "Duration", "MoneyQuantity", "SimpleQuantity"})


@dataclass(frozen=True)
class Definition:
    types: frozenset[str]  # lower-cased value types; empty: a complex extension (no value)
    contexts: tuple[str, ...]


@dataclass(frozen=True)
class _Place:
    """Where an extension sits: the names a context may give for it."""

    names: frozenset[str]
    on_resource: bool


@lru_cache(maxsize=1)
def core_extensions() -> dict[str, Definition]:
    data = json.loads(DEFINITIONS_FILE.read_text(encoding="utf-8"))
    r4_own_uses = json.loads(R4_OWN_USES_FILE.read_text(encoding="utf-8"))
    return {url: Definition(frozenset(t.lower() for t in d["types"]), tuple(d["contexts"]) + tuple(r4_own_uses.get(url, ())))
            for url, d in data.items()}


class ExtensionChecker:
    """Checks every top-level extension of a resource (contained ones included)."""

    def __init__(self, spec: Spec, known: frozenset[str] = frozenset()):
        self._spec = spec
        self._known = known  # urls defined elsewhere (our guide): not "unknown"

    def check(self, resource: dict[str, Any], resource_type: str) -> list[Issue]:
        issues: list[Issue] = []
        definitions = core_extensions()
        for extension, place, location in self._extensions(resource, resource_type):
            url = extension.get("url")
            if not isinstance(url, str):
                continue  # the structural pass reports a missing url
            definition = definitions.get(url)
            if definition is None:
                if url not in self._known:
                    issues.append(Issue("informational", f"Extension {url[:120]} has no definition here: not checked",
                                        severity="warning", expression=location))
                continue
            issues.extend(_misuse(extension, url, definition, place, location))
        return issues

    def _extensions(self, resource: dict[str, Any], resource_type: str) -> Iterator[tuple[dict[str, Any], _Place, str]]:
        """(extension, where it sits, its location) for every top-level extension, iteratively."""
        stack: list[tuple[dict[str, Any], str, str, str, bool]] = [(resource, resource_type, resource_type, resource_type, True)]
        while stack:
            value, type_name, path, location, is_resource = stack.pop()
            members = self._spec.structures.get(type_name, {})
            for key, item in value.items():
                if key in ("extension", "modifierExtension"):
                    place = _Place(frozenset({type_name, path}), is_resource)
                    yield from _each(item, place, f"{location}.{key}")
                elif key.startswith("_") and key[1:] in members:
                    field = key[1:]
                    place = _Place(frozenset({f"{path}.{field}", f"{type_name}.{field}", members[field]["type"]}), False)
                    holders = item if isinstance(item, list) else [item]
                    for index, holder in enumerate(holders):
                        if isinstance(holder, dict):
                            where = f"{location}.{field}[{index}]" if isinstance(item, list) else f"{location}.{field}"
                            yield from _each(holder.get("extension"), place, f"{where}.extension")
                elif key in members:
                    kind = members[key]["type"]
                    children = item if isinstance(item, list) else [item]
                    for index, child in enumerate(children):
                        if not isinstance(child, dict):
                            continue
                        where = f"{location}.{key}[{index}]" if isinstance(item, list) else f"{location}.{key}"
                        if kind == "Resource":
                            contained = child.get("resourceType")
                            if isinstance(contained, str):
                                stack.append((child, contained, contained, where, True))
                        elif kind not in ("Extension",):
                            stack.append((child, kind, f"{path}.{key}" if "." not in kind else kind, where, False))


def _each(extensions: Any, place: _Place, location: str) -> Iterator[tuple[dict[str, Any], _Place, str]]:
    for index, extension in enumerate(extensions if isinstance(extensions, list) else []):
        if isinstance(extension, dict):
            yield extension, place, f"{location}[{index}]"


def _misuse(extension: dict[str, Any], url: str, definition: Definition, place: _Place, location: str) -> list[Issue]:
    issues = []
    value_keys = [k for k in extension if k.startswith("value") and len(k) > 5 and k[5].isupper()]
    for key in value_keys:
        if key[5:].lower() not in definition.types:
            allowed = ", ".join(sorted(definition.types)) or "none (a complex extension)"
            issues.append(Issue("structure", f"Extension {url} takes a value of type {allowed}, not {key}",
                                expression=f"{location}.{key}"))
    if not _allowed_at(definition.contexts, place):
        issues.append(Issue("structure", f"Extension {url} is used outside its contexts ({', '.join(definition.contexts)[:200]})",
                            expression=location))
    return issues


def _allowed_at(contexts: tuple[str, ...], place: _Place) -> bool:
    if not contexts:
        return True
    names = set(place.names)
    if names & QUANTITY_KINDS:
        names.add("Quantity")
    for context in contexts:
        if context in ANYWHERE or context in names:
            return True
        if context in ON_RESOURCES and place.on_resource:
            return True
        if context == "BackboneElement" and any("." in n for n in place.names):
            return True
        if any(c in context for c in "()[]"):
            return True  # a FHIRPath context: not evaluated here
    return False


__all__ = ["ExtensionChecker", "core_extensions"]
