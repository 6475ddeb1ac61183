"""Compile the FHIRPath subset used by R4 search parameter expressions into fast extractors.

The R4 expressions use: dotted paths, `|` unions, `.where(resolve() is Type)`,
`.where(field='value')`, `(path as Type)`, `.as(Type)`, `.ofType(Type)`, `[n]`, `.first()`.
Anything else does not compile (None): that parameter is then not offered, rather than
answered wrongly. fhirpathpy cannot help with `resolve()`, which most of them need.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from typing import Any, Callable

from fhir_server.spec import Spec

Extractor = Callable[[dict[str, Any]], list[Any]]

WHERE_RESOLVE = re.compile(r"^where\(resolve\(\)\s+is\s+([A-Za-z]+)\)$")
WHERE_FIELD = re.compile(r"^where\(([A-Za-z]+)\s*=\s*'([^']*)'\)$")
TYPE_FILTER = re.compile(r"^(?:as|ofType)\(([A-Za-z]+)\)$")
INDEXED = re.compile(r"^([A-Za-z]+)\[(\d+)\]$")
NAME = re.compile(r"^[A-Za-z][A-Za-z0-9]*$")
AS_SUFFIX = re.compile(r"^(.*)\s+as\s+([A-Za-z]+)$")


@dataclass(frozen=True)
class Step:
    kind: str  # child | resolve_is | field_eq | index | first
    name: str = ""
    value: str = ""


def split_top(text: str, separator: str) -> list[str]:
    """Split on a separator outside parentheses and quotes."""
    parts, depth, quoted, current = [], 0, False, ""
    for char in text:
        if char == "'":
            quoted = not quoted
        elif not quoted:
            depth += char == "("
            depth -= char == ")"
        if char == separator and depth == 0 and not quoted:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [p.strip() for p in parts]


def _unwrap(part: str) -> str:
    """`(A.b as T).c` -> `A.b.as(T).c`; `A.b as T` -> `A.b.as(T)`."""
    part = part.strip()
    if part.startswith("("):
        depth = 0
        for index, char in enumerate(part):
            depth += char == "("
            depth -= char == ")"
            if depth == 0:
                inner, rest = part[1:index], part[index + 1 :]
                return _unwrap(inner) + rest
    match = AS_SUFFIX.match(part)
    if match:
        return f"{match[1].strip()}.as({match[2]})"
    return part


def _steps(part: str, base: str) -> list[Step] | None:
    tokens = split_top(_unwrap(part), ".")
    if tokens and NAME.match(tokens[0]) and tokens[0][0].islower():
        tokens = [base, *tokens]  # a bare element name (`name | alias`) is relative to the resource
    if not tokens or tokens[0] not in (base, "Resource", "DomainResource"):
        return None
    steps: list[Step] = []
    for token in tokens[1:]:
        if NAME.match(token):
            steps.append(Step("child", token))
        elif (m := INDEXED.match(token)) is not None:
            steps.extend([Step("child", m[1]), Step("index", value=m[2])])
        elif (m := WHERE_RESOLVE.match(token)) is not None:
            steps.append(Step("resolve_is", m[1]))
        elif (m := WHERE_FIELD.match(token)) is not None:
            steps.append(Step("field_eq", m[1], m[2]))
        elif (m := TYPE_FILTER.match(token)) is not None:
            if not steps or steps[-1].kind != "child":
                return None
            previous = steps.pop()
            steps.append(Step("child", previous.name + m[1][0].upper() + m[1][1:], value="exact"))
        elif token == "first()":
            steps.append(Step("first"))
        else:
            return None
    return steps


def _reference_type(node: Any) -> str | None:
    if not isinstance(node, dict):
        return None
    if isinstance(node.get("type"), str):
        return node["type"]
    reference = node.get("reference")
    if not isinstance(reference, str):
        return None
    parts = reference.split("/_history/")[0].rstrip("/").split("/")
    return parts[-2] if len(parts) >= 2 else None


def _child(nodes: list[Any], name: str, choice: bool, types: frozenset[str]) -> list[Any]:
    found: list[Any] = []
    for node in nodes:
        if not isinstance(node, dict):
            continue
        value = node.get(name)
        if value is None and choice:
            for key, candidate in node.items():
                suffix = key[len(name) :]
                if key.startswith(name) and suffix and suffix[0].isupper() and (suffix in types or suffix[0].lower() + suffix[1:] in types):
                    value = candidate
                    break
        if isinstance(value, list):
            found.extend(v for v in value if v is not None)
        elif value is not None:
            found.append(value)
    return found


class ExpressionCompiler:
    """Turns search parameter expressions into extractors, with the digest's choice stems."""

    def __init__(self, spec: Spec):
        self._choices = frozenset(
            info["choice"] for members in spec.structures.values() for info in members.values() if "choice" in info
        )
        self._types = frozenset(spec.structures) | frozenset(spec.primitives)

    def compile(self, expression: str, base: str) -> Extractor | None:
        """An extractor of the values `expression` selects on a `base` resource, or None."""
        parts = [steps for part in split_top(expression, "|") if (steps := _steps(part, base)) is not None]
        if not parts:
            return None
        choices, types = self._choices, self._types

        def run(steps: list[Step], resource: dict[str, Any]) -> list[Any]:
            nodes: list[Any] = [resource]
            for step in steps:
                if step.kind == "child":
                    nodes = _child(nodes, step.name, step.value != "exact" and step.name in choices, types)
                elif step.kind == "resolve_is":
                    nodes = [n for n in nodes if _reference_type(n) == step.name]
                elif step.kind == "field_eq":
                    nodes = [n for n in nodes if isinstance(n, dict) and n.get(step.name) == step.value]
                elif step.kind == "index":
                    nodes = nodes[int(step.value) : int(step.value) + 1]
                elif step.kind == "first":
                    nodes = nodes[:1]
                if not nodes:
                    return []
            return nodes

        def extract(resource: dict[str, Any]) -> list[Any]:
            values: list[Any] = []
            for steps in parts:
                values.extend(run(steps, resource))
            return values

        return extract


@cache
def compiler_for(spec: Spec) -> ExpressionCompiler:
    return ExpressionCompiler(spec)


__all__ = ["ExpressionCompiler", "Extractor", "compiler_for", "split_top"]
