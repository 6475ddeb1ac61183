"""Structural validation of a resource as received in JSON.

Two passes. The first walks the JSON with the R4 digest and is strict about the JSON
format itself (pydantic's lax mode would accept `"active": "yes"` or `"count": "3"`):
unknown elements, arrays vs single values, JSON kinds of primitives and their regexes,
empty values, required elements, one choice type at a time. The second hands a resource
that passed to `fhir.resources.R4B`, the maintained model, as a second opinion.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from fhir_server.outcome import Issue
from fhir_server.spec import Spec
from fhir_server.validation.element_rules import RULES as ELEMENT_RULES
from fhir_server.validation.narrative import narrative_issues

ROOT_ONLY = ("resourceType",)
MAX_ISSUES = 50
MAX_DEPTH = 64  # far beyond any real resource; keeps hostile nesting off the recursion limit
MAX_STRING = 1024 * 1024  # R4 datatypes: "strings SHALL NOT exceed 1MB in size" (binary data and XHTML aside)
UNBOUNDED_STRINGS = frozenset({"base64Binary", "xhtml"})
R4B_DIFFERS_FILE = Path(__file__).with_name("r4b-differs.json")


class StructuralValidator:
    """Validates resource JSON against the base R4 structures."""

    def __init__(self, spec: Spec):
        self._spec = spec
        self._required_cache: dict[str, list[tuple[str, tuple[str, ...]]]] = {}

    def validate(self, resource: Any, resource_type: str) -> list[Issue]:
        """Issues found in `resource`, which must be a `resource_type`; empty when valid."""
        issues: list[Issue] = []
        if not isinstance(resource, dict):
            return [Issue("structure", "The body must be a JSON object", expression=resource_type)]
        self._check_resource(resource, resource_type, resource_type, issues)
        if not issues:
            issues.extend(_model_issues(resource, resource_type))
        return issues[:MAX_ISSUES]

    def _check_resource(self, resource: dict[str, Any], expected: str | None, path: str, issues: list[Issue]) -> None:
        declared = resource.get("resourceType")
        if not isinstance(declared, str) or not self._spec.is_resource_type(declared):
            issues.append(Issue("structure", f"Unknown or missing resourceType {declared!r}", expression=path))
            return
        if expected is not None and declared != expected:
            issues.append(
                Issue("structure", f"resourceType is {declared!r}, expected {expected!r}", expression=path)
            )
            return
        self._check_object(resource, declared, path, issues, is_resource=True)
        self._check_id(resource.get("id"), path, issues)

    def _check_id(self, resource_id: Any, path: str, issues: list[Issue]) -> None:
        """Resource.id is an `id` (1 to 64 of A-Z a-z 0-9 - .), though the R4 digest types it
        `string` (the snapshot's FHIRPath type): checked here, contained resources included."""
        if not isinstance(resource_id, str):
            return  # absent, or already reported as not a string
        pattern = self._spec.primitive_pattern("id")
        if pattern is not None and pattern.fullmatch(resource_id) is None:
            issues.append(Issue("value", f"Not a valid id ({len(resource_id)} characters): 1 to 64 of A-Z a-z 0-9 - .",
                                expression=f"{path}.id"))

    def _check_object(
        self, value: dict[str, Any], structure_name: str, path: str, issues: list[Issue], is_resource: bool = False
    ) -> None:
        members = self._spec.structures.get(structure_name)
        if members is None:
            issues.append(Issue("exception", f"No definition for {structure_name}", expression=path))
            return
        if not value and not is_resource:
            issues.append(Issue("structure", "Objects must not be empty", expression=path))
            return
        seen_choices: dict[str, str] = {}
        for name, item in value.items():
            if is_resource and name in ROOT_ONLY:
                continue
            if name.startswith("_"):
                self._check_primitive_extension(name, item, members, value, path, issues)
                continue
            info = members.get(name)
            if info is None:
                issues.append(Issue("structure", f"Unknown element '{name}'", expression=f"{path}.{name}"))
                continue
            choice = info.get("choice")
            if choice:
                if choice in seen_choices:
                    issues.append(
                        Issue(
                            "structure",
                            f"Only one of {seen_choices[choice]} and {name} may be present",
                            expression=f"{path}.{name}",
                        )
                    )
                seen_choices[choice] = name
            self._check_element(item, info, f"{path}.{name}", issues, sibling=value.get(f"_{name}"))
        for label, names in self._required(structure_name):
            if not any(n in value or f"_{n}" in value for n in names):
                issues.append(Issue("required", f"Missing required element '{label}'", expression=f"{path}.{label}"))
        rule = ELEMENT_RULES.get(structure_name)
        if rule is not None:
            issues.extend(rule(value, path))

    def _required(self, structure_name: str) -> list[tuple[str, tuple[str, ...]]]:
        """Required elements of a structure; a required choice is met by any of its types."""
        cached = self._required_cache.get(structure_name)
        if cached is None:
            groups: dict[str, list[str]] = {}
            for name, info in self._spec.structures[structure_name].items():
                if info.get("min", 0) > 0:
                    groups.setdefault(info.get("choice", name), []).append(name)
            cached = [(label, tuple(names)) for label, names in groups.items()]
            self._required_cache[structure_name] = cached
        return cached

    def _check_element(
        self, item: Any, info: dict[str, Any], path: str, issues: list[Issue], sibling: Any = None
    ) -> None:
        if item is None:
            issues.append(Issue("structure", "null is not a valid value", expression=path))
            return
        if info.get("array"):
            if not isinstance(item, list):
                issues.append(Issue("structure", "This element must be an array", expression=path))
                return
            if not item:
                issues.append(Issue("structure", "Arrays must not be empty", expression=path))
                return
            extensions = sibling if isinstance(sibling, list) else []
            for index, entry in enumerate(item):
                if entry is None and index < len(extensions) and extensions[index] is not None:
                    continue  # a primitive carried only by its extension
                self._check_value(entry, info["type"], f"{path}[{index}]", issues)
                _check_code(entry, info, f"{path}[{index}]", issues)
            return
        if isinstance(item, list):
            issues.append(Issue("structure", "This element must not be an array", expression=path))
            return
        self._check_value(item, info["type"], path, issues)
        _check_code(item, info, path, issues)

    def _check_value(self, item: Any, type_code: str, path: str, issues: list[Issue]) -> None:
        if len(issues) >= MAX_ISSUES:
            return
        if path.count(".") > MAX_DEPTH:
            issues.append(Issue("too-costly", f"Elements nested deeper than {MAX_DEPTH} levels", expression=path[:200]))
            return
        primitive = self._spec.primitives.get(type_code)
        if primitive is not None:
            self._check_primitive(item, type_code, primitive["json"], path, issues)
        elif type_code == "Resource":
            if isinstance(item, dict):
                self._check_resource(item, None, path, issues)
            else:
                issues.append(Issue("structure", "A resource must be a JSON object", expression=path))
        elif isinstance(item, dict):
            self._check_object(item, type_code, path, issues)
        else:
            issues.append(Issue("structure", f"A {type_code} must be a JSON object", expression=path))

    def _check_primitive(self, item: Any, type_code: str, kind: str, path: str, issues: list[Issue]) -> None:
        if kind == "boolean":
            valid = isinstance(item, bool)
        elif kind == "integer":
            valid = isinstance(item, int) and not isinstance(item, bool)
        elif kind == "number":
            valid = isinstance(item, (int, float)) and not isinstance(item, bool)
        else:
            valid = isinstance(item, str)
        if not valid:
            issues.append(
                Issue("value", f"Not a valid {type_code}: JSON {kind} expected", expression=path)
            )
            return
        if isinstance(item, str) and len(item) > MAX_STRING and type_code not in UNBOUNDED_STRINGS:
            issues.append(Issue("too-long", f"A {type_code} of {len(item):,} characters: R4 strings stop at 1 MB", expression=path))
            return
        pattern = self._spec.primitive_pattern(type_code)
        text = item if isinstance(item, str) else _json_number_text(item)
        if pattern is not None and pattern.fullmatch(text) is None:
            issues.append(Issue("value", f"Not a valid {type_code}: {_clip(text)!r}", expression=path))
        elif type_code == "xhtml":
            issues.extend(narrative_issues(item, path))
        elif kind == "string" and not item.strip():
            issues.append(Issue("value", "Strings must not be empty or blank", expression=path))

    def _check_primitive_extension(
        self,
        name: str,
        item: Any,
        members: dict[str, dict[str, Any]],
        owner: dict[str, Any],
        path: str,
        issues: list[Issue],
    ) -> None:
        info = members.get(name[1:])
        if info is None or info["type"] not in self._spec.primitives:
            issues.append(Issue("structure", f"Unknown element '{name}'", expression=f"{path}.{name}"))
            return
        target = f"{path}.{name[1:]}"
        entries = item if info.get("array") and isinstance(item, list) else [item]
        if info.get("array") and not isinstance(item, list):
            issues.append(Issue("structure", "This element must be an array", expression=target))
            return
        for entry in entries:
            if entry is not None:
                if isinstance(entry, dict):
                    self._check_object(entry, "Element", target, issues)
                else:
                    issues.append(Issue("structure", "A primitive's extension must be an object", expression=target))


def _check_code(item: Any, info: dict[str, Any], path: str, issues: list[Issue]) -> None:
    """A code bound to a required value set R4 enumerates must be one of its codes."""
    codes = info.get("codes")
    if codes and isinstance(item, str) and item not in codes:
        ordered = sorted(codes)
        shown = ", ".join(ordered[:12]) + (", ..." if len(ordered) > 12 else "")
        issues.append(Issue("code-invalid", f"{_clip(item)!r} is not in the required value set ({shown})", expression=path))


def too_deep(value: Any, limit: int = MAX_DEPTH) -> bool:
    """True when JSON nests objects/arrays deeper than `limit` (checked without recursion)."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(item, dict):
            stack.extend((child, depth + 1) for child in item.values() if isinstance(child, (dict, list)))
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item if isinstance(child, (dict, list)))
    return False


def _json_number_text(number: int | float) -> str:
    if isinstance(number, bool):
        return "true" if number else "false"
    return repr(number) if isinstance(number, float) else str(number)


def _clip(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


@lru_cache(maxsize=None)
def _model_class(resource_type: str) -> Any:
    from fhir.resources.R4B import get_fhir_model_class

    return get_fhir_model_class(resource_type)


@lru_cache(maxsize=1)
def _r4b_differs() -> frozenset[str]:
    return frozenset(k for k in json.loads(R4B_DIFFERS_FILE.read_text(encoding="utf-8")) if not k.startswith("_"))


def _model_issues(resource: dict[str, Any], resource_type: str) -> list[Issue]:
    """Second opinion from fhir.resources.R4B (the R4B models; never the R5 package root),
    for the types whose R4B model is their R4 definition."""
    if resource_type in _r4b_differs():
        return []
    try:
        model = _model_class(resource_type)
    except (KeyError, ValueError):
        return []  # a type R4B dropped: the digest pass is all we have
    try:
        model.model_validate(resource)
    except ValidationError as error:
        return [
            Issue("structure" if e["type"] == "extra_forbidden" else "value", _clip(e["msg"], 200),
                  expression=_expression(resource_type, e["loc"]))
            for e in error.errors()
            if not _model_blind_spot(e)
        ]
    except (ValueError, TypeError) as error:
        return [Issue("structure", _clip(str(error), 200), expression=resource_type)]
    return []


def _model_blind_spot(error: Any) -> bool:
    """fhir.resources refuses the extension of a choice-typed primitive (`Extension._valueString`,
    valid R4 found in the official v2 tables); the digest pass checks those itself."""
    location = error.get("loc") or ()
    last = str(location[-1]) if location else ""
    return error["type"] == "extra_forbidden" and last.startswith("_value")


def _expression(resource_type: str, location: tuple[Any, ...]) -> str:
    """FHIRPath for a pydantic error location: ('name', 0, 'family') -> Patient.name[0].family."""
    path = resource_type
    for part in location:
        if isinstance(part, int):
            path += f"[{part}]"
        elif not str(part).startswith("function-"):
            path += f".{part}"
    return path


__all__ = ["StructuralValidator"]
