"""Our CodeSystems and ValueSets: expansion, code validation and lookup.

Value sets are expanded from their `compose`: enumerated concepts, or every concept of a
code system we hold (`content = complete`). A value set we cannot enumerate (filters, a code
system we do not have) answers None, and callers say so rather than guess.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable


@dataclass(frozen=True)
class Concept:
    """One code of an expansion."""

    system: str
    code: str
    display: str | None = None


class Terminology:
    """Lookups over a fixed set of CodeSystem and ValueSet resources."""

    def __init__(self, resources: Iterable[dict[str, Any]]):
        self.code_systems: dict[str, dict[str, Any]] = {}
        self.value_sets: dict[str, dict[str, Any]] = {}
        for resource in resources:
            if resource["resourceType"] == "CodeSystem":
                self.code_systems[resource["url"]] = resource
            elif resource["resourceType"] == "ValueSet":
                self.value_sets[resource["url"]] = resource
        self._expansions: dict[str, tuple[Concept, ...] | None] = {}
        self._members: dict[str, frozenset[tuple[str, str]] | None] = {}

    def expand(self, url: str) -> tuple[Concept, ...] | None:
        """Every concept of the value set, or None when it is unknown or not enumerable."""
        url = url.split("|", 1)[0]
        if url not in self._expansions:
            self._expansions[url] = self._compute_expansion(url)
        return self._expansions[url]

    def members(self, url: str) -> frozenset[tuple[str, str]] | None:
        """(system, code) pairs of the value set, for membership tests on the write path."""
        url = url.split("|", 1)[0]
        if url not in self._members:
            concepts = self.expand(url)
            self._members[url] = None if concepts is None else frozenset((c.system, c.code) for c in concepts)
        return self._members[url]

    def contains(self, url: str, system: str | None, code: str) -> bool | None:
        """Is (system, code) in the value set? None when the set cannot be enumerated.

        A missing system matches a code of any of the set's systems (bare `code` elements).
        """
        members = self.members(url)
        if members is None:
            return None
        if system is None:
            return any(code == member_code for _, member_code in members)
        return (system, code) in members

    def lookup(self, system: str, code: str) -> dict[str, Any] | None:
        """The concept definition of `code` in one of our code systems."""
        code_system = self.code_systems.get(system)
        if code_system is None:
            return None
        return _find_concept(code_system.get("concept", []), code)

    def _compute_expansion(self, url: str) -> tuple[Concept, ...] | None:
        value_set = self.value_sets.get(url)
        if value_set is None:
            return None
        compose = value_set.get("compose", {})
        if compose.get("exclude"):
            return None
        concepts: list[Concept] = []
        for include in compose.get("include", []):
            if include.get("filter") or include.get("valueSet") or "system" not in include:
                return None
            system = include["system"]
            if include.get("concept"):
                concepts.extend(Concept(system, c["code"], c.get("display")) for c in include["concept"])
                continue
            code_system = self.code_systems.get(system)
            if code_system is None or code_system.get("content") != "complete":
                return None
            concepts.extend(Concept(system, c["code"], c.get("display")) for c in _walk(code_system.get("concept", [])))
        return tuple(concepts)


def _walk(concepts: list[dict[str, Any]]) -> Iterable[dict[str, Any]]:
    for concept in concepts:
        yield concept
        yield from _walk(concept.get("concept", []))


def _find_concept(concepts: list[dict[str, Any]], code: str) -> dict[str, Any] | None:
    for concept in _walk(concepts):
        if concept["code"] == code:
            return concept
    return None


__all__ = ["Concept", "Terminology"]
