"""The search parameters each resource type offers, compiled once from the R4 digest."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from typing import Any

import orjson

from fhir_server.search.fhirpath import Extractor, compiler_for
from fhir_server.spec import Spec

INDEXED_TYPES = frozenset({"token", "reference", "string", "date", "number", "quantity", "uri"})
# Common parameters answered from stored fields rather than index entries.
FIELD_PARAMETERS = {"_id": "token", "_lastUpdated": "date"}


@dataclass(frozen=True)
class Parameter:
    """One search parameter of one resource type."""

    code: str
    type: str
    extract: Extractor | None = field(repr=False, compare=False)
    targets: tuple[str, ...] = ()
    expression: str = ""


class Parameters:
    """Lookup of compiled parameters: `for_type("Communication")["subject"]`."""

    def __init__(self, spec: Spec, extra: tuple[dict[str, Any], ...] = ()):
        self._spec = spec
        self._extra: dict[str, dict[str, dict[str, Any]]] = {}
        for sp in extra:  # SearchParameter resources of our guide, added to the R4 ones
            for base in sp["base"]:
                self._extra.setdefault(base, {})[sp["code"]] = {
                    "type": sp["type"],
                    "url": sp["url"],
                    "expression": sp["expression"],
                    **({"target": sp["target"]} if "target" in sp else {}),
                }
        self._by_type: dict[str, dict[str, Parameter]] = {}

    def for_type(self, resource_type: str) -> dict[str, Parameter]:
        compiled = self._by_type.get(resource_type)
        if compiled is None:
            compiled = self._compile(resource_type)
            self._by_type[resource_type] = compiled
        return compiled

    def _compile(self, resource_type: str) -> dict[str, Parameter]:
        compiler = compiler_for(self._spec)
        found: dict[str, Parameter] = {code: Parameter(code, kind, None) for code, kind in FIELD_PARAMETERS.items()}
        definitions: dict[str, dict[str, Any]] = {}
        for base in ("Resource", "DomainResource", resource_type):
            definitions.update(self._spec.search_parameters.get(base, {}))
            definitions.update(self._extra.get(base, {}))
        for code, definition in definitions.items():
            if code in found or definition["type"] not in INDEXED_TYPES or "expression" not in definition:
                continue
            expression = definition["expression"]
            extract = compiler.compile(expression, resource_type)
            if extract is not None:
                found[code] = Parameter(code, definition["type"], extract, tuple(definition.get("target", ())), expression)
        return found


@cache
def _parameters(spec: Spec, extra: bytes) -> Parameters:
    return Parameters(spec, tuple(orjson.loads(extra)))


def parameters_for(spec: Spec, extra: list[dict[str, Any]] | tuple[dict[str, Any], ...] = ()) -> Parameters:
    """Compiled parameters for the R4 digest plus `extra` SearchParameters, one per combination."""
    return _parameters(spec, orjson.dumps(list(extra), option=orjson.OPT_SORT_KEYS))


__all__ = ["FIELD_PARAMETERS", "Parameter", "Parameters", "parameters_for"]
